package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/schemas/migrate"
)

// AnalyticsConfig configures the analytics benchmark.
type AnalyticsConfig struct {
	// PostgresURL names the server; the run creates a database of its own
	// on it (and one of the same name in ClickHouse), dropped after
	// unless Keep or Reuse.
	PostgresURL    string
	ClickHouseAddr string
	// RedisAddr and RedisDB are what the control plane's services are
	// built with; the bench writes nothing there.
	RedisAddr string
	RedisDB   int
	// Brokers are where the admin overview reads the processors' consumer
	// lag; none leaves that part of it out.
	Brokers []string
	// Rows is how many usage rows to load, in chunks of Chunk.
	Rows, Chunk int64
	// Requests is how many measured requests each endpoint gets, after
	// Warmup unmeasured ones.
	Requests, Warmup int
	Keep             bool
	// Reuse names the databases of an earlier run with Keep: they are
	// migrated again (a roll-up added since is backfilled) and measured,
	// not loaded, and kept.
	Reuse string
	// KeepOutlooks skips the run of the outlooks job before measuring: a
	// reused load keeps the outlooks its earlier run wrote.
	KeepOutlooks bool
	Logger       *slog.Logger
	// shape is the population (tests make it small); zero is
	// defaultAnalyticsShape.
	shape analyticsShape
}

// Validate checks the configuration.
func (c AnalyticsConfig) Validate() error {
	switch {
	case c.Reuse == "" && c.Rows < 1:
		return errors.New("bench analytics: want --rows 1 or more, or --reuse")
	case c.Chunk < 1 || c.Requests < 1 || c.Warmup < 0:
		return errors.New("bench analytics: want --chunk and --requests 1 or more, --warmup 0 or more")
	case c.Reuse != "" && !analyticsDBName.MatchString(c.Reuse):
		return fmt.Errorf("bench analytics: --reuse %q is not a database this bench made (veil_bench_analytics_...)", c.Reuse)
	}
	return nil
}

var analyticsDBName = regexp.MustCompile(`^veil_bench_analytics_[a-z0-9]{1,20}$`)

// analyticsSpan is how far back the generated usage reaches from the load.
const analyticsSpan = 30 * 24 * time.Hour

// analyticsLoad is what a load wrote, kept in the scratch Postgres
// database for --reuse.
type analyticsLoad struct {
	Rows        int64     `json:"rows"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	LoadSeconds float64   `json:"load_s"`
}

// AnalyticsFigures is what a run measured.
type AnalyticsFigures struct {
	Database    string            `json:"database"`
	Rows        int64             `json:"rows"`
	LoadSeconds float64           `json:"load_s"`
	RowsPerSec  float64           `json:"load_rows_per_s"`
	Outlooks    OutlookFigures    `json:"outlooks"`
	Endpoints   []EndpointFigures `json:"endpoints"`
	Storage     []TableStorage    `json:"storage"`
}

// Analytics loads cfg.Rows usage rows (or reuses a load) and measures
// every analytics endpoint of the control plane over HTTP, then prints a
// table, the storage per million rows and a final JSON line.
func Analytics(ctx context.Context, cfg AnalyticsConfig, stdout, stderr io.Writer) (AnalyticsFigures, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.shape == (analyticsShape{}) {
		cfg.shape = defaultAnalyticsShape
	}
	plan, err := planAnalytics(cfg.shape)
	if err != nil {
		return AnalyticsFigures{}, err
	}
	name := cfg.Reuse
	if name == "" {
		name = "veil_bench_analytics_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	pool, ch, drop, err := analyticsScratch(ctx, cfg, name)
	if err != nil {
		return AnalyticsFigures{}, err
	}
	defer drop()
	fmt.Fprintf(stdout, "database %s (Postgres and ClickHouse)\n", name)
	load, ids, err := prepareLoad(ctx, cfg, pool, ch, plan, stderr)
	if err != nil {
		return AnalyticsFigures{}, err
	}
	fig := AnalyticsFigures{Database: name, Rows: load.Rows, LoadSeconds: load.LoadSeconds, RowsPerSec: float64(load.Rows) / load.LoadSeconds}
	fmt.Fprintf(stdout, "%d usage rows from %s to %s, loaded in %.0fs (%.0f rows/s)\n",
		load.Rows, load.From.Format(time.RFC3339), load.To.Format(time.RFC3339), load.LoadSeconds, fig.RowsPerSec)
	if !cfg.KeepOutlooks {
		if fig.Outlooks, err = refreshOutlooks(ctx, cfg, pool, ch); err != nil {
			return fig, err
		}
		fmt.Fprintf(stdout, "outlooks job: %d subscriptions refreshed, %d failed, in %.1fs\n", fig.Outlooks.Refreshed, fig.Outlooks.Failed, fig.Outlooks.Seconds)
	}
	if fig.Endpoints, err = measureAnalytics(ctx, cfg, pool, ch, plan, ids, load, stderr); err != nil {
		return fig, err
	}
	if fig.Storage, err = storage(ctx, ch, name, load.Rows); err != nil {
		return fig, err
	}
	printAnalytics(stdout, fig)
	line, err := json.Marshal(fig)
	if err != nil {
		return fig, fmt.Errorf("encode figures: %w", err)
	}
	fmt.Fprintln(stdout, string(line))
	for _, e := range fig.Endpoints {
		if e.Error != "" {
			return fig, fmt.Errorf("bench analytics: %s failed: %s", e.Name, e.Error)
		}
	}
	return fig, nil
}

// prepareLoad seeds and loads a fresh database, or reads back what a
// reused one holds.
func prepareLoad(ctx context.Context, cfg AnalyticsConfig, pool *pgxpool.Pool, ch driver.Conn, plan analyticsPlan, stderr io.Writer) (analyticsLoad, loadIDs, error) {
	if cfg.Reuse != "" {
		var load analyticsLoad
		var raw []byte
		if err := pool.QueryRow(ctx, `SELECT figures FROM bench_analytics_load`).Scan(&raw); err != nil {
			return load, loadIDs{}, fmt.Errorf("read the load of %s (was it loaded to the end?): %w", cfg.Reuse, err)
		}
		if err := json.Unmarshal(raw, &load); err != nil {
			return load, loadIDs{}, fmt.Errorf("decode the load of %s: %w", cfg.Reuse, err)
		}
		ids, err := readLoadIDs(ctx, pool, plan)
		return load, ids, err
	}
	to := time.Now().UTC().Truncate(time.Minute)
	load := analyticsLoad{Rows: cfg.Rows, From: to.Add(-analyticsSpan), To: to}
	if err := seedAnalytics(ctx, pool, plan, to.Add(-analyticsSpan/2)); err != nil {
		return load, loadIDs{}, err
	}
	ids, err := readLoadIDs(ctx, pool, plan)
	if err != nil {
		return load, ids, err
	}
	began := time.Now()
	if err := loadUsage(ctx, ch, plan, ids, load, cfg.Chunk, stderr); err != nil {
		return load, ids, err
	}
	load.LoadSeconds = time.Since(began).Seconds()
	raw, err := json.Marshal(load)
	if err != nil {
		return load, ids, fmt.Errorf("encode load: %w", err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_analytics_load (figures jsonb NOT NULL)`); err != nil {
		return load, ids, fmt.Errorf("record the load: %w", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO bench_analytics_load VALUES ($1)`, raw); err != nil {
		return load, ids, fmt.Errorf("record the load: %w", err)
	}
	return load, ids, nil
}

// loadUsage inserts the load's rows server-side in chunks, so the
// materialized views fill every roll-up as live traffic does. Before the
// first row it dates the billing roll-up back to the load's start: every
// loaded row goes through its view, so it is complete for the whole load,
// as it is in a deployment where it has run for longer than the data is
// old (else previews would read usage_events, which no long-running
// deployment does).
func loadUsage(ctx context.Context, ch driver.Conn, p analyticsPlan, ids loadIDs, load analyticsLoad, chunk int64, stderr io.Writer) error {
	// A literal, not a bound value: the driver sends an INSERT with
	// arguments as a batch and waits for its data.
	if err := ch.Exec(ctx, fmt.Sprintf(`INSERT INTO usage_billing_since (began) SELECT toDateTime(%d)`, load.From.Add(-24*time.Hour).Unix())); err != nil {
		return fmt.Errorf("date the billing roll-up: %w", err)
	}
	// The id arrays make the statement larger than the default 256 KiB.
	qctx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_query_size": 64 << 20}))
	began := time.Now()
	for from := int64(0); from < load.Rows; from += chunk {
		n := min(chunk, load.Rows-from)
		if err := ch.Exec(qctx, usageInsert(p, ids, load.From, analyticsSpan, load.Rows, from, n)); err != nil {
			return fmt.Errorf("insert usage rows %d to %d: %w", from, from+n, err)
		}
		done := from + n
		el := time.Since(began)
		fmt.Fprintf(stderr, "loaded %d of %d rows in %.0fs (%.0f rows/s)\n", done, load.Rows, el.Seconds(), float64(done)/el.Seconds())
	}
	return nil
}

// analyticsScratch creates and migrates (or, reusing, migrates again) a
// Postgres and a ClickHouse database named name; drop closes them and
// drops both unless Keep or Reuse.
func analyticsScratch(ctx context.Context, cfg AnalyticsConfig, name string) (*pgxpool.Pool, driver.Conn, func(), error) {
	keep := cfg.Keep || cfg.Reuse != ""
	if cfg.Reuse == "" {
		admin, err := pgx.Connect(ctx, cfg.PostgresURL)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("connect to Postgres (make services starts it): %w", err)
		}
		_, err = admin.Exec(ctx, "CREATE DATABASE "+name)
		_ = admin.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("create database %s: %w", name, err)
		}
	}
	var closers []func()
	drop := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	closers = append(closers, func() {
		if keep {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if c, err := pgx.Connect(cctx, cfg.PostgresURL); err == nil {
			_, _ = c.Exec(cctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(cctx)
		}
	})
	pool, ch, err := openAnalyticsScratch(ctx, cfg, name, keep, &closers)
	if err != nil {
		drop()
		return nil, nil, nil, err
	}
	return pool, ch, drop, nil
}

func openAnalyticsScratch(ctx context.Context, cfg AnalyticsConfig, name string, keep bool, closers *[]func()) (*pgxpool.Pool, driver.Conn, error) {
	u, err := url.Parse(cfg.PostgresURL)
	if err != nil {
		return nil, nil, fmt.Errorf("parse postgres url: %w", err)
	}
	u.Path = "/" + name
	if _, err := migrate.Postgres(ctx, u.String(), cfg.Logger); err != nil {
		return nil, nil, err
	}
	pool, err := datastore.OpenPostgres(ctx, datastore.Postgres{URL: u.String(), MinMaxConns: 20})
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
		if !keep {
			_ = ch.Exec(cctx, "DROP DATABASE IF EXISTS "+name)
		}
		_ = ch.Close()
	})
	return pool, ch, nil
}

// TableStorage is one table's size in ClickHouse's active parts.
type TableStorage struct {
	Table             string  `json:"table"`
	Rows              uint64  `json:"rows"`
	Parts             uint64  `json:"parts"`
	Compressed        uint64  `json:"compressed_bytes"`
	Uncompressed      uint64  `json:"uncompressed_bytes"`
	CompressedPerM    float64 `json:"compressed_mib_per_million"`
	UncompressedPerM  float64 `json:"uncompressed_mib_per_million"`
	RowsPerUsageEvent float64 `json:"rows_per_usage_row"`
}

// storage reads system.parts for the database; per million is per
// million usage rows loaded.
func storage(ctx context.Context, ch driver.Conn, db string, usageRows int64) ([]TableStorage, error) {
	rows, err := ch.Query(ctx, `SELECT table, sum(rows), count(), sum(data_compressed_bytes), sum(data_uncompressed_bytes)
		FROM system.parts WHERE database = ? AND active GROUP BY table ORDER BY table`, db)
	if err != nil {
		return nil, fmt.Errorf("read system.parts: %w", err)
	}
	defer rows.Close()
	var out []TableStorage
	m := float64(usageRows) / 1e6
	for rows.Next() {
		var t TableStorage
		if err := rows.Scan(&t.Table, &t.Rows, &t.Parts, &t.Compressed, &t.Uncompressed); err != nil {
			return nil, fmt.Errorf("read system.parts: %w", err)
		}
		t.CompressedPerM, t.UncompressedPerM = float64(t.Compressed)/(1<<20)/m, float64(t.Uncompressed)/(1<<20)/m
		t.RowsPerUsageEvent = float64(t.Rows) / float64(usageRows)
		out = append(out, t)
	}
	return out, rows.Err()
}
