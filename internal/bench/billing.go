package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/schemas/migrate"
)

// BillingConfig configures the billing benchmark.
type BillingConfig struct {
	// PostgresURL names the server; the run creates a database of its own
	// on it and drops it after (unless Keep).
	PostgresURL    string
	ClickHouseAddr string
	Subscriptions  int
	// Events is how many usage events each subscription has in its period.
	Events    int
	Providers int
	// Workers is billing.Config.Workers.
	Workers int
	// Sample is how many invoices, picked at random, are explained.
	Sample     int
	CPUProfile string
	Keep       bool
	Logger     *slog.Logger
}

// BillingFigures is what a run measured and checked.
type BillingFigures struct {
	Subscriptions  int     `json:"subscriptions"`
	Events         int     `json:"events"`
	SetupSeconds   float64 `json:"setup_s"`
	EnsureSeconds  float64 `json:"ensure_s"`
	CloseSeconds   float64 `json:"close_s"`
	InvoiceSeconds float64 `json:"invoice_s"`
	TotalSeconds   float64 `json:"total_s"`
	InvoicesPerSec float64 `json:"invoices_per_s"`
	Invoices       int     `json:"invoices"`
	Explained      int     `json:"explained"`
	PeakRSSKiB     int64   `json:"peak_rss_kib"`
	// LineKinds counts the invoices' lines by kind, to show what was billed.
	LineKinds map[string]int `json:"line_kinds"`
}

// The bench's billing period: every subscription started on periodStart,
// and those that change plan do so at planChange.
var (
	periodStart = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	periodEnd   = periodStart.AddDate(0, 1, 0)
	planChange  = time.Date(2026, 3, 16, 12, 0, 0, 0, time.UTC)
)

// Billing runs the billing cycle over cfg.Subscriptions subscriptions of
// a fresh Postgres and ClickHouse database: it records their ended
// periods, closes them with their usage snapshots, builds and finalizes
// their invoices, and times each phase. It then checks that there is one
// numbered invoice per subscription, that each issuer's numbers run from
// 1 without a gap, and that a sample of invoices explains with no
// difference, and prints the figures and a final JSON line.
func Billing(ctx context.Context, cfg BillingConfig, stdout io.Writer) (BillingFigures, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	setupStart := time.Now()
	pool, ch, drop, err := billingScratch(ctx, cfg, stamp)
	if err != nil {
		return BillingFigures{}, err
	}
	defer drop()
	if err := seedBilling(ctx, pool, cfg, stamp); err != nil {
		return BillingFigures{}, err
	}
	events, err := writeBillingUsage(ctx, pool, ch, cfg.Events)
	if err != nil {
		return BillingFigures{}, err
	}
	fig := BillingFigures{Subscriptions: cfg.Subscriptions, Events: events, SetupSeconds: time.Since(setupStart).Seconds()}
	fmt.Fprintf(stdout, "setup: %d subscriptions of %d providers, %d usage events in %.1fs\n",
		cfg.Subscriptions, cfg.Providers, events, fig.SetupSeconds)
	if err := runBillingCycle(ctx, pool, ch, cfg, &fig, stdout); err != nil {
		return fig, err
	}
	fig.PeakRSSKiB = peakRSS()
	fmt.Fprintf(stdout, "total: %.2fs for %d invoices, peak RSS %d MiB\n", fig.TotalSeconds, fig.Invoices, fig.PeakRSSKiB/1024)
	fmt.Fprintf(stdout, "invoice lines by kind: %v\n", fig.LineKinds)
	fmt.Fprintf(stdout, "checks: one invoice per subscription, numbers gapless per issuer, %d sampled invoices explain with no difference\n", fig.Explained)
	line, err := json.Marshal(fig)
	if err != nil {
		return fig, fmt.Errorf("encode figures: %w", err)
	}
	fmt.Fprintln(stdout, string(line))
	return fig, nil
}

// runBillingCycle times the cycle's phases with the clock past the
// period's end and grace, then checks the invoices.
func runBillingCycle(ctx context.Context, pool *pgxpool.Pool, ch driver.Conn, cfg BillingConfig, fig *BillingFigures, stdout io.Writer) error {
	now := periodEnd.Add(time.Hour + time.Minute)
	svc, err := billing.New(billing.Config{Pool: pool, ClickHouse: ch, Logger: cfg.Logger, Grace: time.Hour,
		Now: func() time.Time { return now }, Workers: cfg.Workers})
	if err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return fmt.Errorf("create cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	began := time.Now()
	if n, err := svc.EnsurePeriods(ctx, now); err != nil || n != cfg.Subscriptions {
		return fmt.Errorf("ensure periods: %d recorded, want %d: %v", n, cfg.Subscriptions, err)
	}
	fig.EnsureSeconds = time.Since(began).Seconds()
	fmt.Fprintf(stdout, "ensure periods: %.2fs\n", fig.EnsureSeconds)
	mark := time.Now()
	if n, err := svc.ClosePeriods(ctx, now); err != nil || n != cfg.Subscriptions {
		return fmt.Errorf("close periods: %d closed, want %d: %v", n, cfg.Subscriptions, err)
	}
	fig.CloseSeconds = time.Since(mark).Seconds()
	fmt.Fprintf(stdout, "close periods (usage snapshots): %.2fs\n", fig.CloseSeconds)
	mark = time.Now()
	rep, err := svc.RunCycle(ctx)
	if err != nil {
		return fmt.Errorf("run billing cycle: %w", err)
	}
	fig.InvoiceSeconds = time.Since(mark).Seconds()
	fig.TotalSeconds = time.Since(began).Seconds()
	fig.Invoices = rep.Drafts
	fig.InvoicesPerSec = float64(rep.Drafts) / fig.InvoiceSeconds
	fmt.Fprintf(stdout, "build + finalize invoices: %.2fs (%.0f invoices/s)\n", fig.InvoiceSeconds, fig.InvoicesPerSec)
	if cfg.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	if err := checkInvoices(ctx, pool, cfg.Subscriptions); err != nil {
		return err
	}
	if fig.LineKinds, err = lineKinds(ctx, pool); err != nil {
		return err
	}
	fig.Explained, err = explainSample(ctx, pool, svc, cfg.Sample)
	return err
}

func lineKinds(ctx context.Context, pool *pgxpool.Pool) (map[string]int, error) {
	rows, err := pool.Query(ctx, `SELECT kind::text, count(*) FROM invoice_lines GROUP BY kind`)
	if err != nil {
		return nil, fmt.Errorf("count invoice lines: %w", err)
	}
	out := map[string]int{}
	var kind string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&kind, &n}, func() error { out[kind] = n; return nil })
	if err != nil {
		return nil, fmt.Errorf("count invoice lines: %w", err)
	}
	return out, nil
}

// billingScratch creates and migrates a Postgres and a ClickHouse
// database named after stamp; drop removes both (but with Keep).
func billingScratch(ctx context.Context, cfg BillingConfig, stamp string) (*pgxpool.Pool, driver.Conn, func(), error) {
	name := "veil_bench_" + stamp
	admin, err := pgx.Connect(ctx, cfg.PostgresURL)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect to Postgres (make services starts it): %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, nil, nil, fmt.Errorf("create database %s: %w", name, err)
	}
	var closers []func()
	drop := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	closers = append(closers, func() {
		if cfg.Keep {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if c, err := pgx.Connect(cctx, cfg.PostgresURL); err == nil {
			_, _ = c.Exec(cctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(cctx)
		}
	})
	pool, ch, err := openBillingScratch(ctx, cfg, name, &closers)
	if err != nil {
		drop()
		return nil, nil, nil, err
	}
	return pool, ch, drop, nil
}

func openBillingScratch(ctx context.Context, cfg BillingConfig, name string, closers *[]func()) (*pgxpool.Pool, driver.Conn, error) {
	u, err := url.Parse(cfg.PostgresURL)
	if err != nil {
		return nil, nil, fmt.Errorf("parse postgres url: %w", err)
	}
	u.Path = "/" + name
	if _, err := migrate.Postgres(ctx, u.String(), cfg.Logger); err != nil {
		return nil, nil, err
	}
	pcfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		return nil, nil, fmt.Errorf("parse postgres url: %w", err)
	}
	pcfg.MaxConns = int32(2*cfg.Workers + 4)
	datastore.WithNativeTypes(pcfg)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", name, err)
	}
	*closers = append(*closers, pool.Close)
	if _, err := migrate.ClickHouse(ctx, migrate.ClickHouseConfig{Addr: cfg.ClickHouseAddr, Database: name}, cfg.Logger); err != nil {
		return nil, nil, err
	}
	ch, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: cfg.ClickHouseAddr, Database: name})
	if err != nil {
		return nil, nil, err
	}
	*closers = append(*closers, func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if !cfg.Keep {
			_ = ch.Exec(cctx, "DROP DATABASE IF EXISTS "+name)
		}
		_ = ch.Close()
	})
	return pool, ch, nil
}

// benchPlans are the plans each provider offers, in the order
// subscriptions are spread over them; hybrid has a second version that
// some subscriptions change to mid-period.
const benchPlans = `
INSERT INTO plans (api_id, name, slug, status) VALUES
	($1, 'Hybrid', 'hybrid', 'active'), ($1, 'Usage', 'usage', 'active'),
	($1, 'Flat', 'flat', 'active'), ($1, 'Free', 'free', 'active')`

// seedProvider creates a provider with its API, meters, plans (hybrid
// graduated, usage-based volume, subscription, freemium), invoice
// prefix, billing profile, a tax rule for German customers (inclusive
// for every other provider) and a 10% promotion; it returns the API, the
// first version of each plan, hybrid's second version and the promotion.
func seedProvider(ctx context.Context, tx pgx.Tx, p int, stamp string) (api uuid.UUID, v1 [4]uuid.UUID, v2, promo uuid.UUID, err error) {
	var org uuid.UUID
	row := func(dst *uuid.UUID, sql string, args ...any) {
		if err == nil {
			if err = tx.QueryRow(ctx, sql, args...).Scan(dst); err != nil {
				err = fmt.Errorf("seed provider %d: %s: %w", p, strings.Fields(sql)[2], err)
			}
		}
	}
	exec := func(sql string, args ...any) {
		if err == nil {
			if _, err = tx.Exec(ctx, sql, args...); err != nil {
				err = fmt.Errorf("seed provider %d: %s: %w", p, strings.Fields(sql)[2], err)
			}
		}
	}
	row(&org, `INSERT INTO organizations (slug, name) VALUES ($1, $2) RETURNING id`, fmt.Sprintf("provider-%d", p), fmt.Sprintf("Provider %d", p))
	row(&api, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, 'Billed', $2, 'https://upstream.example', 'v1', 'prov') RETURNING id`, org, fmt.Sprintf("billed-%d-%s", p, stamp))
	exec(`INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'calls', 'count')`, api)
	exec(`INSERT INTO meters (api_id, slug, aggregation, field) VALUES ($1, 'units', 'sum', 'units')`, api)
	exec(benchPlans, api)
	for k, v := range []struct {
		slug, typ string
		version   int
		fee       string
	}{{"hybrid", "hybrid", 1, "10"}, {"usage", "usage_based", 1, "0"}, {"flat", "subscription", 1, "29"}, {"free", "freemium", 1, "0"}, {"hybrid", "hybrid", 2, "20"}} {
		dst := &v2
		if k < 4 {
			dst = &v1[k]
		}
		row(dst, `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, created_by)
			SELECT id, $3::int, $4::plan_type, 'EUR', $5::numeric, 'prov' FROM plans WHERE api_id = $1 AND slug = $2 RETURNING id`, api, v.slug, v.version, v.typ, v.fee)
	}
	charge := `WITH c AS (INSERT INTO plan_version_charges (plan_version_id, meter_id, model, included_units, unit_price)
		SELECT $1::uuid, id, $3::charge_model, $4::numeric, $5::numeric FROM meters WHERE api_id = $2 AND slug = $6 RETURNING id)
		INSERT INTO charge_tiers (charge_id, position, up_to, unit_price)
		SELECT c.id, t.position, t.up_to, t.unit_price FROM c, (VALUES (1, 5::numeric, $7::numeric), (2, NULL, $8::numeric)) t(position, up_to, unit_price)
		WHERE $3::charge_model IN ('graduated', 'volume')`
	exec(charge, v1[0], api, "graduated", "0", nil, "calls", "0", "0.02")
	exec(charge, v2, api, "graduated", "0", nil, "calls", "0", "0.015")
	exec(charge, v1[1], api, "volume", "0", nil, "units", "0.5", "0.4")
	exec(charge, v1[3], api, "per_unit", "5", "0.01", "calls", "0", "0")
	exec(`INSERT INTO issuer_settings (organization_id, invoice_prefix) VALUES ($1, $2)`, org, fmt.Sprintf("PRV%d", p))
	exec(`INSERT INTO billing_profiles (organization_id, legal_name, country, email) VALUES ($1, $2, 'DE', $3)`,
		org, fmt.Sprintf("Provider %d GmbH", p), fmt.Sprintf("billing@provider-%d.example", p))
	exec(`INSERT INTO tax_rules (issuer_id, country, name, rate_percent, inclusive, effective_from, created_by)
		VALUES ($1, 'DE', 'USt', 19, $2, $3, 'prov')`, org, p%2 == 1, periodStart.AddDate(-1, 0, 0))
	row(&promo, `INSERT INTO promotions (organization_id, code, kind, value, duration, valid_from, created_by)
		VALUES ($1, 'TENOFF', 'percent_off', 10, 'forever', $2, 'prov') RETURNING id`, org, periodStart.AddDate(0, -1, 0))
	return api, v1, v2, promo, err
}

// benchSubscriptions subscribes customer i to provider i mod P's plan
// (i / P) mod 4; every eighth (on hybrid) moves to hybrid's second
// version at planChange, every tenth has redeemed its provider's
// promotion, every third has a German billing profile (and so is taxed).
const benchSubscriptions = `
WITH orgs AS (
	INSERT INTO organizations (slug, name) SELECT 'cust-' || i, 'Customer ' || i FROM generate_series(0, $1::int - 1) i RETURNING id, slug
), subs AS (
	INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status, current_period_start, current_period_end)
	SELECT o.id, o.slug, ($2::uuid[])[x.i % $3 + 1], ($4::uuid[])[(x.i % $3) * 4 + (x.i / $3) % 4 + 1], 'active', $5, $6
	FROM orgs o, LATERAL (SELECT split_part(o.slug, '-', 2)::int AS i) x
	RETURNING id, organization_id, subscriber, plan_version_id
), hist AS (
	INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
	SELECT id, plan_version_id, 'active', $5, subscriber FROM subs
)
INSERT INTO billing_profiles (organization_id, legal_name, country, email)
SELECT organization_id, subscriber, 'DE', subscriber || '@customer.example' FROM subs
WHERE split_part(subscriber, '-', 2)::int % 3 = 0`

const benchPlanChanges = `
WITH ch AS (
	UPDATE subscriptions s SET plan_version_id = ($1::uuid[])[split_part(s.subscriber, '-', 2)::int % $2 + 1]
	WHERE (split_part(s.subscriber, '-', 2)::int / $2) % 8 = 0
	RETURNING s.id, s.plan_version_id, s.subscriber
)
INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
SELECT id, plan_version_id, 'active', $3, subscriber FROM ch`

const benchRedemptions = `
INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at)
SELECT ($1::uuid[])[split_part(s.subscriber, '-', 2)::int % $2 + 1], s.id, s.organization_id, s.subscriber, $3
FROM subscriptions s WHERE split_part(s.subscriber, '-', 2)::int % 10 = 3`

// seedBilling writes the providers and the subscriptions in one
// transaction of set-based statements.
func seedBilling(ctx context.Context, pool *pgxpool.Pool, cfg BillingConfig, stamp string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		apis := make([]uuid.UUID, cfg.Providers)
		var v1s, v2s, promos []uuid.UUID
		for p := range cfg.Providers {
			api, v1, v2, promo, err := seedProvider(ctx, tx, p+1, stamp)
			if err != nil {
				return err
			}
			apis[p] = api
			v1s, v2s, promos = append(v1s, v1[:]...), append(v2s, v2), append(promos, promo)
		}
		if _, err := tx.Exec(ctx, benchSubscriptions, cfg.Subscriptions, apis, cfg.Providers, v1s, periodStart, periodEnd); err != nil {
			return fmt.Errorf("seed subscriptions: %w", err)
		}
		if _, err := tx.Exec(ctx, benchPlanChanges, v2s, cfg.Providers, planChange); err != nil {
			return fmt.Errorf("seed plan changes: %w", err)
		}
		if _, err := tx.Exec(ctx, benchRedemptions, promos, cfg.Providers, periodStart); err != nil {
			return fmt.Errorf("seed redemptions: %w", err)
		}
		return nil
	})
}

// writeBillingUsage writes perSub GET events of 1.5 units for every
// subscription, spread over the period (before and after planChange), in
// batches of 100,000 rows.
func writeBillingUsage(ctx context.Context, pool *pgxpool.Pool, ch driver.Conn, perSub int) (int, error) {
	rows, err := pool.Query(ctx, `SELECT id, api_id FROM subscriptions ORDER BY id`)
	if err != nil {
		return 0, fmt.Errorf("list subscriptions: %w", err)
	}
	type sub struct{ id, api uuid.UUID }
	subs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sub, error) {
		var s sub
		return s, r.Scan(&s.id, &s.api)
	})
	if err != nil {
		return 0, fmt.Errorf("list subscriptions: %w", err)
	}
	units := decimal.RequireFromString("1.5")
	step := periodEnd.Sub(periodStart) / time.Duration(perSub+1)
	var offset int64
	for len(subs) > 0 {
		chunk := subs[:min(len(subs), max(1, 100_000/max(perSub, 1)))]
		subs = subs[len(chunk):]
		b, err := ch.PrepareBatch(ctx, `INSERT INTO usage_events (id, source, type, subject, time, api_id,
			key_id, method, route, path, status, latency_ms, request_bytes, response_bytes, units, refusal, ingested_at, kafka_partition, kafka_offset)`)
		if err != nil {
			return 0, fmt.Errorf("prepare usage batch: %w", err)
		}
		for _, s := range chunk {
			for j := range perSub {
				at := periodStart.Add(time.Duration(j+1) * step)
				offset++
				if err := b.Append(uuid.NewString(), "/gw", "veil.api.request", s.id.String(), at, s.api.String(), "key_1",
					"GET", "/v1/*", "/v1/forecast", uint16(200), uint32(5), uint64(10), uint64(20), units, "", at, int32(0), offset); err != nil {
					return 0, fmt.Errorf("append usage event: %w", err)
				}
			}
		}
		if err := b.Send(); err != nil {
			return 0, fmt.Errorf("insert usage events: %w", err)
		}
	}
	return int(offset), nil
}

// checkInvoices checks one finalized invoice per subscription, and that
// each issuer's numbers of a year are 1..count without a gap or a repeat,
// the last one its sequence's.
func checkInvoices(ctx context.Context, pool *pgxpool.Pool, want int) error {
	var total, drafts int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE number IS NULL) FROM invoices`).Scan(&total, &drafts); err != nil {
		return fmt.Errorf("count invoices: %w", err)
	}
	if total != want || drafts != 0 {
		return fmt.Errorf("check invoices: %d invoices, %d drafts; want %d finalized", total, drafts, want)
	}
	rows, err := pool.Query(ctx, `
		SELECT i.issuer_id, count(*), count(DISTINCT x.n), min(x.n), max(x.n),
			coalesce((SELECT q.last FROM invoice_number_sequences q WHERE q.issuer_id = i.issuer_id AND q.year = x.year), 0)
		FROM invoices i CROSS JOIN LATERAL (SELECT split_part(i.number, '-', 2)::int AS year, split_part(i.number, '-', 3)::bigint AS n) x
		GROUP BY i.issuer_id, x.year`)
	if err != nil {
		return fmt.Errorf("check invoice numbers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var issuer uuid.UUID
		var count, distinct, lo, hi, last int64
		if err := rows.Scan(&issuer, &count, &distinct, &lo, &hi, &last); err != nil {
			return fmt.Errorf("check invoice numbers: %w", err)
		}
		if distinct != count || lo != 1 || hi != count || last != count {
			return fmt.Errorf("check invoice numbers: issuer %s has %d invoices numbered %d..%d (%d distinct), sequence at %d",
				issuer, count, lo, hi, distinct, last)
		}
	}
	return rows.Err()
}

// explainSample explains n invoices picked at random and fails on any
// difference.
func explainSample(ctx context.Context, pool *pgxpool.Pool, svc *billing.Service, n int) (int, error) {
	rows, err := pool.Query(ctx, `SELECT id FROM invoices ORDER BY random() LIMIT $1`, n)
	if err != nil {
		return 0, fmt.Errorf("sample invoices: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return 0, fmt.Errorf("sample invoices: %w", err)
	}
	for _, id := range ids {
		e, err := svc.Explain(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("explain invoice %s: %w", id, err)
		}
		if len(e.Diffs) > 0 {
			return 0, fmt.Errorf("explain invoice %s: %d differences, first %+v", id, len(e.Diffs), e.Diffs[0])
		}
	}
	return len(ids), nil
}

// peakRSS is the process's peak resident set (VmHWM) in KiB, 0 where
// /proc does not tell.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

var errBillingConfig = errors.New("bench billing: want 1 or more subscriptions, providers and workers, 0 or more events")

// Validate checks the configuration.
func (c BillingConfig) Validate() error {
	if c.Subscriptions < 1 || c.Providers < 1 || c.Workers < 1 || c.Events < 0 || c.Sample < 0 {
		return errBillingConfig
	}
	return nil
}
