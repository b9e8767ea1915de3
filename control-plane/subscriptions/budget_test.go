package subscriptions_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
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
