package payments

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

func (f *fixture) apply(ev metering.WebhookEvent) {
	f.t.Helper()
	ev.Provider = "stripe"
	// A payment's event carries its PaymentIntent's amount and customer,
	// as Stripe renders it.
	if amount, cur, cus, ok := f.fake.PaymentIntent(ev.ProviderPaymentID); ok && strings.HasPrefix(string(ev.Type), "payment.") &&
		ev.Amount == (metering.Money{}) && ev.ProviderCustomerID == "" {
		ev.Amount, ev.ProviderCustomerID = metering.Money{Minor: amount, Currency: strings.ToUpper(cur)}, cus
	}
	if err := f.svc.ApplyEvent(f.ctx, "stripe", ev); err != nil {
		f.t.Fatalf("ApplyEvent(%s %s) = %v", ev.ID, ev.Type, err)
	}
}

func (f *fixture) attemptStatus(pi string) string {
	f.t.Helper()
	var st string
	f.scan(&st, `SELECT status FROM payment_attempts WHERE provider_payment_id = $1`, pi)
	return st
}

// Webhooks: a success applies once however often it is delivered, and a
// failure delivered after it changes nothing.
func TestWebhookReplayAndOrder(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMProcessing), "15.00")
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil || p.Status != "processing" {
		t.Fatalf("Collect = %+v, %v; want processing", p, err)
	}
	pi := f.stripe.lastResult().ProviderPaymentID
	ok := metering.WebhookEvent{ID: "evt_ok", Type: metering.WebhookPaymentSucceeded, ProviderPaymentID: pi, InvoiceID: inv.String()}
	late := metering.WebhookEvent{ID: "evt_late", Type: metering.WebhookPaymentFailed, ProviderPaymentID: pi,
		FailureCode: "card_declined", Created: time.Unix(1, 0)}
	f.apply(ok)
	f.apply(ok)
	f.apply(late)
	f.apply(late)
	if p := f.payment(inv); p.Status != "succeeded" || f.attemptStatus(pi) != "succeeded" || f.invoiceStatus(inv) != "paid" {
		t.Errorf("after success, replays and a late failure: payment %s, attempt %s, invoice %s; want succeeded, succeeded, paid",
			p.Status, f.attemptStatus(pi), f.invoiceStatus(inv))
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.succeeded' AND target_id = $1`, inv.String()); n != 1 {
		t.Errorf("%d success audit entries; want 1 (applied once)", n)
	}
	if n := f.count(`SELECT count(*) FROM provider_events WHERE event_id IN ('evt_ok', 'evt_late')`); n != 2 {
		t.Errorf("%d events stored; want 2", n)
	}

	// A failure first, then the success of the same PaymentIntent (the
	// customer completed it): the payment succeeds.
	inv2 := f.invoice(f.customer("stripe", stripetest.PMProcessing), "16.00")
	if _, err := f.svc.Collect(f.ctx, inv2); err != nil {
		t.Fatal(err)
	}
	pi2 := f.stripe.lastResult().ProviderPaymentID
	f.apply(metering.WebhookEvent{ID: "evt_f2", Type: metering.WebhookPaymentFailed, ProviderPaymentID: pi2, FailureCode: "card_declined"})
	if p := f.payment(inv2); p.Status != "pending" || p.NextAttemptAt == nil {
		t.Fatalf("after the failure: %+v; want pending with a next attempt", p)
	}
	f.apply(metering.WebhookEvent{ID: "evt_p2", Type: metering.WebhookPaymentProcessing, ProviderPaymentID: pi2})
	if p := f.payment(inv2); p.Status != "pending" || p.NextAttemptAt == nil || f.attemptStatus(pi2) != "failed" {
		t.Fatalf("after a late processing: %+v, attempt %s; want still pending, the attempt failed", p, f.attemptStatus(pi2))
	}
	f.apply(metering.WebhookEvent{ID: "evt_s2", Type: metering.WebhookPaymentSucceeded, ProviderPaymentID: pi2})
	if p := f.payment(inv2); p.Status != "succeeded" || p.NextAttemptAt != nil || f.invoiceStatus(inv2) != "paid" {
		t.Errorf("after the success: %+v, invoice %s; want succeeded, paid", p, f.invoiceStatus(inv2))
	}
}

// An event about a payment whose answer was never recorded (a crash
// after the call) finds its attempt by the invoice it carries.
func TestWebhookBeforeRecord(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "17.00")
	f.stripe.setCrash(true)
	_, _ = f.svc.Collect(f.ctx, inv)
	f.stripe.setCrash(false)
	pi := f.stripe.lastResult().ProviderPaymentID
	f.apply(metering.WebhookEvent{ID: "evt_1", Type: metering.WebhookPaymentSucceeded, ProviderPaymentID: pi, InvoiceID: inv.String()})
	if p := f.payment(inv); p.Status != "succeeded" || f.attemptStatus(pi) != "succeeded" {
		t.Errorf("payment %s, attempt %q; want both succeeded", p.Status, f.attemptStatus(pi))
	}
	f.apply(metering.WebhookEvent{ID: "evt_unknown", Type: metering.WebhookPaymentSucceeded, ProviderPaymentID: "pi_elsewhere"})
	if err := f.svc.ApplyEvent(f.ctx, "stripe", metering.WebhookEvent{Type: metering.WebhookPaymentSucceeded}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ApplyEvent without an id = %v; want ErrInvalid", err)
	}
}

// Disputes in any order: a close before the opening leaves it closed.
func TestDisputes(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "18.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	pi := f.stripe.lastResult().ProviderPaymentID
	amount := metering.Money{Minor: 1800, Currency: "EUR"}
	f.apply(metering.WebhookEvent{ID: "evt_d1", Type: metering.WebhookDisputeOpened, ProviderPaymentID: pi, ProviderDisputeID: "dp_1",
		Amount: amount, Status: "needs_response", Reason: "fraudulent"})
	f.apply(metering.WebhookEvent{ID: "evt_d1c", Type: metering.WebhookDisputeClosed, ProviderPaymentID: pi, ProviderDisputeID: "dp_1", Amount: amount, Status: "won"})
	f.apply(metering.WebhookEvent{ID: "evt_d2c", Type: metering.WebhookDisputeClosed, ProviderPaymentID: pi, ProviderDisputeID: "dp_2", Amount: amount, Status: "lost"})
	f.apply(metering.WebhookEvent{ID: "evt_d2", Type: metering.WebhookDisputeOpened, ProviderPaymentID: pi, ProviderDisputeID: "dp_2", Amount: amount, Status: "needs_response"})
	var got string
	f.scan(&got, `SELECT string_agg(provider_dispute_id || '=' || status || '/' || (closed_at IS NOT NULL)::text, ',' ORDER BY provider_dispute_id)
		FROM payment_disputes`)
	if got != "dp_1=won/true,dp_2=lost/true" {
		t.Errorf("disputes = %s; want both closed, won and lost", got)
	}
}

func TestReconcileHealsLostWebhook(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMProcessing), "19.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	pi := f.stripe.lastResult().ProviderPaymentID
	f.fake.SetPaymentIntentStatus(pi, "succeeded")
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 0 || f.invoiceStatus(inv) != "open" {
		t.Fatalf("Reconcile within the minute = %d, %v; want nothing looked at", n, err)
	}
	f.clock.Advance(2 * time.Minute)
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 1 {
		t.Fatalf("Reconcile = %d, %v; want 1", n, err)
	}
	if p := f.payment(inv); p.Status != "succeeded" || f.invoiceStatus(inv) != "paid" {
		t.Errorf("after Reconcile: payment %s, invoice %s; want succeeded, paid", p.Status, f.invoiceStatus(inv))
	}
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 0 {
		t.Errorf("Reconcile again = %d, %v; want nothing left", n, err)
	}
}

func TestRefunds(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	cust := f.customer("stripe", stripetest.PMSucceeds)
	inv := f.invoice(cust, "100.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	consumer := identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: cust}
	stranger := identity.Actor{Subject: "s", Role: identity.RoleProvider, OrgID: testenv.Org(t, f.pool, "other-"+testenv.Suffix())}
	if _, err := f.svc.Refund(f.ctx, consumer, inv, decimal.Zero, ""); !errors.Is(err, identity.ErrForbidden) {
		t.Errorf("Refund by the customer = %v; want forbidden", err)
	}
	if _, err := f.svc.Refund(f.ctx, stranger, inv, decimal.Zero, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("Refund by another organization = %v; want not found", err)
	}
	rf, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("30"), "goodwill")
	if err != nil || rf.Status != "succeeded" || rf.Amount.Minor != 3000 {
		t.Fatalf("partial Refund = %+v, %v; want 3000 succeeded", rf, err)
	}
	if _, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("70.01"), ""); !errors.Is(err, ErrOverRefund) {
		t.Errorf("Refund above what is left = %v; want ErrOverRefund", err)
	}
	if rf, err = f.svc.Refund(f.ctx, f.provider, inv, decimal.Zero, "rest"); err != nil || rf.Amount.Minor != 7000 {
		t.Fatalf("Refund of the rest = %+v, %v; want 7000", rf, err)
	}
	if _, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.Zero, ""); !errors.Is(err, ErrOverRefund) {
		t.Errorf("Refund of a refunded payment = %v; want ErrOverRefund", err)
	}
	var providerRefund string
	f.scan(&providerRefund, `SELECT provider_refund_id FROM payment_refunds WHERE id = $1`, rf.ID)
	f.apply(metering.WebhookEvent{ID: "evt_r", Type: metering.WebhookRefundSucceeded, ProviderRefundID: providerRefund})
	if p := f.payment(inv); p.Refunded.Minor != 10000 {
		t.Errorf("refunded = %d; want 10000, the refund's event not added twice", p.Refunded.Minor)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.refund' AND target_id = $1`, inv.String()); n != 2 {
		t.Errorf("%d refund audit entries; want 2", n)
	}
	if n := f.fake.Creates("refunds"); n != 2 {
		t.Errorf("%d refunds at the provider; want 2", n)
	}
	// The database refuses what the service would: a refund beyond the
	// payment, and one of an unpaid payment.
	var pgErr *pgconn.PgError
	_, err = f.pool.Exec(f.ctx, `INSERT INTO payment_refunds (payment_id, invoice_id, amount, currency, actor, idempotency_key)
		SELECT id, invoice_id, 1, currency, 'x', 'veil-refund-x' FROM payments WHERE invoice_id = $1`, inv)
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "payment_refunds_within_paid" {
		t.Errorf("over-refund in the database = %v; want payment_refunds_within_paid", err)
	}
	open := f.invoice(cust, "5.00")
	f.stripe.setCrash(true)
	_, _ = f.svc.Collect(f.ctx, open)
	f.stripe.setCrash(false)
	_, err = f.pool.Exec(f.ctx, `INSERT INTO payment_refunds (payment_id, invoice_id, amount, currency, actor, idempotency_key)
		SELECT id, invoice_id, 1, currency, 'x', 'veil-refund-y' FROM payments WHERE invoice_id = $1`, open)
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "payment_refunds_within_paid" {
		t.Errorf("refund of an unpaid payment in the database = %v; want payment_refunds_within_paid", err)
	}
	if _, err := f.svc.Refund(f.ctx, f.provider, open, decimal.Zero, ""); !errors.Is(err, ErrNotPaid) {
		t.Errorf("Refund of an unpaid payment = %v; want ErrNotPaid", err)
	}
}

// Two refunds at once may not together exceed the payment.
func TestConcurrentRefundsInDatabase(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "10.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	tx1, err := f.pool.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(f.ctx)
	ins := `INSERT INTO payment_refunds (payment_id, invoice_id, amount, currency, actor, idempotency_key)
		SELECT id, invoice_id, 600, currency, 'x', 'veil-refund-' || $2::text FROM payments WHERE invoice_id = $1`
	if _, err := tx1.Exec(f.ctx, ins, inv, "k1"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.pool.Exec(f.ctx, ins, inv, "k2")
		done <- err
	}()
	// The second waits on the payment's lock until the first commits.
	deadline := time.Now().Add(10 * time.Second)
	for f.count(`SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%veil-refund-%' AND query LIKE 'INSERT INTO payment_refunds%'`) == 0 {
		select {
		case err := <-done:
			t.Fatalf("second refund did not wait for the first: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("second refund never waited on the payment's lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx1.Commit(f.ctx); err != nil {
		t.Fatal(err)
	}
	var pgErr *pgconn.PgError
	if err := <-done; !errors.As(err, &pgErr) || pgErr.ConstraintName != "payment_refunds_within_paid" {
		t.Errorf("second refund = %v; want payment_refunds_within_paid", err)
	}
}

// A voided invoice's payment is canceled, at the provider too; a repeat,
// or an invoice with no payment, changes nothing.
func TestInvoiceClosedVoid(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMProcessing), "21.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	pi := f.stripe.lastResult().ProviderPaymentID
	if err := f.svc.InvoiceClosed(f.ctx, inv, "void"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.InvoiceClosed(f.ctx, inv, "void"); err != nil {
		t.Errorf("second InvoiceClosed = %v; want nil", err)
	}
	if st, err := f.stripe.PaymentStatus(f.ctx, pi); err != nil || st.Status != metering.PaymentCanceled {
		t.Errorf("PaymentIntent = %+v, %v; want canceled", st, err)
	}
	f.apply(metering.WebhookEvent{ID: "evt_v", Type: metering.WebhookPaymentSucceeded, ProviderPaymentID: pi})
	if p := f.payment(inv); p.Status != "canceled" || f.attemptStatus(pi) != "canceled" {
		t.Errorf("after a late success: payment %s, attempt %s; want canceled", p.Status, f.attemptStatus(pi))
	}
	if err := f.svc.InvoiceClosed(f.ctx, f.invoice(f.customer("stripe", stripetest.PMSucceeds), "1.00"), "void"); err != nil {
		t.Errorf("InvoiceClosed without a payment = %v; want nil", err)
	}
}
