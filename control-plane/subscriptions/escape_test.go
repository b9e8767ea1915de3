package subscriptions_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
)

// gateway syncs the subscription as its outbox job does and reads what the
// gateway then sees of it: the record and whether it is blocked.
func (f *fixture) gateway(id uuid.UUID) (enforcement.SubscriptionRecord, bool) {
	f.T.Helper()
	if err := f.Svc.SyncSubscription(f.Ctx, id); err != nil {
		f.T.Fatal(err)
	}
	rec, err := f.Store.GetSubscription(f.Ctx, id.String())
	if err != nil {
		f.T.Fatal(err)
	}
	err = f.Redis.Do(f.Ctx, f.Redis.B().Get().Key(enforcement.BlockName(id.String())).Build()).Error()
	if err != nil && !rueidis.IsRedisNil(err) {
		f.T.Fatal(err)
	}
	return rec, err == nil
}

// count sets the processors' period counter of the subscription, as their
// counting script leaves it after n requests.
func (f *fixture) count(sub subscriptions.Subscription, n int64) {
	f.T.Helper()
	counter := enforcement.PeriodCounterName(sub.ID.String(), sub.CurrentPeriodStart)
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hset().Key(counter).FieldValue().FieldValue("requests", strconv.FormatInt(n, 10)).Build()).Error(); err != nil {
		f.T.Fatal(err)
	}
}

func (f *fixture) resubscribe(actor identity.Actor, old uuid.UUID, plan uuid.UUID) subscriptions.Subscription {
	f.T.Helper()
	if _, err := f.Svc.Cancel(f.Ctx, actor, old, subscriptions.CancelInput{}); err != nil {
		f.T.Fatalf("Cancel(%s) = %v", old, err)
	}
	sub, err := f.Svc.Subscribe(f.Ctx, actor, subscriptions.SubscribeInput{PlanID: plan})
	if err != nil {
		f.T.Fatalf("Subscribe after Cancel = %v", err)
	}
	return sub
}

// TestResubscribeKeepsUsedQuota: cancelling and subscribing again inside
// the billing period gives neither a fresh period nor a fresh quota. The
// new subscription takes over the period and what was used of it; one
// whose predecessor used its hard quota up is blocked by its first record.
func TestResubscribeKeepsUsedQuota(t *testing.T) {
	f := setup(t)
	old := f.Sub
	f.count(old, 1000)
	if rec, blocked := f.gateway(old.ID); rec.QuotaRequests != 1000 || !blocked {
		t.Fatalf("at 1000 of a hard 1000: quota %d blocked %v; want 1000 and blocked", rec.QuotaRequests, blocked)
	}
	f.Clock.Set(f.Clock.Now().Add(36 * time.Hour))

	next := f.resubscribe(f.Consumer, old.ID, f.Plan.ID)
	if !next.CurrentPeriodStart.Equal(old.CurrentPeriodStart) || !next.CurrentPeriodEnd.Equal(old.CurrentPeriodEnd) {
		t.Fatalf("resubscribed period = [%s, %s); want the canceled one's [%s, %s)",
			next.CurrentPeriodStart, next.CurrentPeriodEnd, old.CurrentPeriodStart, old.CurrentPeriodEnd)
	}
	if got := next.QuotaLimit(); got != 0 {
		t.Fatalf("resubscribed quota limit = %d; want 0 (used up before the cancel)", got)
	}
	rec, blocked := f.gateway(next.ID)
	if rec.QuotaRequests != 0 || !blocked || !rec.PeriodStart.Equal(old.CurrentPeriodStart) {
		t.Fatalf("gateway record of the new subscription = %+v, blocked %v; want quota 0 in the old period, blocked", rec, blocked)
	}

	// Again, with nothing used on the second: still used up.
	third := f.resubscribe(f.Consumer, next.ID, f.Plan.ID)
	if _, blocked := f.gateway(third.ID); third.QuotaLimit() != 0 || !blocked {
		t.Fatalf("third subscription: limit %d blocked %v; want 0 and blocked", third.QuotaLimit(), blocked)
	}
	// A provider's reset still gives the whole quota back.
	if _, err := quota.NewAdjuster(f.Pool, f.Svc).Adjust(f.Ctx, f.Provider, third.ID, quota.AdjustReset, quota.AdjustmentInput{Reason: "ticket 7"}); err != nil {
		t.Fatal(err)
	}
	if rec, blocked := f.gateway(third.ID); rec.QuotaRequests != 1000 || blocked {
		t.Fatalf("after a reset: quota %d blocked %v; want 1000 and unblocked", rec.QuotaRequests, blocked)
	}

	// Partly used: what is left carries, and a provider's credit with it.
	f.count(third, 300)
	if _, err := quota.NewAdjuster(f.Pool, f.Svc).Adjust(f.Ctx, f.Provider, third.ID, quota.AdjustCredit, quota.AdjustmentInput{Requests: 50, Reason: "goodwill"}); err != nil {
		t.Fatal(err)
	}
	fourth := f.resubscribe(f.Consumer, third.ID, f.Plan.ID)
	if got, want := fourth.QuotaLimit(), int64(1000+50-300); got != want {
		t.Fatalf("limit after 300 of 1050 used = %d; want %d", got, want)
	}
	// The processors hold the new counter against that quota.
	if rec, blocked := f.gateway(fourth.ID); rec.QuotaRequests != 750 || blocked {
		t.Fatalf("gateway record with quota left: quota %d blocked %v; want 750 and unblocked", rec.QuotaRequests, blocked)
	}

	// Once the period is over, a new subscription starts a period of its own.
	if _, err := f.Svc.Cancel(f.Ctx, f.Consumer, fourth.ID, subscriptions.CancelInput{}); err != nil {
		t.Fatal(err)
	}
	f.Clock.Set(old.CurrentPeriodEnd.Add(time.Second))
	fresh, err := f.Svc.Subscribe(f.Ctx, f.Consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID})
	if err != nil {
		t.Fatal(err)
	}
	if !fresh.CurrentPeriodStart.Equal(f.Clock.Now()) || fresh.QuotaLimit() != 1000 {
		t.Fatalf("after the period: start %s, limit %d; want now (%s) and 1000", fresh.CurrentPeriodStart, fresh.QuotaLimit(), f.Clock.Now())
	}
	if _, blocked := f.gateway(fresh.ID); blocked {
		t.Fatal("a subscription in a new period is blocked")
	}
}

// TestTrialOncePerOrganizationAndAPI: cancelling a trial and subscribing
// again gives no second trial, even on another plan of the API.
func TestTrialOncePerOrganizationAndAPI(t *testing.T) {
	f := setup(t)
	trial, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Trial", Slug: "trial", Terms: subscriptions.Terms{Currency: "EUR", TrialDays: 14},
	})
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Trial too", Slug: "trial-too", Terms: subscriptions.Terms{Currency: "EUR", TrialDays: 30},
	})
	if err != nil {
		t.Fatal(err)
	}
	buyer := identity.Actor{Subject: "buyer-user", Role: identity.RoleConsumer, OrgID: f.Org("buyer", "buyer-user", "buyer@example.test")}
	first, err := f.Svc.Subscribe(f.Ctx, buyer, subscriptions.SubscribeInput{PlanID: trial.ID})
	if err != nil || first.Status != subscriptions.StatusTrialing {
		t.Fatalf("first Subscribe = %s, %v; want trialing", first.Status, err)
	}
	for _, plan := range []uuid.UUID{trial.ID, other.ID} {
		again := f.resubscribe(buyer, first.ID, plan)
		if again.Status != subscriptions.StatusActive || again.TrialEndsAt != nil {
			t.Fatalf("Subscribe after cancelling a trial = %s until %v; want active, no trial", again.Status, again.TrialEndsAt)
		}
		first = again
	}
}

// TestSanctionCannotBeCanceledAway: a subscription canceled while an admin
// had it suspended, or while it was past_due, holds its organization and
// API until an admin releases it.
func TestSanctionCannotBeCanceledAway(t *testing.T) {
	f := setup(t)
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin, OrgID: f.Org("platform", "admin-user", "admin@example.test")}
	sub := f.Sub
	for _, st := range []subscriptions.Status{subscriptions.StatusSuspended, subscriptions.StatusPastDue} {
		if _, err := f.Svc.SetStatus(f.Ctx, admin, sub.ID, st, "sanction"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Svc.Cancel(f.Ctx, f.Consumer, sub.ID, subscriptions.CancelInput{}); err != nil {
			t.Fatalf("Cancel while %s = %v; want allowed (the subscription ends)", st, err)
		}
		if _, err := f.Svc.Subscribe(f.Ctx, f.Consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID}); !errors.Is(err, subscriptions.ErrSubscriptionHeld) {
			t.Fatalf("Subscribe after cancelling while %s = %v; want ErrSubscriptionHeld", st, err)
		}
		if _, err := f.Svc.ReleaseHold(f.Ctx, f.Consumer, sub.ID, ""); !errors.Is(err, identity.ErrForbidden) {
			t.Fatalf("ReleaseHold by the consumer = %v; want ErrForbidden", err)
		}
		if _, err := f.Svc.ReleaseHold(f.Ctx, admin, sub.ID, "settled"); err != nil {
			t.Fatalf("ReleaseHold by an admin = %v", err)
		}
		if _, err := f.Svc.ReleaseHold(f.Ctx, admin, sub.ID, "again"); !errors.Is(err, subscriptions.ErrSubscriptionTransition) {
			t.Fatalf("second ReleaseHold = %v; want ErrSubscriptionTransition", err)
		}
		var err error
		if sub, err = f.Svc.Subscribe(f.Ctx, f.Consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID}); err != nil {
			t.Fatalf("Subscribe after the release = %v", err)
		}
	}
	// An ordinary cancel holds nothing.
	if _, err := f.Svc.Cancel(f.Ctx, f.Consumer, sub.ID, subscriptions.CancelInput{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Svc.ReleaseHold(f.Ctx, admin, sub.ID, ""); !errors.Is(err, subscriptions.ErrSubscriptionTransition) {
		t.Fatalf("ReleaseHold of an ordinary cancel = %v; want ErrSubscriptionTransition", err)
	}
	if _, err := f.Svc.Subscribe(f.Ctx, f.Consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID}); err != nil {
		t.Fatalf("Subscribe after an ordinary cancel = %v", err)
	}
}
