package billing

import (
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/subscriptions/subscriptionstest"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestPeriodsMeetTheRoll: a subscription made, changed to a yearly plan
// and rolled by the subscriptions service itself, with its clock moving
// a few days at a time over nearly three years: the billing periods recorded
// along the way are contiguous from its start and end exactly where the
// roll put its current period, whatever day EnsurePeriods runs on.
func TestPeriodsMeetTheRoll(t *testing.T) {
	t.Parallel()
	f := subscriptionstest.Setup(t)
	svc, err := New(Config{Pool: f.Pool, Logger: testenv.Logger(t), Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	yearly, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Annual", Slug: "annual", Terms: subscriptions.Terms{Currency: "USD", Interval: "year"},
	})
	if err != nil {
		t.Fatal(err)
	}
	start := f.Sub.CurrentPeriodStart
	changed := false
	for step := range 140 {
		f.Clock.Advance(time.Duration(3+step%9)*24*time.Hour + time.Duration(step)*time.Minute)
		if step == 50 {
			if _, err := f.Svc.ChangePlan(f.Ctx, f.Consumer, f.Sub.ID, subscriptions.ChangePlanInput{PlanID: yearly.ID}); err != nil {
				t.Fatal(err)
			}
			changed = true
		}
		f.Maintain()
		if _, err := svc.EnsurePeriods(f.Ctx, f.Clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if !changed {
		t.Fatal("the plan never changed")
	}
	sub, err := f.Svc.GetSubscription(f.Ctx, f.Consumer, f.Sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := f.Pool.Query(f.Ctx, `SELECT period_start, period_end FROM billing_periods WHERE subscription_id = $1 ORDER BY period_start`, f.Sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	at, n, yearlong := start, 0, 0
	for rows.Next() {
		var s, e time.Time
		if err := rows.Scan(&s, &e); err != nil {
			t.Fatal(err)
		}
		if !s.Equal(at) {
			t.Fatalf("period %d starts %s; want %s (the end of the one before)", n, s, at)
		}
		if e.Sub(s) > 300*24*time.Hour {
			yearlong++
		}
		at, n = e, n+1
	}
	if !at.Equal(sub.CurrentPeriodStart) {
		t.Fatalf("the last period recorded ends %s; the roll's current period starts %s", at, sub.CurrentPeriodStart)
	}
	if n < 12 || yearlong != 1 {
		t.Fatalf("%d periods, %d a year long, recorded; want at least 12 monthly ones and the yearly one after the change", n, yearlong)
	}
}

// TestAnchoredPeriodsMeetTheRoll: a subscription made on Jan 31 and rolled
// by the subscriptions service over fifteen months, through a leap
// February, then changed to a yearly plan: the billing periods recorded
// end on each month's last day when it has no 31st and on the 31st
// otherwise, at the subscription's time of day, exactly where the roll
// put each current period, and the yearly period keeps the anchor.
func TestAnchoredPeriodsMeetTheRoll(t *testing.T) {
	t.Parallel()
	f := subscriptionstest.Setup(t)
	svc, err := New(Config{Pool: f.Pool, Logger: testenv.Logger(t), Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	yearly, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Annual", Slug: "annual", Terms: subscriptions.Terms{Currency: "USD", Interval: "year"},
	})
	if err != nil {
		t.Fatal(err)
	}
	at := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 14, 30, 15, 0, time.UTC) }
	consumer := identity.Actor{Subject: "anchored-user", Role: identity.RoleConsumer,
		OrgID: f.Org("anchored", "anchored-user", "anchored@example.test")}
	f.Clock.Set(at(2027, 1, 31))
	sub, err := f.Svc.Subscribe(f.Ctx, consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID})
	if err != nil {
		t.Fatal(err)
	}
	changed := false
	for step := 0; f.Clock.Now().Before(at(2028, 4, 10)); step++ {
		f.Clock.Advance(time.Duration(2+step%4)*24*time.Hour + time.Duration(step)*time.Minute)
		if !changed && f.Clock.Now().After(at(2028, 3, 10)) {
			if _, err := f.Svc.ChangePlan(f.Ctx, consumer, sub.ID, subscriptions.ChangePlanInput{PlanID: yearly.ID}); err != nil {
				t.Fatal(err)
			}
			changed = true
		}
		f.Maintain()
		if _, err := svc.EnsurePeriods(f.Ctx, f.Clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	want := []time.Time{at(2027, 1, 31), at(2027, 2, 28), at(2027, 3, 31), at(2027, 4, 30), at(2027, 5, 31), at(2027, 6, 30),
		at(2027, 7, 31), at(2027, 8, 31), at(2027, 9, 30), at(2027, 10, 31), at(2027, 11, 30), at(2027, 12, 31),
		at(2028, 1, 31), at(2028, 2, 29), at(2028, 3, 31)}
	rows, err := f.Pool.Query(f.Ctx, `SELECT period_start, period_end FROM billing_periods WHERE subscription_id = $1 ORDER BY period_start`, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for ; rows.Next(); n++ {
		var s, e time.Time
		if err := rows.Scan(&s, &e); err != nil {
			t.Fatal(err)
		}
		if n+1 >= len(want) || !s.Equal(want[n]) || !e.Equal(want[n+1]) {
			t.Fatalf("period %d = [%s, %s); want the boundaries %v", n, s, e, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(want)-1 {
		t.Fatalf("%d periods recorded; want %d", n, len(want)-1)
	}
	got, err := f.Svc.GetSubscription(f.Ctx, consumer, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.CurrentPeriodStart.Equal(at(2028, 3, 31)) || !got.CurrentPeriodEnd.Equal(at(2029, 3, 31)) {
		t.Fatalf("the roll's current period = [%s, %s); want the yearly [%s, %s)", got.CurrentPeriodStart, got.CurrentPeriodEnd, at(2028, 3, 31), at(2029, 3, 31))
	}
}

// TestPeriodsOfASubscriptionRolledBeforeAnchors: a subscription made on
// Jan 31 and rolled before anchors by adding a month (to [Apr 3, May 3)),
// then anchored as migration 00018 anchors it, at its current period's
// start: the roll and the billing periods go on from Apr 3 a whole month
// at a time, and the periods before are the ones it was rolled through,
// none split or shortened.
func TestPeriodsOfASubscriptionRolledBeforeAnchors(t *testing.T) {
	t.Parallel()
	f := subscriptionstest.Setup(t)
	svc, err := New(Config{Pool: f.Pool, Logger: testenv.Logger(t), Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	at := func(m time.Month, d int) time.Time { return time.Date(2026, m, d, 14, 30, 15, 0, time.UTC) }
	consumer := identity.Actor{Subject: "legacy-user", Role: identity.RoleConsumer,
		OrgID: f.Org("legacy", "legacy-user", "legacy@example.test")}
	f.Clock.Set(at(1, 31))
	sub, err := f.Svc.Subscribe(f.Ctx, consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Pool.Exec(f.Ctx, `UPDATE subscriptions SET current_period_start = $2, current_period_end = $3 WHERE id = $1`,
		sub.ID, at(4, 3), at(5, 3)); err != nil {
		t.Fatal(err)
	}
	// The backfill of 00018.
	if _, err := f.Pool.Exec(f.Ctx, `UPDATE subscriptions SET billing_anchor = current_period_start WHERE id = $1`, sub.ID); err != nil {
		t.Fatal(err)
	}
	f.Clock.Set(at(6, 10))
	f.Maintain()
	if _, err := svc.EnsurePeriods(f.Ctx, f.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := f.Svc.GetSubscription(f.Ctx, consumer, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.CurrentPeriodStart.Equal(at(6, 3)) || !got.CurrentPeriodEnd.Equal(at(7, 3)) {
		t.Fatalf("rolled to [%s, %s); want [%s, %s)", got.CurrentPeriodStart, got.CurrentPeriodEnd, at(6, 3), at(7, 3))
	}
	want := []time.Time{at(1, 31), at(3, 3), at(4, 3), at(5, 3), at(6, 3)}
	rows, err := f.Pool.Query(f.Ctx, `SELECT period_start, period_end FROM billing_periods WHERE subscription_id = $1 ORDER BY period_start`, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for ; rows.Next(); n++ {
		var s, e time.Time
		if err := rows.Scan(&s, &e); err != nil {
			t.Fatal(err)
		}
		if n+1 >= len(want) || !s.Equal(want[n]) || !e.Equal(want[n+1]) {
			t.Fatalf("period %d = [%s, %s); want the boundaries %v", n, s, e, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(want)-1 {
		t.Fatalf("%d periods recorded; want the boundaries %v", n, want)
	}
}
