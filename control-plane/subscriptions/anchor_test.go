package subscriptions_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
)

// TestAnchoredRollAndCarry: a subscription made on Jan 31 renews on Feb 28
// and goes back to the 31st, its gateway record carries the anchor so the
// processors name the period the roll will name, and a subscription that
// takes over its period after a cancel keeps its anchor.
func TestAnchoredRollAndCarry(t *testing.T) {
	t.Parallel()
	f := setup(t)
	at := func(m time.Month, d int) time.Time { return time.Date(2027, m, d, 14, 30, 15, 0, time.UTC) }
	consumer := identity.Actor{Subject: "anchored-user", Role: identity.RoleConsumer,
		OrgID: f.Org("anchored", "anchored-user", "anchored@example.test")}
	f.Clock.Set(at(1, 31))
	sub, err := f.Svc.Subscribe(f.Ctx, consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID})
	if err != nil {
		t.Fatal(err)
	}
	current := func(id uuid.UUID) subscriptions.Subscription {
		t.Helper()
		s, err := f.Svc.GetSubscription(f.Ctx, consumer, id)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	wantPeriod := func(s subscriptions.Subscription, start, end time.Time) {
		t.Helper()
		if !s.CurrentPeriodStart.Equal(start) || !s.CurrentPeriodEnd.Equal(end) {
			t.Fatalf("period = [%s, %s); want [%s, %s)", s.CurrentPeriodStart, s.CurrentPeriodEnd, start, end)
		}
	}
	wantPeriod(sub, at(1, 31), at(2, 28))

	f.Clock.Set(at(3, 1))
	f.Maintain()
	wantPeriod(current(sub.ID), at(2, 28), at(3, 31))

	// The record, not rolled yet past Mar 31: the processors step to the
	// period the roll names next, not to Mar 28.
	if err := f.Svc.SyncSubscription(f.Ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	rec, err := f.Store.GetSubscription(f.Ctx, sub.ID.String())
	if err != nil || !rec.PeriodAnchor.Equal(at(1, 31)) {
		t.Fatalf("record = %+v, %v; want anchored at %s", rec, err, at(1, 31))
	}
	p, err := enforcement.CurrentPeriod(f.Ctx, f.Redis, sub.ID.String(), at(4, 2))
	if err != nil {
		t.Fatal(err)
	}
	f.Clock.Set(at(4, 2))
	f.Maintain()
	rolled := current(sub.ID)
	wantPeriod(rolled, at(3, 31), at(4, 30))
	if !p.Start.Equal(rolled.CurrentPeriodStart) || !p.End.Equal(rolled.CurrentPeriodEnd) {
		t.Fatalf("the processors' period before the roll = [%s, %s); the roll's [%s, %s)", p.Start, p.End, rolled.CurrentPeriodStart, rolled.CurrentPeriodEnd)
	}

	// Canceled on Apr 10 and subscribed again: the new one takes over
	// [Mar 31, Apr 30) and renews on May 31, not on the 10th.
	f.Clock.Set(at(4, 10))
	if _, err := f.Svc.Cancel(f.Ctx, consumer, sub.ID, subscriptions.CancelInput{}); err != nil {
		t.Fatal(err)
	}
	again, err := f.Svc.Subscribe(f.Ctx, consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID})
	if err != nil {
		t.Fatal(err)
	}
	wantPeriod(again, at(3, 31), at(4, 30))
	f.Clock.Set(at(5, 1))
	f.Maintain()
	wantPeriod(current(again.ID), at(4, 30), at(5, 31))
	f.Clock.Set(at(6, 1))
	f.Maintain()
	wantPeriod(current(again.ID), at(5, 31), at(6, 30))
}

// TestReconcileWritesTheAnchor: a record written before anchors (no
// period_anchor) still decodes, and the key reconciliation finds it
// different and writes it again with the anchor.
func TestReconcileWritesTheAnchor(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
		t.Fatal(err)
	}
	name := enforcement.SubscriptionName(f.Sub.ID.String())
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hdel().Key(name).Field("period_anchor").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if rec, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String()); err != nil || !rec.PeriodAnchor.IsZero() {
		t.Fatalf("record without period_anchor = %+v, %v; want decoded, unanchored", rec, err)
	}
	rep, err := f.Svc.ReconcileKeys(f.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.SubscriptionsDifferent != 1 {
		t.Fatalf("reconciliation = %+v; want the subscription's record different", rep)
	}
	rec, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String())
	if err != nil || !rec.PeriodAnchor.Equal(f.Sub.CurrentPeriodStart) {
		t.Fatalf("record after reconciliation = %+v, %v; want anchored at %s", rec, err, f.Sub.CurrentPeriodStart)
	}
}
