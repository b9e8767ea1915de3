package bench

import (
	"bytes"
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/testenv"
)

func TestNearestRank(t *testing.T) {
	var hundred []time.Duration
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, time.Duration(i))
	}
	for _, tc := range []struct {
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{hundred, 0.5, 50}, {hundred, 0.99, 99}, {hundred, 1, 100}, {hundred, 0, 1},
		{[]time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.99, 10},
		{[]time.Duration{1, 2, 3}, 0.5, 2},
		{[]time.Duration{7}, 0.99, 7},
		{nil, 0.5, 0},
	} {
		if got := nearestRank(tc.in, tc.q); got != tc.want {
			t.Errorf("nearestRank(%d values, %v) = %v; want %v", len(tc.in), tc.q, got, tc.want)
		}
	}
}

// TestPlanAnalytics: every consumer has two subscriptions on two
// different APIs, busier APIs have more subscribers, and the slots, keys
// and offsets add up.
func TestPlanAnalytics(t *testing.T) {
	for _, s := range []analyticsShape{defaultAnalyticsShape, {Providers: 2, APIs: 6, Consumers: 30}} {
		p, err := planAnalytics(s)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.subAPI) != 2*s.Consumers {
			t.Fatalf("%+v: %d subscriptions; want %d", s, len(p.subAPI), 2*s.Consumers)
		}
		apis := map[int][]int{}
		keys := 0
		for slot, c := range p.subConsumer {
			apis[c] = append(apis[c], p.subAPI[slot])
			if p.keyOffset[slot] != keys || p.subKeys[slot] < 2 {
				t.Fatalf("%+v: slot %d: key offset %d with %d keys before it, %d keys", s, slot, p.keyOffset[slot], keys, p.subKeys[slot])
			}
			keys += p.subKeys[slot]
			if a := p.subAPI[slot]; p.apiOffset[a]+p.subRank[slot] != slot {
				t.Fatalf("%+v: slot %d is rank %d of API %d at offset %d", s, slot, p.subRank[slot], a, p.apiOffset[a])
			}
		}
		if keys != p.keys {
			t.Errorf("%+v: %d keys; plan says %d", s, keys, p.keys)
		}
		for c, as := range apis {
			if len(as) != 2 || as[0] == as[1] {
				t.Errorf("%+v: consumer %d subscribes to APIs %v; want two different ones", s, c, as)
			}
		}
		if p.apiSubs[0] <= 2*p.apiSubs[len(p.apiSubs)-1] {
			t.Errorf("%+v: the busiest API has %d subscribers, the quietest %d", s, p.apiSubs[0], p.apiSubs[len(p.apiSubs)-1])
		}
	}
	if _, err := planAnalytics(analyticsShape{Providers: 1, APIs: 2, Consumers: 2}); err == nil {
		t.Error("a shape whose busiest API would have every consumer planned")
	}
}

// TestSkewedRank: the Go twin of the load's pick gives the top item of
// 50 about (1/50)^(1/3) of the draws.
func TestSkewedRank(t *testing.T) {
	const n, draws = 50, 100_000
	top := 0
	for i := range draws {
		if skewedRank(n, (float64(i)+0.5)/draws, apiSkew) == 0 {
			top++
		}
	}
	if share := float64(top) / draws; share < 0.26 || share > 0.28 {
		t.Errorf("top share %.3f; want about 0.271", share)
	}
}

// TestAnalytics runs the bench on a small shape and 30,000 rows with
// --keep, checks what the load wrote (ids, skew, statuses, latency tail,
// roll-ups), then measures the kept load again with --reuse.
func TestAnalytics(t *testing.T) {
	ctx := t.Context()
	cfg := AnalyticsConfig{
		PostgresURL:    testenv.Env("VEIL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		ClickHouseAddr: testenv.Env("VEIL_TEST_CLICKHOUSE_ADDR", "127.0.0.1:9000"),
		RedisAddr:      testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"),
		Rows:           30_000, Chunk: 7_000, Requests: 2, Warmup: 1, Keep: true,
		Logger: testenv.Logger(t), shape: analyticsShape{Providers: 2, APIs: 6, Consumers: 30},
	}
	var out, errOut bytes.Buffer
	fig, err := Analytics(ctx, cfg, &out, &errOut)
	if fig.Database != "" {
		t.Cleanup(func() { dropAnalytics(t, cfg, fig.Database) })
	}
	if err != nil {
		t.Fatalf("%v\n%s%s", err, out.String(), errOut.String())
	}
	t.Log(out.String())
	if fig.Outlooks.Refreshed != 60 || fig.Outlooks.Failed != 0 {
		t.Errorf("outlooks job: %+v; want all 60 subscriptions refreshed", fig.Outlooks)
	}
	checkAnalyticsFigures(t, fig)
	checkAnalyticsLoad(t, cfg, fig.Database)

	cfg.Reuse, cfg.Keep, cfg.Rows = fig.Database, false, 0
	again, err := Analytics(ctx, cfg, &out, &errOut)
	if err != nil {
		t.Fatalf("reuse: %v\n%s", err, errOut.String())
	}
	if again.Rows != fig.Rows || again.Database != fig.Database {
		t.Errorf("reuse measured %d rows of %s; want %d of %s", again.Rows, again.Database, fig.Rows, fig.Database)
	}
}

// checkAnalyticsFigures: every endpoint the control plane has answered
// and covered some usage, and the storage counts every loaded row.
func checkAnalyticsFigures(t *testing.T, fig AnalyticsFigures) {
	t.Helper()
	for _, e := range fig.Endpoints {
		if e.Missing || e.Error != "" {
			t.Errorf("%s: not measured (no such route: %v; error: %q)", e.Name, e.Missing, e.Error)
			continue
		}
		if e.Requests != 2 || e.P50 <= 0 || e.P99 < e.P50 {
			t.Errorf("%s: %d requests, p50 %v, p99 %v", e.Name, e.Requests, e.P50, e.P99)
		}
		if e.Rows <= 0 && e.Name != "admin overview" {
			t.Errorf("%s: covers %d usage rows", e.Name, e.Rows)
		}
	}
	for _, s := range fig.Storage {
		if s.Table == "usage_events" && s.Rows != uint64(fig.Rows) {
			t.Errorf("usage_events has %d rows in system.parts; loaded %d", s.Rows, fig.Rows)
		}
	}
}

// checkAnalyticsLoad checks the loaded rows against the seeded ids and
// the shape the generator promises.
func checkAnalyticsLoad(t *testing.T, cfg AnalyticsConfig, db string) {
	t.Helper()
	ctx := t.Context()
	u, _ := url.Parse(cfg.PostgresURL)
	u.Path = "/" + db
	pg, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.WithoutCancel(ctx))
	ch, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: cfg.ClickHouseAddr, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()

	// Seeded: each key's subscription and each subscription's API.
	keySub, subAPI := map[string]string{}, map[string]string{}
	rows, _ := pg.Query(ctx, `SELECT k.id::text, s.id::text, s.api_id::text FROM api_keys k JOIN subscriptions s ON s.id = k.subscription_id`)
	var k, s, a string
	if _, err := pgx.ForEachRow(rows, []any{&k, &s, &a}, func() error { keySub[k], subAPI[s] = s, a; return nil }); err != nil {
		t.Fatal(err)
	}
	crows, err := ch.Query(ctx, `SELECT subject, api_id, key_id, count() FROM usage_events GROUP BY subject, api_id, key_id`)
	if err != nil {
		t.Fatal(err)
	}
	perSub, perAPI := map[string]uint64{}, map[string]uint64{}
	var total uint64
	for crows.Next() {
		var n uint64
		if err := crows.Scan(&s, &a, &k, &n); err != nil {
			t.Fatal(err)
		}
		if keySub[k] != s || subAPI[s] != a {
			t.Errorf("rows of key %s, subscription %s, API %s: seeded key of %q, subscription of API %q", k, s, a, keySub[k], subAPI[s])
		}
		perSub[s] += n
		perAPI[a] += n
		total += n
	}
	if total != uint64(cfg.Rows) {
		t.Fatalf("%d rows; want %d", total, cfg.Rows)
	}
	checkSkew(t, perSub, perAPI, total)
	checkAnswers(t, ch, total)
}

// checkSkew: with 6 APIs the busiest takes about (1/6)^(1/3) = 55% of the
// calls, the busiest tenth of each API's subscribers sqrt(0.1) = 32% of
// its calls, and the busiest subscription (one of 24 on the busiest API)
// 0.55 * sqrt(1/24) = 11%.
func checkSkew(t *testing.T, perSub, perAPI map[string]uint64, total uint64) {
	t.Helper()
	top := func(m map[string]uint64, k int) uint64 {
		var vs []uint64
		for _, v := range m {
			vs = append(vs, v)
		}
		var sum uint64
		for range k {
			best := 0
			for i, v := range vs {
				if v > vs[best] {
					best = i
				}
			}
			if len(vs) > 0 {
				sum += vs[best]
				vs[best] = 0
			}
		}
		return sum
	}
	if share := float64(top(perAPI, 1)) / float64(total); share < 0.5 || share > 0.6 {
		t.Errorf("busiest API takes %.2f of the calls; want about 0.55", share)
	}
	// Uniform would be 0.10 and 1/60.
	if share := float64(top(perSub, 6)) / float64(total); share < 0.25 {
		t.Errorf("the busiest 6 of 60 subscriptions take %.2f of the calls; want about a third", share)
	}
	if share := float64(top(perSub, 1)) / float64(total); share < 4.0/60 {
		t.Errorf("the busiest subscription takes %.3f of the calls; want about 0.11", share)
	}
}

// checkAnswers: some 5xx and more 4xx, a long latency tail, gateway
// refusals without units, and every roll-up filled by its view.
func checkAnswers(t *testing.T, ch driver.Conn, total uint64) {
	t.Helper()
	ctx := t.Context()
	var c5, c4, refusedUnits, p50, p99 float64
	if err := ch.QueryRow(ctx, `SELECT countIf(status >= 500) / count(), countIf(status >= 400 AND status < 500) / count(),
		toFloat64(sumIf(units, refusal != '')), toFloat64(quantileExact(0.5)(latency_ms)), toFloat64(quantileExact(0.99)(latency_ms)) FROM usage_events`).
		Scan(&c5, &c4, &refusedUnits, &p50, &p99); err != nil {
		t.Fatal(err)
	}
	if c5 < 0.005 || c5 > 0.03 || c4 < 0.05 || c4 > 0.15 {
		t.Errorf("5xx %.3f, 4xx %.3f of the calls; want about 0.01 and 0.08", c5, c4)
	}
	if p99 < 5*p50 || refusedUnits != 0 {
		t.Errorf("latency p50 %v, p99 %v (want a long tail); refused calls carry %v units", p50, p99, refusedUnits)
	}
	for _, table := range []string{"usage_rollup_minute", "usage_rollup_hour", "usage_rollup_day"} {
		var n uint64
		if err := ch.QueryRow(ctx, "SELECT toUInt64(countMerge(requests)) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != total {
			t.Errorf("%s counts %d calls; want %d", table, n, total)
		}
	}
}

func dropAnalytics(t *testing.T, cfg AnalyticsConfig, db string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c, err := pgx.Connect(ctx, cfg.PostgresURL); err == nil {
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		_ = c.Close(ctx)
	}
	if ch, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: cfg.ClickHouseAddr}); err == nil {
		_ = ch.Exec(ctx, "DROP DATABASE IF EXISTS "+db)
		_ = ch.Close()
	}
}

// TestAnalyticsConfigValidate: --reuse names only a database this bench
// makes, since the name goes into SQL statements unquoted.
func TestAnalyticsConfigValidate(t *testing.T) {
	ok := AnalyticsConfig{Rows: 1, Chunk: 1, Requests: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []AnalyticsConfig{
		{Rows: 0, Chunk: 1, Requests: 1},
		{Rows: 1, Chunk: 0, Requests: 1},
		{Rows: 1, Chunk: 1, Requests: 0},
		{Rows: 1, Chunk: 1, Requests: 1, Warmup: -1},
		{Chunk: 1, Requests: 1, Reuse: "veil"},
		{Chunk: 1, Requests: 1, Reuse: "veil_bench_analytics_x; DROP DATABASE veil"},
		{Chunk: 1, Requests: 1, Reuse: "veil_bench_analytics_ABC"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
	if err := (AnalyticsConfig{Chunk: 1, Requests: 1, Reuse: "veil_bench_analytics_dneq73kasbv9"}).Validate(); err != nil {
		t.Errorf("a name the bench made: %v", err)
	}
}
