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
	if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
		t.Fatal(err)
	}
	rec, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	start := f.Sub.CurrentPeriodStart
	// boundary is the end of the nth period, anchored at the start (on
	// the 29th to the 31st, not start.AddDate(0, n, 0)).
	boundary := func(n int) time.Time {
		at := start
		for range n {
			at = enforcement.PeriodEndAnchored(at, "month", start)
		}
		return at
	}
	if rec.Status != "active" || rec.QuotaRequests != 1000 || !rec.QuotaHard || rec.RatePerSecond != 10 || rec.RatePerMinute != 0 ||
		!rec.PeriodStart.Equal(start) || !rec.PeriodEnd.Equal(boundary(1)) || !rec.PeriodAnchor.Equal(start) || rec.PlanID != f.Plan.ID.String() {
		t.Fatalf("subscription record = %+v; want the plan's limits, [%s, %s) anchored at the start", rec, start, boundary(1))
	}
	k := f.Key(keys.Settings{}, true)

	f.Clock.Set(boundary(2).AddDate(0, 0, 1))
	if rep := f.Maintain(); rep.PeriodsRolled != 1 {
		t.Fatalf("maintenance two months on rolled %d periods; want 1", rep.PeriodsRolled)
	}
	if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
		t.Fatal(err)
	}
	rec, err = f.Store.GetSubscription(f.Ctx, f.Sub.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if !rec.PeriodStart.Equal(boundary(2)) || !rec.PeriodEnd.Equal(boundary(3)) {
		t.Fatalf("period after rollover = [%s, %s); want [%s, %s)", rec.PeriodStart, rec.PeriodEnd, boundary(2), boundary(3))
	}

	sub, err := f.Svc.Cancel(f.Ctx, f.Consumer, f.Sub.ID, subscriptions.CancelInput{AtPeriodEnd: true})
	if err != nil || sub.Status != subscriptions.StatusActive || !sub.CancelAtPeriodEnd {
		t.Fatalf("Cancel at period end = %+v, %v; want still active, marked", sub, err)
	}
	f.Clock.Set(boundary(3))
	if rep := f.Maintain(); rep.Canceled != 1 {
		t.Fatalf("maintenance at period end canceled %d; want 1", rep.Canceled)
	}
	got, err := f.Svc.GetSubscription(f.Ctx, f.Consumer, f.Sub.ID)
	if err != nil || got.Status != subscriptions.StatusCanceled || got.CanceledAt == nil {
		t.Fatalf("subscription at period end = %+v, %v; want canceled", got, err)
	}
	if kk := f.Get(k.ID); kk.State != keys.StateRevoked {
		t.Fatalf("key of a canceled subscription = %s; want revoked", kk.State)
	}
	if _, err := f.Keys.CreateKey(f.Ctx, f.Consumer, f.Sub.ID, keys.Settings{}); !errors.Is(err, subscriptions.ErrSubscriptionInactive) {
		t.Fatalf("CreateKey on a canceled subscription = %v; want ErrSubscriptionInactive", err)
	}
	if _, err := f.Svc.Cancel(f.Ctx, f.Consumer, f.Sub.ID, subscriptions.CancelInput{}); !errors.Is(err, subscriptions.ErrSubscriptionTransition) {
		t.Fatalf("second Cancel = %v; want ErrSubscriptionTransition", err)
	}
	// Canceled, the organization may subscribe again.
	if _, err := f.Svc.Subscribe(f.Ctx, f.Consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID}); err != nil {
		t.Fatalf("Subscribe after cancellation = %v", err)
	}
}

// TestSubscribeRules: one live subscription per organization and API, trial
// plans start trialing and become active when the trial ends, a draft plan
// takes no subscriptions, and a used plan version cannot change.
func TestSubscribeRules(t *testing.T) {
	f := setup(t)
	if _, err := f.Svc.Subscribe(f.Ctx, f.Consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID}); !errors.Is(err, subscriptions.ErrAlreadySubscribed) {
		t.Fatalf("second Subscribe = %v; want ErrAlreadySubscribed", err)
	}
	trial, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Trial", Slug: "trial", Terms: subscriptions.Terms{Currency: "EUR", TrialDays: 14},
	})
	if err != nil {
		t.Fatal(err)
	}
	other := identity.Actor{Subject: "other-user", Role: identity.RoleConsumer, OrgID: f.Org("other", "other-user", "other@example.test")}
	sub, err := f.Svc.Subscribe(f.Ctx, other, subscriptions.SubscribeInput{PlanID: trial.ID})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Status != subscriptions.StatusTrialing || sub.TrialEndsAt == nil || !sub.TrialEndsAt.Equal(f.Clock.Now().AddDate(0, 0, 14)) {
		t.Fatalf("trial subscription = %s until %v; want trialing for 14 days", sub.Status, sub.TrialEndsAt)
	}
	f.Clock.Set(sub.TrialEndsAt.Add(time.Second))
	if rep := f.Maintain(); rep.TrialsEnded != 1 {
		t.Fatalf("maintenance after the trial ended %d trials; want 1", rep.TrialsEnded)
	}
	if got, _ := f.Svc.GetSubscription(f.Ctx, other, sub.ID); got.Status != subscriptions.StatusActive {
		t.Fatalf("subscription after its trial = %s; want active", got.Status)
	}

	draft, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Soon", Slug: "soon", Status: subscriptions.PlanDraft, Terms: subscriptions.Terms{Currency: "USD"},
	})
	if err != nil {
		t.Fatal(err)
	}
	third := identity.Actor{Subject: "third-user", Role: identity.RoleConsumer, OrgID: f.Org("third", "third-user", "third@example.test")}
	if _, err := f.Svc.Subscribe(f.Ctx, third, subscriptions.SubscribeInput{PlanID: draft.ID}); !errors.Is(err, subscriptions.ErrPlanNotFound) {
		t.Fatalf("Subscribe to another provider's draft plan = %v; want not found (consumers do not see drafts)", err)
	}
	if _, err := f.Svc.CreatePlan(f.Ctx, f.Consumer, f.APIID, subscriptions.PlanInput{Name: "x", Slug: "x", Terms: subscriptions.Terms{Currency: "USD"}}); !errors.Is(err, identity.ErrForbidden) {
		t.Fatalf("CreatePlan by a consumer = %v; want ErrForbidden", err)
	}

	// An archived plan keeps its subscriptions and takes no new ones.
	archived := subscriptions.PlanArchived
	if p, err := f.Svc.UpdatePlan(f.Ctx, f.Provider, trial.ID, subscriptions.PlanPatch{Status: &archived}); err != nil || p.Status != archived {
		t.Fatalf("archiving a plan = %+v, %v", p.Status, err)
	}
	if got, _ := f.Svc.GetSubscription(f.Ctx, other, sub.ID); got.Status != subscriptions.StatusActive {
		t.Fatalf("subscription of an archived plan = %s; want still active", got.Status)
	}
	if _, err := f.Svc.Subscribe(f.Ctx, f.Provider, subscriptions.SubscribeInput{PlanID: trial.ID}); !errors.Is(err, subscriptions.ErrPlanUnavailable) {
		t.Fatalf("Subscribe to an archived plan (as its provider, who sees it) = %v; want ErrPlanUnavailable", err)
	}

	// A new version leaves existing subscriptions on theirs.
	quota := int64(5000)
	v2, err := f.Svc.CreateVersion(f.Ctx, f.Provider, f.Plan.ID, subscriptions.VersionInput{Terms: subscriptions.Terms{Currency: "USD", QuotaRequests: &quota}})
	if err != nil || v2.Current.Version != 2 {
		t.Fatalf("CreateVersion = %+v, %v; want version 2", v2.Current, err)
	}
	if got, _ := f.Svc.GetSubscription(f.Ctx, f.Consumer, f.Sub.ID); got.PlanVersion != 1 {
		t.Fatalf("existing subscription's plan version = %d; want 1", got.PlanVersion)
	}
	_, err = f.Pool.Exec(f.Ctx, `UPDATE plan_versions SET base_fee = 1 WHERE id = $1`, f.Plan.Current.ID)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "plan_versions_immutable" {
		t.Fatalf("changing a used plan version = %v; want plan_versions_immutable", err)
	}
}
