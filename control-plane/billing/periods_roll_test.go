package billing

import (
	"testing"
	"time"

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
