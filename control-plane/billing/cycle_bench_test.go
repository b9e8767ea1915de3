package billing

import (
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/testenv"
)

// BenchmarkCycle bills 2,000 closed periods (a base fee, one snapshot
// each) through one billing cycle: drafts built and finalized under the
// issuer's gapless numbers. It reports invoices per second.
//
//	go test -run '^$' -bench Cycle -benchtime 1x ./control-plane/billing/
func BenchmarkCycle(b *testing.B) {
	const n = 2000
	for b.Loop() {
		b.StopTimer()
		pool := testenv.Postgres(b)
		clock := testenv.NewClock(time.Now())
		svc, err := New(Config{Pool: pool, Now: clock.Now})
		if err != nil {
			b.Fatal(err)
		}
		benchPeriods(b, svc, n)
		b.StartTimer()
		start := time.Now()
		if _, err := svc.RunCycle(b.Context()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "invoices/s")
		var open int
		if err := pool.QueryRow(b.Context(), `SELECT count(*) FROM invoices WHERE status = 'open'`).Scan(&open); err != nil || open != n {
			b.Fatalf("open invoices = %d, %v; want %d", open, err, n)
		}
	}
}

// benchPeriods writes n subscriptions of one issuer's plan, each of its
// own customer, with a closed period that ended yesterday.
func benchPeriods(b *testing.B, svc *Service, n int) {
	b.Helper()
	ctx, pool := b.Context(), svc.pool
	end := time.Now().UTC().Truncate(time.Second).Add(-24 * time.Hour)
	start := end.AddDate(0, -1, 0)
	suffix := testenv.Suffix()
	issuer := testenv.Org(b, pool, "issuer-"+suffix)
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
			VALUES ($1, 'billed', $2, 'https://upstream.example', 'v1', 'prov')`, []any{issuer, "billed-" + suffix}},
		{`INSERT INTO plans (api_id, name, slug) SELECT id, 'Pro', 'pro' FROM apis WHERE organization_id = $1`, []any{issuer}},
		{`INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, created_by)
			SELECT p.id, 1, 'subscription', 'EUR', 10, 'prov' FROM plans p JOIN apis a ON a.id = p.api_id WHERE a.organization_id = $1`, []any{issuer}},
		{`INSERT INTO organizations (slug, name) SELECT $1 || i, 'Customer ' || i FROM generate_series(1, $2::int) i`, []any{"cust-" + suffix + "-", n}},
		{`INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
			SELECT o.id, 'cust', a.id, v.id, $3::timestamptz, $3::timestamptz + interval '1 month'
			FROM organizations o, apis a JOIN plans p ON p.api_id = a.id JOIN plan_versions v ON v.plan_id = p.id
			WHERE o.slug LIKE $2 AND a.organization_id = $1`, []any{issuer, "cust-" + suffix + "-%", end}},
		{`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
			SELECT id, plan_version_id, 'active', $1, 'cust' FROM subscriptions`, []any{start}},
		{`INSERT INTO billing_periods (subscription_id, period_start, period_end, state, closed_at)
			SELECT id, $1, $2, 'closed', $2 FROM subscriptions`, []any{start, end}},
		{`INSERT INTO usage_snapshots (billing_period_id) SELECT id FROM billing_periods`, nil},
	} {
		if _, err := pool.Exec(ctx, st.sql, st.args...); err != nil {
			b.Fatalf("%s: %v", st.sql, err)
		}
	}
}
