package stripepay_test

import (
	"errors"
	"testing"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// FindPayment's search is accepted by Stripe's spec (stripe-mock answers
// a PaymentIntent that is not the attempt's: not found), and finds the
// attempt's PaymentIntent by its key in the fake, not another attempt's.
func TestFindPayment(t *testing.T) {
	mock := testenv.StripeMock(t)
	p, err := stripepay.New(stripepay.Config{SecretKey: mock.Key, APIBase: mock.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.FindPayment(t.Context(), "inv-1", "veil-inv-1-a1"); !errors.Is(err, metering.ErrPaymentNotFound) {
		t.Errorf("FindPayment at stripe-mock = %v; want ErrPaymentNotFound", err)
	}
	if _, err := p.FindPayment(t.Context(), "inv-1' OR '1", "k"); !errors.Is(err, metering.ErrPaymentInvalid) {
		t.Errorf("FindPayment with a quote = %v; want ErrPaymentInvalid", err)
	}

	fake := stripetest.New(t)
	f, err := stripepay.New(stripepay.Config{SecretKey: stripetest.Key, APIBase: fake.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cus := fake.AddCustomer(stripetest.PMSucceeds)
	eur := metering.Money{Minor: 1200, Currency: "EUR"}
	var made []string
	for _, key := range []string{"veil-inv-9-a1", "veil-inv-9-a2"} {
		res, err := f.Collect(t.Context(), metering.CollectInput{Customer: metering.CustomerRef{Provider: "stripe", ID: cus},
			InvoiceID: "inv-9", InvoiceNumber: "A-9", Amount: eur, PaymentMethodID: stripetest.PMSucceeds, IdempotencyKey: key})
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, res.ProviderPaymentID)
	}
	got, err := f.FindPayment(t.Context(), "inv-9", "veil-inv-9-a2")
	if err != nil || got.ProviderPaymentID != made[1] || got.Status != metering.PaymentSucceeded {
		t.Errorf("FindPayment = %+v, %v; want %s succeeded", got, err, made[1])
	}
	if _, err := f.FindPayment(t.Context(), "inv-9", "veil-inv-9-a3"); !errors.Is(err, metering.ErrPaymentNotFound) {
		t.Errorf("FindPayment of a key never used = %v; want ErrPaymentNotFound", err)
	}
}
