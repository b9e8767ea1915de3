package subscriptions_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
)

// gateway syncs the subscription as its outbox job does and reads what the
// gateway then sees of it: the record and whether it is blocked.
func (f *fixture) gateway(id uuid.UUID) (enforcement.SubscriptionRecord, bool) {
	f.t.Helper()
	if err := f.svc.SyncSubscription(f.ctx, id); err != nil {
		f.t.Fatal(err)
	}
	rec, err := f.store.GetSubscription(f.ctx, id.String())
	if err != nil {
		f.t.Fatal(err)
	}
	err = f.redis.Do(f.ctx, f.redis.B().Get().Key(enforcement.BlockName(id.String())).Build()).Error()
	if err != nil && !rueidis.IsRedisNil(err) {
		f.t.Fatal(err)
	}
	return rec, err == nil
}

// count sets the processors' period counter of the subscription, as their
// counting script leaves it after n requests.
func (f *fixture) count(sub subscriptions.Subscription, n int64) {
	f.t.Helper()
	counter := enforcement.PeriodCounterName(sub.ID.String(), sub.CurrentPeriodStart)
	if err := f.redis.Do(f.ctx, f.redis.B().Hset().Key(counter).FieldValue().FieldValue("requests", strconv.FormatInt(n, 10)).Build()).Error(); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) resubscribe(actor identity.Actor, old uuid.UUID, plan uuid.UUID) subscriptions.Subscription {
	f.t.Helper()
	if _, err := f.svc.Cancel(f.ctx, actor, old, subscriptions.CancelInput{}); err != nil {
		f.t.Fatalf("Cancel(%s) = %v", old, err)
	}
	sub, err := f.svc.Subscribe(f.ctx, actor, subscriptions.SubscribeInput{PlanID: plan})
	if err != nil {
		f.t.Fatalf("Subscribe after Cancel = %v", err)
	}
	return sub
}

// TestResubscribeKeepsUsedQuota: cancelling and subscribing again inside
// the billing period gives neither a fresh period nor a fresh quota. The
// new subscription takes over the period and what was used of it; one
// whose predecessor used its hard quota up is blocked by its first record.
func TestResubscribeKeepsUsedQuota(t *testing.T) {
	f := setup(t)
	old := f.sub
	f.count(old, 1000)
	if rec, blocked := f.gateway(old.ID); rec.QuotaRequests != 1000 || !blocked {
		t.Fatalf("at 1000 of a hard 1000: quota %d blocked %v; want 1000 and blocked", rec.QuotaRequests, blocked)
	}
	f.clock.Set(f.clock.Now().Add(36 * time.Hour))

	next := f.resubscribe(f.consumer, old.ID, f.plan.ID)
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
	third := f.resubscribe(f.consumer, next.ID, f.plan.ID)
	if _, blocked := f.gateway(third.ID); third.QuotaLimit() != 0 || !blocked {
		t.Fatalf("third subscription: limit %d blocked %v; want 0 and blocked", third.QuotaLimit(), blocked)
	}
	// A provider's reset still gives the whole quota back.
	if _, err := quota.NewAdjuster(f.pool, f.svc).Adjust(f.ctx, f.provider, third.ID, quota.AdjustReset, quota.AdjustmentInput{Reason: "ticket 7"}); err != nil {
		t.Fatal(err)
	}
	if rec, blocked := f.gateway(third.ID); rec.QuotaRequests != 1000 || blocked {
		t.Fatalf("after a reset: quota %d blocked %v; want 1000 and unblocked", rec.QuotaRequests, blocked)
	}

	// Partly used: what is left carries, and a provider's credit with it.
	f.count(third, 300)
	if _, err := quota.NewAdjuster(f.pool, f.svc).Adjust(f.ctx, f.provider, third.ID, quota.AdjustCredit, quota.AdjustmentInput{Requests: 50, Reason: "goodwill"}); err != nil {
		t.Fatal(err)
	}
	fourth := f.resubscribe(f.consumer, third.ID, f.plan.ID)
	if got, want := fourth.QuotaLimit(), int64(1000+50-300); got != want {
		t.Fatalf("limit after 300 of 1050 used = %d; want %d", got, want)
	}
	// The processors hold the new counter against that quota.
	if rec, blocked := f.gateway(fourth.ID); rec.QuotaRequests != 750 || blocked {
		t.Fatalf("gateway record with quota left: quota %d blocked %v; want 750 and unblocked", rec.QuotaRequests, blocked)
	}

	// Once the period is over, a new subscription starts a period of its own.
	if _, err := f.svc.Cancel(f.ctx, f.consumer, fourth.ID, subscriptions.CancelInput{}); err != nil {
		t.Fatal(err)
	}
	f.clock.Set(old.CurrentPeriodEnd.Add(time.Second))
	fresh, err := f.svc.Subscribe(f.ctx, f.consumer, subscriptions.SubscribeInput{PlanID: f.plan.ID})
	if err != nil {
		t.Fatal(err)
	}
	if !fresh.CurrentPeriodStart.Equal(f.clock.Now()) || fresh.QuotaLimit() != 1000 {
		t.Fatalf("after the period: start %s, limit %d; want now (%s) and 1000", fresh.CurrentPeriodStart, fresh.QuotaLimit(), f.clock.Now())
	}
	if _, blocked := f.gateway(fresh.ID); blocked {
		t.Fatal("a subscription in a new period is blocked")
	}
}

// TestTrialOncePerOrganizationAndAPI: cancelling a trial and subscribing
// again gives no second trial, even on another plan of the API.
func TestTrialOncePerOrganizationAndAPI(t *testing.T) {
	f := setup(t)
	trial, err := f.svc.CreatePlan(f.ctx, f.provider, f.apiID, subscriptions.PlanInput{
		Name: "Trial", Slug: "trial", Terms: subscriptions.Terms{Currency: "EUR", TrialDays: 14},
	})
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.svc.CreatePlan(f.ctx, f.provider, f.apiID, subscriptions.PlanInput{
		Name: "Trial too", Slug: "trial-too", Terms: subscriptions.Terms{Currency: "EUR", TrialDays: 30},
	})
	if err != nil {
		t.Fatal(err)
	}
	buyer := identity.Actor{Subject: "buyer-user", Role: identity.RoleConsumer, OrgID: f.org("buyer", "buyer-user", "buyer@example.test")}
	first, err := f.svc.Subscribe(f.ctx, buyer, subscriptions.SubscribeInput{PlanID: trial.ID})
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
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin, OrgID: f.org("platform", "admin-user", "admin@example.test")}
	sub := f.sub
	for _, st := range []subscriptions.Status{subscriptions.StatusSuspended, subscriptions.StatusPastDue} {
		if _, err := f.svc.SetStatus(f.ctx, admin, sub.ID, st, "sanction"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Cancel(f.ctx, f.consumer, sub.ID, subscriptions.CancelInput{}); err != nil {
			t.Fatalf("Cancel while %s = %v; want allowed (the subscription ends)", st, err)
		}
		if _, err := f.svc.Subscribe(f.ctx, f.consumer, subscriptions.SubscribeInput{PlanID: f.plan.ID}); !errors.Is(err, subscriptions.ErrSubscriptionHeld) {
			t.Fatalf("Subscribe after cancelling while %s = %v; want ErrSubscriptionHeld", st, err)
		}
		if _, err := f.svc.ReleaseHold(f.ctx, f.consumer, sub.ID, ""); !errors.Is(err, subscriptions.ErrForbidden) {
			t.Fatalf("ReleaseHold by the consumer = %v; want ErrForbidden", err)
		}
		if _, err := f.svc.ReleaseHold(f.ctx, admin, sub.ID, "settled"); err != nil {
			t.Fatalf("ReleaseHold by an admin = %v", err)
		}
		if _, err := f.svc.ReleaseHold(f.ctx, admin, sub.ID, "again"); !errors.Is(err, subscriptions.ErrSubscriptionTransition) {
			t.Fatalf("second ReleaseHold = %v; want ErrSubscriptionTransition", err)
		}
		var err error
		if sub, err = f.svc.Subscribe(f.ctx, f.consumer, subscriptions.SubscribeInput{PlanID: f.plan.ID}); err != nil {
			t.Fatalf("Subscribe after the release = %v", err)
		}
	}
	// An ordinary cancel holds nothing.
	if _, err := f.svc.Cancel(f.ctx, f.consumer, sub.ID, subscriptions.CancelInput{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.ReleaseHold(f.ctx, admin, sub.ID, ""); !errors.Is(err, subscriptions.ErrSubscriptionTransition) {
		t.Fatalf("ReleaseHold of an ordinary cancel = %v; want ErrSubscriptionTransition", err)
	}
	if _, err := f.svc.Subscribe(f.ctx, f.consumer, subscriptions.SubscribeInput{PlanID: f.plan.ID}); err != nil {
		t.Fatalf("Subscribe after an ordinary cancel = %v", err)
	}
}

// TestAdminKeySanctions: a key an admin suspended is resumed by an admin
// only, one the consumer suspended by the consumer too; an admin may
// suspend and revoke another organization's key but never gets a new
// plaintext of it.
func TestAdminKeySanctions(t *testing.T) {
	f := setup(t)
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin, OrgID: f.org("platform", "admin-user", "admin@example.test")}
	k := f.key(keys.Settings{}, true)

	if _, err := f.svc.Act(f.ctx, admin, k.ID, keys.ActionSuspend, "abuse report"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Act(f.ctx, f.consumer, k.ID, keys.ActionResume, ""); !errors.Is(err, subscriptions.ErrAdminSuspended) {
		t.Fatalf("consumer resumes an admin's suspension = %v; want ErrAdminSuspended", err)
	}
	if got := f.get(k.ID); got.State != keys.StateSuspended {
		t.Fatalf("key after the refused resume = %s; want suspended", got.State)
	}
	if _, err := f.svc.Act(f.ctx, admin, k.ID, keys.ActionResume, "cleared"); err != nil {
		t.Fatalf("admin resumes = %v", err)
	}
	if _, err := f.svc.Act(f.ctx, f.consumer, k.ID, keys.ActionSuspend, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Act(f.ctx, f.consumer, k.ID, keys.ActionResume, ""); err != nil {
		t.Fatalf("consumer resumes its own suspension = %v", err)
	}

	if _, err := f.svc.CreateKey(f.ctx, admin, f.sub.ID, keys.Settings{}); !errors.Is(err, subscriptions.ErrAdminPlaintext) {
		t.Fatalf("admin issues a key of another organization = %v; want ErrAdminPlaintext", err)
	}
	if _, err := f.svc.Rotate(f.ctx, admin, k.ID, keys.RotateInput{}); !errors.Is(err, subscriptions.ErrAdminPlaintext) {
		t.Fatalf("admin rotates a key of another organization = %v; want ErrAdminPlaintext", err)
	}
	var successors int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM api_keys WHERE subscription_id = $1`, f.sub.ID).Scan(&successors); err != nil || successors != 1 {
		t.Fatalf("keys of the subscription = %d, %v; want 1 (nothing issued)", successors, err)
	}
	if _, err := f.svc.Act(f.ctx, admin, k.ID, keys.ActionRevoke, "leaked"); err != nil {
		t.Fatalf("admin revokes = %v", err)
	}
}

// TestNewKeyCannotEscapeAdminSuspension: while a key an admin suspended
// stands, its organization issues no other key on the subscription;
// rotating a key that works still works, and once the organization gives
// the suspended key up (revokes it) it may issue again.
func TestNewKeyCannotEscapeAdminSuspension(t *testing.T) {
	f := setup(t)
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin, OrgID: f.org("platform", "admin-user", "admin@example.test")}
	suspended := f.key(keys.Settings{Name: "leaked"}, true)
	working := f.key(keys.Settings{Name: "other"}, true)
	if _, err := f.svc.Act(f.ctx, admin, suspended.ID, keys.ActionSuspend, "abuse report"); err != nil {
		t.Fatal(err)
	}

	if _, err := f.svc.CreateKey(f.ctx, f.consumer, f.sub.ID, keys.Settings{}); !errors.Is(err, subscriptions.ErrAdminSuspended) {
		t.Fatalf("CreateKey beside an admin's suspension = %v; want ErrAdminSuspended", err)
	}
	if _, err := f.svc.Rotate(f.ctx, f.consumer, working.ID, keys.RotateInput{}); err != nil {
		t.Fatalf("Rotate of a working key beside an admin's suspension = %v; want the successor", err)
	}

	if _, err := f.svc.Act(f.ctx, f.consumer, suspended.ID, keys.ActionRevoke, "giving it up"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CreateKey(f.ctx, f.consumer, f.sub.ID, keys.Settings{}); err != nil {
		t.Fatalf("CreateKey once the suspended key is revoked = %v; want a key", err)
	}
}

// TestAdminSanctionsConsumerSuspension: an admin suspending a key its
// organization suspended already succeeds and makes the suspension the
// admin's, audited; the organization can then no longer resume it.
func TestAdminSanctionsConsumerSuspension(t *testing.T) {
	f := setup(t)
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin, OrgID: f.org("platform", "admin-user", "admin@example.test")}
	k := f.key(keys.Settings{}, true)
	if _, err := f.svc.Act(f.ctx, f.consumer, k.ID, keys.ActionSuspend, ""); err != nil {
		t.Fatal(err)
	}
	audited := f.auditCount(k.ID, "key.transition.suspended")

	got, err := f.svc.Act(f.ctx, admin, k.ID, keys.ActionSuspend, "abuse report")
	if err != nil {
		t.Fatalf("admin suspends a suspended key = %v; want the key", err)
	}
	if got.State != keys.StateSuspended {
		t.Fatalf("admin suspends a suspended key = state %s; want suspended", got.State)
	}
	if n := f.auditCount(k.ID, "key.transition.suspended"); n != audited+1 {
		t.Fatalf("suspension audit entries = %d; want %d", n, audited+1)
	}
	if _, err := f.svc.Act(f.ctx, f.consumer, k.ID, keys.ActionResume, ""); !errors.Is(err, subscriptions.ErrAdminSuspended) {
		t.Fatalf("consumer resumes after the admin's suspension = %v; want ErrAdminSuspended", err)
	}
	if _, err := f.svc.CreateKey(f.ctx, f.consumer, f.sub.ID, keys.Settings{}); !errors.Is(err, subscriptions.ErrAdminSuspended) {
		t.Fatalf("CreateKey after the admin's suspension = %v; want ErrAdminSuspended", err)
	}
	if _, err := f.svc.Act(f.ctx, admin, k.ID, keys.ActionResume, "cleared"); err != nil {
		t.Fatalf("admin resumes = %v", err)
	}
}
