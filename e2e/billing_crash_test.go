package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/internal/testenv"
)

// The billing cycle killed in the middle of building and finalizing the
// invoices of many closed periods, then started again, leaves one invoice
// per period, numbered 1 to n without a gap or a duplicate, each of which
// its cites reproduce.
func TestBillingCycleSurvivesAKill(t *testing.T) {
	e := newCPEnv(t)
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	const n = 3000
	closedPeriods(t, pool, n)

	o := e.options(1)
	cp := e.startControlPlane(t, o)
	count := func(sql string) int {
		var c int
		if err := pool.QueryRow(ctx, sql).Scan(&c); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return c
	}
	// Kill it once the first invoices are finalized, before the last.
	testenv.Deadline(t, 60*time.Second, func() error {
		if count(`SELECT count(*) FROM invoices WHERE status = 'open'`) == 0 {
			return fmt.Errorf("no invoice finalized yet")
		}
		return nil
	})
	cp.kill()
	finalized := count(`SELECT count(*) FROM invoices WHERE status = 'open'`)
	if finalized >= n {
		t.Fatalf("the cycle finalized all %d invoices before the kill; the test needs more periods", n)
	}
	t.Logf("killed with %d of %d invoices finalized", finalized, n)

	e.startControlPlane(t, o)
	testenv.Deadline(t, 90*time.Second, func() error {
		if got := count(`SELECT count(*) FROM invoices WHERE status = 'open'`); got != n {
			return fmt.Errorf("%d of %d invoices finalized", got, n)
		}
		return nil
	})
	if got := count(`SELECT count(*) FROM (SELECT billing_period_id FROM invoices GROUP BY 1 HAVING count(*) > 1) d`); got != 0 {
		t.Fatalf("%d periods have more than one invoice", got)
	}
	if got := count(`SELECT count(DISTINCT number) FROM invoices`); got != n {
		t.Fatalf("distinct numbers = %d; want %d", got, n)
	}
	year := time.Now().UTC().Year()
	if got := count(fmt.Sprintf(`SELECT count(*) FROM invoices WHERE number BETWEEN 'INV-%d-000001' AND 'INV-%d-%06d'`, year, year, n)); got != n {
		t.Fatalf("numbers INV-%d-000001..%06d = %d; want %d (no gap)", year, n, got, n)
	}
	svc, err := billing.New(billing.Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT id FROM invoices`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		ex, err := svc.Explain(ctx, id)
		if err != nil || len(ex.Diffs) != 0 {
			t.Fatalf("Explain(%s) = %+v, %v; want no difference", id, ex.Diffs, err)
		}
	}
}

// closedPeriods writes n subscriptions of a provider's plan (a 10.00 EUR
// base fee), each of its own customer, whose last period ended yesterday
// and is closed with its usage snapshot, as the close leaves it (the
// control plane runs without ClickHouse here, so it closes nothing itself).
func closedPeriods(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	ctx := t.Context()
	end := time.Now().UTC().Truncate(time.Second).Add(-24 * time.Hour)
	start := end.AddDate(0, -1, 0)
	suffix := testenv.Suffix()
	issuer := testenv.Org(t, pool, "issuer-"+suffix)
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
			SELECT s.id, s.plan_version_id, 'active', $2, 'cust' FROM subscriptions s JOIN apis a ON a.id = s.api_id WHERE a.organization_id = $1`, []any{issuer, start}},
		{`INSERT INTO billing_periods (subscription_id, period_start, period_end, state, closed_at)
			SELECT s.id, $2, $3, 'closed', $3 FROM subscriptions s JOIN apis a ON a.id = s.api_id WHERE a.organization_id = $1`, []any{issuer, start, end}},
		{`INSERT INTO usage_snapshots (billing_period_id)
			SELECT b.id FROM billing_periods b JOIN subscriptions s ON s.id = b.subscription_id JOIN apis a ON a.id = s.api_id
			WHERE a.organization_id = $1`, []any{issuer}},
	} {
		if _, err := pool.Exec(ctx, st.sql, st.args...); err != nil {
			t.Fatalf("%s: %v", st.sql, err)
		}
	}
}
