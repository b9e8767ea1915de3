package drift

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/usage"
)

type fixture struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	redis   rueidis.Client
	ch      driver.Conn
	metrics *metrics.Set
	svc     *Checker
	// sub is the subscription: quota 10, hard, in its current period.
	sub subscription
	// apiID and versionID are its API and plan version, for addSub.
	apiID, versionID uuid.UUID
}

// newFixture is a service over a fresh Postgres database, a private
// Redis database and a fresh ClickHouse database, with one active
// subscription whose plan has a hard quota of 10 requests.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := t.Context()
	url := testenv.MigratedPostgresURL(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	redis, _ := testenv.RedisDB(t)
	ch, _, _ := testenv.ClickHouseDB(t)
	f := &fixture{t: t, ctx: ctx, pool: pool, redis: redis, ch: ch, metrics: metrics.NewSet()}
	f.svc, err = New(Config{Pool: pool, Redis: redis, ClickHouse: ch,
		Logger: testenv.Logger(t), Metrics: f.metrics, Settle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Truncate(time.Hour).Add(-48 * time.Hour)
	f.sub = subscription{start: start, end: start.AddDate(0, 0, 30), quota: 10, hard: true}
	var orgID, planID uuid.UUID
	f.exec(`INSERT INTO organizations (slug, name) VALUES ('consumer', 'Consumer') RETURNING id`, &orgID)
	f.exec(`INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		VALUES ($1, 'Weather', 'weather', 'http://127.0.0.1:1', '1', 'active', 'provider-user') RETURNING id`, &f.apiID, orgID)
	f.exec(`INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Starter', 'starter', 'active') RETURNING id`, &planID, f.apiID)
	f.exec(`INSERT INTO plan_versions (plan_id, version, type, currency, quota_requests, quota_hard, created_by)
		VALUES ($1, 1, 'subscription', 'USD', 10, true, 'provider-user') RETURNING id`, &f.versionID, planID)
	f.exec(`INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status, current_period_start, current_period_end)
		VALUES ($1, 'consumer-user', $2, $3, 'active', $4, $5) RETURNING id`, &f.sub.id, orgID, f.apiID, f.versionID, f.sub.start, f.sub.end)
	return f
}

// addSub adds an active subscription with that id (a fresh one when
// uuid.Nil) of another organization to the same plan, in a period that
// starts at start.
func (f *fixture) addSub(id uuid.UUID, start time.Time) subscription {
	f.t.Helper()
	if id == uuid.Nil {
		id = uuid.New()
	}
	sub := subscription{id: id, start: start, end: start.AddDate(0, 0, 30), quota: 10, hard: true}
	var orgID uuid.UUID
	f.exec(`INSERT INTO organizations (slug, name) VALUES ($1, $1) RETURNING id`, &orgID, "consumer-"+id.String())
	f.exec(`INSERT INTO subscriptions (id, organization_id, subscriber, api_id, plan_version_id, status, current_period_start, current_period_end)
		VALUES ($1, $2, 'consumer-user', $3, $4, 'active', $5, $6) RETURNING id`, &sub.id, id, orgID, f.apiID, f.versionID, sub.start, sub.end)
	return sub
}

// exec runs a statement returning one value into dst.
func (f *fixture) exec(sql string, dst any, args ...any) {
	f.t.Helper()
	if err := f.pool.QueryRow(f.ctx, sql, args...).Scan(dst); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

// event is a usage_events row.
type event struct {
	partition int32
	offset    int64
	at        time.Time
	units     string
	refusal   string
	// subject is the fixture's subscription when "".
	subject string
	// ingested is ingested_at; at when zero, which the fixture's events
	// put well over a minute ago.
	ingested time.Time
}

func (f *fixture) insertEvents(events ...event) {
	f.t.Helper()
	batch, err := f.ch.PrepareBatch(f.ctx,
		`INSERT INTO usage_events (id, source, type, subject, time, units, refusal, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, e := range events {
		if e.subject == "" {
			e.subject = f.sub.id.String()
		}
		if e.ingested.IsZero() {
			e.ingested = e.at
		}
		id := fmt.Sprintf("evt-%s-%d-%d", e.subject, e.partition, e.offset)
		if err := batch.Append(id, "test", "veil.api.request", e.subject, e.at, decimal.RequireFromString(e.units),
			e.refusal, e.ingested, e.partition, e.offset); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		f.t.Fatal(err)
	}
}

// Figures of periodEvents.
const (
	eventRequests   = 12
	eventUnitsMicro = 10_250_001
)

// periodEvents are 12 admitted rows of the period (10.250001 units) and 2
// refusals on two partitions, plus an admitted row of the previous period:
// ClickHouse's highest offsets are 16 on partition 0 and 10 on partition 1.
func (f *fixture) periodEvents() {
	f.t.Helper()
	var evs []event
	at := func(i int) time.Time { return f.sub.start.Add(time.Duration(i) * time.Minute) }
	for off := int64(10); off <= 15; off++ {
		evs = append(evs, event{partition: 0, offset: off, at: at(int(off)), units: "1.5"})
	}
	evs = append(evs, event{partition: 0, offset: 16, at: at(16), units: "0", refusal: "quota_exhausted"})
	evs = append(evs, event{partition: 1, offset: 3, at: f.sub.start.Add(-time.Hour), units: "7"})
	for off := int64(4); off <= 8; off++ {
		evs = append(evs, event{partition: 1, offset: off, at: at(int(off)), units: "0.25"})
	}
	evs = append(evs, event{partition: 1, offset: 9, at: at(9), units: "0.000001"})
	evs = append(evs, event{partition: 1, offset: 10, at: at(10), units: "0", refusal: "rate_limited"})
	f.insertEvents(evs...)
}

func (f *fixture) do(cmd rueidis.Completed) {
	f.t.Helper()
	if err := f.redis.Do(f.ctx, cmd).Error(); err != nil {
		f.t.Fatal(err)
	}
}

// setRedis writes the watermarks and the period counter as the processors
// would have.
func (f *fixture) setRedis(watermarks map[string]string, requests, unitsMicro int64, extra ...string) {
	f.t.Helper()
	id := f.sub.id.String()
	if len(watermarks) > 0 {
		fv := f.redis.B().Hset().Key(enforcement.WatermarkName(id)).FieldValue()
		for k, v := range watermarks {
			fv = fv.FieldValue(k, v)
		}
		f.do(fv.Build())
	}
	fv := f.redis.B().Hset().Key(enforcement.PeriodCounterName(id, f.sub.start)).FieldValue().
		FieldValue("requests", strconv.FormatInt(requests, 10)).
		FieldValue("units_micro", strconv.FormatInt(unitsMicro, 10)).
		FieldValue("period_end", strconv.FormatInt(f.sub.end.Unix(), 10))
	for i := 0; i+1 < len(extra); i += 2 {
		fv = fv.FieldValue(extra[i], extra[i+1])
	}
	f.do(fv.Build())
}

func (f *fixture) block() {
	f.t.Helper()
	end := f.sub.end
	f.do(f.redis.B().Set().Key(enforcement.BlockName(f.sub.id.String())).Value(strconv.FormatInt(end.Unix(), 10)).Exat(end).Build())
}

// snapshot is every key of the Redis database with its content.
func (f *fixture) snapshot() map[string]string {
	f.t.Helper()
	out := map[string]string{}
	keys, err := f.redis.Do(f.ctx, f.redis.B().Keys().Pattern("*").Build()).AsStrSlice()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, k := range keys {
		typ, err := f.redis.Do(f.ctx, f.redis.B().Type().Key(k).Build()).ToString()
		if err != nil {
			f.t.Fatal(err)
		}
		switch typ {
		case "hash":
			m, err := f.redis.Do(f.ctx, f.redis.B().Hgetall().Key(k).Build()).AsStrMap()
			if err != nil {
				f.t.Fatal(err)
			}
			out[k] = fmt.Sprint(m) // fmt sorts map keys
		case "string":
			out[k], err = f.redis.Do(f.ctx, f.redis.B().Get().Key(k).Build()).ToString()
		case "list":
			var l []string
			l, err = f.redis.Do(f.ctx, f.redis.B().Lrange().Key(k).Start(0).Stop(-1).Build()).AsStrSlice()
			out[k] = strings.Join(l, "\n")
		default:
			out[k] = typ
		}
		if err != nil {
			f.t.Fatal(err)
		}
	}
	return out
}

func (f *fixture) hash(key string) map[string]string {
	f.t.Helper()
	m, err := f.redis.Do(f.ctx, f.redis.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

func (f *fixture) ttl(key string) time.Duration {
	f.t.Helper()
	ms, err := f.redis.Do(f.ctx, f.redis.B().Pttl().Key(key).Build()).AsInt64()
	if err != nil {
		f.t.Fatal(err)
	}
	return time.Duration(ms) * time.Millisecond
}

func (f *fixture) outbox() []string {
	f.t.Helper()
	l, err := f.redis.Do(f.ctx, f.redis.B().Lrange().Key(enforcement.QuotaOutboxName(f.sub.id.String())).Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil {
		f.t.Fatal(err)
	}
	return l
}

func (f *fixture) run() Report {
	f.t.Helper()
	rep, err := f.svc.Check(f.ctx)
	if err != nil {
		f.t.Fatalf("Check() = %v", err)
	}
	return rep
}

// healsOne runs the check and fails unless it found the subscription's
// drift as want (its subscription, period and Healed filled in here) and
// healed it.
func (f *fixture) healsOne(want Drifted) {
	f.t.Helper()
	rep := f.run()
	if got, w := countsOf(rep), (counts{checked: 1, drifted: 1, healed: 1}); got != w {
		f.t.Fatalf("Check() = %+v, unhealed %v; want %+v", got, rep.Unhealed, w)
	}
	want.SubscriptionID, want.PeriodStart, want.Healed = f.sub.id, f.sub.start, true
	if got := rep.Drift[0]; got != want {
		f.t.Errorf("Check().Drift[0] = %+v; want %+v", got, want)
	}
}

// runSettling runs the check with settle in place of the wait between
// finding drift and healing it.
func (f *fixture) runSettling(settle func()) Report {
	f.t.Helper()
	rep, _, err := f.svc.check(f.ctx, pass{chunk: chunkSize, settle: func(context.Context) error { settle(); return nil }})
	if err != nil {
		f.t.Fatalf("Check() = %v", err)
	}
	return rep
}

// runWith runs the check as run says; chunk and settle default to the
// scheduled run's.
func (f *fixture) runWith(run pass) Report {
	f.t.Helper()
	if run.chunk == 0 {
		run.chunk = chunkSize
	}
	if run.settle == nil {
		run.settle = f.svc.settle
	}
	rep, _, err := f.svc.check(f.ctx, run)
	if err != nil {
		f.t.Fatalf("Check() = %v", err)
	}
	return rep
}

// record writes the subscription record's period and quota fields.
func (f *fixture) record(periodStart time.Time, quota int64, hard bool) {
	f.t.Helper()
	h := "0"
	if hard {
		h = "1"
	}
	f.do(f.redis.B().Hset().Key(enforcement.SubscriptionName(f.sub.id.String())).FieldValue().
		FieldValue("period_start", strconv.FormatInt(periodStart.Unix(), 10)).
		FieldValue("period_end", strconv.FormatInt(periodStart.AddDate(0, 0, 30).Unix(), 10)).
		FieldValue("quota_requests", strconv.FormatInt(quota, 10)).
		FieldValue("quota_hard", h).Build())
}

// blocked reports whether the subscription's block is set.
func (f *fixture) blocked() bool {
	f.t.Helper()
	n, err := f.redis.Do(f.ctx, f.redis.B().Exists().Key(enforcement.BlockName(f.sub.id.String())).Build()).AsInt64()
	if err != nil {
		f.t.Fatal(err)
	}
	return n == 1
}

// counts are the report's tallies, to compare in one go.
type counts struct{ checked, inFlight, drifted, healed, unhealed int }

func countsOf(rep Report) counts {
	return counts{rep.Checked, rep.InFlight, rep.Drifted, rep.Healed, len(rep.Unhealed)}
}

func (f *fixture) gauge(name string) string {
	f.t.Helper()
	var b strings.Builder
	f.metrics.WritePrometheus(&b)
	for line := range strings.Lines(b.String()) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			return v
		}
	}
	return ""
}

// TestCheckNoWrite covers the states the check leaves alone:
// Redis agrees with ClickHouse up to its own watermarks, whether
// ClickHouse holds rows beyond them (a batch Redis is still applying) or
// Redis applied offsets ClickHouse does not hold; and when ClickHouse is
// behind and the figures disagree, the subscription is in flight.
func TestCheckNoWrite(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	for _, tc := range []struct {
		name       string
		watermarks map[string]string
		requests   int64
		unitsMicro int64
		want       counts
	}{
		{"in sync", map[string]string{"0": "16", "1": "10"}, eventRequests, eventUnitsMicro, counts{checked: 1}},
		// Rows 10–13 of partition 0 (4 × 1.5) and 4–9 of partition 1
		// (5 × 0.25 + 0.000001): ClickHouse's offsets 14–16 are ignored.
		{"redis behind clickhouse", map[string]string{"0": "13", "1": "10"}, 10, 7_250_001, counts{checked: 1}},
		{"redis behind clickhouse on both", map[string]string{"0": "11", "1": "5"}, 4, 3_500_000, counts{checked: 1}},
		{"ahead on a partition, figures agree", map[string]string{"0": "18", "1": "10"}, eventRequests, eventUnitsMicro, counts{checked: 1}},
		{"on an idle partition", map[string]string{"0": "16", "1": "10", "2": "4"}, eventRequests, eventUnitsMicro, counts{checked: 1}},
		{"ahead on a partition", map[string]string{"0": "18", "1": "10"}, eventRequests + 1, eventUnitsMicro, counts{checked: 1, inFlight: 1}},
		{"on a partition clickhouse lacks", map[string]string{"0": "16", "1": "10", "2": "0"}, eventRequests + 1, eventUnitsMicro, counts{checked: 1, inFlight: 1}},
		{"ahead on one, lost another", map[string]string{"0": "18"}, 7, 9_000_000, counts{checked: 1, inFlight: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.do(f.redis.B().Flushdb().Build())
			f.setRedis(tc.watermarks, tc.requests, tc.unitsMicro)
			before := f.snapshot()
			rep := f.run()
			if got := countsOf(rep); got != tc.want || len(rep.Drift) != 0 {
				t.Errorf("Check() = %+v, drift %+v; want %+v, no drift", got, rep.Drift, tc.want)
			}
			if after := f.snapshot(); !maps.Equal(after, before) {
				t.Errorf("Redis after Check() = %v; want unchanged %v", after, before)
			}
		})
	}
}

// TestCheckHealsBehindCounter: a wrong counter whose watermarks
// are behind ClickHouse is healed to the rows up to those watermarks, and
// the watermarks stay where they are, so the processors still apply the
// batch they have in hand.
func TestCheckHealsBehindCounter(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	id := f.sub.id.String()
	watermarks := map[string]string{"0": "12", "1": "10"}
	f.setRedis(watermarks, 3, 1_000_000)

	// Rows 10–12 of partition 0 (3 × 1.5) and 4–9 of partition 1.
	f.healsOne(Drifted{RedisRequests: 3, ClickHouseRequests: 9,
		RedisUnits: "1", ClickHouseUnits: "5.750001"})
	if got := f.hash(enforcement.WatermarkName(id)); !maps.Equal(got, watermarks) {
		t.Errorf("watermarks = %v; want unchanged %v", got, watermarks)
	}
	wantCounter := map[string]string{
		"requests": "9", "units_micro": "5750001", "period_end": strconv.FormatInt(f.sub.end.Unix(), 10),
		"crossed_80": "10", "crossed_90": "10",
	}
	if got := f.hash(enforcement.PeriodCounterName(id, f.sub.start)); !maps.Equal(got, wantCounter) {
		t.Errorf("counter = %v; want %v", got, wantCounter)
	}
	if f.blocked() {
		t.Errorf("blocked after the heal; want not (9 of 10)")
	}
}

// TestCheckHealsFlush: after a FLUSHDB that took the counter,
// the watermarks, the record and the block, the check restores them all
// from ClickHouse and Postgres and queues the crossings again. The
// offsets come from the rows since the period's start less the late
// window: partition 3's row of the previous period counts, partition 2's
// row from before that is not read.
func TestCheckHealsFlush(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	f.insertEvents(
		event{partition: 2, offset: 3, at: f.sub.start.Add(-usage.DefaultLateWindow - time.Hour), units: "1"},
		event{partition: 3, offset: 7, at: f.sub.start.Add(-usage.DefaultLateWindow + time.Hour), units: "1"},
	)
	id := f.sub.id.String()
	f.setRedis(map[string]string{"0": "16", "1": "10"}, eventRequests, eventUnitsMicro, "crossed_80", "10", "crossed_90", "10", "crossed_100", "10")
	f.do(f.redis.B().Hset().Key(enforcement.SubscriptionName(id)).FieldValue().
		FieldValue("period_start", strconv.FormatInt(f.sub.start.Unix(), 10)).
		FieldValue("period_end", strconv.FormatInt(f.sub.end.Unix(), 10)).Build())
	f.block()
	f.do(f.redis.B().Flushdb().Build())

	f.healsOne(Drifted{RedisRequests: 0, ClickHouseRequests: eventRequests,
		RedisUnits: "0", ClickHouseUnits: "10.250001", WatermarksBehind: true, Blocked: true})

	counter := enforcement.PeriodCounterName(id, f.sub.start)
	wantCounter := map[string]string{
		"requests": "12", "units_micro": strconv.Itoa(eventUnitsMicro), "period_end": strconv.FormatInt(f.sub.end.Unix(), 10),
		"crossed_80": "10", "crossed_90": "10", "crossed_100": "10",
	}
	if got := f.hash(counter); !maps.Equal(got, wantCounter) {
		t.Errorf("counter = %v; want %v", got, wantCounter)
	}
	if got := f.ttl(counter); got < enforcement.PeriodCounterTTL-time.Minute || got > enforcement.PeriodCounterTTL {
		t.Errorf("counter TTL = %s; want %s", got, enforcement.PeriodCounterTTL)
	}
	if got, want := f.hash(enforcement.WatermarkName(id)), map[string]string{"0": "16", "1": "10", "3": "7"}; !maps.Equal(got, want) {
		t.Errorf("watermarks = %v; want %v", got, want)
	}
	block, err := f.redis.Do(f.ctx, f.redis.B().Get().Key(enforcement.BlockName(id)).Build()).ToString()
	if want := strconv.FormatInt(f.sub.end.Unix(), 10); err != nil || block != want {
		t.Errorf("block = %q, %v; want %q", block, err, want)
	}
	if got, want := f.ttl(enforcement.BlockName(id)), time.Until(f.sub.end); got < want-5*time.Second || got > want+time.Second {
		t.Errorf("block TTL = %s; want about %s (until the period's end)", got, want)
	}
	wantOutbox := []string{}
	for _, pct := range []int{80, 90, 100} {
		wantOutbox = append(wantOutbox, fmt.Sprintf("v1|%d|%d|%d|10|12|1", f.sub.start.Unix(), f.sub.end.Unix(), pct))
	}
	if got := f.outbox(); !slices.Equal(got, wantOutbox) {
		t.Errorf("outbox = %q; want %q", got, wantOutbox)
	}
	if got := f.gauge("veil_controlplane_usage_drift_subscriptions"); got != "1" {
		t.Errorf("veil_controlplane_usage_drift_subscriptions = %q; want 1", got)
	}
	if got := f.gauge(`veil_controlplane_reconcile_healed_total{kind="usage"}`); got != "1" {
		t.Errorf(`veil_controlplane_reconcile_healed_total{kind="usage"} = %q; want 1`, got)
	}

	before := f.snapshot()
	rep := f.run()
	if got, want := countsOf(rep), (counts{checked: 1}); got != want || len(rep.Drift) != 0 {
		t.Errorf("second Check() = %+v, drift %+v; want %+v", got, rep.Drift, want)
	}
	if after := f.snapshot(); !maps.Equal(after, before) {
		t.Errorf("Redis after the second run = %v; want unchanged %v", after, before)
	}
	if got := f.gauge("veil_controlplane_usage_drift_subscriptions"); got != "0" {
		t.Errorf("veil_controlplane_usage_drift_subscriptions after the second run = %q; want 0", got)
	}
}

// TestCheckHealsTamperedCounter: a counter that is wrong while
// the watermarks are right is set to ClickHouse's figure, and a block it
// caused is lifted when the true count is under the hard quota.
func TestCheckHealsTamperedCounter(t *testing.T) {
	f := newFixture(t)
	id := f.sub.id.String()
	var evs []event
	for off := int64(0); off < 5; off++ {
		evs = append(evs, event{partition: 0, offset: off, at: f.sub.start.Add(time.Minute), units: "1"})
	}
	f.insertEvents(evs...)
	f.setRedis(map[string]string{"0": "4"}, 11, 5_000_000, "crossed_80", "10", "crossed_90", "10", "crossed_100", "10")
	f.block()

	f.healsOne(Drifted{RedisRequests: 11, ClickHouseRequests: 5,
		RedisUnits: "5", ClickHouseUnits: "5"})
	wantCounter := map[string]string{"requests": "5", "units_micro": "5000000", "period_end": strconv.FormatInt(f.sub.end.Unix(), 10)}
	if got := f.hash(enforcement.PeriodCounterName(id, f.sub.start)); !maps.Equal(got, wantCounter) {
		t.Errorf("counter = %v; want %v (no thresholds reached)", got, wantCounter)
	}
	n, err := f.redis.Do(f.ctx, f.redis.B().Exists().Key(enforcement.BlockName(id)).Build()).AsInt64()
	if err != nil || n != 0 {
		t.Errorf("EXISTS block = %d, %v; want 0 (lifted)", n, err)
	}
	if got := f.outbox(); len(got) != 0 {
		t.Errorf("outbox = %q; want empty", got)
	}
}

// TestCheckAdjustedQuota: thresholds and the block follow the
// plan's quota plus the period's credits.
func TestCheckAdjustedQuota(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO quota_adjustments (subscription_id, period_start, kind, requests, used_at_change, reason, actor)
		VALUES ($1, $2, 'credit', 5, 10, 'goodwill', 'provider-user')`, f.sub.id, f.sub.start); err != nil {
		t.Fatal(err)
	}
	rep := f.run()
	if len(rep.Drift) != 1 || rep.Drift[0].Blocked || !rep.Drift[0].Healed {
		t.Fatalf("Check().Drift = %+v; want one healed, not blocked (12 of 15)", rep.Drift)
	}
	want := []string{fmt.Sprintf("v1|%d|%d|80|15|12|1", f.sub.start.Unix(), f.sub.end.Unix())}
	if got := f.outbox(); !slices.Equal(got, want) {
		t.Errorf("outbox = %q; want %q", got, want)
	}
}

// TestCheckSettle: drift found with a watermark lost is healed
// only when nothing moved during the settle; when the processors moved
// Redis, or ClickHouse moved on a partition Redis has no watermark for,
// the subscription is in flight and nothing is written.
func TestCheckSettle(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	counter := enforcement.PeriodCounterName(f.sub.id.String(), f.sub.start)
	for _, tc := range []struct {
		name string
		// redis sets Redis up before the run; settle acts during the settle.
		redis, settle func()
		want          counts
	}{
		{
			name:   "nothing moves",
			redis:  func() {},
			settle: func() {},
			want:   counts{checked: 1, drifted: 1, healed: 1},
		},
		{
			// After the flush, a batch ClickHouse already holds reaches Redis.
			name:   "processors apply a batch",
			redis:  func() {},
			settle: func() { f.setRedis(map[string]string{"0": "16", "1": "10"}, eventRequests, eventUnitsMicro) },
			want:   counts{checked: 1, inFlight: 1},
		},
		{
			// Redis has partition 0 only.
			name:   "a compensation moves the counter",
			redis:  func() { f.setRedis(map[string]string{"0": "16"}, 8, 9_000_000) },
			settle: func() { f.do(f.redis.B().Hincrby().Key(counter).Field("requests").Increment(-1).Build()) },
			want:   counts{checked: 1, inFlight: 1},
		},
		{
			// Redis has partition 0 only; partition 1's next batch reaches
			// ClickHouse first.
			name:  "clickhouse moves on a partition redis lacks",
			redis: func() { f.setRedis(map[string]string{"0": "16"}, 6, 9_000_000) },
			settle: func() {
				f.insertEvents(event{partition: 1, offset: 11, at: f.sub.start.Add(time.Hour), units: "1"})
			},
			want: counts{checked: 1, inFlight: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.do(f.redis.B().Flushdb().Build())
			tc.redis()
			var settled map[string]string
			rep := f.runSettling(func() {
				tc.settle()
				settled = f.snapshot()
			})
			if got := countsOf(rep); got != tc.want {
				t.Fatalf("Check() = %+v, unhealed %v; want %+v", got, rep.Unhealed, tc.want)
			}
			if tc.want.inFlight == 0 {
				return
			}
			if after := f.snapshot(); len(rep.Drift) != 0 || !maps.Equal(after, settled) {
				t.Errorf("Redis after Check() = %v, drift %+v; want unchanged %v, no drift", after, rep.Drift, settled)
			}
		})
	}
}

// TestCheckRecordQuota: the heal takes the quota from the
// subscription record when it names the period healed (a credit or a plan
// change written after the check read Postgres), and from Postgres
// otherwise. Postgres says a hard quota of 10; ClickHouse 12 requests.
func TestCheckRecordQuota(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	line := func(pct int, quota int64, hard string) string {
		return fmt.Sprintf("v1|%d|%d|%d|%d|12|%s", f.sub.start.Unix(), f.sub.end.Unix(), pct, quota, hard)
	}
	for _, tc := range []struct {
		name        string
		record      func()
		wantBlocked bool
		wantOutbox  []string
	}{
		{"no record", func() {}, true, []string{line(80, 10, "1"), line(90, 10, "1"), line(100, 10, "1")}},
		{"credit to 15", func() { f.record(f.sub.start, 15, true) }, false, []string{line(80, 15, "1")}},
		{"record of the period before", func() { f.record(f.sub.start.AddDate(0, 0, -30), 15, true) },
			true, []string{line(80, 10, "1"), line(90, 10, "1"), line(100, 10, "1")}},
		{"soft", func() { f.record(f.sub.start, 10, false) }, false, []string{line(80, 10, "0"), line(90, 10, "0"), line(100, 10, "0")}},
		{"unlimited", func() { f.record(f.sub.start, -1, true) }, false, []string{}},
		// A hard quota of 0 blocks from the first request and has no
		// thresholds to announce.
		{"zero", func() { f.record(f.sub.start, 0, true) }, true, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.do(f.redis.B().Flushdb().Build())
			// The record is written after the check loaded the quota from
			// Postgres, while it settles.
			rep := f.runSettling(tc.record)
			if len(rep.Drift) != 1 || !rep.Drift[0].Healed || rep.Drift[0].Blocked != tc.wantBlocked {
				t.Fatalf("Check().Drift = %+v; want one healed, blocked %t", rep.Drift, tc.wantBlocked)
			}
			if got := f.blocked(); got != tc.wantBlocked {
				t.Errorf("blocked = %t; want %t", got, tc.wantBlocked)
			}
			if got := f.outbox(); !slices.Equal(got, tc.wantOutbox) {
				t.Errorf("outbox = %q; want %q", got, tc.wantOutbox)
			}
		})
	}
}

// TestCheckCompareAndSet: when the processors move between the
// read and the heal, nothing is written.
func TestCheckCompareAndSet(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	f.setRedis(map[string]string{"0": "16"}, 6, 9_000_000)
	before := f.snapshot()
	for _, tc := range []struct {
		name string
		read enforcement.UsageState
	}{
		{"read before a batch", enforcement.UsageState{Watermarks: map[string]string{}}},
		{"watermark moved", enforcement.UsageState{Watermarks: map[string]string{"0": "15"}, Requests: "6", UnitsMicro: "9000000"}},
		{"counter moved", enforcement.UsageState{Watermarks: map[string]string{"0": "16"}, Requests: "7", UnitsMicro: "9000000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			found := finding{target: map[int32]int64{0: 16, 1: 10}, wantRequests: eventRequests, wantUnits: eventUnitsMicro}
			res := f.svc.heal(f.ctx, []assessment{{sub: f.sub, red: tc.read, f: found}})
			if want := (healResult{outcome: enforcement.Moved}); len(res) != 1 || res[0] != want {
				t.Errorf("heal() = %+v; want [%+v]", res, want)
			}
			if after := f.snapshot(); !maps.Equal(after, before) {
				t.Errorf("Redis after a stale heal = %v; want unchanged %v", after, before)
			}
		})
	}
}

// TestSettle: the settle ends with its context.
func TestSettle(t *testing.T) {
	svc := &Checker{cfg: Config{Settle: time.Hour}}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := svc.settle(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("settle() with a canceled context = %v; want %v", err, context.Canceled)
	}
}

// TestWorkerTimeout: a run ends before River would rescue
// it (and run it a second time) at the default --job-rescue-after.
func TestWorkerTimeout(t *testing.T) {
	const defaultRescueAfter = time.Minute
	if got := (&Checker{}).Worker().Timeout(nil); got <= 0 || got >= defaultRescueAfter {
		t.Errorf("Timeout() = %s; want positive and under %s", got, defaultRescueAfter)
	}
}

// TestLast: the newest run is returned, and only the newest
// 100 are kept.
func TestLast(t *testing.T) {
	f := newFixture(t)
	if _, ok, err := f.svc.Last(f.ctx); err != nil || ok {
		t.Fatalf("Last() before any run = %t, %v; want false, nil", ok, err)
	}
	old := time.Now().UTC().Add(-24 * time.Hour)
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO usage_reconcile_runs (started_at, finished_at, report)
		SELECT $1::timestamptz + n * interval '1 second', $1::timestamptz + n * interval '1 second', '{"checked": 0}'
		FROM generate_series(1, 105) n`, old); err != nil {
		t.Fatal(err)
	}
	f.periodEvents()
	first := f.run()
	second := f.run()
	if first.Drifted != 1 || second.Drifted != 0 {
		t.Fatalf("runs drifted %d, %d; want 1, 0", first.Drifted, second.Drifted)
	}
	got, ok, err := f.svc.Last(f.ctx)
	if err != nil || !ok {
		t.Fatalf("Last() = %t, %v; want a report", ok, err)
	}
	if !got.StartedAt.Equal(second.StartedAt) || !got.FinishedAt.Equal(second.FinishedAt) || countsOf(got) != countsOf(second) ||
		got.Drift == nil || got.Unhealed == nil {
		t.Errorf("Last() = %+v; want the second run %+v, with empty lists", got, second)
	}
	var n int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM usage_reconcile_runs`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != runsKept {
		t.Errorf("usage_reconcile_runs holds %d runs; want %d", n, runsKept)
	}
}

func TestCheckNeedsClickHouse(t *testing.T) {
	f := newFixture(t)
	svc, err := New(Config{Pool: f.pool, Redis: f.redis})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Check(f.ctx); !errors.Is(err, ErrNoClickHouse) {
		t.Errorf("Check() without ClickHouse = %v; want %v", err, ErrNoClickHouse)
	}
}

// TestCheckBusy: drift with every watermark readable is healed
// without the settle, while the processors keep applying batches: a heal
// whose compare-and-set finds Redis moved reads Redis and ClickHouse
// again and retries, up to three attempts in all; after that the
// subscription is in flight and the processors' writes stand.
func TestCheckBusy(t *testing.T) {
	for _, tc := range []struct {
		name string
		// batches is how many heal attempts a batch lands before.
		batches int
		want    counts
		// wantRequests is the counter after the run.
		wantRequests string
	}{
		{"quiet", 0, counts{checked: 1, drifted: 1, healed: 1}, "12"},
		{"moves once", 1, counts{checked: 1, drifted: 1, healed: 1}, "13"},
		{"moves twice", 2, counts{checked: 1, drifted: 1, healed: 1}, "14"},
		// The tampered 14, plus a request for each of the three batches.
		{"keeps moving", 3, counts{checked: 1, inFlight: 1}, "17"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.periodEvents()
			id := f.sub.id.String()
			counter := enforcement.PeriodCounterName(id, f.sub.start)
			f.setRedis(map[string]string{"0": "16", "1": "10"}, eventRequests+2, eventUnitsMicro)
			// A batch of one admitted request on partition 0, applied as
			// the processors would: ClickHouse, then Redis.
			next, batches := int64(17), 0
			rep := f.runWith(pass{
				settle: func(context.Context) error {
					t.Errorf("settled; want drift with every watermark readable healed at once")
					return nil
				},
				beforeHeal: func() {
					if batches == tc.batches {
						return
					}
					batches++
					f.insertEvents(event{partition: 0, offset: next, at: f.sub.start.Add(time.Hour), units: "1"})
					f.do(f.redis.B().Hset().Key(enforcement.WatermarkName(id)).FieldValue().FieldValue("0", strconv.FormatInt(next, 10)).Build())
					f.do(f.redis.B().Hincrby().Key(counter).Field("requests").Increment(1).Build())
					f.do(f.redis.B().Hincrby().Key(counter).Field("units_micro").Increment(1_000_000).Build())
					next++
				},
			})
			if got := countsOf(rep); got != tc.want {
				t.Fatalf("Check() = %+v, unhealed %v; want %+v", got, rep.Unhealed, tc.want)
			}
			if got := f.hash(counter)["requests"]; got != tc.wantRequests {
				t.Errorf("counter requests = %s; want %s", got, tc.wantRequests)
			}
			if got, want := f.hash(enforcement.WatermarkName(id))["0"], strconv.FormatInt(next-1, 10); got != want {
				t.Errorf("watermark of partition 0 = %s; want %s (the last batch's)", got, want)
			}
		})
	}
}

// countingConn counts the queries sent to ClickHouse.
type countingConn struct {
	driver.Conn
	queries atomic.Int64
}

func (c *countingConn) Query(ctx context.Context, query string, args ...any) (driver.Rows, error) {
	c.queries.Add(1)
	return c.Conn.Query(ctx, query, args...)
}

func (c *countingConn) QueryRow(ctx context.Context, query string, args ...any) driver.Row {
	c.queries.Add(1)
	return c.Conn.QueryRow(ctx, query, args...)
}

// TestCheckOneQueryPerChunk: a chunk's figures come from one
// ClickHouse query, each subscription's counted over its own period and
// up to its own watermarks, though two subjects share a partition.
func TestCheckOneQueryPerChunk(t *testing.T) {
	f := newFixture(t)
	ch := &countingConn{Conn: f.ch}
	svc, err := New(Config{Pool: f.pool, Redis: f.redis, ClickHouse: ch, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	f.periodEvents()
	b := f.addSub(uuid.Nil, f.sub.start.Add(-24*time.Hour))
	bid := b.id.String()
	f.insertEvents(
		event{subject: bid, partition: 0, offset: 20, at: b.start.Add(time.Minute), units: "2"},
		event{subject: bid, partition: 0, offset: 21, at: b.start.Add(time.Minute), units: "2"},
		event{subject: bid, partition: 5, offset: 0, at: b.start.Add(-time.Minute), units: "0.5"},
		event{subject: bid, partition: 5, offset: 1, at: b.start, units: "0.5"},
		event{subject: bid, partition: 5, offset: 2, at: b.end.Add(-time.Second), units: "0.5"},
		event{subject: bid, partition: 5, offset: 3, at: b.start.Add(time.Minute), units: "0.5"},
	)
	f.setRedis(map[string]string{"0": "13", "1": "10"}, 1, 0)
	f.do(f.redis.B().Hset().Key(enforcement.WatermarkName(bid)).FieldValue().FieldValue("0", "20").FieldValue("5", "2").Build())

	rep, _, err := svc.check(f.ctx, pass{chunk: chunkSize, settle: svc.settle})
	if err != nil {
		t.Fatalf("Check() = %v", err)
	}
	if got, want := countsOf(rep), (counts{checked: 2, drifted: 2, healed: 2}); got != want {
		t.Fatalf("Check() = %+v, unhealed %v; want %+v", got, rep.Unhealed, want)
	}
	got := map[uuid.UUID]string{}
	for _, d := range rep.Drift {
		got[d.SubscriptionID] = d.ClickHouseUnits + " in " + strconv.FormatInt(d.ClickHouseRequests, 10)
	}
	// The fixture's rows up to offsets 13 and 10; b's offset 20 of
	// partition 0 and 1 and 2 of partition 5 (0 is before its period, 3
	// beyond its watermark).
	want := map[uuid.UUID]string{f.sub.id: "7.250001 in 10", b.id: "3 in 3"}
	if !maps.Equal(got, want) {
		t.Errorf("Check() ClickHouse figures = %v; want %v", got, want)
	}
	if got := ch.queries.Load(); got != 1 {
		t.Errorf("ClickHouse queries = %d; want 1", got)
	}
}

// TestWorkerResumes: a run near its deadline stops after a
// chunk and stores what it checked; the worker's next run starts after
// the last subscription checked and wraps around, and a run that went all
// the way round lets the next start from the first.
func TestWorkerResumes(t *testing.T) {
	f := newFixture(t)
	subs := []subscription{f.sub, f.addSub(uuid.Nil, f.sub.start), f.addSub(uuid.Nil, f.sub.start)}
	slices.SortFunc(subs, func(a, b subscription) int { return bytes.Compare(a.id[:], b.id[:]) })
	ids := make([]uuid.UUID, len(subs))
	for i, s := range subs {
		ids[i] = s.id
	}
	// The clock moves a minute a run, an hour ahead so that a deadline a
	// second after it is still far off for the queries.
	clock := time.Now().Add(time.Hour)
	f.svc.now = func() time.Time { return clock }
	w := f.svc.worker(1)
	for i, tc := range []struct {
		near bool
		want []uuid.UUID
	}{
		{true, ids[:1]},
		{true, ids[1:2]},
		{true, ids[2:]},
		{true, ids[:1]}, // wrapped around
		{false, []uuid.UUID{ids[1], ids[2], ids[0]}},
		{false, ids},
	} {
		// Each subscription's counter says 3 requests ClickHouse lacks.
		for _, s := range subs {
			f.do(f.redis.B().Hset().Key(enforcement.PeriodCounterName(s.id.String(), s.start)).FieldValue().
				FieldValue("requests", "3").FieldValue("units_micro", "0").Build())
		}
		clock = clock.Add(time.Minute)
		ctx, cancel := f.ctx, context.CancelFunc(func() {})
		if tc.near {
			ctx, cancel = context.WithDeadline(f.ctx, clock.Add(time.Second))
		}
		err := w.Work(ctx, nil)
		cancel()
		if err != nil {
			t.Fatalf("run %d: Work() = %v", i+1, err)
		}
		rep, ok, err := f.svc.Last(f.ctx)
		if err != nil || !ok {
			t.Fatalf("run %d: Last() = %t, %v; want a report", i+1, ok, err)
		}
		var got []uuid.UUID
		for _, d := range rep.Drift {
			got = append(got, d.SubscriptionID)
		}
		if !slices.Equal(got, tc.want) || rep.Checked != len(tc.want) {
			t.Errorf("run %d (near the deadline %t) checked %d, healed %v; want %v", i+1, tc.near, rep.Checked, got, tc.want)
		}
	}
}

// TestCheckFreshPartition: rows of a partition Redis has no
// watermark for, ingested within the last minute, are a batch Redis is
// still applying, not a lost watermark; older ones are lost and healed.
func TestCheckFreshPartition(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ingested time.Duration
		want     counts
	}{
		{"fresh", 0, counts{checked: 1, inFlight: 1}},
		{"lost", -2 * time.Minute, counts{checked: 1, drifted: 1, healed: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			at := f.sub.start.Add(time.Minute)
			ingested := time.Now().Add(tc.ingested)
			f.insertEvents(
				event{partition: 0, offset: 0, at: at, units: "1"},
				event{partition: 0, offset: 1, at: at, units: "1"},
				event{partition: 1, offset: 0, at: at, units: "1", ingested: ingested},
				event{partition: 1, offset: 1, at: at, units: "1", ingested: ingested},
			)
			f.setRedis(map[string]string{"0": "1"}, 2, 2_000_000)
			before := f.snapshot()
			rep := f.run()
			if got := countsOf(rep); got != tc.want {
				t.Fatalf("Check() = %+v, drift %+v; want %+v", got, rep.Drift, tc.want)
			}
			id := f.sub.id.String()
			if tc.want.inFlight > 0 {
				if after := f.snapshot(); !maps.Equal(after, before) {
					t.Errorf("Redis after Check() = %v; want unchanged %v", after, before)
				}
				return
			}
			if got, want := f.hash(enforcement.WatermarkName(id)), map[string]string{"0": "1", "1": "1"}; !maps.Equal(got, want) {
				t.Errorf("watermarks = %v; want %v", got, want)
			}
			if got := f.hash(enforcement.PeriodCounterName(id, f.sub.start))["requests"]; got != "4" {
				t.Errorf("counter requests = %s; want 4", got)
			}
		})
	}
}

// TestCheckIdlePartition: a watermark of a partition ClickHouse
// has no rows of since the lookback does not hold a drifted subscription
// in flight when ClickHouse's older rows reach it; it does when they stop
// short of it (Redis applied a batch ClickHouse has yet to get).
func TestCheckIdlePartition(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	f.insertEvents(event{partition: 2, offset: 4, at: f.sub.start.Add(-lookback - time.Hour), units: "1"})
	id := f.sub.id.String()
	for _, tc := range []struct {
		name      string
		watermark string
		want      counts
	}{
		{"idle", "4", counts{checked: 1, drifted: 1, healed: 1}},
		{"ahead", "5", counts{checked: 1, inFlight: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.do(f.redis.B().Flushdb().Build())
			watermarks := map[string]string{"0": "16", "1": "10", "2": tc.watermark}
			f.setRedis(watermarks, eventRequests+1, eventUnitsMicro)
			rep := f.run()
			if got := countsOf(rep); got != tc.want {
				t.Fatalf("Check() = %+v, drift %+v; want %+v", got, rep.Drift, tc.want)
			}
			wantRequests := strconv.Itoa(eventRequests + 1)
			if tc.want.healed > 0 {
				wantRequests = strconv.Itoa(eventRequests)
			}
			if got := f.hash(enforcement.PeriodCounterName(id, f.sub.start))["requests"]; got != wantRequests {
				t.Errorf("counter requests = %s; want %s", got, wantRequests)
			}
			if got := f.hash(enforcement.WatermarkName(id)); !maps.Equal(got, watermarks) {
				t.Errorf("watermarks = %v; want unchanged %v", got, watermarks)
			}
		})
	}
}

// TestCheckLaterPeriod: when the subscription record names a
// later period than the one Postgres gave the check, the heal writes
// nothing (it would clear the new period's block) and the subscription is
// in flight.
func TestCheckLaterPeriod(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	for _, tc := range []struct {
		name       string
		watermarks map[string]string
	}{
		// 4 requests up to these; the counter says 11.
		{"watermarks readable", map[string]string{"0": "11", "1": "5"}},
		{"watermarks lost", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.do(f.redis.B().Flushdb().Build())
			f.setRedis(tc.watermarks, 11, 3_500_000)
			f.record(f.sub.end, 10, true)
			f.block()
			before := f.snapshot()
			rep := f.run()
			if got, want := countsOf(rep), (counts{checked: 1, inFlight: 1}); got != want || len(rep.Drift) != 0 {
				t.Errorf("Check() = %+v, drift %+v; want %+v, no drift", got, rep.Drift, want)
			}
			if after := f.snapshot(); !maps.Equal(after, before) {
				t.Errorf("Redis after Check() = %v; want unchanged %v", after, before)
			}
		})
	}
}

func TestUsageQuery(t *testing.T) {
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	a := subscription{id: uuid.MustParse("7a4c2a4e-1111-4222-8333-944455556666"), start: start, end: start.AddDate(0, 1, 0)}
	b := subscription{id: uuid.MustParse("0b1c2a4e-1111-4222-8333-944455556666"), start: start.AddDate(0, 0, -10), end: start.AddDate(0, 0, 20)}
	const (
		head = `SELECT subject, kafka_partition, max(kafka_offset), max(ingested_at),
		countIf(refusal = '' AND toUInt32(time) >= transform(subject, ?, ?, toUInt32(0))
			AND toUInt32(time) < transform(subject, ?, ?, toUInt32(0))`
		bound = `
			AND kafka_offset <= toInt64(transform(concat(subject, '/', toString(kafka_partition)), ?, ?, '9223372036854775807'))`
		tail = ` AS admitted),
		sumIf(units, admitted)
		FROM usage_events WHERE subject IN ? AND time >= ? GROUP BY subject, kafka_partition`
	)
	ids := []string{a.id.String(), b.id.String()}
	starts := []uint32{uint32(a.start.Unix()), uint32(b.start.Unix())}
	ends := []uint32{uint32(a.end.Unix()), uint32(b.end.Unix())}
	set := clickhouse.GroupSet{Value: []any{ids[0], ids[1]}}
	// The earliest start less the late window and the future allowance.
	since := time.Date(2026, 1, 14, 23, 55, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		bounds   []map[int32]int64
		wantSQL  string
		wantArgs []any
	}{
		{"no watermarks", []map[int32]int64{{}, {}}, head + tail, []any{ids, starts, ids, ends, set, since}},
		{"watermarks in order", []map[int32]int64{{2: 7, 0: 16}, {0: 3}}, head + bound + tail, []any{ids, starts, ids, ends,
			[]string{ids[0] + "/0", ids[0] + "/2", ids[1] + "/0"}, []string{"16", "7", "3"}, set, since}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sql, args := usageQuery([]subscription{a, b}, tc.bounds)
			if sql != tc.wantSQL {
				t.Errorf("usageQuery() SQL = %q; want %q", sql, tc.wantSQL)
			}
			if fmt.Sprint(args) != fmt.Sprint(tc.wantArgs) {
				t.Errorf("usageQuery() args = %v; want %v", args, tc.wantArgs)
			}
		})
	}
}

func TestHistoryQuery(t *testing.T) {
	const wantSQL = `SELECT subject, kafka_partition, max(kafka_offset) FROM usage_events
		WHERE subject IN ? AND concat(subject, '/', toString(kafka_partition)) IN ? GROUP BY subject, kafka_partition`
	sql, args := historyQuery([]any{"a", "b"}, []any{"a/2", "b/0", "b/3"})
	if sql != wantSQL {
		t.Errorf("historyQuery() SQL = %q; want %q", sql, wantSQL)
	}
	wantArgs := []any{clickhouse.GroupSet{Value: []any{"a", "b"}}, clickhouse.GroupSet{Value: []any{"a/2", "b/0", "b/3"}}}
	if fmt.Sprint(args) != fmt.Sprint(wantArgs) {
		t.Errorf("historyQuery() args = %v; want %v", args, wantArgs)
	}
}

// TestUsageQueryLargeOffsets: a watermark at or past 2^32 (a partition
// that has carried four billion events) is read like any other; bound as
// integers, the offsets array became UInt64 and ClickHouse refused the
// query.
func TestUsageQueryLargeOffsets(t *testing.T) {
	f := newFixture(t)
	const big = int64(1)<<32 + 5
	at := f.sub.start.Add(time.Minute)
	f.insertEvents(
		event{partition: 0, offset: big - 1, at: at, units: "1"},
		event{partition: 0, offset: big, at: at, units: "2"},
		event{partition: 0, offset: big + 1, at: at, units: "4"},
	)
	query, args := usageQuery([]subscription{f.sub}, []map[int32]int64{{0: big}})
	rows, err := f.ch.Query(f.ctx, query, args...)
	if err != nil {
		t.Fatalf("usageQuery() with offset %d: %v", big, err)
	}
	defer rows.Close()
	var (
		subject   string
		partition int32
		maxOffset int64
		newest    time.Time
		n         uint64
		units     decimal.Decimal
	)
	if !rows.Next() {
		t.Fatalf("usageQuery() = no rows: %v", rows.Err())
	}
	if err := rows.Scan(&subject, &partition, &maxOffset, &newest, &n, &units); err != nil {
		t.Fatal(err)
	}
	if maxOffset != big+1 || n != 2 || !units.Equal(decimal.NewFromInt(3)) {
		t.Errorf("usageQuery() = max offset %d, %d admitted, %s units; want %d, 2, 3", maxOffset, n, units, big+1)
	}
}
