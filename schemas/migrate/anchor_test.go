package migrate_test

import (
	"io/fs"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/veil-platform/veil/schemas"
)

// anchorVersion is the migration that adds subscriptions.billing_anchor.
const anchorVersion = 18

// TestBillingAnchorBackfill: subscriptions that exist before the anchor
// are anchored at their current period's start, the boundary their
// periods were rolled to (not their first start, which the gateway's
// boundaries drifted from), those that took over a canceled one's period
// too, and a subscription inserted without one afterwards is anchored at
// its current period's start.
func TestBillingAnchorBackfill(t *testing.T) {
	ctx := t.Context()
	conn, url := migratedConn(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	migrations, err := fs.Sub(schemas.Postgres, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, anchorVersion-1); err != nil {
		t.Fatalf("migrate down to %d: %v", anchorVersion-1, err)
	}
	org := insertID(t, conn, "INSERT INTO organizations (slug, name) VALUES ('acme', 'Acme')")
	other := insertID(t, conn, "INSERT INTO organizations (slug, name) VALUES ('globex', 'Globex')")
	api := insertID(t, conn, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, 'Weather', 'weather', 'http://upstream', 'v1', 'sub-provider')`, org)
	plan := insertID(t, conn, "INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Pro', 'pro', 'active')", api)
	version := insertID(t, conn, `INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
		VALUES ($1, 1, 'subscription', 'EUR', 'sub-provider')`, plan)
	day := func(m time.Month, d, h int) time.Time { return time.Date(2026, m, d, h, 0, 0, 0, time.UTC) }
	sub := func(orgID, status string, start, end time.Time, carried *string, history ...time.Time) string {
		t.Helper()
		var canceledAt *time.Time
		if status == "canceled" {
			canceledAt = &end
		}
		id := insertID(t, conn, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status,
			current_period_start, current_period_end, canceled_at, carried_from)
			VALUES ($1, 'sub-consumer', $2, $3, $4, $5, $6, $7, $8)`, orgID, api, version, status, start, end, canceledAt, carried)
		for _, at := range history {
			exec(t, conn, `INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
				VALUES ($1, $2, 'active', $3, 'sub-consumer')`, id, version, at)
		}
		return id
	}
	// Started on Jan 31, rolled before anchors to [Mar 3, Apr 3).
	first := sub(org, "canceled", day(3, 3, 10), day(4, 3, 10), nil, day(2, 14, 9), day(1, 31, 10))
	carried := sub(org, "canceled", day(3, 3, 10), day(4, 3, 10), &first, day(3, 10, 8))
	again := sub(org, "active", day(4, 3, 10), day(5, 3, 10), &carried, day(3, 20, 7))
	bare := sub(other, "active", day(2, 5, 6), day(3, 5, 6), nil)

	if _, err := p.UpTo(ctx, anchorVersion); err != nil {
		t.Fatalf("migrate up to %d: %v", anchorVersion, err)
	}
	fresh := sub(other, "canceled", day(6, 30, 5), day(7, 30, 5), nil)
	for _, c := range []struct {
		name, id string
		want     time.Time
	}{
		{"started Jan 31, rolled to Mar 3: Mar 3", first, day(3, 3, 10)},
		{"carried: its current period's start", carried, day(3, 3, 10)},
		{"carried twice, rolled since: its current period's start", again, day(4, 3, 10)},
		{"no history: its current period's start", bare, day(2, 5, 6)},
		{"inserted without one: its current period's start", fresh, day(6, 30, 5)},
	} {
		var got time.Time
		if err := conn.QueryRow(ctx, "SELECT billing_anchor FROM subscriptions WHERE id = $1", c.id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !got.Equal(c.want) {
			t.Errorf("%s: billing_anchor = %s; want %s", c.name, got, c.want)
		}
	}
	if _, err := p.DownTo(ctx, anchorVersion-1); err != nil {
		t.Fatalf("migrate down to %d again: %v", anchorVersion-1, err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("migrate up again: %v", err)
	}
}
