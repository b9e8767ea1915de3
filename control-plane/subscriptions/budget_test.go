package subscriptions_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// TestHardBudgetInTheRecord: BudgetChanged makes the record stale and
// queues its sync in the caller's transaction; the sync writes the hard
// budget with the plan version's terms, and rates it at once, so a budget
// the period already exceeds blocks, a raised one lifts the block, a soft
// one leaves the record; reconciliation rewrites a budget that drifted.
func TestHardBudgetInTheRecord(t *testing.T) {
	f := setup(t)
	var meter uuid.UUID
	if err := f.Pool.QueryRow(f.Ctx, `INSERT INTO meters (api_id, slug, aggregation, field, filter_methods, filter_routes, filter_status_classes)
		VALUES ($1, 'calls', 'count', '', '{}', '{}', '{}') RETURNING id`, f.APIID).Scan(&meter); err != nil {
		t.Fatal(err)
	}
	plan, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Metered", Slug: "metered", Terms: subscriptions.Terms{Currency: "USD", BaseFee: decimal.NewFromInt(1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Pool.Exec(f.Ctx, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price)
		VALUES ($1, $2, 'per_unit', 0.5)`, plan.Current.ID, meter); err != nil {
		t.Fatal(err)
	}
	consumer := identity.Actor{Subject: "budget-user", Role: identity.RoleConsumer, OrgID: f.Org("budget", "budget-user", "budget@example.test")}
	sub, err := f.Svc.Subscribe(f.Ctx, consumer, subscriptions.SubscribeInput{PlanID: plan.ID})
	if err != nil {
		t.Fatal(err)
	}
	id := sub.ID.String()
	// 1.00 + 8 calls × 0.50 = 5.00 so far.
	counter := enforcement.PeriodCounterName(id, sub.CurrentPeriodStart)
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hset().Key(counter).FieldValue().FieldValue("m:calls", "8").Build()).Error(); err != nil {
		t.Fatal(err)
	}

	changed := func(set string, args ...any) {
		t.Helper()
		tx, err := f.Pool.Begin(f.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(f.Ctx)
		if _, err := tx.Exec(f.Ctx, set, args...); err != nil {
			t.Fatal(err)
		}
		var before int64
		if err := tx.QueryRow(f.Ctx, `SELECT sync_version FROM subscriptions WHERE id = $1`, sub.ID).Scan(&before); err != nil {
			t.Fatal(err)
		}
		if err := f.Svc.BudgetChanged(f.Ctx, tx, sub.ID); err != nil {
			t.Fatal(err)
		}
		var after, queued int64
		if err := tx.QueryRow(f.Ctx, `SELECT (SELECT sync_version FROM subscriptions WHERE id = $1),
			(SELECT count(*) FROM river_job WHERE kind = 'subscription_sync' AND args->>'subscription_id' = $1::text)`, sub.ID).Scan(&after, &queued); err != nil {
			t.Fatal(err)
		}
		if after != before+1 || queued == 0 {
			t.Fatalf("BudgetChanged: sync_version %d → %d, %d syncs queued; want bumped by one and a sync queued", before, after, queued)
		}
		if err := tx.Commit(f.Ctx); err != nil {
			t.Fatal(err)
		}
		if err := f.Svc.SyncSubscription(f.Ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
	}
	blocked := func() bool {
		t.Helper()
		err := f.Redis.Do(f.Ctx, f.Redis.B().Get().Key(enforcement.BlockName(id)).Build()).Error()
		if err != nil && !rueidis.IsRedisNil(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	record := func() enforcement.SubscriptionRecord {
		t.Helper()
		rec, err := f.Store.GetSubscription(f.Ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}

	changed(`INSERT INTO budgets (organization_id, subscription_id, currency, amount, hard) VALUES ($1, $2, 'USD', 5, true)`, consumer.OrgID, sub.ID)
	rec := record()
	if b := rec.Budget; b == nil || !b.Amount.Equal(decimal.NewFromInt(5)) || b.Currency != "USD" || !b.BaseFee.Equal(decimal.NewFromInt(1)) ||
		len(b.Charges) != 1 || b.Charges[0].Meter != "calls" || b.Charges[0].Model != "per_unit" || !b.Charges[0].UnitPrice.Equal(decimal.RequireFromString("0.5")) {
		t.Fatalf("record budget = %+v; want 5 USD with the plan's base fee 1 and 0.50 per call", rec.Budget)
	}
	if !blocked() {
		t.Fatal("a budget of 5.00 with 5.00 spent: not blocked")
	}

	changed(`UPDATE budgets SET amount = 6 WHERE subscription_id = $1`, sub.ID)
	if blocked() {
		t.Fatal("raised to 6.00: still blocked")
	}

	// Reconciliation finds a budget that drifted.
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hset().Key(enforcement.SubscriptionName(id)).FieldValue().FieldValue("budget", "").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	rep, err := f.Svc.ReconcileKeys(f.Ctx)
	if err != nil || rep.SubscriptionsDifferent != 1 || len(rep.Unhealed) != 0 {
		t.Fatalf("ReconcileKeys = %+v, %v; want one subscription different, healed", rep, err)
	}
	if b := record().Budget; b == nil || !b.Amount.Equal(decimal.NewFromInt(6)) {
		t.Fatalf("after reconciliation: budget %+v; want 6", b)
	}

	changed(`UPDATE budgets SET amount = 5, hard = false WHERE subscription_id = $1`, sub.ID)
	if rec := record(); rec.Budget != nil || blocked() {
		t.Fatalf("a soft budget: record budget %+v, blocked %v; want none, not blocked", rec.Budget, blocked())
	}
}

// meteredPlan creates a USD plan of the fixture's API charging price per
// call of the meter "calls" (created by the first call), with trialDays.
func meteredPlan(t *testing.T, f *fixture, slug, price string, trialDays int) subscriptions.Plan {
	t.Helper()
	var meter uuid.UUID
	if err := f.Pool.QueryRow(f.Ctx, `INSERT INTO meters (api_id, slug, aggregation, field, filter_methods, filter_routes, filter_status_classes)
		VALUES ($1, 'calls', 'count', '', '{}', '{}', '{}')
		ON CONFLICT (api_id, slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id`, f.APIID).Scan(&meter); err != nil {
		t.Fatal(err)
	}
	plan, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: slug, Slug: slug, Terms: subscriptions.Terms{Currency: "USD", TrialDays: trialDays},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Pool.Exec(f.Ctx, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price)
		VALUES ($1, $2, 'per_unit', $3)`, plan.Current.ID, meter, price); err != nil {
		t.Fatal(err)
	}
	return plan
}

// TestHardBudgetAcrossPlanChangesAndTrials: after a downgrade the record
// carries the earlier version's terms, so a budget the period exceeded
// under them stays blocked; a trialing subscription's record carries no
// budget (the trial is not billed).
func TestHardBudgetAcrossPlanChangesAndTrials(t *testing.T) {
	f := setup(t)
	dear, cheap := meteredPlan(t, f, "dear", "0.5", 0), meteredPlan(t, f, "cheap", "0.001", 0)
	consumer := identity.Actor{Subject: "budget-down", Role: identity.RoleConsumer, OrgID: f.Org("budget-down", "budget-down", "down@example.test")}
	sub, err := f.Svc.Subscribe(f.Ctx, consumer, subscriptions.SubscribeInput{PlanID: dear.ID})
	if err != nil {
		t.Fatal(err)
	}
	id := sub.ID.String()
	// 30 calls: 15.00 under the dear version, 0.03 under the cheap one.
	counter := enforcement.PeriodCounterName(id, sub.CurrentPeriodStart)
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hset().Key(counter).FieldValue().FieldValue("m:calls", "30").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Pool.Exec(f.Ctx, `INSERT INTO budgets (organization_id, subscription_id, currency, amount, hard) VALUES ($1, $2, 'USD', 10, true)`,
		consumer.OrgID, sub.ID); err != nil {
		t.Fatal(err)
	}
	blocked := func() bool {
		t.Helper()
		err := f.Redis.Do(f.Ctx, f.Redis.B().Get().Key(enforcement.BlockName(id)).Build()).Error()
		if err != nil && !rueidis.IsRedisNil(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	if err := f.Svc.SyncSubscription(f.Ctx, sub.ID); err != nil || !blocked() {
		t.Fatalf("15.00 spent of a hard budget of 10: sync %v, blocked %v; want blocked", err, blocked())
	}
	f.Clock.Advance(time.Hour)
	if _, err := f.Svc.ChangePlan(f.Ctx, consumer, sub.ID, subscriptions.ChangePlanInput{PlanID: cheap.ID}); err != nil {
		t.Fatal(err)
	}
	if err := f.Svc.SyncSubscription(f.Ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	rec, err := f.Store.GetSubscription(f.Ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if b := rec.Budget; b == nil || !b.Charges[0].UnitPrice.Equal(decimal.RequireFromString("0.001")) || len(b.Earlier) != 1 ||
		!b.Earlier[0].Charges[0].UnitPrice.Equal(decimal.RequireFromString("0.5")) {
		t.Fatalf("record budget after the downgrade = %+v; want the cheap terms and the dear ones as earlier", rec.Budget)
	}
	if !blocked() {
		t.Error("the downgrade lifted a hard budget the period already exceeded")
	}

	trial := meteredPlan(t, f, "trial", "0.5", 14)
	trialing := identity.Actor{Subject: "budget-trial", Role: identity.RoleConsumer, OrgID: f.Org("budget-trial", "budget-trial", "trial@example.test")}
	ts, err := f.Svc.Subscribe(f.Ctx, trialing, subscriptions.SubscribeInput{PlanID: trial.ID})
	if err != nil || ts.Status != subscriptions.StatusTrialing {
		t.Fatalf("Subscribe(trial plan) = %+v, %v; want trialing", ts, err)
	}
	if _, err := f.Pool.Exec(f.Ctx, `INSERT INTO budgets (organization_id, subscription_id, currency, amount, hard) VALUES ($1, $2, 'USD', 1, true)`,
		trialing.OrgID, ts.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.Svc.SyncSubscription(f.Ctx, ts.ID); err != nil {
		t.Fatal(err)
	}
	if rec, err := f.Store.GetSubscription(f.Ctx, ts.ID.String()); err != nil || rec.Budget != nil {
		t.Errorf("trialing record budget = %+v, %v; want none", rec.Budget, err)
	}
}

// TestHardBudgetAfterATrial: the calls counted during a trial that ended
// inside the period are left out of the hard budget's cost: the trial is
// not billed.
func TestHardBudgetAfterATrial(t *testing.T) {
	f := setup(t)
	plan := meteredPlan(t, f, "trial", "0.5", 3)
	consumer := identity.Actor{Subject: "budget-trial", Role: identity.RoleConsumer, OrgID: f.Org("budget-trial", "budget-trial", "trial@example.test")}
	sub, err := f.Svc.Subscribe(f.Ctx, consumer, subscriptions.SubscribeInput{PlanID: plan.ID})
	if err != nil || sub.Status != subscriptions.StatusTrialing || sub.TrialEndsAt == nil || !sub.TrialEndsAt.Before(sub.CurrentPeriodEnd) {
		t.Fatalf("Subscribe(trial plan) = %+v, %v; want trialing, the trial ending inside the period", sub, err)
	}
	id := sub.ID.String()
	// 40 calls in the trial: 20.00 if they were billed.
	counter := enforcement.PeriodCounterName(id, sub.CurrentPeriodStart)
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hset().Key(counter).FieldValue().FieldValue("m:calls", "40").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Pool.Exec(f.Ctx, `INSERT INTO budgets (organization_id, subscription_id, currency, amount, hard) VALUES ($1, $2, 'USD', 10, true)`,
		consumer.OrgID, sub.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.Svc.SyncSubscription(f.Ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	if rec, err := f.Store.GetSubscription(f.Ctx, id); err != nil || rec.Budget != nil {
		t.Fatalf("trialing record budget = %+v, %v; want none", rec.Budget, err)
	}

	f.Clock.Set(sub.TrialEndsAt.Add(time.Minute))
	if rep, err := f.Svc.RunMaintenance(f.Ctx); err != nil || rep.TrialsEnded != 1 {
		t.Fatalf("RunMaintenance = %+v, %v; want the trial ended", rep, err)
	}
	if err := f.Svc.SyncSubscription(f.Ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	st, err := f.Store.EnforceBudget(f.Ctx, id, metering.BudgetCost)
	if err != nil {
		t.Fatal(err)
	}
	if st.Budget == nil || !st.Cost.IsZero() || st.Blocked {
		t.Errorf("after the trial: budget %+v rated %s, blocked %v; want rated 0.00 (no base fee, the trial's calls left out)", st.Budget, st.Cost, st.Blocked)
	}
	// 20 billed calls: 10.00 reaches the budget.
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hset().Key(counter).FieldValue().FieldValue("m:calls", "60").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if st, err = f.Store.EnforceBudget(f.Ctx, id, metering.BudgetCost); err != nil || !st.Cost.Equal(decimal.NewFromInt(10)) || !st.Blocked {
		t.Errorf("20 billed calls: rated %s, %v, blocked %v; want 10.00, blocked", st.Cost, err, st.Blocked)
	}
}
