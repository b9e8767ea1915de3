package subscriptions_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/validation"
)

// TestQuotaChangesTakeEffectNow: a credit, a reset and a plan change each
// rewrite the gateway's record with the new quota, and the write
// recomputes the block from the period's counter at once.
func TestQuotaChangesTakeEffectNow(t *testing.T) {
	f := setup(t)
	id := f.Sub.ID.String()
	counter := enforcement.PeriodCounterName(id, f.Sub.CurrentPeriodStart)
	setUsed := func(n int64) {
		t.Helper()
		if err := f.Redis.Do(f.Ctx, f.Redis.B().Hset().Key(counter).FieldValue().FieldValue("requests", strconv.FormatInt(n, 10)).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	// state syncs the subscription as its outbox job does and reads what
	// the gateway sees.
	state := func() (quota int64, hard, blocked bool) {
		t.Helper()
		if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
			t.Fatal(err)
		}
		rec, err := f.Store.GetSubscription(f.Ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		err = f.Redis.Do(f.Ctx, f.Redis.B().Get().Key(enforcement.BlockName(id)).Build()).Error()
		if err != nil && !rueidis.IsRedisNil(err) {
			t.Fatal(err)
		}
		return rec.QuotaRequests, rec.QuotaHard, err == nil
	}

	setUsed(1000)
	if q, hard, blocked := state(); q != 1000 || !hard || !blocked {
		t.Fatalf("at 1000 of a hard 1000: quota %d hard %v blocked %v; want 1000 true true", q, hard, blocked)
	}

	// The subscriber may not credit itself; the provider may.
	in := quota.AdjustmentInput{Requests: 500, Reason: "goodwill after an outage"}
	if _, err := quota.NewAdjuster(f.Pool, f.Svc).Adjust(f.Ctx, f.Consumer, f.Sub.ID, quota.AdjustCredit, in); !errors.Is(err, identity.ErrForbidden) {
		t.Fatalf("Adjust by the subscriber = %v; want ErrForbidden", err)
	}
	member := identity.Actor{Subject: "provider-consumer", Role: identity.RoleConsumer, OrgID: f.Provider.OrgID}
	if _, err := quota.NewAdjuster(f.Pool, f.Svc).Adjust(f.Ctx, member, f.Sub.ID, quota.AdjustCredit, in); !errors.Is(err, identity.ErrForbidden) {
		t.Fatalf("Adjust by a consumer-role member of the provider = %v; want ErrForbidden", err)
	}
	var verr *validation.Error
	if _, err := quota.NewAdjuster(f.Pool, f.Svc).Adjust(f.Ctx, f.Provider, f.Sub.ID, quota.AdjustCredit, quota.AdjustmentInput{Requests: 0, Reason: " "}); !errors.As(err, &verr) || len(verr.Fields) != 2 {
		t.Fatalf("Adjust(0 requests, blank reason) = %v; want two field errors", err)
	}
	adj, err := quota.NewAdjuster(f.Pool, f.Svc).Adjust(f.Ctx, f.Provider, f.Sub.ID, quota.AdjustCredit, in)
	if err != nil || adj.Requests != 500 || adj.Limit != 1500 || adj.UsedAtChange != 1000 {
		t.Fatalf("Adjust(credit 500) = %+v, %v; want 500 added, limit 1500, used 1000", adj, err)
	}
	if q, _, blocked := state(); q != 1500 || blocked {
		t.Fatalf("after a credit of 500: quota %d blocked %v; want 1500 and unblocked", q, blocked)
	}

	// A reset makes the remaining quota the plan's whole quota again.
	// The processors count on and block at 1500, as their script does.
	setUsed(1600)
	if err := f.Store.PutBlock(f.Ctx, id, f.Sub.CurrentPeriodEnd); err != nil {
		t.Fatal(err)
	}
	adj, err = quota.NewAdjuster(f.Pool, f.Svc).Adjust(f.Ctx, f.Provider, f.Sub.ID, quota.AdjustReset, quota.AdjustmentInput{Reason: "support ticket 42"})
	if err != nil || adj.Requests != 1100 || adj.Limit != 2600 {
		t.Fatalf("Adjust(reset at 1600 of 1500) = %+v, %v; want 1100 added, limit 2600", adj, err)
	}
	if q, _, blocked := state(); q != 2600 || blocked {
		t.Fatalf("after the reset: quota %d blocked %v; want 2600 and unblocked", q, blocked)
	}

	// A plan change to a soft quota: over quota, yet not blocked.
	soft := int64(100)
	p2, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Metered", Slug: "metered", Terms: subscriptions.Terms{Currency: "USD", QuotaRequests: &soft, QuotaHard: false},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Svc.ChangePlan(f.Ctx, f.Consumer, f.Sub.ID, subscriptions.ChangePlanInput{PlanID: p2.ID}); err != nil {
		t.Fatalf("ChangePlan = %v", err)
	}
	if q, hard, blocked := state(); q != 100+1600 || hard || blocked {
		t.Fatalf("on a soft plan: quota %d hard %v blocked %v; want 1700 (the period's adjustments stay), soft, unblocked", q, hard, blocked)
	}
	if _, err := f.Svc.ChangePlan(f.Ctx, f.Consumer, f.Sub.ID, subscriptions.ChangePlanInput{PlanID: p2.ID}); !errors.Is(err, subscriptions.ErrSamePlan) {
		t.Fatalf("ChangePlan to the same version = %v; want ErrSamePlan", err)
	}
	// And back to the hard plan: blocked again at once.
	if _, err := f.Svc.ChangePlan(f.Ctx, f.Consumer, f.Sub.ID, subscriptions.ChangePlanInput{PlanID: f.Plan.ID}); err != nil {
		t.Fatal(err)
	}
	setUsed(2600)
	if _, err := quota.NewAdjuster(f.Pool, f.Svc).Adjust(f.Ctx, f.Provider, f.Sub.ID, quota.AdjustCredit, quota.AdjustmentInput{Requests: 1, Reason: "one more"}); err != nil {
		t.Fatal(err)
	}
	setUsed(2601)
	if q, _, blocked := state(); q != 2601 || !blocked {
		t.Fatalf("back on the hard plan, credited 1 and at 2601: quota %d blocked %v; want 2601 and blocked", q, blocked)
	}
	var audited int
	if err := f.Pool.QueryRow(f.Ctx, `SELECT count(*) FROM audit_log WHERE target_id = $1
		AND action IN ('subscription.quota.credit', 'subscription.quota.reset', 'subscription.plan_change')`, id).Scan(&audited); err != nil || audited != 5 {
		t.Fatalf("audited quota and plan changes = %d, %v; want 5", audited, err)
	}
}

// TestPeriodRollLiftsTheBlock: the frequent period roll moves an ended
// period on, and the new record, written against the new period's empty
// counter, lifts the block.
func TestPeriodRollLiftsTheBlock(t *testing.T) {
	f := setup(t)
	id := f.Sub.ID.String()
	counter := enforcement.PeriodCounterName(id, f.Sub.CurrentPeriodStart)
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hset().Key(counter).FieldValue().FieldValue("requests", "1000").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
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
	if !blocked() {
		t.Fatal("at 1000 of a hard 1000: not blocked")
	}
	f.Clock.Set(f.Sub.CurrentPeriodEnd.Add(time.Second))
	if err := f.Svc.PeriodRollWorker().Work(f.Ctx, &river.Job[subscriptions.PeriodRollArgs]{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
		t.Fatal(err)
	}
	rec, err := f.Store.GetSubscription(f.Ctx, id)
	if err != nil || !rec.PeriodStart.Equal(f.Sub.CurrentPeriodEnd) {
		t.Fatalf("record after the roll = %+v, %v; want the period starting %s", rec, err, f.Sub.CurrentPeriodEnd)
	}
	if blocked() {
		t.Error("still blocked in the new period")
	}
}
