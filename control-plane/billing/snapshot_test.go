package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
)

// periodFixture is a billing service on a fresh Postgres and ClickHouse
// database, with an API whose plan has two versions: v1 (monthly, base
// fee 10) charges calls and units; v2 (base fee 30) charges calls, units
// and gets (GET calls under /v1/).
type periodFixture struct {
	t      testing.TB
	pool   *pgxpool.Pool
	ch     driver.Conn
	svc    *Service
	api    uuid.UUID
	v1, v2 uuid.UUID
	offset int64
}

func periodSetup(t testing.TB) *periodFixture {
	t.Helper()
	pool := testenv.Postgres(t)
	ch, _, _ := testenv.ClickHouseDB(t)
	svc, err := New(Config{Pool: pool, ClickHouse: ch, Logger: testenv.Logger(t), Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f := &periodFixture{t: t, pool: pool, ch: ch, svc: svc}
	provider := testenv.Org(t, pool, "provider-"+testenv.Suffix())
	f.api = f.id(`INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, 'Weather', $2, 'http://upstream', 'v1', 'prov') RETURNING id`, provider, "weather-"+testenv.Suffix())
	plan := f.id(`INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Pro', 'pro', 'active') RETURNING id`, f.api)
	f.v1 = f.id(`INSERT INTO plan_versions (plan_id, version, type, currency, interval, base_fee, created_by)
		VALUES ($1, 1, 'hybrid', 'USD', 'month', 10, 'prov') RETURNING id`, plan)
	f.v2 = f.id(`INSERT INTO plan_versions (plan_id, version, type, currency, interval, base_fee, created_by)
		VALUES ($1, 2, 'hybrid', 'USD', 'month', 30, 'prov') RETURNING id`, plan)
	calls := f.id(`INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'calls', 'count') RETURNING id`, f.api)
	units := f.id(`INSERT INTO meters (api_id, slug, aggregation, field) VALUES ($1, 'units', 'sum', 'units') RETURNING id`, f.api)
	gets := f.id(`INSERT INTO meters (api_id, slug, aggregation, filter_methods, filter_routes)
		VALUES ($1, 'gets', 'count', '{GET}', '{/v1/*}') RETURNING id`, f.api)
	for _, c := range []struct {
		version, meter uuid.UUID
		price          string
	}{{f.v1, calls, "0.01"}, {f.v1, units, "0.5"}, {f.v2, calls, "0.005"}, {f.v2, units, "0.4"}, {f.v2, gets, "0.001"}} {
		f.exec(`INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price) VALUES ($1, $2, 'per_unit', $3)`,
			c.version, c.meter, c.price)
	}
	return f
}

func (f *periodFixture) id(sql string, args ...any) uuid.UUID {
	f.t.Helper()
	var id uuid.UUID
	if err := f.pool.QueryRow(f.t.Context(), sql, args...).Scan(&id); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return id
}

func (f *periodFixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.t.Context(), sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

// subscribe subscribes a new consumer organization on v1 at start, with
// the current period [curStart, curEnd) (as the roll left it).
func (f *periodFixture) subscribe(start, curStart, curEnd time.Time, trialEnds *time.Time) uuid.UUID {
	f.t.Helper()
	org := testenv.Org(f.t, f.pool, "consumer-"+testenv.Suffix())
	status := "active"
	if trialEnds != nil && trialEnds.After(start) {
		status = "trialing"
	}
	sub := f.id(`INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status, trial_ends_at,
		current_period_start, current_period_end) VALUES ($1, 'cons', $2, $3, $4, $5, $6, $7) RETURNING id`,
		org, f.api, f.v1, status, trialEnds, curStart, curEnd)
	f.history(sub, f.v1, status, start)
	return sub
}

func (f *periodFixture) history(sub, version uuid.UUID, status string, at time.Time) {
	f.t.Helper()
	f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, $3, $4, 'cons')`, sub, version, status, at)
}

// changePlan moves sub to version at at, as ChangePlan records it.
func (f *periodFixture) changePlan(sub, version uuid.UUID, at time.Time) {
	f.t.Helper()
	f.exec(`UPDATE subscriptions SET plan_version_id = $2 WHERE id = $1`, sub, version)
	f.history(sub, version, "active", at)
}

// ev is a usage event of a test.
type ev struct {
	at           time.Time
	method, path string
	status       uint16
	units        string
	refusal      string
}

func get(at time.Time, units string) ev {
	return ev{at: at, method: "GET", path: "/v1/forecast", status: 200, units: units}
}

// events writes events of sub to usage_events, at increasing offsets of
// partition 0.
func (f *periodFixture) events(sub uuid.UUID, evs ...ev) {
	f.t.Helper()
	f.eventsOf([]uuid.UUID{sub}, evs)
}

// eventsOf writes the events for each of subs, in one batch.
func (f *periodFixture) eventsOf(subs []uuid.UUID, evs []ev) {
	f.t.Helper()
	batch, err := f.ch.PrepareBatch(context.Background(), `INSERT INTO usage_events (id, source, type, subject, time, api_id,
		key_id, method, route, path, status, latency_ms, request_bytes, response_bytes, units, refusal, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, sub := range subs {
		for _, e := range evs {
			f.offset++
			if err := batch.Append(uuid.NewString(), "/gw", "veil.api.request", sub.String(), e.at, f.api.String(), "key_1",
				e.method, "/v1/*", e.path, e.status, uint32(5), uint64(10), uint64(20), decimal.RequireFromString(e.units), e.refusal,
				e.at, int32(0), f.offset); err != nil {
				f.t.Fatal(err)
			}
		}
	}
	if err := batch.Send(); err != nil {
		f.t.Fatalf("insert usage_events: %v", err)
	}
}

func (f *periodFixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.t.Context(), sql, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// period is sub's period starting at start.
func (f *periodFixture) period(sub uuid.UUID, start time.Time) (id uuid.UUID, state string, trial bool) {
	f.t.Helper()
	if err := f.pool.QueryRow(f.t.Context(), `SELECT id, state::text, trial FROM billing_periods WHERE subscription_id = $1 AND period_start = $2`,
		sub, start).Scan(&id, &state, &trial); err != nil {
		f.t.Fatalf("period of %s at %s: %v", sub, start, err)
	}
	return id, state, trial
}

// TestEnsurePeriodsOnce: every ended period of each subscription is
// recorded, once, however many runs (concurrent ones too) see it; a
// canceled subscription's period ends its periods; a period wholly in
// the trial is a trial period.
func TestEnsurePeriodsOnce(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	ctx := t.Context()
	now := day(2026, 4, 15)
	long := f.subscribe(day(2026, 1, 10), day(2026, 4, 10), day(2026, 5, 10), nil)
	canceled := f.subscribe(day(2026, 3, 1), day(2026, 3, 1), day(2026, 4, 1), nil)
	f.exec(`UPDATE subscriptions SET status = 'canceled', canceled_at = $2 WHERE id = $1`, canceled, day(2026, 3, 15))
	trialEnds := day(2026, 2, 20)
	trial := f.subscribe(day(2026, 1, 20), day(2026, 3, 20), day(2026, 4, 20), &trialEnds)
	fresh := f.subscribe(day(2026, 4, 1), day(2026, 4, 1), day(2026, 5, 1), nil)

	var wg sync.WaitGroup
	got := make([]int, 3)
	errs := make([]error, 3)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = f.svc.EnsurePeriods(ctx, now)
		}()
	}
	wg.Wait()
	total := 0
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("EnsurePeriods: %v", errs[i])
		}
		total += got[i]
	}
	// long: Jan 10–Feb 10–Mar 10–Apr 10; canceled: Mar 1–Apr 1;
	// trial: Jan 20–Feb 20 (trial), Feb 20–Mar 20.
	if total != 6 {
		t.Fatalf("EnsurePeriods recorded %d periods over three concurrent runs; want 6", total)
	}
	for sub, want := range map[uuid.UUID]int{long: 3, canceled: 1, trial: 2, fresh: 0} {
		if n := f.count(`SELECT count(*) FROM billing_periods WHERE subscription_id = $1`, sub); n != want {
			t.Errorf("periods of %s = %d; want %d", sub, n, want)
		}
	}
	if _, _, tr := f.period(trial, day(2026, 1, 20)); !tr {
		t.Errorf("period Jan 20–Feb 20 wholly in the trial: trial = false; want true")
	}
	if _, _, tr := f.period(trial, day(2026, 2, 20)); tr {
		t.Errorf("period Feb 20–Mar 20 after the trial: trial = true; want false")
	}
	if n, err := f.svc.EnsurePeriods(ctx, now); err != nil || n != 0 {
		t.Fatalf("EnsurePeriods again = %d, %v; want 0", n, err)
	}
	// The canceled subscription gets nothing more, even much later.
	if n, err := f.svc.EnsurePeriods(ctx, day(2026, 9, 1)); err != nil {
		t.Fatal(err)
	} else if c := f.count(`SELECT count(*) FROM billing_periods WHERE subscription_id = $1`, canceled); c != 1 {
		t.Fatalf("after a later run (%d recorded), periods of the canceled subscription = %d; want 1", n, c)
	}
}

// TestClosePeriodSplitsByPlanChange: a plan change mid-period (at a
// fraction of a second) gives two segments, each counting exactly the
// billable events of its part (refusals, 5xx, other subscriptions and
// other periods left out; the change's own second in the new segment);
// the period closes only once its end plus the grace has passed, once,
// however many runs close it at the same time, with the offsets it read.
func TestClosePeriodSplitsByPlanChange(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	ctx := t.Context()
	start, end := day(2026, 3, 1), day(2026, 4, 1)
	change := time.Date(2026, 3, 16, 12, 30, 15, 250000000, time.UTC)
	sub := f.subscribe(start, start, end, nil)
	other := f.subscribe(start, start, end, nil)
	f.changePlan(sub, f.v2, change)

	f.events(sub,
		get(start, "1.5"), get(day(2026, 3, 5), "1.5"), get(change.Add(-time.Second), "1.5"),
		ev{at: day(2026, 3, 6), method: "GET", path: "/v1/forecast", status: 429, units: "0", refusal: "rate_limited"},
		ev{at: day(2026, 3, 7), method: "GET", path: "/v1/forecast", status: 502, units: "9"},
		get(change.Truncate(time.Second), "2"), get(day(2026, 3, 20), "2"), get(end.Add(-time.Second), "0.25"),
		ev{at: day(2026, 3, 21), method: "POST", path: "/v2/upload", status: 201, units: "3"},
		ev{at: day(2026, 3, 22), method: "GET", path: "/v2/other", status: 404, units: "0"})
	// The snapshot reads up to the last of these, refused ones included.
	wantOffset := f.offset
	f.events(sub, get(start.Add(-time.Second), "100"), get(end, "100"))
	f.events(other, get(day(2026, 3, 10), "50"))

	if _, err := f.svc.EnsurePeriods(ctx, end); err != nil {
		t.Fatal(err)
	}
	id, _, _ := f.period(sub, start)
	if n, err := f.svc.ClosePeriods(ctx, end.Add(time.Hour-time.Second)); err != nil || n != 0 {
		t.Fatalf("ClosePeriods inside the grace = %d, %v; want 0", n, err)
	}
	if _, state, _ := f.period(sub, start); state != "open" {
		t.Fatalf("state inside the grace = %s; want open", state)
	}
	var wg sync.WaitGroup
	got := make([]int, 3)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := f.svc.ClosePeriods(ctx, end.Add(time.Hour))
			if err != nil {
				t.Errorf("ClosePeriods: %v", err)
			}
			got[i] = n
		}()
	}
	wg.Wait()
	if got[0]+got[1]+got[2] != 2 {
		t.Fatalf("concurrent ClosePeriods closed %v; want 2 periods in all", got)
	}
	if _, state, _ := f.period(sub, start); state != "closed" {
		t.Fatalf("state after the grace = %s; want closed", state)
	}
	if n := f.count(`SELECT count(*) FROM usage_snapshots WHERE billing_period_id = $1`, id); n != 1 {
		t.Fatalf("snapshots of the period = %d; want 1", n)
	}

	segs, snapID, err := f.svc.SegmentsFor(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		version  uuid.UUID
		from, to time.Time
		base     string
		usage    map[string]string
	}{
		{f.v1, start, change, "10", map[string]string{"calls": "3", "units": "4.5"}},
		// The change's second, Mar 20, the last second, the POST and the
		// 404: gets counts the two GET /v1/ calls and the 404 is /v2/.
		{f.v2, change, end, "30", map[string]string{"calls": "5", "units": "7.25", "gets": "3"}},
	}
	if len(segs) != len(want) {
		t.Fatalf("SegmentsFor = %d segments; want %d: %+v", len(segs), len(want), segs)
	}
	for i, w := range want {
		g := segs[i]
		if g.PlanVersionID != w.version.String() || !g.From.Equal(w.from) || !g.To.Equal(w.to) || !g.Terms.BaseFee.Equal(decimal.RequireFromString(w.base)) {
			t.Errorf("segment %d = %s [%s, %s) base %s; want %s [%s, %s) base %s", i, g.PlanVersionID, g.From, g.To, g.Terms.BaseFee, w.version, w.from, w.to, w.base)
		}
		if len(g.Usage) != len(w.usage) {
			t.Errorf("segment %d usage = %v; want %v", i, g.Usage, w.usage)
		}
		for m, q := range w.usage {
			if !g.Usage[m].Equal(decimal.RequireFromString(q)) {
				t.Errorf("segment %d usage of %s = %s; want %s", i, m, g.Usage[m], q)
			}
		}
	}
	var raw []byte
	if err := f.pool.QueryRow(ctx, `SELECT through_offsets FROM usage_snapshots WHERE id = $1`, snapID).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var offsets map[string]int64
	if err := json.Unmarshal(raw, &offsets); err != nil || len(offsets) != 1 || offsets["0"] != wantOffset {
		t.Fatalf("through_offsets = %s; want {\"0\": %d}", raw, wantOffset)
	}
	if _, _, err := f.svc.SegmentsFor(ctx, uuid.New()); err != ErrPeriodNotFound {
		t.Fatalf("SegmentsFor(unknown) error = %v; want ErrPeriodNotFound", err)
	}
}

// TestSegmentsForOpenPeriod: an open period has no snapshot to price.
func TestSegmentsForOpenPeriod(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	sub := f.subscribe(day(2026, 3, 1), day(2026, 3, 1), day(2026, 4, 1), nil)
	if _, err := f.svc.EnsurePeriods(t.Context(), day(2026, 4, 1)); err != nil {
		t.Fatal(err)
	}
	id, _, _ := f.period(sub, day(2026, 3, 1))
	if _, _, err := f.svc.SegmentsFor(t.Context(), id); err != ErrNoSnapshot {
		t.Fatalf("SegmentsFor(open period) error = %v; want ErrNoSnapshot", err)
	}
}

// lateAdjustment is a late_usage adjustment as recorded.
type lateAdjustment struct {
	meter    string
	quantity decimal.Decimal
	version  uuid.UUID
	segment  time.Time
}

func (f *periodFixture) lateAdjustments(sub uuid.UUID) []lateAdjustment {
	f.t.Helper()
	rows, err := f.pool.Query(f.t.Context(), `SELECT meter_slug, quantity, plan_version_id, segment_start FROM billing_adjustments
		WHERE subscription_id = $1 AND kind = 'late_usage' ORDER BY created_at, segment_start, meter_slug`, sub)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []lateAdjustment
	for rows.Next() {
		var a lateAdjustment
		if err := rows.Scan(&a.meter, &a.quantity, &a.version, &a.segment); err != nil {
			f.t.Fatal(err)
		}
		a.segment = a.segment.UTC()
		out = append(out, a)
	}
	return out
}

func fmtLate(as []lateAdjustment, names map[uuid.UUID]string) string {
	s := ""
	for _, a := range as {
		s += fmt.Sprintf("%s/%s@%s=%s ", names[a.version], a.meter, a.segment.Format("01-02T15:04:05.000"), a.quantity)
	}
	return s
}

// TestLateUsage: events that reach ClickHouse after their period was
// invoiced, inside the 35-day window, become late_usage adjustments of
// their segment and meter, once (a second run records nothing; a later
// event adds only itself); a period that ended before the window is never
// recounted.
func TestLateUsage(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	ctx := t.Context()
	start, end := day(2026, 3, 1), day(2026, 4, 1)
	change := time.Date(2026, 3, 16, 12, 0, 0, 500000000, time.UTC)
	sub := f.subscribe(start, start, end, nil)
	f.changePlan(sub, f.v2, change)
	f.events(sub, get(day(2026, 3, 2), "1"), get(day(2026, 3, 20), "1"))
	if _, err := f.svc.EnsurePeriods(ctx, end); err != nil {
		t.Fatal(err)
	}
	if n, err := f.svc.ClosePeriods(ctx, end.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("ClosePeriods = %d, %v; want 1", n, err)
	}
	id, _, _ := f.period(sub, start)
	names := map[uuid.UUID]string{f.v1: "v1", f.v2: "v2"}

	// Closed but not invoiced yet: the draft will be built from the
	// snapshot, and the recount waits for the invoice.
	f.events(sub, get(day(2026, 3, 3), "2"))
	if n, err := f.svc.LateUsage(ctx, end.Add(2*time.Hour)); err != nil || n != 0 {
		t.Fatalf("LateUsage before the invoice = %d, %v; want 0", n, err)
	}
	f.exec(`UPDATE billing_periods SET state = 'invoiced' WHERE id = $1`, id)
	now := end.Add(10 * 24 * time.Hour)
	if n, err := f.svc.LateUsage(ctx, now); err != nil || n != 2 {
		t.Fatalf("LateUsage = %d, %v; want 2 (calls and units of the first segment)", n, err)
	}
	want := "v1/calls@03-01T00:00:00.000=1 v1/units@03-01T00:00:00.000=2 "
	if got := fmtLate(f.lateAdjustments(sub), names); got != want {
		t.Fatalf("late adjustments = %s; want %s", got, want)
	}
	if n, err := f.svc.LateUsage(ctx, now); err != nil || n != 0 {
		t.Fatalf("LateUsage again = %d, %v; want 0", n, err)
	}

	// A later event of the second segment (a GET /v1/: calls, units and
	// gets) adds only itself.
	f.events(sub, get(day(2026, 3, 31), "0.5"))
	if n, err := f.svc.LateUsage(ctx, now.Add(time.Hour)); err != nil || n != 3 {
		t.Fatalf("LateUsage after a second late event = %d, %v; want 3", n, err)
	}
	want += "v2/calls@03-16T12:00:00.500=1 v2/gets@03-16T12:00:00.500=1 v2/units@03-16T12:00:00.500=0.5 "
	if got := fmtLate(f.lateAdjustments(sub), names); got != want {
		t.Fatalf("late adjustments = %s; want %s", got, want)
	}

	// Past the window: never recounted.
	f.events(sub, get(day(2026, 3, 4), "7"))
	if n, err := f.svc.LateUsage(ctx, end.Add(LateWindow+time.Second)); err != nil || n != 0 {
		t.Fatalf("LateUsage past the window = %d, %v; want 0", n, err)
	}
	if got := fmtLate(f.lateAdjustments(sub), names); got != want {
		t.Fatalf("late adjustments past the window = %s; want %s", got, want)
	}
	// The last moment of the window still counts.
	if n, err := f.svc.LateUsage(ctx, end.Add(LateWindow)); err != nil || n != 2 {
		t.Fatalf("LateUsage at the window's end = %d, %v; want 2", n, err)
	}
}

// BenchmarkClosePeriods records and closes the periods of n
// subscriptions, half of them with a plan change mid-period (two
// segments), each with ten events: periods per second of EnsurePeriods
// and ClosePeriods together, the part of billing that reads ClickHouse.
// Run with -benchtime=1x.
func BenchmarkClosePeriods(b *testing.B) {
	const n = 20000
	for range b.N {
		b.StopTimer()
		f := periodSetup(b)
		ctx := b.Context()
		start, end := day(2026, 3, 1), day(2026, 4, 1)
		change := time.Date(2026, 3, 16, 12, 0, 0, 0, time.UTC)
		if _, err := f.pool.Exec(ctx, `
			WITH orgs AS (
				INSERT INTO organizations (slug, name) SELECT 'bench-' || g, 'bench-' || g FROM generate_series(1, $1) g RETURNING id
			), subs AS (
				INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status, current_period_start, current_period_end)
				SELECT id, 'cons', $2, $3, 'active', $5, $6 FROM orgs RETURNING id
			)
			INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
			SELECT id, $3, 'active'::subscription_status, $5, 'cons' FROM subs
			UNION ALL
			SELECT id, $4, 'active'::subscription_status, $7, 'cons' FROM subs WHERE get_byte(uuid_send(id), 15) % 2 = 0`,
			n, f.api, f.v1, f.v2, start, end, change); err != nil {
			b.Fatal(err)
		}
		rows, err := f.pool.Query(ctx, `SELECT id FROM subscriptions`)
		if err != nil {
			b.Fatal(err)
		}
		var subs []uuid.UUID
		for rows.Next() {
			var id uuid.UUID
			if err := rows.Scan(&id); err != nil {
				b.Fatal(err)
			}
			subs = append(subs, id)
		}
		rows.Close()
		var evs []ev
		for i := range 10 {
			evs = append(evs, get(start.Add(time.Duration(i)*3*24*time.Hour+time.Hour), "1.5"))
		}
		f.eventsOf(subs, evs)
		b.StartTimer()
		began := time.Now()
		if got, err := f.svc.EnsurePeriods(ctx, end); err != nil || got != n {
			b.Fatalf("EnsurePeriods = %d, %v; want %d", got, err, n)
		}
		b.ReportMetric(time.Since(began).Seconds(), "ensure-s")
		if got, err := f.svc.ClosePeriods(ctx, end.Add(time.Hour)); err != nil || got != n {
			b.Fatalf("ClosePeriods = %d, %v; want %d", got, err, n)
		}
		b.ReportMetric(float64(n)/time.Since(began).Seconds(), "periods/s")
	}
}

// TestNoClickHouseKeepsPeriodsOpen: a control plane without ClickHouse
// records periods but leaves them open, and its billing cycle goes on.
func TestNoClickHouseKeepsPeriodsOpen(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	svc, err := New(Config{Pool: f.pool, Logger: testenv.Logger(t), Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	sub := f.subscribe(day(2026, 3, 1), day(2026, 3, 1), day(2026, 4, 1), nil)
	now := day(2026, 4, 2)
	if n, err := svc.EnsurePeriods(t.Context(), now); err != nil || n != 1 {
		t.Fatalf("EnsurePeriods = %d, %v; want 1", n, err)
	}
	if n, err := svc.ClosePeriods(t.Context(), now); err != nil || n != 0 {
		t.Fatalf("ClosePeriods without ClickHouse = %d, %v; want 0, nil", n, err)
	}
	if n, err := svc.LateUsage(t.Context(), now); err != nil || n != 0 {
		t.Fatalf("LateUsage without ClickHouse = %d, %v; want 0, nil", n, err)
	}
	if _, state, _ := f.period(sub, day(2026, 3, 1)); state != "open" {
		t.Fatalf("state = %s; want open", state)
	}
}

// TestSnapshotAndLateUsageAddUp: random plan changes back and forth
// (several per period, at fractions of a second), random events over the
// period and its edges, then rounds of late events each followed by a
// recount: for every meter, what the snapshot's segments counted plus the
// late usage recorded equals what ClickHouse counts for the whole period,
// and each segment's part equals a count over its own window. Nothing is
// counted twice, nothing is missed.
func TestSnapshotAndLateUsageAddUp(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	ctx := t.Context()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 16))
	start, end := day(2026, 3, 1), day(2026, 4, 1)
	span := end.Sub(start)
	sub := f.subscribe(start, start, end, nil)
	at := start
	versions := []uuid.UUID{f.v2, f.v1}
	for i := range 1 + r.IntN(5) {
		at = at.Add(time.Duration(r.Int64N(int64(span / 6))))
		if !at.Before(end) {
			break
		}
		f.changePlan(sub, versions[i%2], at)
	}
	randomEvents := func(n int) []ev {
		var evs []ev
		for range n {
			e := get(start.Add(time.Duration(r.Int64N(int64(span+48*time.Hour)))-24*time.Hour).Truncate(time.Second),
				decimal.New(r.Int64N(10000), -3).String())
			switch r.IntN(6) {
			case 0:
				e.method = "POST"
			case 1:
				e.status, e.refusal = 429, "quota_exhausted"
			case 2:
				e.status = 503
			}
			evs = append(evs, e)
		}
		return evs
	}
	f.events(sub, randomEvents(300)...)
	if _, err := f.svc.EnsurePeriods(ctx, end); err != nil {
		t.Fatal(err)
	}
	if n, err := f.svc.ClosePeriods(ctx, end.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("ClosePeriods = %d, %v; want 1", n, err)
	}
	id, _, _ := f.period(sub, start)
	f.exec(`UPDATE billing_periods SET state = 'invoiced' WHERE id = $1`, id)
	for round := range 3 {
		f.events(sub, randomEvents(20+r.IntN(40))...)
		if _, err := f.svc.LateUsage(ctx, end.Add(time.Duration(round+1)*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}

	segs, _, err := f.svc.SegmentsFor(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	meters, err := f.svc.versionMeters(ctx, []uuid.UUID{f.v1, f.v2})
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range segs {
		version := uuid.MustParse(g.PlanVersionID)
		now, err := metering.MeterTotals(ctx, f.ch, sub.String(), meters[version], g.From, g.To)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range f.lateAdjustments(sub) {
			if a.segment.Equal(g.From) {
				g.Usage[a.meter] = g.Usage[a.meter].Add(a.quantity)
			}
		}
		for slug, q := range now {
			if !g.Usage[slug].Equal(q) {
				t.Errorf("segment %d (%s) %s: snapshot plus late usage = %s; ClickHouse counts %s", i, g.From, slug, g.Usage[slug], q)
			}
		}
	}
	// Over the whole period: calls and units are charged by both
	// versions (gets by v2 only).
	whole, err := metering.MeterTotals(ctx, f.ch, sub.String(), meters[f.v1], start, end)
	if err != nil {
		t.Fatal(err)
	}
	for _, slug := range []string{"calls", "units"} {
		var sum decimal.Decimal
		for _, g := range segs {
			sum = sum.Add(g.Usage[slug])
		}
		if !sum.Equal(whole[slug]) {
			t.Errorf("%s over the period: segments and late usage add up to %s; ClickHouse counts %s", slug, sum, whole[slug])
		}
	}
}
