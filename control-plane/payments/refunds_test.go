package payments

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// paid makes an invoice of amount EUR paid by card, and returns it with
// its PaymentIntent.
func (f *fixture) paid(amount string) (uuid.UUID, string) {
	f.t.Helper()
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), amount)
	if p, err := f.svc.Collect(f.ctx, inv); err != nil || p.Status != "succeeded" {
		f.t.Fatalf("Collect = %+v, %v; want succeeded", p, err)
	}
	return inv, f.stripe.lastResult().ProviderPaymentID
}

func (f *fixture) refundStatus(id uuid.UUID) string {
	f.t.Helper()
	var st string
	f.scan(&st, `SELECT status FROM payment_refunds WHERE id = $1`, id)
	return st
}

// ListRefunds passes the listing through, as the provider it wraps does.
func (c *crashing) ListRefunds(ctx context.Context, pi string) ([]metering.RefundResult, error) {
	return c.PaymentProvider.(metering.RefundLister).ListRefunds(ctx, pi)
}

// age makes an invoice's refunds older by d, in the database's time that
// refunds keep.
func (f *fixture) age(inv uuid.UUID, d time.Duration) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.ctx, `UPDATE payment_refunds SET created_at = created_at - make_interval(secs => $2),
		updated_at = updated_at - make_interval(secs => $2) WHERE invoice_id = $1`, inv, d.Seconds()); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) providerRefunds(pi string) []metering.RefundResult {
	f.t.Helper()
	list, err := f.stripe.PaymentProvider.(metering.RefundLister).ListRefunds(f.ctx, pi)
	if err != nil {
		f.t.Fatal(err)
	}
	return list
}

// A refund whose answer is lost stays pending, counting against the
// payment; reconciliation repeats it with its key (Stripe answers with
// the refund it made, no second one) and the payment shows it refunded.
func TestRefundAnswerLostReconciled(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, _ := f.paid("20.00")
	f.fake.DropAnswers("refunds", true)
	rf, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("5"), "outage")
	if err == nil || rf.Status != "pending" {
		t.Fatalf("Refund with its answer lost = %+v, %v; want pending and an error", rf, err)
	}
	f.fake.DropAnswers("refunds", false)
	if _, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("15.01"), ""); !errors.Is(err, ErrOverRefund) {
		t.Errorf("Refund above what is left with one pending = %v; want ErrOverRefund", err)
	}
	if n, err := f.svc.ReconcileRefunds(f.ctx, 10); err != nil || n != 0 {
		t.Errorf("ReconcileRefunds at once = %d, %v; want 0: the call may still be under way", n, err)
	}
	f.age(inv, 2*time.Minute)
	if n, err := f.svc.ReconcileRefunds(f.ctx, 10); err != nil || n != 1 {
		t.Fatalf("ReconcileRefunds = %d, %v; want 1", n, err)
	}
	if st := f.refundStatus(rf.ID); st != "succeeded" || f.payment(inv).Refunded.Minor != 500 {
		t.Errorf("after reconciliation: refund %s, refunded %d; want succeeded, 500", st, f.payment(inv).Refunded.Minor)
	}
	if n := f.fake.Creates("refunds"); n != 1 {
		t.Errorf("%d refunds made at Stripe; want 1", n)
	}
	if n := f.hooks.count("payment.refunded"); n != 2 {
		t.Errorf("payment.refunded announced %d times; want 2 (issuer and customer)", n)
	}
}

// Past the key's lifetime a pending refund is not repeated: the charge's
// refunds at Stripe say what became of it, and one Stripe never made
// fails and stops counting against the payment.
func TestRefundReconciledFromListing(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, _ := f.paid("20.00")
	f.fake.DropAnswers("refunds", true)
	made, _ := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("5"), "")
	f.fake.DropAnswers("refunds", false)
	f.fake.FailNext("refunds", http.StatusInternalServerError)
	never, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("6"), "")
	if err == nil || never.Status != "pending" {
		t.Fatalf("Refund refused by a 500 = %+v, %v; want pending (a 500 does not prove nothing happened)", never, err)
	}
	f.age(inv, 24*time.Hour)
	if _, err := f.svc.ReconcileRefunds(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	if a, b := f.refundStatus(made.ID), f.refundStatus(never.ID); a != "succeeded" || b != "failed" {
		t.Errorf("after reconciliation: %s, %s; want succeeded (found at Stripe), failed (never made)", a, b)
	}
	if n := f.fake.Creates("refunds"); n != 1 {
		t.Errorf("%d refunds made at Stripe; want 1: none repeated past the key's lifetime", n)
	}
	if rf, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.Zero, ""); err != nil || rf.Amount.Minor != 1500 {
		t.Errorf("Refund of the rest = %+v, %v; want 1500 left", rf, err)
	}
}

// An event of Veil's refund that arrives before the call's answer is
// recorded finds the refund by the id it carries; an event naming a
// refund Veil does not have, of a charge Veil made, is not recorded as
// applied, so Stripe delivers it again.
func TestRefundEarlyEventAndUnmatched(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, pi := f.paid("20.00")
	f.fake.DropAnswers("refunds", true)
	rf, _ := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("5"), "")
	f.fake.DropAnswers("refunds", false)
	re := f.providerRefunds(pi)[0]
	five := metering.Money{Minor: 500, Currency: "EUR"}
	f.apply(metering.WebhookEvent{ID: "evt_early", Type: metering.WebhookRefundPending, ProviderPaymentID: pi,
		ProviderRefundID: re.ProviderRefundID, RefundID: rf.ID.String(), Amount: five})
	var got *string
	f.scan(&got, `SELECT provider_refund_id FROM payment_refunds WHERE id = $1`, rf.ID)
	if got == nil || *got != re.ProviderRefundID || f.refundStatus(rf.ID) != "pending" {
		t.Fatalf("after the early pending event: provider id %v, %s; want %s, pending", got, f.refundStatus(rf.ID), re.ProviderRefundID)
	}
	f.apply(metering.WebhookEvent{ID: "evt_done", Type: metering.WebhookRefundSucceeded, ProviderPaymentID: pi,
		ProviderRefundID: re.ProviderRefundID, RefundID: rf.ID.String(), Amount: five})
	if f.refundStatus(rf.ID) != "succeeded" || f.payment(inv).Refunded.Minor != 500 {
		t.Errorf("after its success: %s, refunded %d; want succeeded, 500", f.refundStatus(rf.ID), f.payment(inv).Refunded.Minor)
	}
	stranger := metering.WebhookEvent{Provider: "stripe", ID: "evt_stranger", Type: metering.WebhookRefundSucceeded, ProviderPaymentID: pi,
		ProviderRefundID: "re_stranger", RefundID: uuid.NewString(), Amount: five}
	if err := f.svc.ApplyEvent(f.ctx, "stripe", stranger); !errors.Is(err, errUnmatchedRefund) {
		t.Errorf("ApplyEvent(a refund naming an unknown Veil refund) = %v; want errUnmatchedRefund", err)
	}
	// A refund event naming Veil's refund of another charge settles
	// nothing.
	other, otherPI := f.paid("30.00")
	f.fake.DropAnswers("refunds", true)
	rf2, _ := f.svc.Refund(f.ctx, f.provider, other, decimal.RequireFromString("5"), "")
	f.fake.DropAnswers("refunds", false)
	forged := metering.WebhookEvent{Provider: "stripe", ID: "evt_forged", Type: metering.WebhookRefundSucceeded, ProviderPaymentID: pi,
		ProviderRefundID: "re_forged", RefundID: rf2.ID.String(), Amount: five}
	if err := f.svc.ApplyEvent(f.ctx, "stripe", forged); !errors.Is(err, errUnmatchedRefund) {
		t.Errorf("ApplyEvent(a refund of %s naming a refund of %s) = %v; want errUnmatchedRefund", pi, otherPI, err)
	}
	if n := f.count(`SELECT count(*) FROM provider_events WHERE event_id IN ('evt_stranger', 'evt_forged')`); n != 0 {
		t.Errorf("%d unmatched events recorded as applied; want 0", n)
	}
	if st := f.refundStatus(rf2.ID); st != "pending" {
		t.Errorf("refund %s after the forged event; want pending", st)
	}
}

// A refund made in Stripe's dashboard is recorded once as a refund of
// the payment and announced, from its refund event or from
// charge.refunded (which lists the charge's refunds).
func TestRefundMadeInDashboard(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, pi := f.paid("20.00")
	re := f.fake.AddDashboardRefund(pi, 500)
	ev := metering.WebhookEvent{ID: "evt_dash", Type: metering.WebhookRefundSucceeded, ProviderPaymentID: pi,
		ProviderRefundID: re["id"].(string), Amount: metering.Money{Minor: 500, Currency: "EUR"}}
	f.apply(ev)
	f.apply(ev)
	if p := f.payment(inv); p.Refunded.Minor != 500 {
		t.Errorf("refunded %d after the dashboard's refund; want 500", p.Refunded.Minor)
	}
	if n := f.count(`SELECT count(*) FROM payment_refunds WHERE invoice_id = $1 AND external AND status = 'succeeded'`, inv); n != 1 {
		t.Errorf("%d external refunds recorded; want 1", n)
	}
	f.fake.AddDashboardRefund(pi, 300)
	f.apply(metering.WebhookEvent{ID: "evt_charge", Type: metering.WebhookPaymentRefunded, ProviderPaymentID: pi,
		AmountRefunded: metering.Money{Minor: 800, Currency: "EUR"}})
	if p := f.payment(inv); p.Refunded.Minor != 800 {
		t.Errorf("refunded %d after charge.refunded; want 800", p.Refunded.Minor)
	}
	if n := f.hooks.count("payment.refunded"); n != 4 {
		t.Errorf("payment.refunded announced %d times; want 4 (two refunds, issuer and customer)", n)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.refund' AND target_id = $1`, inv.String()); n != 2 {
		t.Errorf("%d refund audit entries; want 2", n)
	}
	if _, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("12.01"), ""); !errors.Is(err, ErrOverRefund) {
		t.Errorf("Refund above what the dashboard left = %v; want ErrOverRefund", err)
	}
}

// credits records the credit ledger's entries, in the refund's
// transaction.
type credits struct {
	mu      sync.Mutex
	entries []string
	fail    error
}

func (c *credits) CreditRefund(ctx context.Context, tx pgx.Tx, issuer, customer, invoice uuid.UUID, currency string,
	amount decimal.Decimal, reason, actor string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return c.fail
	}
	c.entries = append(c.entries, currency+" "+amount.String()+" "+invoice.String())
	return nil
}

// A refund to the credit balance calls no provider, credits the ledger
// in its transaction, and counts against the payment with the others;
// a ledger that fails leaves no refund.
func TestRefundToCreditBalance(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	ledger := &credits{}
	f.svc.cfg.Credits = ledger
	inv, _ := f.paid("20.00")
	consumer := identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: f.payment(inv).CustomerID}
	if _, err := f.svc.RefundToCredit(f.ctx, consumer, inv, decimal.Zero, ""); !errors.Is(err, identity.ErrForbidden) {
		t.Errorf("RefundToCredit by the customer = %v; want forbidden", err)
	}
	ledger.fail = errors.New("ledger down")
	if _, err := f.svc.RefundToCredit(f.ctx, f.provider, inv, decimal.RequireFromString("4"), ""); err == nil {
		t.Error("RefundToCredit with the ledger failing = nil; want its error")
	}
	ledger.fail = nil
	rf, err := f.svc.RefundToCredit(f.ctx, f.provider, inv, decimal.RequireFromString("4"), "plan change")
	if err != nil || rf.Status != "succeeded" || rf.Destination != DestinationCreditBalance || rf.Amount.Minor != 400 {
		t.Fatalf("RefundToCredit = %+v, %v; want 400 succeeded to the credit balance", rf, err)
	}
	if len(ledger.entries) != 1 || ledger.entries[0] != "EUR 4 "+inv.String() {
		t.Errorf("ledger entries %v; want one of EUR 4 for the invoice", ledger.entries)
	}
	if n := f.fake.Creates("refunds"); n != 0 {
		t.Errorf("%d refunds at Stripe; want none", n)
	}
	if p := f.payment(inv); p.Refunded.Minor != 400 || f.hooks.count("payment.refunded") != 2 {
		t.Errorf("refunded %d, announced %d; want 400, 2", p.Refunded.Minor, f.hooks.count("payment.refunded"))
	}
	if n := f.count(`SELECT count(*) FROM payment_refunds WHERE invoice_id = $1`, inv); n != 1 {
		t.Errorf("%d refund rows; want 1 (the failed one rolled back)", n)
	}
	if _, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("16.01"), ""); !errors.Is(err, ErrOverRefund) {
		t.Errorf("Refund above what the credit refund left = %v; want ErrOverRefund", err)
	}
	if rf, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.Zero, ""); err != nil || rf.Amount.Minor != 1600 {
		t.Errorf("Refund of the rest = %+v, %v; want 1600", rf, err)
	}
}

// A lost dispute records what it took back on the payment, once,
// audited and announced; what it took cannot be refunded again.
func TestDisputeLost(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, pi := f.paid("20.00")
	all := metering.Money{Minor: 2000, Currency: "EUR"}
	f.apply(metering.WebhookEvent{ID: "evt_do", Type: metering.WebhookDisputeOpened, ProviderPaymentID: pi, ProviderDisputeID: "dp_l",
		Amount: all, Status: "needs_response"})
	f.apply(metering.WebhookEvent{ID: "evt_du", Type: metering.WebhookDisputeUpdated, ProviderPaymentID: pi, ProviderDisputeID: "dp_l",
		Amount: all, Status: "under_review"})
	var st string
	f.scan(&st, `SELECT status FROM payment_disputes WHERE provider_dispute_id = 'dp_l'`)
	if st != "under_review" {
		t.Errorf("dispute status after its update = %s; want under_review", st)
	}
	closed := metering.WebhookEvent{ID: "evt_dc", Type: metering.WebhookDisputeClosed, ProviderPaymentID: pi, ProviderDisputeID: "dp_l",
		Amount: all, Status: "lost"}
	f.apply(closed)
	closed.ID = "evt_dc2"
	f.apply(closed)
	var lost int64
	f.scan(&lost, `SELECT amount_disputed_lost FROM payments WHERE invoice_id = $1`, inv)
	if lost != 2000 || f.payment(inv).DisputedLost.Minor != 2000 {
		t.Errorf("amount_disputed_lost = %d, payment's %v; want 2000, once", lost, f.payment(inv).DisputedLost)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.dispute_lost' AND target_id = $1`, inv.String()); n != 1 {
		t.Errorf("%d dispute_lost audit entries; want 1", n)
	}
	if n := f.hooks.count("payment.dispute_lost"); n != 2 {
		t.Errorf("payment.dispute_lost announced %d times; want 2", n)
	}
	if _, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.Zero, ""); !errors.Is(err, ErrOverRefund) {
		t.Errorf("Refund after the dispute took it all = %v; want ErrOverRefund", err)
	}
}

// A signed payment event names Veil's invoice in its metadata, but it
// is applied only if its amount, currency and customer are the
// attempt's: a charge of another customer that names this invoice, or
// the attempt's own charge with another amount, changes nothing.
func TestPaymentEventMustMatchAttempt(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	other := f.fake.AddCustomer(stripetest.PMSucceeds)
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "15.00")
	// The process dies before it records Stripe's answer: the attempt
	// waits with no PaymentIntent, for an event naming its invoice.
	f.stripe.setCrash(true)
	if _, err := f.svc.Collect(f.ctx, inv); err == nil {
		t.Fatal("Collect with the process dying = nil; want its error")
	}
	f.stripe.setCrash(false)
	pi := f.stripe.lastResult().ProviderPaymentID
	_, _, cus, _ := f.fake.PaymentIntent(pi)
	cent := metering.Money{Minor: 1, Currency: "EUR"}
	right := metering.Money{Minor: 1500, Currency: "EUR"}
	before := f.svc.cfg.Metrics.GetOrCreateCounter(mismatchedName("payment")).Get()
	for _, ev := range []metering.WebhookEvent{
		{ID: "evt_forged", ProviderPaymentID: "pi_forged", Amount: cent, ProviderCustomerID: other},
		{ID: "evt_other_customer", ProviderPaymentID: "pi_forged2", Amount: right, ProviderCustomerID: other},
		{ID: "evt_other_amount", ProviderPaymentID: pi, Amount: cent, ProviderCustomerID: cus},
		{ID: "evt_other_currency", ProviderPaymentID: pi, Amount: metering.Money{Minor: 1500, Currency: "USD"}, ProviderCustomerID: cus},
	} {
		ev.Type, ev.InvoiceID = metering.WebhookPaymentSucceeded, inv.String()
		f.apply(ev)
		if st := f.invoiceStatus(inv); st != "open" || f.payment(inv).Status == "succeeded" {
			t.Errorf("after %s: invoice %s, payment %s; want open, not succeeded", ev.ID, st, f.payment(inv).Status)
		}
	}
	if n := f.count(`SELECT count(*) FROM payment_attempts a JOIN payments p ON p.id = a.payment_id
		WHERE p.invoice_id = $1 AND a.provider_payment_id IS NOT NULL`, inv); n != 0 {
		t.Errorf("%d attempts took a provider id from a mismatched event; want 0", n)
	}
	if n := f.svc.cfg.Metrics.GetOrCreateCounter(mismatchedName("payment")).Get() - before; n != 4 {
		t.Errorf("mismatched payments counted %d; want 4", n)
	}
	f.apply(metering.WebhookEvent{ID: "evt_right", Type: metering.WebhookPaymentSucceeded, ProviderPaymentID: pi, Amount: right,
		ProviderCustomerID: cus, InvoiceID: inv.String()})
	if st := f.invoiceStatus(inv); st != "paid" {
		t.Errorf("after the matching event: invoice %s; want paid", st)
	}
}

// Against the real stripe-mock: a refund through the provider carries
// its id and settles from stripe-mock's answer.
func TestRefundStripeMock(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	mock := testenv.StripeMock(t)
	sp, err := stripepay.New(stripepay.Config{SecretKey: mock.Key, APIBase: mock.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := f.paid("20.00")
	f.stripe.PaymentProvider = sp
	rf, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("2.50"), "outage")
	if err != nil || rf.Amount.Minor != 250 {
		t.Fatalf("Refund through stripe-mock = %+v, %v", rf, err)
	}
	var providerID *string
	f.scan(&providerID, `SELECT provider_refund_id FROM payment_refunds WHERE id = $1`, rf.ID)
	if providerID == nil || *providerID == "" {
		t.Errorf("refund through stripe-mock has no provider id")
	}
}

// The payments cycle reconciles refunds too.
func TestCycleReconcilesRefunds(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, _ := f.paid("20.00")
	f.fake.DropAnswers("refunds", true)
	rf, _ := f.svc.Refund(f.ctx, f.provider, inv, decimal.Zero, "")
	f.fake.DropAnswers("refunds", false)
	f.age(inv, 2*time.Minute)
	rep, err := f.svc.RunCycle(f.ctx)
	if err != nil || rep.Refunds != 1 || f.refundStatus(rf.ID) != "succeeded" {
		t.Errorf("RunCycle = %+v, %v, refund %s; want one refund reconciled, succeeded", rep, err, f.refundStatus(rf.ID))
	}
}

// Reconciliation applies a PaymentIntent's status only if it is the
// attempt's own charge: of another customer, it changes nothing.
func TestReconcileMustMatchAttempt(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMProcessing), "15.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatal(err)
	}
	pi := f.stripe.lastResult().ProviderPaymentID
	f.fake.SetPaymentIntentStatus(pi, "succeeded")
	if _, err := f.pool.Exec(f.ctx, `UPDATE payment_attempts SET provider_customer_id = 'cus_someone_else' WHERE provider_payment_id = $1`, pi); err != nil {
		t.Fatal(err)
	}
	before := f.svc.cfg.Metrics.GetOrCreateCounter(mismatchedName("payment")).Get()
	f.clock.Advance(2 * time.Minute)
	if _, err := f.svc.Reconcile(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	if p := f.payment(inv); p.Status != "processing" || f.invoiceStatus(inv) != "open" {
		t.Errorf("after reconciling another customer's charge: payment %s, invoice %s; want processing, open", p.Status, f.invoiceStatus(inv))
	}
	if n := f.svc.cfg.Metrics.GetOrCreateCounter(mismatchedName("payment")).Get() - before; n < 1 {
		t.Errorf("mismatches counted %d; want at least 1", n)
	}
}

// A refund asked for before refunds carried their id, its answer lost:
// the repeat with the id is refused as another request under the key,
// and the repeat with the first call's own parameters gets its answer.
func TestRefundRepeatedWithFirstParameters(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, pi := f.paid("20.00")
	id := uuid.New()
	key := "veil-refund-" + id.String()
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO payment_refunds (id, payment_id, invoice_id, amount, currency, actor, idempotency_key)
		SELECT $1, id, invoice_id, 500, currency, 'prov', $2 FROM payments WHERE invoice_id = $3`, id, key, inv); err != nil {
		t.Fatal(err)
	}
	first, err := f.stripe.Refund(f.ctx, metering.RefundInput{ProviderPaymentID: pi, Amount: metering.Money{Minor: 500, Currency: "EUR"},
		IdempotencyKey: key})
	if err != nil {
		t.Fatal(err)
	}
	f.age(inv, 2*time.Minute)
	if _, err := f.svc.ReconcileRefunds(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	var got *string
	f.scan(&got, `SELECT provider_refund_id FROM payment_refunds WHERE id = $1`, id)
	if f.refundStatus(id) != "succeeded" || got == nil || *got != first.ProviderRefundID || f.fake.Creates("refunds") != 1 {
		t.Errorf("after reconciliation: %s, %v, %d refunds at Stripe; want succeeded as %s, one refund",
			f.refundStatus(id), got, f.fake.Creates("refunds"), first.ProviderRefundID)
	}
}
