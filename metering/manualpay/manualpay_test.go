package manualpay_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/manualpay"
)

func provider(t *testing.T) *manualpay.Provider {
	t.Helper()
	p, err := manualpay.New(manualpay.Config{AccountHolder: "Acme APIs GmbH", IBAN: "de89 3704 0044 0532 0130 00", BIC: "COBADEFFXXX"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestManualCollectIsPendingWithInstructions(t *testing.T) {
	var p metering.PaymentProvider = provider(t)
	ctx := t.Context()
	ref, err := p.EnsureCustomer(ctx, metering.CustomerInput{CustomerID: "org-1", IdempotencyKey: "veil-cus-org-1-1"})
	if err != nil || ref != (metering.CustomerRef{Provider: "manual", ID: "org-1"}) {
		t.Fatalf("EnsureCustomer = %+v, %v", ref, err)
	}
	amount := metering.Money{Minor: 4999, Currency: "EUR"}
	in := metering.CollectInput{Customer: ref, InvoiceID: "inv-1", InvoiceNumber: "A-2026-7", Amount: amount, IdempotencyKey: "veil-inv-inv-1-a1"}
	res, err := p.Collect(ctx, in)
	if err != nil || res.Status != metering.PaymentPending || res.Instructions == nil {
		t.Fatalf("Collect = %+v, %v; want pending with instructions", res, err)
	}
	want := metering.PaymentInstructions{Reference: "A-2026-7", AccountHolder: "Acme APIs GmbH", IBAN: "DE89370400440532013000", BIC: "COBADEFFXXX", Amount: amount}
	if *res.Instructions != want {
		t.Errorf("Collect instructions = %+v; want %+v", *res.Instructions, want)
	}
	in.IdempotencyKey = "veil-inv-inv-1-a2"
	if again, err := p.Collect(ctx, in); err != nil || again.ProviderPaymentID != res.ProviderPaymentID {
		t.Errorf("Collect of a second attempt = %+v, %v; want the same transfer %s", again, err, res.ProviderPaymentID)
	}
	if st, err := p.PaymentStatus(ctx, res.ProviderPaymentID); err != nil || st.Status != metering.PaymentPending {
		t.Errorf("PaymentStatus = %+v, %v; want pending", st, err)
	}
	if err := p.CancelPayment(ctx, res.ProviderPaymentID); err != nil {
		t.Errorf("CancelPayment = %v", err)
	}
	if _, err := p.PaymentStatus(ctx, "pi_123"); !errors.Is(err, metering.ErrPaymentNotFound) {
		t.Errorf("PaymentStatus(a Stripe id) = %v; want ErrPaymentNotFound", err)
	}
	rf, err := p.Refund(ctx, metering.RefundInput{ProviderPaymentID: res.ProviderPaymentID, Amount: amount, IdempotencyKey: "veil-refund-1"})
	if err != nil || rf.Status != metering.RefundPending {
		t.Errorf("Refund = %+v, %v; want pending, sent back by hand", rf, err)
	}
	if s, err := p.SetupPaymentMethod(ctx, metering.SetupInput{Customer: ref}); err != nil || s.ClientSecret != "" || s.Instructions == "" {
		t.Errorf("SetupPaymentMethod = %+v, %v; want instructions only", s, err)
	}
	in.Amount.Minor = 0
	if _, err := p.Collect(ctx, in); !errors.Is(err, metering.ErrAmountNotRepresentable) {
		t.Errorf("Collect(0) = %v; want refused", err)
	}
}

func TestManualWebhookRefused(t *testing.T) {
	_, err := provider(t).ParseWebhook([]byte(`{}`), http.Header{}, time.Now())
	if !errors.Is(err, metering.ErrPaymentUnsupported) {
		t.Errorf("ParseWebhook = %v; want ErrPaymentUnsupported", err)
	}
}

func TestManualConfig(t *testing.T) {
	for name, cfg := range map[string]manualpay.Config{
		"bad check digits": {AccountHolder: "Acme", IBAN: "DE88370400440532013000"},
		"not an IBAN":      {AccountHolder: "Acme", IBAN: "DE89-3704"},
		"no holder":        {IBAN: "DE89370400440532013000"},
	} {
		if _, err := manualpay.New(cfg); err == nil {
			t.Errorf("%s: New(%+v) = nil error; want refused", name, cfg)
		}
	}
}
