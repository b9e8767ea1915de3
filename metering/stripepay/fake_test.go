package stripepay_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// syncBuffer collects log output from stripe-go's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup returns a provider on a fresh fake Stripe, with every log line
// (debug included) kept for the test to search, and checks at the end that
// no POST went without our idempotency key.
func setup(t *testing.T) (*stripepay.Provider, *stripetest.Server, *syncBuffer) {
	t.Helper()
	fake := stripetest.New(t)
	logs := &syncBuffer{}
	p, err := stripepay.New(stripepay.Config{
		SecretKey: stripetest.Key, APIBase: fake.URL,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n := fake.PostsWithoutKey(); n != 0 {
			t.Errorf("%d POSTs without an Idempotency-Key; want every one to carry ours", n)
		}
	})
	return p, fake, logs
}

func collect(customer, pm, key string, amount metering.Money) metering.CollectInput {
	return metering.CollectInput{
		Customer: metering.CustomerRef{Provider: "stripe", ID: customer}, InvoiceID: "inv-1", InvoiceNumber: "A-2026-7",
		Amount: amount, PaymentMethodID: pm, IdempotencyKey: key,
	}
}

var eur = metering.Money{Minor: 4999, Currency: "EUR"}

func TestStripeCollectOutcomes(t *testing.T) {
	p, fake, logs := setup(t)
	cus := fake.AddCustomer("")
	for _, tc := range []struct {
		pm         string
		status     metering.PaymentStatus
		code, bank string
	}{
		{stripetest.PMSucceeds, metering.PaymentSucceeded, "", ""},
		{stripetest.PMDeclined, metering.PaymentFailed, "card_declined", "generic_decline"},
		{stripetest.PMInsufficientFunds, metering.PaymentFailed, "card_declined", "insufficient_funds"},
		{stripetest.PMRequiresAction, metering.PaymentRequiresAction, "", ""},
		{stripetest.PMProcessing, metering.PaymentProcessing, "", ""},
	} {
		res, err := p.Collect(t.Context(), collect(cus, tc.pm, "veil-inv-1-"+tc.pm, eur))
		if err != nil {
			t.Fatalf("Collect(%s) = %v; want a result, a decline is no error", tc.pm, err)
		}
		if res.Status != tc.status || res.FailureCode != tc.code || res.DeclineCode != tc.bank || res.Amount != eur || res.ProviderPaymentID == "" {
			t.Errorf("Collect(%s) = %+v; want %s, codes %q/%q, %v", tc.pm, res, tc.status, tc.code, tc.bank, eur)
		}
		again, err := p.PaymentStatus(t.Context(), res.ProviderPaymentID)
		if err != nil || again.Status != tc.status {
			t.Errorf("PaymentStatus(%s) = %+v, %v; want %s", res.ProviderPaymentID, again, err, tc.status)
		}
	}
	if got := fake.Creates("payment_intents"); got != 5 {
		t.Errorf("PaymentIntents created = %d; want 5", got)
	}
	if strings.Contains(logs.String(), "_secret_") {
		t.Errorf("the logs hold a client secret:\n%s", logs.String())
	}
}

// A crash between Stripe creating the PaymentIntent and Veil hearing of it:
// the connection drops after the create. The error is retryable, and the
// retry with the same key gets the same PaymentIntent: one charge.
func TestStripeCollectRetryAfterLostResponse(t *testing.T) {
	p, fake, _ := setup(t)
	cus := fake.AddCustomer(stripetest.PMSucceeds)
	in := collect(cus, "", "veil-inv-1-a1", eur)
	fake.DropAnswers("payment_intents", true)
	if _, err := p.Collect(t.Context(), in); !errors.Is(err, metering.ErrPaymentRetryable) {
		t.Fatalf("Collect with the answer lost = %v; want ErrPaymentRetryable", err)
	}
	if got := fake.Creates("payment_intents"); got != 1 {
		t.Fatalf("PaymentIntents created before the retry = %d; want 1", got)
	}
	fake.DropAnswers("payment_intents", false)
	res, err := p.Collect(t.Context(), in)
	if err != nil || res.Status != metering.PaymentSucceeded {
		t.Fatalf("Collect retried = %+v, %v; want succeeded", res, err)
	}
	if got := fake.Creates("payment_intents"); got != 1 {
		t.Errorf("PaymentIntents created after the retry = %d; want still 1", got)
	}
}

func TestStripeCollectIdempotencyConflict(t *testing.T) {
	p, fake, _ := setup(t)
	cus := fake.AddCustomer("")
	if _, err := p.Collect(t.Context(), collect(cus, stripetest.PMSucceeds, "veil-inv-1-a1", eur)); err != nil {
		t.Fatal(err)
	}
	other := metering.Money{Minor: 5000, Currency: "EUR"}
	if _, err := p.Collect(t.Context(), collect(cus, stripetest.PMSucceeds, "veil-inv-1-a1", other)); !errors.Is(err, metering.ErrIdempotencyConflict) {
		t.Errorf("Collect with the key of another amount = %v; want ErrIdempotencyConflict", err)
	}
	// A declined attempt replays as declined: the 402 is recorded too.
	for range 2 {
		res, err := p.Collect(t.Context(), collect(cus, stripetest.PMDeclined, "veil-inv-1-a2", eur))
		if err != nil || res.Status != metering.PaymentFailed {
			t.Errorf("Collect declined = %+v, %v; want failed", res, err)
		}
	}
	if got := fake.Creates("payment_intents"); got != 2 {
		t.Errorf("PaymentIntents created = %d; want 2", got)
	}
}

func TestStripeCollectErrorKinds(t *testing.T) {
	p, fake, _ := setup(t)
	cus := fake.AddCustomer(stripetest.PMSucceeds)
	for status, want := range map[int]error{429: metering.ErrPaymentRetryable, 500: metering.ErrPaymentRetryable} {
		fake.FailNext("payment_intents", status)
		if _, err := p.Collect(t.Context(), collect(cus, "", "veil-inv-k", eur)); !errors.Is(err, want) {
			t.Errorf("Collect answered %d = %v; want %v", status, err, want)
		}
	}
	if res, err := p.Collect(t.Context(), collect(cus, "", "veil-inv-k", eur)); err != nil || res.Status != metering.PaymentSucceeded {
		t.Errorf("Collect after the failures = %+v, %v; want succeeded", res, err)
	}
	if _, err := p.PaymentStatus(t.Context(), "pi_missing"); !errors.Is(err, metering.ErrPaymentNotFound) {
		t.Errorf("PaymentStatus(pi_missing) = %v; want ErrPaymentNotFound", err)
	}
	bad, err := stripepay.New(stripepay.Config{SecretKey: "sk_test_wrong", APIBase: fake.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Collect(t.Context(), collect(cus, "", "veil-inv-auth", eur))
	if !errors.Is(err, metering.ErrPaymentAuth) || strings.Contains(err.Error(), "sk_test_wrong") {
		t.Errorf("Collect with a wrong key = %v; want ErrPaymentAuth without the key", err)
	}
	unreachable, err := stripepay.New(stripepay.Config{SecretKey: stripetest.Key, APIBase: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unreachable.Collect(t.Context(), collect(cus, "", "veil-inv-net", eur)); !errors.Is(err, metering.ErrPaymentRetryable) {
		t.Errorf("Collect with Stripe unreachable = %v; want ErrPaymentRetryable", err)
	}
}

func TestStripeCollectAmounts(t *testing.T) {
	p, fake, _ := setup(t)
	cus := fake.AddCustomer(stripetest.PMSucceeds)
	for _, m := range []metering.Money{{Minor: 1500, Currency: "JPY"}, {Minor: 1250, Currency: "KWD"}, {Minor: 4999, Currency: "EUR"}} {
		res, err := p.Collect(t.Context(), collect(cus, "", "veil-inv-"+m.Currency, m))
		if err != nil || res.Amount != m {
			t.Errorf("Collect(%v) = %+v, %v; want the amount back", m, res, err)
		}
	}
	if _, err := p.Collect(t.Context(), collect(cus, "", "veil-inv-kwd5", metering.Money{Minor: 1255, Currency: "KWD"})); !errors.Is(err, metering.ErrAmountNotRepresentable) {
		t.Errorf("Collect(KWD 1.255) = %v; want ErrAmountNotRepresentable", err)
	}
	if got := fake.Creates("payment_intents"); got != 3 {
		t.Errorf("PaymentIntents created = %d; want 3, none for the refused amount", got)
	}
}

func TestStripeCollectWithoutPaymentMethod(t *testing.T) {
	p, fake, _ := setup(t)
	res, err := p.Collect(t.Context(), collect(fake.AddCustomer(""), "", "veil-inv-nopm", eur))
	if err != nil || res.Status != metering.PaymentFailed || res.FailureCode != "no_payment_method" {
		t.Errorf("Collect without a payment method = %+v, %v; want a failed attempt", res, err)
	}
	if got := fake.Creates("payment_intents"); got != 0 {
		t.Errorf("PaymentIntents created = %d; want 0", got)
	}
}

func TestStripeRefundAndCancel(t *testing.T) {
	p, fake, _ := setup(t)
	cus := fake.AddCustomer(stripetest.PMSucceeds)
	paid, err := p.Collect(t.Context(), collect(cus, "", "veil-inv-r", eur))
	if err != nil {
		t.Fatal(err)
	}
	part := metering.Money{Minor: 1000, Currency: "EUR"}
	rf, err := p.Refund(t.Context(), metering.RefundInput{ProviderPaymentID: paid.ProviderPaymentID, Amount: part, IdempotencyKey: "veil-refund-1"})
	if err != nil || rf.Status != metering.RefundSucceeded || rf.Amount != part {
		t.Errorf("Refund(partial) = %+v, %v; want %v succeeded", rf, err, part)
	}
	rf, err = p.Refund(t.Context(), metering.RefundInput{ProviderPaymentID: paid.ProviderPaymentID, IdempotencyKey: "veil-refund-2"})
	if err != nil || rf.Amount != eur {
		t.Errorf("Refund(full) = %+v, %v; want %v", rf, err, eur)
	}
	pending, err := p.Collect(t.Context(), collect(cus, stripetest.PMProcessing, "veil-inv-c", eur))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := p.CancelPayment(t.Context(), pending.ProviderPaymentID); err != nil {
			t.Errorf("CancelPayment(%s) = %v; want nil, twice", pending.ProviderPaymentID, err)
		}
	}
	if err := p.CancelPayment(t.Context(), paid.ProviderPaymentID); !errors.Is(err, metering.ErrPaymentInvalid) {
		t.Errorf("CancelPayment(succeeded) = %v; want ErrPaymentInvalid", err)
	}
}

func TestStripeSetupKeepsSecretOutOfLogs(t *testing.T) {
	p, fake, logs := setup(t)
	ref, err := p.EnsureCustomer(t.Context(), metering.CustomerInput{CustomerID: "org-1", Name: "Acme", IdempotencyKey: "veil-cus-org-1-1"})
	if err != nil || fake.Creates("customers") != 1 {
		t.Fatalf("EnsureCustomer = %+v, %v; want one customer", ref, err)
	}
	s, err := p.SetupPaymentMethod(t.Context(), metering.SetupInput{Customer: ref, IdempotencyKey: "veil-setup-org-1-1"})
	if err != nil || !strings.Contains(s.ClientSecret, "_secret_") {
		t.Fatalf("SetupPaymentMethod = %+v, %v; want a client secret", s.ProviderID, err)
	}
	if strings.Contains(logs.String(), s.ClientSecret) || strings.Contains(logs.String(), stripetest.Key) {
		t.Errorf("the logs hold a secret:\n%s", logs.String())
	}
	if _, err := p.Collect(t.Context(), collect(ref.ID, stripetest.PMDeclined, "veil-inv-s", eur)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "Requesting POST") {
		t.Errorf("stripe-go's lines did not reach the logger, so this test proves nothing:\n%s", logs.String())
	}
}
