package payments

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// during wraps the fixture's provider: during runs inside Collect, after
// the provider acted and before its answer is returned, as another
// caller acting while the call is in flight would.
type during struct {
	metering.PaymentProvider
	during func()
}

func (d *during) Collect(ctx context.Context, in metering.CollectInput) (metering.PaymentResult, error) {
	res, err := d.PaymentProvider.Collect(ctx, in)
	if d.during != nil {
		d.during()
		d.during = nil
	}
	return res, err
}

func (f *fixture) piStatus(pi string) metering.PaymentStatus {
	f.t.Helper()
	res, err := f.stripe.PaymentStatus(f.ctx, pi)
	if err != nil {
		f.t.Fatal(err)
	}
	return res.Status
}

// strayRefund is the refund of a stray charge of the invoice, as
// "<reason>/<status>/<attempt's provider id>", "" when none.
func (f *fixture) strayRefund(inv uuid.UUID) string {
	f.t.Helper()
	var out string
	f.scan(&out, `SELECT COALESCE((SELECT r.reason || '/' || r.status || '/' || a.provider_payment_id
		FROM payment_refunds r JOIN payment_attempts a ON a.id = r.stray_attempt_id WHERE r.invoice_id = $1), '')`, inv)
	return out
}

func (f *fixture) refundsAt(pi string) []metering.RefundResult {
	f.t.Helper()
	list, err := f.stripe.PaymentProvider.(metering.RefundLister).ListRefunds(f.ctx, pi)
	if err != nil {
		f.t.Fatal(err)
	}
	return list
}

func (f *fixture) voidInvoice(inv uuid.UUID) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.ctx, `UPDATE invoices SET status = 'void', voided_at = now() WHERE id = $1`, inv); err != nil {
		f.t.Fatal(err)
	}
}

// A void while the call is in flight: the charge that then succeeds is
// refunded at the provider as "void", and the payment stays canceled.
func TestVoidDuringCallRefundsTheCharge(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "12.00")
	d := &during{PaymentProvider: f.stripe}
	f.svc.cfg.Providers["stripe"] = d
	d.during = func() {
		f.voidInvoice(inv)
		if err := f.svc.InvoiceClosed(f.ctx, inv, "void"); err != nil {
			t.Errorf("InvoiceClosed during the call = %v", err)
		}
	}
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil || p.Status != "canceled" || p.Refunded.Minor != 0 {
		t.Fatalf("Collect = %+v, %v; want canceled, nothing refunded of the payment", p, err)
	}
	pi := f.stripe.lastResult().ProviderPaymentID
	if got := f.strayRefund(inv); got != "void/succeeded/"+pi {
		t.Errorf("stray refund = %q; want void/succeeded/%s", got, pi)
	}
	if list := f.refundsAt(pi); len(list) != 1 || list[0].Amount.Minor != 1200 {
		t.Errorf("refunds at the provider = %+v; want one of 1200", list)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.stray_refund' AND target_id = $1`, inv.String()); n != 1 {
		t.Errorf("%d audit entries of the stray charge; want 1", n)
	}
	if n := f.svc.strayCharges.Get(); n != 1 {
		t.Errorf("stray charges counted = %d; want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM payment_attempts WHERE provider_payment_id = $1 AND late_succeeded_at IS NOT NULL`, pi); n != 1 {
		t.Errorf("the attempt does not record its late success")
	}
}

// A crash after the charge, then a void: the attempt is canceled in
// doubt; reconciliation finds the charge by search and refunds it, and
// the success's webhook finds the attempt too, changing nothing more.
func TestVoidAfterLostAnswerReconciled(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "12.00")
	f.stripe.setCrash(true)
	_, _ = f.svc.Collect(f.ctx, inv)
	f.stripe.setCrash(false)
	pi := f.stripe.lastResult().ProviderPaymentID
	if err := f.svc.InvoiceClosed(f.ctx, inv, "void"); err != nil {
		t.Fatal(err)
	}
	f.apply(metering.WebhookEvent{ID: "evt_late", Type: metering.WebhookPaymentSucceeded, ProviderPaymentID: pi, InvoiceID: inv.String()})
	f.clock.Advance(2 * time.Minute)
	if _, err := f.svc.Reconcile(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	if got := f.strayRefund(inv); got != "void/succeeded/"+pi {
		t.Errorf("stray refund = %q; want void/succeeded/%s", got, pi)
	}
	if list := f.refundsAt(pi); len(list) != 1 {
		t.Errorf("refunds at the provider = %+v; want one", list)
	}
	if p := f.payment(inv); p.Status != "canceled" {
		t.Errorf("payment = %s; want canceled", p.Status)
	}
}

// Paid by hand while a debit is processing: the provider's attempt is
// canceled there, a manual attempt carries the reference, and a void
// invoice cannot be paid by hand.
func TestMarkPaidCancelsTheProviderAttempt(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMProcessing), "12.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	pi := f.stripe.lastResult().ProviderPaymentID
	p, err := f.svc.MarkPaidManually(f.ctx, f.provider, inv, "SEPA-REF-1")
	if err != nil || p.Status != "succeeded" || p.Attempts != 2 {
		t.Fatalf("MarkPaidManually = %+v, %v; want succeeded by a second attempt", p, err)
	}
	var first, second string
	f.scan(&first, `SELECT status || '/' || failure_code FROM payment_attempts WHERE payment_id = $1 AND attempt_no = 1`, p.ID)
	f.scan(&second, `SELECT status || '/' || reference || '/' || COALESCE(provider_payment_id, '') FROM payment_attempts
		WHERE payment_id = $1 AND attempt_no = 2`, p.ID)
	if first != "canceled/paid_by_hand" || second != "succeeded/SEPA-REF-1/" {
		t.Errorf("attempts = %s, %s; want canceled/paid_by_hand, succeeded/SEPA-REF-1/", first, second)
	}
	if st := f.piStatus(pi); st != metering.PaymentCanceled {
		t.Errorf("PaymentIntent = %s; want canceled at the provider", st)
	}

	void := f.invoice(f.customer("stripe", stripetest.PMDeclined), "5.00")
	if _, err := f.svc.Collect(f.ctx, void); err != nil {
		t.Fatal(err)
	}
	f.voidInvoice(void)
	if _, err := f.svc.MarkPaidManually(f.ctx, f.provider, void, "REF-2"); !errors.Is(err, ErrInvoiceState) {
		t.Errorf("MarkPaidManually of a void invoice = %v; want ErrInvoiceState", err)
	}
}

// A failed attempt's PaymentIntent is canceled at the provider. A failed
// attempt completed all the same while a retry is under way pays the
// invoice; the retry is canceled, and its charge, found by search, is
// refunded as a duplicate.
func TestLateSuccessCancelsTheRetry(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	cust := f.customer("stripe", stripetest.PMDeclined)
	inv := f.invoice(cust, "12.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	pi1 := f.stripe.lastResult().ProviderPaymentID
	if st := f.piStatus(pi1); st != metering.PaymentCanceled {
		t.Errorf("failed attempt's PaymentIntent = %s; want canceled at the provider", st)
	}
	var cus string
	f.scan(&cus, `SELECT provider_customer_id FROM payment_customers WHERE customer_id = $1`, cust)
	if err := f.svc.SetCustomer(f.ctx, cust, metering.CustomerRef{Provider: "stripe", ID: cus}, stripetest.PMSucceeds); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(25 * time.Hour)
	f.stripe.setCrash(true)
	_, _ = f.svc.Collect(f.ctx, inv)
	f.stripe.setCrash(false)
	pi2 := f.stripe.lastResult().ProviderPaymentID
	// Stripe would refuse to confirm a canceled PaymentIntent; this one
	// was confirmed before its cancel.
	f.fake.SetPaymentIntentStatus(pi1, "succeeded")
	f.apply(metering.WebhookEvent{ID: "evt_1", Type: metering.WebhookPaymentSucceeded, ProviderPaymentID: pi1, InvoiceID: inv.String()})
	if p := f.payment(inv); p.Status != "succeeded" || f.invoiceStatus(inv) != "paid" {
		t.Fatalf("payment %s, invoice %s; want succeeded, paid", p.Status, f.invoiceStatus(inv))
	}
	f.clock.Advance(2 * time.Minute)
	if _, err := f.svc.Reconcile(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	if got := f.strayRefund(inv); got != "duplicate/succeeded/"+pi2 {
		t.Errorf("stray refund = %q; want duplicate/succeeded/%s", got, pi2)
	}
	if p := f.payment(inv); p.Refunded.Minor != 0 || p.Status != "succeeded" {
		t.Errorf("payment = %+v; want succeeded, nothing of it refunded", p)
	}
	if n := f.count(`SELECT count(*) FROM payment_attempts a JOIN payments p ON p.id = a.payment_id
		WHERE p.invoice_id = $1 AND a.status IN ('creating', 'pending', 'processing', 'requires_action')`, inv); n != 0 {
		t.Errorf("%d attempts left open; want none", n)
	}
}

// The payment method is read and stored before the call; a repeat whose
// parameters changed (Stripe's idempotency_error) is looked up, not taken
// as nothing charged.
func TestIdempotencyConflictLookedUp(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	cust := f.customer("stripe", stripetest.PMSucceeds)
	// Veil does not know the default; Stripe does.
	if _, err := f.pool.Exec(f.ctx, `UPDATE payment_customers SET default_pm_id = NULL WHERE customer_id = $1`, cust); err != nil {
		t.Fatal(err)
	}
	inv := f.invoice(cust, "30.00")
	f.stripe.setCrash(true)
	_, _ = f.svc.Collect(f.ctx, inv)
	f.stripe.setCrash(false)
	var pm string
	f.scan(&pm, `SELECT a.payment_method_id FROM payment_attempts a JOIN payments p ON p.id = a.payment_id WHERE p.invoice_id = $1`, inv)
	if pm != stripetest.PMSucceeds {
		t.Errorf("attempt's payment method = %q; want %s, read before the call", pm, stripetest.PMSucceeds)
	}
	if _, err := f.pool.Exec(f.ctx, `UPDATE payment_attempts SET payment_method_id = 'pm_card_mastercard'
		WHERE payment_id = (SELECT id FROM payments WHERE invoice_id = $1)`, inv); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Minute)
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil || p.Status != "succeeded" || p.Attempts != 1 {
		t.Fatalf("Collect after a changed method = %+v, %v; want succeeded by the first attempt", p, err)
	}
	if n := f.fake.Creates("payment_intents"); n != 1 {
		t.Errorf("%d PaymentIntents; want 1", n)
	}
}

// Amounts the provider can never take are neither retried nor dunned.
func TestUncollectibleAmountNeedsAttention(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	small := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "0.30")
	var kwd uuid.UUID
	f.scan(&kwd, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end,
		subtotal, total, amount_due, finalized_at, due_at)
		VALUES ($1, $2, $3, 'open', $4, 'KWD', $5, $6, 5.125, 5.125, 5.125, $6, $6) RETURNING id`,
		f.issuer, f.customer("stripe", stripetest.PMSucceeds), f.sub, "INV-"+testenv.Suffix(), start.AddDate(0, -1, 0), start)
	for inv, reason := range map[uuid.UUID]string{small: "amount_too_small", kwd: "amount_not_representable"} {
		p, err := f.svc.Collect(f.ctx, inv)
		if err != nil || p.Status != "needs_attention" || p.NextAttemptAt != nil {
			t.Fatalf("Collect = %+v, %v; want needs_attention, no next attempt", p, err)
		}
		var got string
		f.scan(&got, `SELECT attention_reason FROM payments WHERE id = $1`, p.ID)
		if len(got) < len(reason) || got[:len(reason)] != reason {
			t.Errorf("reason = %q; want %s first", got, reason)
		}
		if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.needs_attention' AND target_id = $1`, inv.String()); n != 1 {
			t.Errorf("%d audit entries; want 1", n)
		}
		f.clock.Advance(8 * 24 * time.Hour)
		if due, _ := f.svc.DueRetries(f.ctx, f.clock.Now(), 10); len(due) != 0 {
			t.Errorf("DueRetries = %v; want none", due)
		}
		if p, _ = f.svc.Collect(f.ctx, inv); p.Attempts != 1 {
			t.Errorf("Collect again made attempt %d; want none", p.Attempts)
		}
	}
	if n := f.count(`SELECT count(*) FROM subscription_dunning WHERE subscription_id = $1`, f.sub); n != 0 {
		t.Errorf("dunned %d times; want never", n)
	}
	if p, err := f.svc.MarkPaidManually(f.ctx, f.provider, small, "CASH-1"); err != nil || p.Status != "succeeded" {
		t.Errorf("MarkPaidManually = %+v, %v; want succeeded", p, err)
	}
}

// Off session an authentication cannot be given: requires_action fails
// the attempt and schedules the next; the provider's cancel of an attempt
// does the same, only a void cancels the payment.
func TestProviderCancelAndActionFailTheAttempt(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMRequiresAction), "12.00")
	p, err := f.svc.Collect(f.ctx, inv)
	want := f.clock.Now().Add(24 * time.Hour)
	if err != nil || p.Status != "pending" || p.NextAttemptAt == nil || !p.NextAttemptAt.Equal(want) {
		t.Fatalf("Collect = %+v, %v; want pending, next at %v", p, err, want)
	}
	pi := f.stripe.lastResult().ProviderPaymentID
	if f.attemptStatus(pi) != "failed" || f.piStatus(pi) != metering.PaymentCanceled {
		t.Errorf("attempt %s, PaymentIntent %s; want failed, canceled at the provider", f.attemptStatus(pi), f.piStatus(pi))
	}

	debit := f.invoice(f.customer("stripe", stripetest.PMProcessing), "12.00")
	if _, err := f.svc.Collect(f.ctx, debit); err != nil {
		t.Fatal(err)
	}
	pi = f.stripe.lastResult().ProviderPaymentID
	f.apply(metering.WebhookEvent{ID: "evt_cancel", Type: metering.WebhookPaymentCanceled, ProviderPaymentID: pi, InvoiceID: debit.String()})
	if p := f.payment(debit); p.Status != "pending" || p.NextAttemptAt == nil {
		t.Errorf("after the provider's cancel: payment %s next %v; want pending, a next attempt", p.Status, p.NextAttemptAt)
	}
	var code string
	f.scan(&code, `SELECT status || '/' || failure_code FROM payment_attempts WHERE provider_payment_id = $1`, pi)
	if code != "failed/canceled_at_provider" {
		t.Errorf("attempt = %s; want failed/canceled_at_provider", code)
	}
}

// Reconcile reads an attempt long under way less and less often, passes
// over attempts of payments not in flight, and settles one past its
// key's lifetime from what a search finds.
func TestReconcileBacksOffAndSettlesOldAttempts(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMProcessing), "12.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 1 {
		t.Fatalf("Reconcile = %d, %v; want 1", n, err)
	}
	f.clock.Advance(2 * time.Minute)
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 0 {
		t.Errorf("Reconcile 2 minutes later = %d, %v; want 0, backed off", n, err)
	}
	f.clock.Advance(time.Hour)
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 1 {
		t.Errorf("Reconcile an hour later = %d, %v; want 1", n, err)
	}
	if _, err := f.pool.Exec(f.ctx, `UPDATE payments SET status = 'failed' WHERE invoice_id = $1`, inv); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(24 * time.Hour)
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 0 {
		t.Errorf("Reconcile of a payment not in flight = %d, %v; want 0", n, err)
	}

	old := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "7.00")
	f.stripe.setCrash(true)
	_, _ = f.svc.Collect(f.ctx, old)
	f.stripe.setCrash(false)
	f.clock.Advance(24 * time.Hour)
	if _, err := f.svc.Reconcile(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	if p := f.payment(old); p.Status != "succeeded" || p.Attempts != 1 {
		t.Errorf("payment past its key's lifetime = %s, %d attempts; want succeeded by the first", p.Status, p.Attempts)
	}
}

// Billing's word that an invoice closed stops its payment: no retry
// follows; an unknown status is refused.
func TestInvoiceClosedStopsRetries(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMDeclined), "12.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.InvoiceClosed(f.ctx, inv, "paid"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.InvoiceClosed(f.ctx, inv, "paid"); err != nil {
		t.Errorf("InvoiceClosed again = %v; want nil", err)
	}
	f.clock.Advance(2 * 24 * time.Hour)
	if due, _ := f.svc.DueRetries(f.ctx, f.clock.Now(), 10); len(due) != 0 {
		t.Errorf("DueRetries = %v; want none", due)
	}
	if p := f.payment(inv); p.Status != "canceled" {
		t.Errorf("payment = %s; want canceled", p.Status)
	}
	if err := f.svc.InvoiceClosed(f.ctx, inv, "draft"); !errors.Is(err, ErrInvalid) {
		t.Errorf("InvoiceClosed(draft) = %v; want ErrInvalid", err)
	}
}

// Pay now: the customer's members and the issuer make a new attempt at
// once for a failed payment of an open invoice, not while one is under
// way; a new default payment method does it by itself.
func TestPayNow(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	cust := f.customer("stripe", stripetest.PMDeclined)
	inv := f.invoice(cust, "12.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	other := identity.Actor{Subject: "x", Role: identity.RoleConsumer, OrgID: testenv.Org(t, f.pool, "other-"+testenv.Suffix())}
	if _, err := f.svc.PayNow(f.ctx, other, inv); !errors.Is(err, ErrNotFound) {
		t.Errorf("PayNow by another organization = %v; want ErrNotFound", err)
	}
	member := identity.Actor{Subject: "cust", Role: identity.RoleConsumer, OrgID: cust}
	p, err := f.svc.PayNow(f.ctx, member, inv)
	if err != nil || p.Attempts != 2 || p.Status != "pending" {
		t.Fatalf("PayNow = %+v, %v; want a second attempt, declined", p, err)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.pay_now' AND target_id = $1`, inv.String()); n != 1 {
		t.Errorf("%d audit entries of pay now; want 1", n)
	}
	var cus string
	f.scan(&cus, `SELECT provider_customer_id FROM payment_customers WHERE customer_id = $1`, cust)
	err = f.svc.methodEvent(f.ctx, "stripe", metering.WebhookEvent{ID: "evt_pm", Type: metering.WebhookPaymentMethodDefault,
		ProviderCustomerID: cus, PaymentMethodID: stripetest.PMSucceeds, Created: start.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if p := f.payment(inv); p.Status != "succeeded" || p.Attempts != 3 {
		t.Errorf("after a new default method: %s, %d attempts; want succeeded by a third", p.Status, p.Attempts)
	}
	if _, err := f.svc.PayNow(f.ctx, member, inv); !errors.Is(err, ErrInvoiceState) {
		t.Errorf("PayNow of a paid invoice = %v; want ErrInvoiceState", err)
	}

	debit := f.invoice(f.customer("stripe", stripetest.PMProcessing), "12.00")
	if _, err := f.svc.Collect(f.ctx, debit); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PayNow(f.ctx, f.provider, debit); !errors.Is(err, ErrInFlight) {
		t.Errorf("PayNow while a debit is processing = %v; want ErrInFlight", err)
	}
}
