package payments

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/subscriptions/subscriptionstest"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

var _ Dunning = (*subscriptions.Service)(nil)

// dunFixture is the subscriptions service's fixture (a provider's API, a
// consumer's subscription to it, the gateway's Redis records) with a
// payments service dunning through it: the consumer's card is declined,
// one retry after a day, a grace of 3 days.
type dunFixture struct {
	*subscriptionstest.Fixture
	svc *Service
	inv uuid.UUID
	pay Payment
}

func dunSetup(t *testing.T) *dunFixture {
	t.Helper()
	sf := subscriptionstest.Setup(t)
	fake := stripetest.New(t)
	sp, err := stripepay.New(stripepay.Config{SecretKey: stripetest.Key, APIBase: fake.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Pool: sf.Pool, Logger: testenv.Logger(t), Now: sf.Clock.Now, Dunning: sf.Svc,
		Providers: map[string]metering.PaymentProvider{"stripe": sp}})
	if err != nil {
		t.Fatal(err)
	}
	f := &dunFixture{Fixture: sf, svc: svc}
	if err := svc.SetSettings(sf.Ctx, sf.Provider.OrgID, Settings{Provider: "stripe", RetryDays: []int32{1}, GraceDays: 3}); err != nil {
		t.Fatal(err)
	}
	ref := metering.CustomerRef{Provider: "stripe", ID: fake.AddCustomer(stripetest.PMDeclined)}
	if err := svc.SetCustomer(sf.Ctx, sf.Consumer.OrgID, ref, stripetest.PMDeclined); err != nil {
		t.Fatal(err)
	}
	f.inv = f.invoice()
	return f
}

// invoice makes an open invoice of the subscription, finalized now.
func (f *dunFixture) invoice() uuid.UUID {
	f.T.Helper()
	now := f.Clock.Now()
	var id uuid.UUID
	if err := f.Pool.QueryRow(f.Ctx, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency,
		period_start, period_end, subtotal, total, amount_due, finalized_at, due_at)
		VALUES ($1, $2, $3, 'open', $4, 'USD', $5, $6, $7, $7, $7, $6, $6) RETURNING id`,
		f.Provider.OrgID, f.Consumer.OrgID, f.Sub.ID, "INV-"+testenv.Suffix(), now.AddDate(0, -1, 0), now,
		decimal.RequireFromString("30.00")).Scan(&id); err != nil {
		f.T.Fatal(err)
	}
	return id
}

// exhaust collects the invoice and retries it once: both attempts are
// declined and the payment fails.
func (f *dunFixture) exhaust() {
	f.T.Helper()
	if got := f.status(); got != subscriptions.StatusActive {
		f.T.Fatalf("subscription before its invoice is collected = %s; want active", got)
	}
	f.pay = f.exhaustInvoice(f.inv)
}

func (f *dunFixture) exhaustInvoice(inv uuid.UUID) Payment {
	f.T.Helper()
	p, err := f.svc.Collect(f.Ctx, inv)
	if err != nil || p.Status != "pending" || p.NextAttemptAt == nil {
		f.T.Fatalf("Collect = %+v, %v; want pending with a retry", p, err)
	}
	before := f.status()
	f.Clock.Set(*p.NextAttemptAt)
	if got := f.status(); got != before {
		f.T.Fatalf("subscription after a first failed attempt = %s; want %s", got, before)
	}
	if p, err = f.svc.Retry(f.Ctx, p.ID); err != nil || p.Status != "failed" {
		f.T.Fatalf("Retry = %+v, %v; want failed", p, err)
	}
	return p
}

func (f *dunFixture) status() subscriptions.Status {
	f.T.Helper()
	sub, err := f.Svc.GetSubscription(f.Ctx, f.Consumer, f.Sub.ID)
	if err != nil {
		f.T.Fatal(err)
	}
	return sub.Status
}

// record syncs the subscription as its outbox job does and returns the
// gateway's record of it.
func (f *dunFixture) record() enforcement.SubscriptionRecord {
	f.T.Helper()
	if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
		f.T.Fatal(err)
	}
	r, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String())
	if err != nil {
		f.T.Fatal(err)
	}
	return r
}

func (f *dunFixture) escalate(at time.Time, wantSuspended, wantReactivated int) {
	f.T.Helper()
	s, r, err := f.svc.EscalateDunning(f.Ctx, at)
	if err != nil || s != wantSuspended || r != wantReactivated {
		f.T.Fatalf("EscalateDunning(%s) = %d suspended, %d reactivated, %v; want %d, %d", at, s, r, err, wantSuspended, wantReactivated)
	}
}

// succeed applies the provider's event that the last attempt succeeded
// after all (the customer paid), and returns when ApplyEvent returned.
func (f *dunFixture) succeed() time.Time {
	f.T.Helper()
	var pi, cus string
	var amount metering.Money
	if err := f.Pool.QueryRow(f.Ctx, `SELECT a.provider_payment_id, a.provider_customer_id, p.amount, p.currency
		FROM payment_attempts a JOIN payments p ON p.id = a.payment_id WHERE a.payment_id = $1
		ORDER BY a.attempt_no DESC LIMIT 1`, f.pay.ID).Scan(&pi, &cus, &amount.Minor, &amount.Currency); err != nil {
		f.T.Fatal(err)
	}
	ev := metering.WebhookEvent{ID: "evt_paid_" + testenv.Suffix(), Type: metering.WebhookPaymentSucceeded, Provider: "stripe",
		ProviderPaymentID: pi, InvoiceID: f.inv.String(), Amount: amount, ProviderCustomerID: cus}
	if err := f.svc.ApplyEvent(f.Ctx, "stripe", ev); err != nil {
		f.T.Fatal(err)
	}
	return time.Now()
}

func (f *dunFixture) count(sql string, args ...any) int {
	f.T.Helper()
	var n int
	if err := f.Pool.QueryRow(f.Ctx, sql, args...).Scan(&n); err != nil {
		f.T.Fatalf("%s: %v", sql, err)
	}
	return n
}

// The whole dunning: the last attempt failed makes the subscription
// past_due with the invoice in its record, the grace's end suspends it,
// and the payment makes it active again, its record written by the
// outbox job within a second of the payment (the figure is logged).
func TestDunningPastDueSuspendedPaid(t *testing.T) {
	t.Parallel()
	f := dunSetup(t)
	f.exhaust()
	failedAt := f.Clock.Now()
	if got := f.status(); got != subscriptions.StatusPastDue {
		t.Fatalf("subscription after the last attempt = %s; want past_due", got)
	}
	var number string
	if err := f.Pool.QueryRow(f.Ctx, `SELECT number FROM invoices WHERE id = $1`, f.inv).Scan(&number); err != nil {
		t.Fatal(err)
	}
	grace := failedAt.Add(3 * 24 * time.Hour)
	r := f.record()
	if r.Status != enforcement.SubscriptionPastDue || r.UnpaidInvoiceID != f.inv.String() || r.UnpaidInvoiceNumber != number || !r.SuspendAt.Equal(grace) {
		t.Errorf("record = %s, invoice %s %s, suspend at %s; want past_due, %s %s, %s",
			r.Status, r.UnpaidInvoiceID, r.UnpaidInvoiceNumber, r.SuspendAt, f.inv, number, grace)
	}
	for _, q := range []string{
		`SELECT count(*) FROM subscription_history WHERE subscription_id = $1 AND status = 'past_due'`,
		`SELECT count(*) FROM audit_log WHERE target_id = $1::text AND action = 'subscription.transition.past_due'`,
	} {
		if n := f.count(q, f.Sub.ID); n != 1 {
			t.Errorf("%s = %d; want 1", q, n)
		}
	}

	// A record that lost its invoice is written again by reconciliation.
	name := enforcement.SubscriptionName(f.Sub.ID.String())
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hdel().Key(name).Field("unpaid_invoice_id", "unpaid_invoice_number", "suspend_at").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if rep, err := f.Svc.ReconcileKeys(f.Ctx); err != nil || rep.SubscriptionsDifferent != 1 {
		t.Errorf("ReconcileKeys = %+v, %v; want the record without its invoice found different", rep, err)
	}
	if r, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String()); err != nil || r.UnpaidInvoiceID != f.inv.String() || !r.SuspendAt.Equal(grace) {
		t.Errorf("record after reconciliation = %+v, %v; want invoice %s, suspend at %s", r, err, f.inv, grace)
	}

	f.escalate(grace.Add(-time.Second), 0, 0)
	if got := f.status(); got != subscriptions.StatusPastDue {
		t.Fatalf("subscription a second before the grace ends = %s; want past_due", got)
	}
	f.Clock.Set(grace)
	f.escalate(grace, 1, 0)
	f.escalate(grace, 0, 0)
	if got := f.status(); got != subscriptions.StatusSuspended {
		t.Fatalf("subscription after the grace = %s; want suspended", got)
	}
	if r := f.record(); r.Status != enforcement.SubscriptionSuspended || r.UnpaidInvoiceID != f.inv.String() || !r.SuspendAt.IsZero() {
		t.Errorf("record = %s, invoice %s, suspend at %s; want suspended, %s, none", r.Status, r.UnpaidInvoiceID, r.SuspendAt, f.inv)
	}

	// The record is written by the subscription's outbox job, as in the
	// control plane: a River client that works it.
	workers := river.NewWorkers()
	river.AddWorker(workers, f.Svc.SyncSubscriptionWorker())
	jobs := testenv.River(t, f.Pool, workers, func(c *river.Config) { c.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}} })
	testenv.StartRiver(t, jobs)
	start := time.Now()
	applied := f.succeed()
	var took time.Duration
	testenv.Deadline(t, 10*time.Second, func() error {
		r, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String())
		if err != nil {
			return err
		}
		if r.Status != enforcement.SubscriptionActive || r.UnpaidInvoiceID != "" || r.UnpaidInvoiceNumber != "" {
			return fmt.Errorf("record %s, invoice %q; want active without an invoice", r.Status, r.UnpaidInvoiceID)
		}
		took = time.Since(applied)
		return nil
	})
	t.Logf("record active %s after ApplyEvent returned, %s after it was called", took, applied.Sub(start)+took)
	if took > time.Second {
		t.Errorf("record active %s after the payment; want within 1s", took)
	}
	if got := f.status(); got != subscriptions.StatusActive {
		t.Errorf("subscription after the payment = %s; want active", got)
	}
	if n := f.count(`SELECT count(*) FROM subscription_dunning WHERE subscription_id = $1`, f.Sub.ID); n != 0 {
		t.Errorf("%d dunning rows left; want 0", n)
	}
}

// A subscription an admin suspended while it was past_due stays
// suspended when the invoice is paid: the suspension is the admin's.
func TestDunningAdminSuspensionStays(t *testing.T) {
	t.Parallel()
	f := dunSetup(t)
	f.exhaust()
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin}
	if _, err := f.Svc.SetStatus(f.Ctx, admin, f.Sub.ID, subscriptions.StatusSuspended, "abuse"); err != nil {
		t.Fatal(err)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE target_id = $1::text AND action = 'subscription.dunning_ended' AND actor = 'admin-user'`, f.Sub.ID); n != 1 {
		t.Errorf("%d audit entries of the dunning an admin ended; want 1", n)
	}
	if r := f.record(); r.Status != enforcement.SubscriptionSuspended || r.UnpaidInvoiceID != "" {
		t.Errorf("record = %s, invoice %q; want suspended without an invoice (a 403, not a 402)", r.Status, r.UnpaidInvoiceID)
	}
	f.succeed()
	f.escalate(f.Clock.Now().Add(30*24*time.Hour), 0, 0)
	if got := f.status(); got != subscriptions.StatusSuspended {
		t.Errorf("subscription an admin suspended, after the payment = %s; want suspended", got)
	}
}

// An invoice written off in billing (uncollectible) ends the dunning at
// the next escalation: the subscription is active again.
func TestDunningEndsWhenWrittenOff(t *testing.T) {
	t.Parallel()
	f := dunSetup(t)
	f.exhaust()
	if _, err := f.Pool.Exec(f.Ctx, `UPDATE invoices SET status = 'uncollectible' WHERE id = $1`, f.inv); err != nil {
		t.Fatal(err)
	}
	f.escalate(f.Clock.Now().Add(30*24*time.Hour), 0, 1)
	if got := f.status(); got != subscriptions.StatusActive {
		t.Errorf("subscription after its invoice was written off = %s; want active", got)
	}
	if r := f.record(); r.Status != enforcement.SubscriptionActive || r.UnpaidInvoiceID != "" {
		t.Errorf("record = %s, invoice %q; want active without an invoice", r.Status, r.UnpaidInvoiceID)
	}
}

// Two invoices unpaid: paying the first leaves the subscription past_due
// for the second, with the grace from the second's failure (here just
// before the payment), its record naming it.
func TestDunningNextUnpaidInvoice(t *testing.T) {
	t.Parallel()
	f := dunSetup(t)
	f.exhaust()
	f.Clock.Advance(time.Hour)
	second := f.invoice()
	f.exhaustInvoice(second)
	if r := f.record(); r.Status != enforcement.SubscriptionPastDue || r.UnpaidInvoiceID != f.inv.String() {
		t.Fatalf("record = %s, invoice %s; want past_due for the first invoice %s", r.Status, r.UnpaidInvoiceID, f.inv)
	}
	f.succeed()
	paidAt := f.Clock.Now()
	if got := f.status(); got != subscriptions.StatusPastDue {
		t.Fatalf("subscription after the first invoice was paid = %s; want past_due for the second", got)
	}
	r := f.record()
	if r.Status != enforcement.SubscriptionPastDue || r.UnpaidInvoiceID != second.String() || !r.SuspendAt.Equal(paidAt.Add(3*24*time.Hour)) {
		t.Errorf("record = %s, invoice %s, suspend at %s; want past_due, %s, %s", r.Status, r.UnpaidInvoiceID, r.SuspendAt, second, paidAt.Add(3*24*time.Hour))
	}
}

// Two invoices unpaid, the first written off in billing: the escalation
// that ends its dunning dunns the subscription for the second, with the
// grace from the second's failure (here just before), rather than making
// it active with a debt unpaid.
func TestDunningNextUnpaidAfterWriteOff(t *testing.T) {
	t.Parallel()
	f := dunSetup(t)
	f.exhaust()
	f.Clock.Advance(time.Hour)
	second := f.invoice()
	f.exhaustInvoice(second)
	if _, err := f.Pool.Exec(f.Ctx, `UPDATE invoices SET status = 'uncollectible' WHERE id = $1`, f.inv); err != nil {
		t.Fatal(err)
	}
	f.escalate(f.Clock.Now(), 0, 0)
	if got := f.status(); got != subscriptions.StatusPastDue {
		t.Fatalf("subscription after the first invoice was written off = %s; want past_due for the second", got)
	}
	grace := f.Clock.Now().Add(3 * 24 * time.Hour)
	if r := f.record(); r.Status != enforcement.SubscriptionPastDue || r.UnpaidInvoiceID != second.String() || !r.SuspendAt.Equal(grace) {
		t.Errorf("record = %s, invoice %s, suspend at %s; want past_due, %s, %s", r.Status, r.UnpaidInvoiceID, r.SuspendAt, second, grace)
	}
	// Its grace ends: suspended for the second invoice.
	f.escalate(grace, 1, 0)
	if r := f.record(); r.Status != enforcement.SubscriptionSuspended || r.UnpaidInvoiceID != second.String() {
		t.Errorf("record after the grace = %s, invoice %s; want suspended for %s", r.Status, r.UnpaidInvoiceID, second)
	}
}

// Suspended for one invoice while another failed long ago: paying the
// first does not give the second a new grace. Past the second's own
// grace, the subscription stays suspended, for the second; within it,
// past_due until the second's failure plus the grace.
func TestDunningNextUnpaidKeepsItsGrace(t *testing.T) {
	t.Parallel()
	for _, past := range []bool{true, false} {
		f := dunSetup(t)
		f.exhaust()
		f.Clock.Advance(time.Hour)
		second := f.invoice()
		f.exhaustInvoice(second)
		failed := f.Clock.Now()
		f.escalate(failed.Add(3*24*time.Hour), 1, 0)
		if got := f.status(); got != subscriptions.StatusSuspended {
			t.Fatalf("subscription after the first invoice's grace = %s; want suspended", got)
		}
		if past {
			f.Clock.Set(failed.Add(5 * 24 * time.Hour))
		} else {
			f.Clock.Set(failed.Add(time.Hour))
		}
		f.succeed()
		r := f.record()
		switch {
		case past && (r.Status != enforcement.SubscriptionSuspended || r.UnpaidInvoiceID != second.String()):
			t.Errorf("paid after the second's grace: record = %s, invoice %s; want suspended for %s", r.Status, r.UnpaidInvoiceID, second)
		case !past && (r.Status != enforcement.SubscriptionPastDue || r.UnpaidInvoiceID != second.String() ||
			!r.SuspendAt.Equal(failed.Add(3*24*time.Hour))):
			t.Errorf("paid within the second's grace: record = %s, invoice %s, suspend at %s; want past_due for %s until %s",
				r.Status, r.UnpaidInvoiceID, r.SuspendAt, second, failed.Add(3*24*time.Hour))
		}
	}
}

// RegisterJobs registers the dunning escalation's worker and schedules it
// beside the payments cycle.
func TestRegisterJobsEscalatesDunning(t *testing.T) {
	t.Parallel()
	svc, err := New(Config{Pool: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	w := river.NewWorkers()
	if jobs := svc.RegisterJobs(w, JobSchedule{}); len(jobs) != 2 {
		t.Errorf("RegisterJobs = %d periodic jobs; want 2, the cycle and dunning_escalate", len(jobs))
	}
	if err := river.AddWorkerSafely(w, svc.EscalateDunningWorker()); err == nil {
		t.Error("the dunning_escalate worker was not registered by RegisterJobs")
	}
}
