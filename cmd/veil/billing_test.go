package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/internal/testenv"
)

// veil billing explain prints an invoice beside its recomputation with no
// difference, by id and by number; a line changed behind billing's back
// is printed as a difference and makes it fail.
func TestBillingExplain(t *testing.T) {
	url := testenv.MigratedPostgresURL(t)
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	end := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	start := end.AddDate(0, -1, 0)
	issuer, customer := testenv.Org(t, pool, "issuer-"+testenv.Suffix()), testenv.Org(t, pool, "cust-"+testenv.Suffix())
	scan := func(dst *uuid.UUID, sql string, args ...any) {
		t.Helper()
		if err := pool.QueryRow(ctx, sql, args...).Scan(dst); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var api, plan, version, sub, period, snapshot uuid.UUID
	scan(&api, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, 'billed', 'billed', 'https://upstream.example', 'v1', 'prov') RETURNING id`, issuer)
	scan(&plan, `INSERT INTO plans (api_id, name, slug) VALUES ($1, 'Pro', 'pro') RETURNING id`, api)
	scan(&version, `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, created_by)
		VALUES ($1, 1, 'subscription', 'EUR', 12.5, 'prov') RETURNING id`, plan)
	scan(&sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'cust', $2, $3, $4, $5) RETURNING id`, customer, api, version, end, end.AddDate(0, 1, 0))
	scan(&period, `INSERT INTO billing_periods (subscription_id, period_start, period_end, state, closed_at)
		VALUES ($1, $2, $3, 'closed', $3) RETURNING id`, sub, start, end)
	scan(&snapshot, `INSERT INTO usage_snapshots (billing_period_id) VALUES ($1) RETURNING id`, period)
	if _, err := pool.Exec(ctx, `INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'active', $3, 'cust')`, sub, version, start); err != nil {
		t.Fatal(err)
	}
	svc, err := billing.New(billing.Config{Pool: pool, Now: func() time.Time { return end.Add(2 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RunCycle(ctx); err != nil {
		t.Fatal(err)
	}
	var id uuid.UUID
	var number string
	if err := pool.QueryRow(ctx, `SELECT id, number FROM invoices WHERE billing_period_id = $1`, period).Scan(&id, &number); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{id.String(), number} {
		var out strings.Builder
		if err := run(ctx, []string{"billing", "explain", "--postgres-url", url, ref}, &out, &out); err != nil {
			t.Fatalf("veil billing explain %s = %v\n%s", ref, err, out.String())
		}
		if !strings.Contains(out.String(), "difference: none") || !strings.Contains(out.String(), "12.50") {
			t.Fatalf("veil billing explain %s printed:\n%s\nwant the base fee 12.50 and no difference", ref, out.String())
		}
	}
	// A finalized invoice's lines are frozen by a trigger: change one as
	// only a broken writer could, with the trigger disabled.
	for _, sql := range []string{
		`ALTER TABLE invoice_lines DISABLE TRIGGER invoice_lines_final`,
		`UPDATE invoice_lines SET amount = 12.49 WHERE invoice_id = '` + id.String() + `' AND position = 1`,
		`ALTER TABLE invoice_lines ENABLE TRIGGER invoice_lines_final`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var out strings.Builder
	if err := run(ctx, []string{"billing", "explain", "--postgres-url", url, number}, &out, &out); !errors.Is(err, errInvoiceDiffers) {
		t.Fatalf("veil billing explain of a changed invoice = %v; want errInvoiceDiffers\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "12.49") || !strings.Contains(out.String(), "differences: ") {
		t.Fatalf("veil billing explain of a changed invoice printed:\n%s\nwant the stored 12.49 and the differences", out.String())
	}
}
