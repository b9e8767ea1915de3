package migrate_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas"
	"github.com/veil-platform/veil/schemas/migrate"
)

// plansVersion is the migration that adds plans, subscriptions and keys.
const plansVersion = 4

var plansTables = []string{
	"plans", "plan_versions", "meters", "plan_version_charges", "charge_tiers",
	"promotions", "promotion_plans", "promotion_redemptions",
	"subscriptions", "subscription_history", "api_keys", "key_notices",
}

// migratedConn migrates a fresh database and connects to it.
func migratedConn(t *testing.T) (*pgx.Conn, string) {
	t.Helper()
	url := testenv.PostgresURL(t)
	if _, err := migrate.Postgres(t.Context(), url, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, url
}

func tableExists(t *testing.T, conn *pgx.Conn, table string) bool {
	t.Helper()
	var exists bool
	if err := conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", "public."+table).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

func TestPlansMigrationDownAndUp(t *testing.T) {
	ctx := t.Context()
	conn, url := migratedConn(t)
	for _, table := range plansTables {
		if !tableExists(t, conn, table) {
			t.Fatalf("table %s missing after migrating up", table)
		}
	}

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
	if _, err := p.DownTo(ctx, plansVersion-1); err != nil {
		t.Fatalf("migrate down to %d: %v", plansVersion-1, err)
	}
	for _, table := range plansTables {
		if tableExists(t, conn, table) {
			t.Errorf("table %s still exists after migrating down", table)
		}
	}
	var leftovers []string
	rows, err := conn.Query(ctx, `SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
		WHERE n.nspname = 'public' AND t.typtype = 'e' AND typname NOT IN ('member_role', 'api_state', 'api_visibility', 'approval_status', 'approval_priority')
		  AND typname NOT LIKE 'river%'
		UNION ALL
		SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'public' AND proname IN ('charge_tiers_check_order', 'subscriptions_check_api', 'plan_version_lock_used', 'plan_versions_refuse_used')`)
	if err != nil {
		t.Fatal(err)
	}
	leftovers, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(leftovers) != 0 {
		t.Errorf("types and functions left after migrating down = %v; want none", leftovers)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("migrate up again: %v", err)
	}
	for _, table := range plansTables {
		if !tableExists(t, conn, table) {
			t.Errorf("table %s missing after migrating up again", table)
		}
	}
}

// pricingFixture holds the ids of a representative catalogue, subscription
// and keys.
type pricingFixture struct {
	providerOrg, consumerOrg, api, otherAPI string
	plan, usedVersion, freeVersion          string
	requestsMeter, bytesMeter               string
	graduated, freeCharge                   string
	promotion, subscription                 string
	key, rotatedKey                         string
}

func insertID(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var id string
	if err := conn.QueryRow(t.Context(), sql+" RETURNING id::text", args...).Scan(&id); err != nil {
		t.Fatalf("%s: %v", strings.Fields(sql)[2], err)
	}
	return id
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

const hashA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
const hashB = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

func setupPricing(t *testing.T) (*pgx.Conn, pricingFixture) {
	t.Helper()
	conn, _ := migratedConn(t)
	var f pricingFixture
	f.providerOrg = insertID(t, conn, "INSERT INTO organizations (slug, name) VALUES ('acme', 'Acme')")
	f.consumerOrg = insertID(t, conn, "INSERT INTO organizations (slug, name) VALUES ('globex', 'Globex')")
	f.api = insertID(t, conn, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, 'Weather', 'weather', 'http://upstream', 'v1', 'sub-provider')`, f.providerOrg)
	f.otherAPI = insertID(t, conn, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, 'Maps', 'maps', 'http://upstream', 'v1', 'sub-provider')`, f.providerOrg)

	f.plan = insertID(t, conn, "INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Pro', 'pro', 'active')", f.api)
	f.usedVersion = insertID(t, conn, `INSERT INTO plan_versions (plan_id, version, type, currency, interval, base_fee, trial_days,
		quota_requests, quota_hard, rate_per_second, rate_per_minute, included_units, created_by)
		VALUES ($1, 1, 'hybrid', 'EUR', 'month', 49.99, 14, 100000, false, 10, 300, 1000, 'sub-provider')`, f.plan)
	f.freeVersion = insertID(t, conn, `INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
		VALUES ($1, 2, 'freemium', 'EUR', 'sub-provider')`, f.plan)

	f.requestsMeter = insertID(t, conn, "INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'requests', 'count')", f.api)
	f.bytesMeter = insertID(t, conn, `INSERT INTO meters (api_id, slug, name, aggregation, field, filter_routes, filter_methods)
		VALUES ($1, 'egress', 'Egress', 'sum', 'response_bytes', '{/v1/tiles/*}', '{GET}')`, f.api)

	f.graduated = insertID(t, conn, `INSERT INTO plan_version_charges (plan_version_id, meter_id, included_units, model)
		VALUES ($1, $2, 1000, 'graduated')`, f.usedVersion, f.requestsMeter)
	exec(t, conn, `INSERT INTO charge_tiers (charge_id, position, up_to, unit_price, flat_fee) VALUES
		($1, 2, 100000, 0.0008, 0), ($1, 3, NULL, 0.0005, 5), ($1, 1, 10000, 0.001, 0)`, f.graduated)
	exec(t, conn, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model, package_size, unit_price, quota, quota_hard)
		VALUES ($1, $2, 'package', 1000000, 0.5, 1e12, true)`, f.usedVersion, f.bytesMeter)
	f.freeCharge = insertID(t, conn, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price)
		VALUES ($1, $2, 'per_unit', 0.000000000123)`, f.freeVersion, f.bytesMeter)

	f.promotion = insertID(t, conn, `INSERT INTO promotions (organization_id, code, kind, value, duration, duration_periods,
		valid_until, max_redemptions, max_per_customer, priority, stackable, created_by)
		VALUES ($1, 'Welcome10', 'percent_off', 10, 'repeating', 3, now() + interval '30 days', 100, 1, 5, true, 'sub-provider')`, f.providerOrg)
	exec(t, conn, "INSERT INTO promotion_plans (promotion_id, plan_id) VALUES ($1, $2)", f.promotion, f.plan)

	f.subscription = insertID(t, conn, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status,
		trial_ends_at, current_period_start, current_period_end)
		VALUES ($1, 'sub-consumer', $2, $3, 'trialing', now() + interval '14 days', now(), now() + interval '1 month')`,
		f.consumerOrg, f.api, f.usedVersion)
	exec(t, conn, `INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'trialing', now(), 'sub-consumer')`, f.subscription, f.usedVersion)
	exec(t, conn, `INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by)
		VALUES ($1, $2, $3, 'sub-consumer')`, f.promotion, f.subscription, f.consumerOrg)
	exec(t, conn, "UPDATE promotions SET redemptions = redemptions + 1 WHERE id = $1", f.promotion)

	f.key = insertID(t, conn, `INSERT INTO api_keys (subscription_id, name, env, hash, prefix, last4, state, expires_at,
		methods, routes, rate_per_second, metadata, auto_rotate, auto_renew, renew_days, created_by)
		VALUES ($1, 'ci', 'live', $2, 'veil_live_abcd', 'wxyz', 'active', now() + interval '90 days',
		'{GET,POST}', '{/v1/forecast/*}', 5, '{"team": "data"}', true, true, 30, 'sub-consumer')`, f.subscription, hashA)
	f.rotatedKey = insertID(t, conn, `INSERT INTO api_keys (subscription_id, name, env, hash, prefix, last4, rotated_from, created_by)
		VALUES ($1, 'ci', 'live', $2, 'veil_live_efgh', 'stuv', $3, 'sub-consumer')`, f.subscription, hashB, f.key)
	exec(t, conn, "UPDATE api_keys SET grace_until = now() + interval '24 hours', last_rotated_at = now() WHERE id = $1", f.key)
	exec(t, conn, `INSERT INTO key_notices (key_id, kind, channel, event_at)
		VALUES ($1, 'expiry_7d', 'email', '2027-01-01T00:00:00Z')`, f.key)
	return conn, f
}

func TestPlansSchemaHoldsRepresentativeRows(t *testing.T) {
	conn, f := setupPricing(t)
	ctx := t.Context()

	// Prices round-trip exactly, far below a cent.
	var price string
	if err := conn.QueryRow(ctx, "SELECT unit_price::text FROM plan_version_charges WHERE id = $1", f.freeCharge).Scan(&price); err != nil {
		t.Fatal(err)
	}
	if want := "0.000000000123"; price != want {
		t.Errorf("unit_price = %s; want %s", price, want)
	}
	var tiers []string
	rows, err := conn.Query(ctx, "SELECT coalesce(up_to::text, 'inf') FROM charge_tiers WHERE charge_id = $1 ORDER BY position", f.graduated)
	if err != nil {
		t.Fatal(err)
	}
	if tiers, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(tiers, ","), "10000.000000,100000.000000,inf"; got != want {
		t.Errorf("tier bounds = %s; want %s", got, want)
	}

	// The new key counts toward the limit alongside the rotated one; the
	// expiry job sees the active key only.
	var live, expiring int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state IN ('pending', 'active', 'suspended', 'failed_sync')),
		count(*) FILTER (WHERE state IN ('active', 'suspended') AND expires_at IS NOT NULL) FROM api_keys WHERE subscription_id = $1`,
		f.subscription).Scan(&live, &expiring); err != nil {
		t.Fatal(err)
	}
	if live != 2 || expiring != 1 {
		t.Errorf("live, expiring keys = %d, %d; want 2, 1", live, expiring)
	}

	// An unused version may still change, and the change may add tiers.
	exec(t, conn, "UPDATE plan_versions SET base_fee = 0, trial_days = 30 WHERE id = $1", f.freeVersion)
	exec(t, conn, "UPDATE plan_version_charges SET unit_price = 0.000000000200 WHERE id = $1", f.freeCharge)
	exec(t, conn, "DELETE FROM plan_version_charges WHERE id = $1", f.freeCharge)
	charge := insertID(t, conn, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model) VALUES ($1, $2, 'volume')`,
		f.freeVersion, f.requestsMeter)
	exec(t, conn, "INSERT INTO charge_tiers (charge_id, position, up_to, unit_price) VALUES ($1, 1, 500, 0), ($1, 2, NULL, 0.01)", charge)
	exec(t, conn, "DELETE FROM plan_versions WHERE id = $1", f.freeVersion)

	// A renewed expiry gets its own notice of the same kind.
	exec(t, conn, `INSERT INTO key_notices (key_id, kind, channel, event_at)
		VALUES ($1, 'expiry_7d', 'email', '2027-02-01T00:00:00Z')`, f.key)
	exec(t, conn, `INSERT INTO key_notices (key_id, kind, channel, event_at)
		VALUES ($1, 'expiry_7d', 'webhook', '2027-01-01T00:00:00Z')`, f.key)

	// Revoking sets revoked_at with the state.
	exec(t, conn, "UPDATE api_keys SET state = 'revoked', revoked_at = now(), sync_version = sync_version + 1 WHERE id = $1", f.key)
}

func TestPlansSchemaRefusesBadRows(t *testing.T) {
	conn, f := setupPricing(t)
	longKey := "veil_live_" + strings.Repeat("A", 30)
	tests := []struct {
		name       string
		sql        string
		args       []any
		code       string // SQLSTATE
		constraint string // when the test names one
	}{
		{"lower-case currency", `INSERT INTO plan_versions (plan_id, version, type, currency, created_by) VALUES ($1, 9, 'usage_based', 'eur', 'x')`,
			[]any{f.plan}, "23514", ""},
		{"negative base fee", `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, created_by) VALUES ($1, 9, 'subscription', 'EUR', -1, 'x')`,
			[]any{f.plan}, "23514", ""},
		{"negative trial", `INSERT INTO plan_versions (plan_id, version, type, currency, trial_days, created_by) VALUES ($1, 9, 'subscription', 'EUR', -1, 'x')`,
			[]any{f.plan}, "23514", ""},
		{"unknown plan type", `INSERT INTO plan_versions (plan_id, version, type, currency, created_by) VALUES ($1, 9, 'prepaid', 'EUR', 'x')`,
			[]any{f.plan}, "22P02", ""},
		{"duplicate version number", `INSERT INTO plan_versions (plan_id, version, type, currency, created_by) VALUES ($1, 1, 'freemium', 'EUR', 'x')`,
			[]any{f.plan}, "23505", ""},
		{"duplicate plan slug", `INSERT INTO plans (api_id, name, slug) VALUES ($1, 'Pro 2', 'pro')`, []any{f.api}, "23505", ""},
		{"sum meter without field", `INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'bytes', 'sum')`, []any{f.api}, "23514", ""},
		{"unique_count meter over units", `INSERT INTO meters (api_id, slug, aggregation, field) VALUES ($1, 'uniq', 'unique_count', 'units')`, []any{f.api}, "23514", "meters_field_check2"},
		{"count meter with a field", `INSERT INTO meters (api_id, slug, aggregation, field) VALUES ($1, 'calls2', 'count', 'units')`, []any{f.api}, "23514", "meters_field_check2"},
		{"meter filter on 5xx", `INSERT INTO meters (api_id, slug, aggregation, filter_status_classes) VALUES ($1, 'errs', 'count', '{5xx}')`, []any{f.api}, "23514", ""},
		{"file version without a hash", `INSERT INTO plan_versions (plan_id, version, type, currency, created_by, source, source_file) VALUES ($1, 8, 'hybrid', 'EUR', 'x', 'file', 'pro.yaml')`,
			[]any{f.plan}, "23514", "plan_versions_source_check2"},
		{"per-unit charge without price", `INSERT INTO plan_version_charges (plan_version_id, meter_id, model) VALUES ($1, $2, 'per_unit')`,
			[]any{f.freeVersion, f.requestsMeter}, "23514", ""},
		{"package charge without size", `INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price) VALUES ($1, $2, 'package', 1)`,
			[]any{f.freeVersion, f.requestsMeter}, "23514", ""},
		{"update of a used version", `UPDATE plan_versions SET base_fee = 1 WHERE id = $1`, []any{f.usedVersion}, "23001", "plan_versions_immutable"},
		{"delete of a used version", `DELETE FROM plan_versions WHERE id = $1`, []any{f.usedVersion}, "23001", "plan_versions_immutable"},
		{"delete of the plan of a used version", `DELETE FROM plans WHERE id = $1`, []any{f.plan}, "23001", "plan_versions_immutable"},
		{"new charge on a used version", `INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price) VALUES ($1, $2, 'per_unit', 1)`,
			[]any{f.usedVersion, f.bytesMeter}, "23001", "plan_versions_immutable"},
		{"charge change on a used version", `UPDATE plan_version_charges SET included_units = 0 WHERE id = $1`,
			[]any{f.graduated}, "23001", "plan_versions_immutable"},
		{"tier change on a used version", `UPDATE charge_tiers SET unit_price = 0 WHERE charge_id = $1`,
			[]any{f.graduated}, "23001", "plan_versions_immutable"},
		{"unbounded tier before the last", `INSERT INTO charge_tiers (charge_id, position, up_to, unit_price) VALUES ($1, 1, NULL, 1), ($1, 2, 100, 1)`,
			[]any{mustCharge(t, conn, f)}, "23514", "charge_tiers_order"},
		{"falling tier bounds", `INSERT INTO charge_tiers (charge_id, position, up_to, unit_price) VALUES ($1, 1, 100, 1), ($1, 2, 50, 1)`,
			[]any{mustCharge(t, conn, f)}, "23514", "charge_tiers_order"},
		{"percent over 100", `INSERT INTO promotions (organization_id, code, kind, value, created_by) VALUES ($1, 'HALFPLUS', 'percent_off', 150, 'x')`,
			[]any{f.providerOrg}, "23514", ""},
		{"amount off without currency", `INSERT INTO promotions (organization_id, code, kind, value, created_by) VALUES ($1, 'TENOFF', 'amount_off', 10, 'x')`,
			[]any{f.providerOrg}, "23514", ""},
		{"repeating without periods", `INSERT INTO promotions (organization_id, code, kind, value, duration, created_by) VALUES ($1, 'REP', 'free_units', 10, 'repeating', 'x')`,
			[]any{f.providerOrg}, "23514", ""},
		{"promotion code differing in case", `INSERT INTO promotions (organization_id, code, kind, value, created_by) VALUES ($1, 'WELCOME10', 'percent_off', 5, 'x')`,
			[]any{f.providerOrg}, "23505", "promotions_org_code_key"},
		{"redemptions over the limit", `UPDATE promotions SET redemptions = 101 WHERE id = $1`, []any{f.promotion}, "23514", ""},
		{"second redemption on a subscription", `INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by) VALUES ($1, $2, $3, 'x')`,
			[]any{f.promotion, f.subscription, f.consumerOrg}, "23505", ""},
		{"plan version of another api", `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
			VALUES ($1, 'x', $2, $3, now(), now() + interval '1 month')`, []any{f.consumerOrg, f.otherAPI, f.usedVersion}, "23514", "subscriptions_plan_api"},
		{"second live subscription to one api", `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
			VALUES ($1, 'x', $2, $3, now(), now() + interval '1 month')`, []any{f.consumerOrg, f.api, f.usedVersion}, "23505", "subscriptions_one_live_key"},
		{"canceled without canceled_at", `UPDATE subscriptions SET status = 'canceled' WHERE id = $1`, []any{f.subscription}, "23514", ""},
		{"unknown subscription status", `UPDATE subscriptions SET status = 'paused' WHERE id = $1`, []any{f.subscription}, "22P02", ""},
		{"period ending before it starts", `UPDATE subscriptions SET current_period_end = current_period_start WHERE id = $1`, []any{f.subscription}, "23514", ""},
		{"synced ahead of sync version", `UPDATE subscriptions SET synced_version = sync_version + 1 WHERE id = $1`, []any{f.subscription}, "23514", ""},
		{"upper-case hash", keyInsert, []any{f.subscription, strings.ToUpper(hashA[:32]) + hashA[32:], "veil_live_abcd", "live"}, "23514", ""},
		{"short hash", keyInsert, []any{f.subscription, hashA[:40], "veil_live_abcd", "live"}, "23514", ""},
		{"duplicate hash", keyInsert, []any{f.subscription, hashA, "veil_live_abcd", "live"}, "23505", "api_keys_hash_key"},
		{"prefix long enough for a key", keyInsert, []any{f.subscription, strings.Repeat("1", 64), longKey, "live"}, "23514", ""},
		{"prefix of the other env", keyInsert, []any{f.subscription, strings.Repeat("2", 64), "veil_test_abcd", "live"}, "23514", ""},
		{"unknown env", keyInsert, []any{f.subscription, strings.Repeat("3", 64), "veil_prod_abcd", "prod"}, "23514", ""},
		{"unknown key state", `UPDATE api_keys SET state = 'deleted' WHERE id = $1`, []any{f.key}, "22P02", ""},
		{"revoked without revoked_at", `UPDATE api_keys SET state = 'revoked' WHERE id = $1`, []any{f.key}, "23514", ""},
		{"unknown method", `UPDATE api_keys SET methods = '{GET,TRACE}' WHERE id = $1`, []any{f.key}, "23514", ""},
		{"metadata not an object", `UPDATE api_keys SET metadata = '[1]' WHERE id = $1`, []any{f.key}, "23514", ""},
		{"auto-renew without days", `UPDATE api_keys SET renew_days = NULL WHERE id = $1`, []any{f.key}, "23514", ""},
		{"duplicate notice", `INSERT INTO key_notices (key_id, kind, channel, event_at) VALUES ($1, 'expiry_7d', 'email', '2027-01-01T00:00:00Z')`,
			[]any{f.key}, "23505", ""},
		{"unknown notice channel", `INSERT INTO key_notices (key_id, kind, channel, event_at) VALUES ($1, 'expiry_3d', 'sms', now())`,
			[]any{f.key}, "23514", ""},
		{"unknown notice kind", `INSERT INTO key_notices (key_id, kind, channel, event_at) VALUES ($1, 'expiry_2d', 'email', now())`,
			[]any{f.key}, "22P02", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := conn.Exec(t.Context(), tt.sql, tt.args...)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				t.Fatalf("Exec(%s) = %v; want SQLSTATE %s", tt.name, err, tt.code)
			}
			if pgErr.Code != tt.code || (tt.constraint != "" && pgErr.ConstraintName != tt.constraint) {
				t.Fatalf("Exec(%s) = %s on %q (%s); want %s on %q", tt.name, pgErr.Code, pgErr.ConstraintName, pgErr.Message, tt.code, tt.constraint)
			}
		})
	}
}

const keyInsert = `INSERT INTO api_keys (subscription_id, env, hash, prefix, last4, created_by) VALUES ($1, $4, $2, $3, 'wxyz', 'x')`

// mustCharge adds an empty graduated charge to the unused plan version.
func mustCharge(t *testing.T, conn *pgx.Conn, f pricingFixture) string {
	t.Helper()
	return insertID(t, conn, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model) VALUES ($1, $2, 'graduated')
		ON CONFLICT (plan_version_id, meter_id) DO UPDATE SET model = 'graduated', unit_price = NULL`, f.freeVersion, f.requestsMeter)
}

// A first subscription and a change of its plan version cannot pass each
// other: the change waits for the subscribing transaction and is then refused.
func TestPlanVersionChangeWaitsForFirstSubscription(t *testing.T) {
	conn, f := setupPricing(t)
	ctx := t.Context()
	connect := func() *pgx.Conn {
		c, err := pgx.ConnectConfig(ctx, conn.Config().Copy())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	subscriber, changer := connect(), connect()
	// Another organization: the consumer already holds its one live subscription.
	lateOrg := insertID(t, conn, "INSERT INTO organizations (slug, name) VALUES ('initech', 'Initech')")

	tx, err := subscriber.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // committed below
	if _, err := tx.Exec(ctx, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'sub-late', $2, $3, now(), now() + interval '1 month')`, lateOrg, f.api, f.freeVersion); err != nil {
		t.Fatal(err)
	}

	changerPID := changer.PgConn().PID()
	done := make(chan error, 1)
	go func() {
		_, err := changer.Exec(ctx, "UPDATE plan_versions SET base_fee = 1 WHERE id = $1", f.freeVersion)
		done <- err
	}()
	testenv.Deadline(t, 5*time.Second, func() error {
		var waiting bool
		if err := conn.QueryRow(ctx, "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1", changerPID).Scan(&waiting); err != nil {
			return err
		}
		if !waiting {
			return errors.New("plan version update is not waiting for the subscription")
		}
		return nil
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	err = <-done
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "plan_versions_immutable" {
		t.Fatalf("UPDATE of a version subscribed meanwhile = %v; want plan_versions_immutable", err)
	}
}
