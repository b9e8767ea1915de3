package stripepay_test

import (
	"testing"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
)

// stripe-mock validates every request against Stripe's OpenAPI spec of the
// same release as stripe-go: an unknown or malformed parameter is a 400.
// It decides no outcome (a PaymentIntent stays requires_payment_method),
// so this test checks only that each call is accepted.
func TestStripeMockRequestShapes(t *testing.T) {
	mock := testenv.StripeMock(t)
	p, err := stripepay.New(stripepay.Config{SecretKey: mock.Key, APIBase: mock.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	suffix := testenv.Suffix()
	in := metering.CustomerInput{
		CustomerID: "org-" + suffix, Name: "Acme GmbH", Email: "billing@acme.test", TaxID: "DE123456789",
		Address:        metering.Address{Line1: "Hauptstr. 1", PostalCode: "10115", City: "Berlin", Country: "DE"},
		IdempotencyKey: "veil-cus-" + suffix + "-1",
	}
	ref, err := p.EnsureCustomer(ctx, in)
	if err != nil || ref.ID == "" || ref.Provider != "stripe" {
		t.Fatalf("EnsureCustomer (create) = %+v, %v; want a customer", ref, err)
	}
	in.Ref, in.IdempotencyKey = ref, "veil-cus-"+suffix+"-2"
	if _, err := p.EnsureCustomer(ctx, in); err != nil {
		t.Fatalf("EnsureCustomer (update) = %v", err)
	}
	setup, err := p.SetupPaymentMethod(ctx, metering.SetupInput{Customer: ref, IdempotencyKey: "veil-setup-" + suffix})
	if err != nil || setup.ProviderID == "" || setup.ClientSecret == "" {
		t.Fatalf("SetupPaymentMethod = %+v, %v; want a SetupIntent and its client secret", setup.ProviderID, err)
	}
	for _, amount := range []metering.Money{{Minor: 1250, Currency: "EUR"}, {Minor: 1500, Currency: "JPY"}, {Minor: 1250, Currency: "KWD"}} {
		res, err := p.Collect(ctx, metering.CollectInput{
			Customer: ref, InvoiceID: "inv-" + suffix, InvoiceNumber: "A-2026-1", Amount: amount,
			PaymentMethodID: "pm_card_visa", IdempotencyKey: "veil-inv-" + suffix + "-" + amount.Currency,
		})
		if err != nil || res.ProviderPaymentID == "" || res.Amount != amount {
			t.Fatalf("Collect(%v) = %+v, %v; want a PaymentIntent for %v", amount, res, err, amount)
		}
		if _, err := p.PaymentStatus(ctx, res.ProviderPaymentID); err != nil {
			t.Fatalf("PaymentStatus(%s) = %v", res.ProviderPaymentID, err)
		}
		rf, err := p.Refund(ctx, metering.RefundInput{ProviderPaymentID: res.ProviderPaymentID, Amount: metering.Money{Minor: 100, Currency: amount.Currency},
			Reason: "goodwill", IdempotencyKey: "veil-refund-" + suffix + "-" + amount.Currency})
		if err != nil || rf.ProviderRefundID == "" {
			t.Fatalf("Refund(%s) = %+v, %v; want a refund", res.ProviderPaymentID, rf, err)
		}
	}
	if _, err := p.Refund(ctx, metering.RefundInput{ProviderPaymentID: "pi_123", IdempotencyKey: "veil-refund-full-" + suffix}); err != nil {
		t.Fatalf("Refund (full) = %v", err)
	}
	if err := p.CancelPayment(ctx, "pi_123"); err != nil {
		t.Fatalf("CancelPayment = %v", err)
	}
}
