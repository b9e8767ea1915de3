package billing

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/testenv"
)

// The outlooks job writes each live subscription's outlook, as Outlook
// computes it; one whose outlook fails (no pricing history) is counted
// and logged while the others are written; a fresh outlook is not
// computed again until it is older than half the interval; a run does at
// most PerRun; an ended subscription's row goes.
func TestRefreshOutlooks(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	start, end := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	now := time.Date(2026, 11, 15, 12, 0, 0, 0, time.UTC)
	f.svc.now = func() time.Time { return now }
	a, c := f.subscribe(start, start, end, nil), f.subscribe(start, start, end, nil)
	var evs []ev
	for d := range 14 {
		evs = append(evs, get(start.Add(time.Duration(d)*24*time.Hour+time.Hour), "2"))
	}
	f.events(a, evs...)
	// A subscription without pricing history cannot be priced.
	brokenLive := f.id(`INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status,
		current_period_start, current_period_end) VALUES ($1, 'cons', $2, $3, 'past_due', $4, $5) RETURNING id`,
		testenv.Org(t, f.pool, "broken-"+testenv.Suffix()), f.api, f.v2, start, end)

	set := metrics.NewSet()
	sched := OutlookSchedule{Every: time.Minute, Metrics: set}
	rep, err := f.svc.RefreshOutlooks(t.Context(), sched)
	if err != nil || rep.Refreshed != 2 || rep.Failed != 1 {
		t.Fatalf("RefreshOutlooks = %+v, %v; want 2 refreshed, 1 failed", rep, err)
	}
	var out strings.Builder
	set.WritePrometheus(&out)
	if !strings.Contains(out.String(), `veil_controlplane_billing_outlooks_total{result="failed"} 1`) {
		t.Errorf("metrics:\n%s\nwant one failed outlook", out.String())
	}
	want, err := f.svc.Outlook(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	var (
		cost, projected decimal.Decimal
		meters          []byte
		computed        time.Time
	)
	if err := f.pool.QueryRow(t.Context(), `SELECT cost_so_far, projected, meters, computed_at FROM subscription_outlooks WHERE subscription_id = $1`, a).
		Scan(&cost, &projected, &meters, &computed); err != nil {
		t.Fatal(err)
	}
	var ms []MeterOutlook
	if err := json.Unmarshal(meters, &ms); err != nil {
		t.Fatalf("meters %s: %v", meters, err)
	}
	if !cost.Equal(want.CostSoFar) || !projected.Equal(want.Projected) || !computed.Equal(now) || len(ms) != len(want.Meters) {
		t.Errorf("stored %s, %s, %d meters at %s; want %s, %s, %d at %s", cost, projected, len(ms), computed, want.CostSoFar, want.Projected, len(want.Meters), now)
	}
	// 14 days of 2 units a day: the rest of the period (15.5 days) at
	// that pace is projected above what is used.
	if !want.Projected.GreaterThan(want.CostSoFar) {
		t.Errorf("projected %s; want more than the cost so far %s", want.Projected, want.CostSoFar)
	}
	if f.count(`SELECT count(*) FROM subscription_outlooks WHERE subscription_id IN ($1, $2)`, c, brokenLive) != 1 {
		t.Error("want the other subscription's row and none of the failing one")
	}

	// Fresh: only the failing one is tried again (without a metrics set,
	// which the schedule may leave out).
	if rep, err := f.svc.RefreshOutlooks(t.Context(), OutlookSchedule{Every: time.Minute}); err != nil || rep.Refreshed != 0 || rep.Failed != 1 {
		t.Errorf("second run = %+v, %v; want only the failing one tried", rep, err)
	}
	now = now.Add(31 * time.Second)
	if rep, err := f.svc.RefreshOutlooks(t.Context(), OutlookSchedule{Every: time.Minute, PerRun: 1, Metrics: set}); err != nil || rep.Refreshed+rep.Failed != 1 {
		t.Errorf("run of at most 1 = %+v, %v; want one tried", rep, err)
	}
	f.exec(`UPDATE subscriptions SET status = 'canceled', canceled_at = $2 WHERE id = $1`, c, now)
	if rep, err := f.svc.RefreshOutlooks(t.Context(), sched); err != nil || rep.Removed != 1 {
		t.Errorf("run after a cancellation = %+v, %v; want its row removed", rep, err)
	}
	if f.count(`SELECT count(*) FROM subscription_outlooks WHERE subscription_id = $1`, c) != 0 {
		t.Error("the canceled subscription's outlook is still there")
	}
}
