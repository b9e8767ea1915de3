package subscriptions_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
)

// TestSubscriptionRecordAndPeriods: the subscription's limits and period
// reach Redis; maintenance rolls the period and pushes the new bounds;
// cancel at period end cancels at rollover and revokes the keys.
func TestSubscriptionRecordAndPeriods(t *testing.T) {
	f := setup(t)
	if err := f.svc.SyncSubscription(f.ctx, f.sub.ID); err != nil {
		t.Fatal(err)
	}
	rec, err := f.store.GetSubscription(f.ctx, f.sub.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	start := f.sub.CurrentPeriodStart
	if rec.Status != "active" || rec.QuotaRequests != 1000 || !rec.QuotaHard || rec.RatePerSecond != 10 || rec.RatePerMinute != 0 ||
		!rec.PeriodStart.Equal(start) || !rec.PeriodEnd.Equal(start.AddDate(0, 1, 0)) || rec.PlanID != f.plan.ID.String() {
		t.Fatalf("subscription record = %+v; want the plan's limits and [%s, %s)", rec, start, start.AddDate(0, 1, 0))
	}
	k := f.key(keys.Settings{}, true)

	f.clock.Set(start.AddDate(0, 2, 1))
	if rep := f.maintain(); rep.PeriodsRolled != 1 {
		t.Fatalf("maintenance two months on rolled %d periods; want 1", rep.PeriodsRolled)
	}
	if err := f.svc.SyncSubscription(f.ctx, f.sub.ID); err != nil {
		t.Fatal(err)
	}
	rec, err = f.store.GetSubscription(f.ctx, f.sub.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if !rec.PeriodStart.Equal(start.AddDate(0, 2, 0)) || !rec.PeriodEnd.Equal(start.AddDate(0, 3, 0)) {
		t.Fatalf("period after rollover = [%s, %s); want [%s, %s)", rec.PeriodStart, rec.PeriodEnd, start.AddDate(0, 2, 0), start.AddDate(0, 3, 0))
	}

	sub, err := f.svc.Cancel(f.ctx, f.consumer, f.sub.ID, subscriptions.CancelInput{AtPeriodEnd: true})
	if err != nil || sub.Status != subscriptions.StatusActive || !sub.CancelAtPeriodEnd {
		t.Fatalf("Cancel at period end = %+v, %v; want still active, marked", sub, err)
	}
	f.clock.Set(start.AddDate(0, 3, 0))
	if rep := f.maintain(); rep.Canceled != 1 {
		t.Fatalf("maintenance at period end canceled %d; want 1", rep.Canceled)
	}
	got, err := f.svc.GetSubscription(f.ctx, f.consumer, f.sub.ID)
	if err != nil || got.Status != subscriptions.StatusCanceled || got.CanceledAt == nil {
		t.Fatalf("subscription at period end = %+v, %v; want canceled", got, err)
	}
	if kk := f.get(k.ID); kk.State != keys.StateRevoked {
		t.Fatalf("key of a canceled subscription = %s; want revoked", kk.State)
	}
	if _, err := f.svc.CreateKey(f.ctx, f.consumer, f.sub.ID, keys.Settings{}); !errors.Is(err, subscriptions.ErrSubscriptionInactive) {
		t.Fatalf("CreateKey on a canceled subscription = %v; want ErrSubscriptionInactive", err)
	}
	if _, err := f.svc.Cancel(f.ctx, f.consumer, f.sub.ID, subscriptions.CancelInput{}); !errors.Is(err, subscriptions.ErrSubscriptionTransition) {
		t.Fatalf("second Cancel = %v; want ErrSubscriptionTransition", err)
	}
	// Canceled, the organization may subscribe again.
	if _, err := f.svc.Subscribe(f.ctx, f.consumer, subscriptions.SubscribeInput{PlanID: f.plan.ID}); err != nil {
		t.Fatalf("Subscribe after cancellation = %v", err)
	}
}

// TestSubscribeRules: one live subscription per organization and API, trial
// plans start trialing and become active when the trial ends, a draft plan
// takes no subscriptions, and a used plan version cannot change.
func TestSubscribeRules(t *testing.T) {
	f := setup(t)
	if _, err := f.svc.Subscribe(f.ctx, f.consumer, subscriptions.SubscribeInput{PlanID: f.plan.ID}); !errors.Is(err, subscriptions.ErrAlreadySubscribed) {
		t.Fatalf("second Subscribe = %v; want ErrAlreadySubscribed", err)
	}
	trial, err := f.svc.CreatePlan(f.ctx, f.provider, f.apiID, subscriptions.PlanInput{
		Name: "Trial", Slug: "trial", Terms: subscriptions.Terms{Currency: "EUR", TrialDays: 14},
	})
	if err != nil {
		t.Fatal(err)
	}
	other := identity.Actor{Subject: "other-user", Role: identity.RoleConsumer, OrgID: f.org("other", "other-user", "other@example.test")}
	sub, err := f.svc.Subscribe(f.ctx, other, subscriptions.SubscribeInput{PlanID: trial.ID})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Status != subscriptions.StatusTrialing || sub.TrialEndsAt == nil || !sub.TrialEndsAt.Equal(f.clock.Now().AddDate(0, 0, 14)) {
		t.Fatalf("trial subscription = %s until %v; want trialing for 14 days", sub.Status, sub.TrialEndsAt)
	}
	f.clock.Set(sub.TrialEndsAt.Add(time.Second))
	if rep := f.maintain(); rep.TrialsEnded != 1 {
		t.Fatalf("maintenance after the trial ended %d trials; want 1", rep.TrialsEnded)
	}
	if got, _ := f.svc.GetSubscription(f.ctx, other, sub.ID); got.Status != subscriptions.StatusActive {
		t.Fatalf("subscription after its trial = %s; want active", got.Status)
	}

	draft, err := f.svc.CreatePlan(f.ctx, f.provider, f.apiID, subscriptions.PlanInput{
		Name: "Soon", Slug: "soon", Status: subscriptions.PlanDraft, Terms: subscriptions.Terms{Currency: "USD"},
	})
	if err != nil {
		t.Fatal(err)
	}
	third := identity.Actor{Subject: "third-user", Role: identity.RoleConsumer, OrgID: f.org("third", "third-user", "third@example.test")}
	if _, err := f.svc.Subscribe(f.ctx, third, subscriptions.SubscribeInput{PlanID: draft.ID}); !errors.Is(err, subscriptions.ErrPlanNotFound) {
		t.Fatalf("Subscribe to another provider's draft plan = %v; want not found (consumers do not see drafts)", err)
	}
	if _, err := f.svc.CreatePlan(f.ctx, f.consumer, f.apiID, subscriptions.PlanInput{Name: "x", Slug: "x", Terms: subscriptions.Terms{Currency: "USD"}}); !errors.Is(err, subscriptions.ErrForbidden) {
		t.Fatalf("CreatePlan by a consumer = %v; want ErrForbidden", err)
	}

	// An archived plan keeps its subscriptions and takes no new ones.
	archived := subscriptions.PlanArchived
	if p, err := f.svc.UpdatePlan(f.ctx, f.provider, trial.ID, subscriptions.PlanPatch{Status: &archived}); err != nil || p.Status != archived {
		t.Fatalf("archiving a plan = %+v, %v", p.Status, err)
	}
	if got, _ := f.svc.GetSubscription(f.ctx, other, sub.ID); got.Status != subscriptions.StatusActive {
		t.Fatalf("subscription of an archived plan = %s; want still active", got.Status)
	}
	if _, err := f.svc.Subscribe(f.ctx, f.provider, subscriptions.SubscribeInput{PlanID: trial.ID}); !errors.Is(err, subscriptions.ErrPlanUnavailable) {
		t.Fatalf("Subscribe to an archived plan (as its provider, who sees it) = %v; want ErrPlanUnavailable", err)
	}

	// A new version leaves existing subscriptions on theirs.
	quota := int64(5000)
	v2, err := f.svc.CreateVersion(f.ctx, f.provider, f.plan.ID, subscriptions.VersionInput{Terms: subscriptions.Terms{Currency: "USD", QuotaRequests: &quota}})
	if err != nil || v2.Current.Version != 2 {
		t.Fatalf("CreateVersion = %+v, %v; want version 2", v2.Current, err)
	}
	if got, _ := f.svc.GetSubscription(f.ctx, f.consumer, f.sub.ID); got.PlanVersion != 1 {
		t.Fatalf("existing subscription's plan version = %d; want 1", got.PlanVersion)
	}
	_, err = f.pool.Exec(f.ctx, `UPDATE plan_versions SET base_fee = 1 WHERE id = $1`, f.plan.Current.ID)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "plan_versions_immutable" {
		t.Fatalf("changing a used plan version = %v; want plan_versions_immutable", err)
	}
}

// TestKeyLimit: at most MaxActiveKeys live keys; revoked ones and keys in
// their rotation grace do not count.
func TestKeyLimit(t *testing.T) {
	f := setup(t)
	var issued []subscriptions.Key
	for range 5 {
		issued = append(issued, f.key(keys.Settings{}, true))
	}
	if _, err := f.svc.CreateKey(f.ctx, f.consumer, f.sub.ID, keys.Settings{}); !errors.Is(err, subscriptions.ErrKeyLimit) {
		t.Fatalf("sixth key = %v; want ErrKeyLimit", err)
	}
	if _, err := f.svc.Rotate(f.ctx, f.consumer, issued[0].ID, keys.RotateInput{}); err != nil {
		t.Fatalf("rotating at the limit = %v; want allowed (the old key is in grace)", err)
	}
	if _, err := f.svc.Act(f.ctx, f.consumer, issued[1].ID, keys.ActionRevoke, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CreateKey(f.ctx, f.consumer, f.sub.ID, keys.Settings{}); err != nil {
		t.Fatalf("key after a revoke = %v; want allowed", err)
	}
	if err := f.svc.DeleteKey(f.ctx, f.consumer, issued[2].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.GetKey(f.ctx, f.consumer, issued[2].ID); !errors.Is(err, subscriptions.ErrKeyNotFound) {
		t.Fatalf("deleted key = %v; want not found", err)
	}
	if _, err := f.store.GetKey(f.ctx, enforcement.Hash(issued[2].Plaintext)); err != nil {
		t.Fatalf("record of a deleted key before its deletion job: %v (the job removes it)", err)
	}
}
