package payments

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// A full refund to the credit balance, then a cash refund in Stripe's
// dashboard: the cash refund is a fact and is recorded whole, and the
// payment, refunded twice over, is flagged, logged and counted instead of
// the cash being dropped.
func TestDashboardRefundAfterCreditRefund(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	f.svc.cfg.Credits = &credits{}
	inv, pi := f.paid("20.00")
	if _, err := f.svc.RefundToCredit(f.ctx, f.provider, inv, decimal.Zero, "goodwill"); err != nil {
		t.Fatal(err)
	}
	re := f.fake.AddDashboardRefund(pi, 2000)
	f.apply(metering.WebhookEvent{ID: "evt_dash_credit", Type: metering.WebhookRefundSucceeded, ProviderPaymentID: pi,
		ProviderRefundID: re["id"].(string), Amount: metering.Money{Minor: 2000, Currency: "EUR"}})
	var cash int64
	f.scan(&cash, `SELECT COALESCE(sum(amount), 0) FROM payment_refunds WHERE invoice_id = $1 AND external AND status = 'succeeded'`, inv)
	if cash != 2000 {
		t.Errorf("cash refunded in the dashboard recorded as %d; want 2000", cash)
	}
	if p := f.payment(inv); p.Refunded.Minor != 4000 {
		t.Errorf("payment refunded %d; want 4000 (credit and cash)", p.Refunded.Minor)
	}
	var reason string
	f.scan(&reason, `SELECT attention_reason FROM payments WHERE invoice_id = $1`, inv)
	if reason != reasonOverRefunded {
		t.Errorf("attention_reason %q; want %q", reason, reasonOverRefunded)
	}
	if n := f.svc.cfg.Metrics.GetOrCreateCounter(overRefundedName).Get(); n != 1 {
		t.Errorf("over-refunded counter %d; want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.over_refunded' AND target_id = $1`, inv.String()); n != 1 {
		t.Errorf("%d over-refunded audit entries; want 1", n)
	}
	if _, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("0.01"), ""); err == nil {
		t.Error("a refund of a payment refunded twice over was accepted")
	}
}

// A Veil refund whose call never reached Stripe is pending; a refund of
// the whole charge in the dashboard is recorded whole all the same, and
// the pending one then fails as never made: the cash stays counted.
func TestDashboardRefundWhileVeilRefundPending(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, pi := f.paid("20.00")
	f.fake.FailNext("refunds", http.StatusInternalServerError)
	rf, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.Zero, "")
	if err == nil || rf.Status != "pending" {
		t.Fatalf("Refund answered 500 = %+v, %v; want pending and an error", rf, err)
	}
	re := f.fake.AddDashboardRefund(pi, 2000)
	f.apply(metering.WebhookEvent{ID: "evt_dash_pending", Type: metering.WebhookRefundSucceeded, ProviderPaymentID: pi,
		ProviderRefundID: re["id"].(string), Amount: metering.Money{Minor: 2000, Currency: "EUR"}})
	if p := f.payment(inv); p.Refunded.Minor != 2000 {
		t.Fatalf("payment refunded %d after the dashboard's refund; want 2000", p.Refunded.Minor)
	}
	f.age(inv, keyLifetime+time.Hour)
	if _, err := f.svc.ReconcileRefunds(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	if st := f.refundStatus(rf.ID); st != "failed" {
		t.Errorf("Veil's refund never made is %s; want failed", st)
	}
	if p := f.payment(inv); p.Refunded.Minor != 2000 {
		t.Errorf("payment refunded %d at the end; want 2000", p.Refunded.Minor)
	}
	var reason string
	f.scan(&reason, `SELECT attention_reason FROM payments WHERE invoice_id = $1`, inv)
	if reason != "" {
		t.Errorf("attention_reason %q of a payment refunded once; want none", reason)
	}
}

// A refund Stripe reports failed after it had succeeded (the card's bank
// could not return it) becomes failed once, with failed_at: the payment
// no longer counts it, and the change is audited and announced.
func TestRefundFailedAfterSucceeded(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, pi := f.paid("20.00")
	rf, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("20"), "")
	if err != nil || rf.Status != "succeeded" {
		t.Fatalf("Refund = %+v, %v", rf, err)
	}
	var prid string
	f.scan(&prid, `SELECT provider_refund_id FROM payment_refunds WHERE id = $1`, rf.ID)
	f.fake.SetRefundStatus(prid, "failed")
	f.clock.Advance(48 * time.Hour)
	for _, id := range []string{"evt_rf_failed", "evt_rf_updated"} {
		f.apply(metering.WebhookEvent{ID: id, Type: metering.WebhookRefundFailed, ProviderPaymentID: pi,
			ProviderRefundID: prid, Amount: metering.Money{Minor: 2000, Currency: "EUR"}, RefundID: rf.ID.String(),
			Reason: "expired_or_canceled_card"})
	}
	if st := f.refundStatus(rf.ID); st != "failed" {
		t.Errorf("refund %s after refund.failed; want failed", st)
	}
	if p := f.payment(inv); p.Refunded.Minor != 0 {
		t.Errorf("payment refunded %d after its refund failed; want 0", p.Refunded.Minor)
	}
	var failedAt time.Time
	f.scan(&failedAt, `SELECT failed_at FROM payment_refunds WHERE id = $1`, rf.ID)
	if !failedAt.Equal(f.clock.Now()) {
		t.Errorf("failed_at %s; want the service clock's %s", failedAt, f.clock.Now())
	}
	if n := f.hooks.count("payment.refund_failed"); n != 2 {
		t.Errorf("payment.refund_failed announced %d times; want 2 (issuer and customer, once)", n)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.refund_failed' AND target_id = $1`, inv.String()); n != 1 {
		t.Errorf("%d refund-failed audit entries; want 1", n)
	}
	// The money is back: it can be refunded again.
	if _, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("20"), ""); err != nil {
		t.Errorf("Refund after the first failed = %v", err)
	}
}

// A refund's succeeded_at is the service clock's, written once; the
// reconciliation's touch moves only pending refunds.
func TestRefundSucceededAtWrittenOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, _ := f.paid("20.00")
	rf, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("5"), "")
	if err != nil || rf.Status != "succeeded" {
		t.Fatalf("Refund = %+v, %v", rf, err)
	}
	var at, updated time.Time
	f.scan(&at, `SELECT succeeded_at FROM payment_refunds WHERE id = $1`, rf.ID)
	if !at.Equal(f.clock.Now()) {
		t.Errorf("succeeded_at %s; want the service clock's %s", at, f.clock.Now())
	}
	f.scan(&updated, `SELECT updated_at FROM payment_refunds WHERE id = $1`, rf.ID)
	if err := db.New(f.pool).RefundTouch(f.ctx, rf.ID); err != nil {
		t.Fatal(err)
	}
	var after time.Time
	f.scan(&after, `SELECT updated_at FROM payment_refunds WHERE id = $1`, rf.ID)
	if !after.Equal(updated) {
		t.Errorf("touching a succeeded refund moved updated_at from %s to %s", updated, after)
	}
}

// voidedStray collects an invoice voided while its charge is under way,
// so that the charge is a stray one Veil refunds, and returns the
// invoice and the charge.
func (f *fixture) voidedStray() (uuid.UUID, string) {
	f.t.Helper()
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "12.00")
	d := &during{PaymentProvider: f.stripe, during: func() {
		f.voidInvoice(inv)
		if err := f.svc.InvoiceClosed(f.ctx, inv, "void"); err != nil {
			f.t.Errorf("InvoiceClosed during the call = %v", err)
		}
	}}
	f.svc.cfg.Providers["stripe"] = d
	_, _ = f.svc.Collect(f.ctx, inv)
	f.svc.cfg.Providers["stripe"] = f.stripe
	return inv, f.stripe.lastResult().ProviderPaymentID
}

// A stray charge's refund carries its Veil id; once its key has expired
// it is looked for among the charge's refunds before being repeated, so
// a refund made with its answer lost is recorded, not made again.
func TestStrayRefundListedAfterKeyExpired(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	f.fake.DropAnswers("refunds", true)
	inv, pi := f.voidedStray()
	f.fake.DropAnswers("refunds", false)
	var id uuid.UUID
	f.scan(&id, `SELECT id FROM payment_refunds WHERE invoice_id = $1 AND stray_attempt_id IS NOT NULL`, inv)
	if got := f.strayRefund(inv); got != "void/pending/"+pi {
		t.Fatalf("stray refund with its answer lost = %q; want void/pending/%s", got, pi)
	}
	if list := f.refundsAt(pi); len(list) != 1 || list[0].RefundID != id.String() {
		t.Fatalf("refunds at the provider = %+v; want one carrying %s", list, id)
	}
	f.age(inv, keyLifetime+time.Hour)
	f.fake.ForgetKeys()
	_, _ = f.svc.Reconcile(f.ctx, 10)
	if got := f.strayRefund(inv); got != "void/succeeded/"+pi {
		t.Errorf("stray refund after its key expired = %q; want void/succeeded/%s", got, pi)
	}
	if n := f.fake.Creates("refunds"); n != 1 {
		t.Errorf("%d refunds made at the provider; want 1", n)
	}
}

// A stray charge's refund the provider answered pending is settled by the
// refund sync once the provider reports it succeeded.
func TestStrayRefundPendingSettled(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	f.fake.SetRefundStatus("", "pending")
	inv, pi := f.voidedStray()
	if got := f.strayRefund(inv); got != "void/pending/"+pi {
		t.Fatalf("stray refund answered pending = %q; want void/pending/%s", got, pi)
	}
	list := f.refundsAt(pi)
	if len(list) != 1 {
		t.Fatalf("refunds at the provider = %+v; want one", list)
	}
	f.fake.SetRefundStatus(list[0].ProviderRefundID, "succeeded")
	f.age(inv, 2*unsettledAfter)
	if _, err := f.svc.ReconcileRefunds(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	if got := f.strayRefund(inv); got != "void/succeeded/"+pi {
		t.Errorf("stray refund after the sync = %q; want void/succeeded/%s", got, pi)
	}
	if p := f.payment(inv); p.Refunded.Minor != 0 {
		t.Errorf("payment refunded %d; a stray charge's refund is not the payment's", p.Refunded.Minor)
	}
}

// A chargeback lost after a refund to the credit balance: the customer
// holds the credit and the money, which is flagged for a person rather
// than silently taken from the credit.
func TestDisputeLostAfterCreditRefund(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	f.svc.cfg.Credits = &credits{}
	inv, pi := f.paid("20.00")
	if _, err := f.svc.RefundToCredit(f.ctx, f.provider, inv, decimal.RequireFromString("5"), "goodwill"); err != nil {
		t.Fatal(err)
	}
	all := metering.Money{Minor: 2000, Currency: "EUR"}
	f.apply(metering.WebhookEvent{ID: "evt_do_c", Type: metering.WebhookDisputeOpened, ProviderPaymentID: pi, ProviderDisputeID: "dp_c",
		Amount: all, Status: "needs_response"})
	f.apply(metering.WebhookEvent{ID: "evt_dc_c", Type: metering.WebhookDisputeClosed, ProviderPaymentID: pi, ProviderDisputeID: "dp_c",
		Amount: all, Status: "lost"})
	var reason string
	f.scan(&reason, `SELECT attention_reason FROM payments WHERE invoice_id = $1`, inv)
	if reason != reasonOverRefunded {
		t.Errorf("attention_reason %q after a chargeback of a payment refunded to credit; want %q", reason, reasonOverRefunded)
	}
	if n := f.svc.cfg.Metrics.GetOrCreateCounter(overRefundedName).Get(); n != 1 {
		t.Errorf("over-refunded counter %d; want 1", n)
	}
	// The announcement is the payment as the transaction left it, the
	// flag included.
	d := f.hooks.last(t, "payment.dispute_lost")
	if d["attention_reason"] != reasonOverRefunded || d["amount_refunded"] != "5.00" || d["amount_disputed_lost"] != "20.00" {
		t.Errorf("payment.dispute_lost data = %v; want attention_reason %s, amount_refunded 5.00, amount_disputed_lost 20.00",
			d, reasonOverRefunded)
	}
}

// totalIn is the statement's total in EUR of the month t is in.
func (f *fixture) totalIn(t time.Time) PayoutTotal {
	f.t.Helper()
	po, err := f.svc.Payouts(f.ctx, f.provider, f.issuer, t.Format(MonthLayout))
	if err != nil {
		f.t.Fatal(err)
	}
	for _, tot := range po.Totals {
		if tot.Currency == "EUR" {
			return tot
		}
	}
	return PayoutTotal{}
}

// The payouts statement dates a refund by its succeeded_at and adds a
// refund Stripe failed after it succeeded back in the month it failed,
// leaving the month it succeeded as it was stated.
func TestPayoutsRefundFailedNextMonth(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv, pi := f.paid("20.00")
	rf, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("20"), "")
	if err != nil || rf.Status != "succeeded" {
		t.Fatalf("Refund = %+v, %v", rf, err)
	}
	march := f.clock.Now()
	if got := f.totalIn(march).Refunded; !got.Equal(decimal.NewFromInt(20)) {
		t.Errorf("March refunded %s; want 20", got)
	}
	var prid string
	f.scan(&prid, `SELECT provider_refund_id FROM payment_refunds WHERE id = $1`, rf.ID)
	f.fake.SetRefundStatus(prid, "failed")
	f.clock.Set(march.AddDate(0, 1, 0))
	f.apply(metering.WebhookEvent{ID: "evt_rf_failed_apr", Type: metering.WebhookRefundFailed, ProviderPaymentID: pi,
		ProviderRefundID: prid, Amount: metering.Money{Minor: 2000, Currency: "EUR"}, RefundID: rf.ID.String()})
	if got := f.totalIn(march).Refunded; !got.Equal(decimal.NewFromInt(20)) {
		t.Errorf("March refunded %s after the refund failed in April; want 20 still", got)
	}
	if got := f.totalIn(f.clock.Now()).Refunded; !got.Equal(decimal.NewFromInt(-20)) {
		t.Errorf("April refunded %s; want -20 (the failed refund added back)", got)
	}
}

// A chargeback counts in the payouts statement when Stripe withdraws its
// amount and, negated, when it is won; an inquiry counts nothing until
// it becomes a chargeback, and a lost one nothing more.
func TestPayoutsDisputeWithdrawnAndWon(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	_, pi := f.paid("20.00")
	_, pi2 := f.paid("30.00")
	march := f.clock.Now()
	all := metering.Money{Minor: 2000, Currency: "EUR"}
	f.apply(metering.WebhookEvent{ID: "evt_dw_1", Type: metering.WebhookDisputeOpened, ProviderPaymentID: pi, ProviderDisputeID: "dp_w",
		Amount: all, Status: "warning_needs_response"})
	if got := f.totalIn(march).DisputesLost; !got.IsZero() {
		t.Errorf("an inquiry counted %s; want 0", got)
	}
	f.apply(metering.WebhookEvent{ID: "evt_dw_2", Type: metering.WebhookDisputeUpdated, ProviderPaymentID: pi, ProviderDisputeID: "dp_w",
		Amount: all, Status: "needs_response"})
	other := metering.Money{Minor: 3000, Currency: "EUR"}
	f.apply(metering.WebhookEvent{ID: "evt_dl_1", Type: metering.WebhookDisputeOpened, ProviderPaymentID: pi2, ProviderDisputeID: "dp_l2",
		Amount: other, Status: "needs_response"})
	if got := f.totalIn(march).DisputesLost; !got.Equal(decimal.NewFromInt(50)) {
		t.Errorf("March disputes %s; want 50 (both chargebacks withdrawn)", got)
	}
	f.clock.Set(march.AddDate(0, 1, 0))
	f.apply(metering.WebhookEvent{ID: "evt_dw_3", Type: metering.WebhookDisputeClosed, ProviderPaymentID: pi, ProviderDisputeID: "dp_w",
		Amount: all, Status: "won"})
	f.apply(metering.WebhookEvent{ID: "evt_dl_2", Type: metering.WebhookDisputeClosed, ProviderPaymentID: pi2, ProviderDisputeID: "dp_l2",
		Amount: other, Status: "lost"})
	if got := f.totalIn(march).DisputesLost; !got.Equal(decimal.NewFromInt(50)) {
		t.Errorf("March disputes %s after April's closes; want 50 still", got)
	}
	if got := f.totalIn(f.clock.Now()).DisputesLost; !got.Equal(decimal.NewFromInt(-20)) {
		t.Errorf("April disputes %s; want -20 (the won one given back, the lost one not counted again)", got)
	}
}

// Against the real stripe-mock: a stray charge's refund past its key's
// lifetime lists the charge's refunds, then is sent with its id.
func TestStrayRefundStripeMock(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	f.fake.DropAnswers("refunds", true)
	inv, _ := f.voidedStray()
	f.fake.DropAnswers("refunds", false)
	mock := testenv.StripeMock(t)
	sp, err := stripepay.New(stripepay.Config{SecretKey: mock.Key, APIBase: mock.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	f.stripe.PaymentProvider = sp
	f.age(inv, keyLifetime+time.Hour)
	_, _ = f.svc.Reconcile(f.ctx, 10)
	var st string
	var providerID *string
	f.scan(&providerID, `SELECT provider_refund_id FROM payment_refunds WHERE invoice_id = $1 AND stray_attempt_id IS NOT NULL`, inv)
	f.scan(&st, `SELECT status FROM payment_refunds WHERE invoice_id = $1 AND stray_attempt_id IS NOT NULL`, inv)
	if st != "succeeded" || providerID == nil || *providerID == "" {
		t.Errorf("stray refund through stripe-mock = %s, %v; want succeeded with a provider id", st, providerID)
	}
}
