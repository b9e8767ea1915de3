package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The Postgres side of the analytics bench: organizations, APIs with
// their meters and plans, subscriptions and keys named after the plan's
// slots, so a reused database gives back the same ids in the same order.

const seedOrgs = `
INSERT INTO organizations (slug, name)
SELECT 'bench-provider-' || i, 'Bench Provider ' || i FROM generate_series(0, $1::int - 1) i
UNION ALL
SELECT 'bench-consumer-' || i, 'Consumer ' || i || ' Ltd' FROM generate_series(0, $2::int - 1) i`

const seedAPIs = `
INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
SELECT o.id, 'Bench API ' || (t.a - 1), 'bench-api-' || (t.a - 1), 'https://upstream.example', 'v1', 'active', 'bench'
FROM unnest($1::int[]) WITH ORDINALITY AS t(p, a) JOIN organizations o ON o.slug = 'bench-provider-' || t.p`

const seedMeters = `
INSERT INTO meters (api_id, slug, name, aggregation, field)
SELECT a.id, m.slug, initcap(m.slug), m.agg::meter_aggregation, m.field
FROM apis a, (VALUES ('calls', 'count', ''), ('units', 'sum', 'units')) m(slug, agg, field)
WHERE a.slug LIKE 'bench-api-%'`

// seedPlans gives every API a starter plan (a base fee, calls beyond an
// included 10,000 at 0.001 EUR, a soft quota of 500,000 calls) and a
// usage-based scale plan (calls at 0.0005 EUR, units at 0.002 EUR).
const seedPlans = `
WITH p AS (
	INSERT INTO plans (api_id, name, slug, status)
	SELECT a.id, x.name, x.slug, 'active' FROM apis a, (VALUES ('Starter', 'starter'), ('Scale', 'scale')) x(name, slug)
	WHERE a.slug LIKE 'bench-api-%'
	RETURNING id, api_id, slug
), v AS (
	INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, created_by)
	SELECT id, 1, CASE slug WHEN 'starter' THEN 'hybrid' ELSE 'usage_based' END::plan_type, 'EUR',
		CASE slug WHEN 'starter' THEN 29 ELSE 0 END, 'bench'
	FROM p
	RETURNING id, plan_id
)
INSERT INTO plan_version_charges (plan_version_id, meter_id, model, included_units, unit_price, quota, quota_hard)
SELECT v.id, m.id, 'per_unit', c.included, c.price, c.quota, false
FROM v JOIN p ON p.id = v.plan_id
JOIN (VALUES ('starter', 'calls', 10000, 0.001, 500000), ('scale', 'calls', 0, 0.0005, NULL), ('scale', 'units', 0, 0.002, NULL))
	c(plan, meter, included, price, quota) ON c.plan = p.slug
JOIN meters m ON m.api_id = p.api_id AND m.slug = c.meter`

// seedSubs subscribes slot i's consumer to its API: odd traffic ranks on
// starter, the rest (the busiest subscriber of each API among them) on
// scale, all in a period around data_to.
const seedSubs = `
WITH s AS (
	INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status, current_period_start, current_period_end)
	SELECT o.id, 'bench-sub-' || (t.slot - 1), a.id, v.id, 'active', $4, $5
	FROM unnest($1::int[], $2::int[], $3::int[]) WITH ORDINALITY AS t(consumer, api, rank, slot)
	JOIN organizations o ON o.slug = 'bench-consumer-' || t.consumer
	JOIN apis a ON a.slug = 'bench-api-' || t.api
	JOIN plans p ON p.api_id = a.id AND p.slug = CASE WHEN t.rank % 2 = 1 THEN 'starter' ELSE 'scale' END
	JOIN plan_versions v ON v.plan_id = p.id
	RETURNING id, plan_version_id, subscriber
)
INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
SELECT id, plan_version_id, 'active', $4, subscriber FROM s`

// seedKeys gives each subscription its keys, named key-1, key-2, ...
const seedKeys = `
INSERT INTO api_keys (subscription_id, name, env, hash, prefix, last4, state, created_by)
SELECT s.id, 'key-' || k, 'live', encode(sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'hex'),
	'veil_live_' || substr(md5(random()::text), 1, 8), substr(md5(random()::text), 1, 4), 'active', 'bench'
FROM unnest($1::int[]) WITH ORDINALITY AS t(keys, slot)
JOIN subscriptions s ON s.subscriber = 'bench-sub-' || (t.slot - 1)
CROSS JOIN LATERAL generate_series(1, t.keys) k`

// seedAnalytics writes the plan's organizations, APIs, plans,
// subscriptions and keys in one transaction, the subscriptions' period
// running from periodStart for a month.
func seedAnalytics(ctx context.Context, pool *pgxpool.Pool, p analyticsPlan, periodStart time.Time) error {
	providers := make([]int32, len(p.apiProvider))
	for a, pr := range p.apiProvider {
		providers[a] = int32(pr)
	}
	consumers, apis, ranks := make([]int32, len(p.subAPI)), make([]int32, len(p.subAPI)), make([]int32, len(p.subAPI))
	keys := make([]int32, len(p.subAPI))
	for s := range p.subAPI {
		consumers[s], apis[s], ranks[s], keys[s] = int32(p.subConsumer[s]), int32(p.subAPI[s]), int32(p.subRank[s]), int32(p.subKeys[s])
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, st := range []struct {
			what string
			sql  string
			args []any
		}{
			{"organizations", seedOrgs, []any{p.shape.Providers, p.shape.Consumers}},
			{"apis", seedAPIs, []any{providers}},
			{"meters", seedMeters, nil},
			{"plans", seedPlans, nil},
			{"subscriptions", seedSubs, []any{consumers, apis, ranks, periodStart, periodStart.AddDate(0, 1, 0)}},
			{"keys", seedKeys, []any{keys}},
		} {
			if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
				return fmt.Errorf("seed %s: %w", st.what, err)
			}
		}
		return nil
	})
}

// readLoadIDs reads the seeded ids back in plan order and checks that
// they are the plan's.
func readLoadIDs(ctx context.Context, pool *pgxpool.Pool, p analyticsPlan) (loadIDs, error) {
	var ids loadIDs
	for _, q := range []struct {
		what string
		dst  *[]string
		want int
		sql  string
	}{
		{"apis", &ids.apis, len(p.apiProvider), `SELECT id::text FROM apis WHERE slug LIKE 'bench-api-%'
			ORDER BY split_part(slug, '-', 3)::int`},
		{"subscriptions", &ids.subs, len(p.subAPI), `SELECT id::text FROM subscriptions WHERE subscriber LIKE 'bench-sub-%'
			ORDER BY split_part(subscriber, '-', 3)::int`},
		{"keys", &ids.keys, p.keys, `SELECT k.id::text FROM api_keys k JOIN subscriptions s ON s.id = k.subscription_id
			WHERE s.subscriber LIKE 'bench-sub-%' ORDER BY split_part(s.subscriber, '-', 3)::int, split_part(k.name, '-', 2)::int`},
	} {
		rows, err := pool.Query(ctx, q.sql)
		if err != nil {
			return ids, fmt.Errorf("read seeded %s: %w", q.what, err)
		}
		if *q.dst, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return ids, fmt.Errorf("read seeded %s: %w", q.what, err)
		}
		if len(*q.dst) != q.want {
			return ids, fmt.Errorf("read seeded %s: %d, want %d (a database of another shape?)", q.what, len(*q.dst), q.want)
		}
	}
	return ids, nil
}
