package migrate_test

import (
	"context"
	"io/fs"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas"
	"github.com/veil-platform/veil/schemas/migrate"
)

func postgresMigrationCount(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(schemas.Postgres, "postgres/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

// runTwice migrates twice: the first run must apply want migrations, the
// second none. It returns the first run.
func runTwice(t *testing.T, want int, run func() (migrate.Applied, error)) migrate.Applied {
	t.Helper()
	first, err := run()
	if err != nil {
		t.Fatalf("first run: %v", err)
	}
	if len(first.Versions) != want {
		t.Fatalf("first run applied %v; want %d migrations", first.Versions, want)
	}
	second, err := run()
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if len(second.Versions) != 0 {
		t.Fatalf("second run applied %v; want nothing", second.Versions)
	}
	return first
}

func TestPostgresAppliesOnceAndRecordsVersions(t *testing.T) {
	ctx := t.Context()
	url := testenv.PostgresURL(t)
	logger := testenv.Logger(t)

	first := runTwice(t, postgresMigrationCount(t), func() (migrate.Applied, error) { return migrate.Postgres(ctx, url, logger) })
	v, err := migrate.PostgresVersion(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if v != first.Versions[len(first.Versions)-1] {
		t.Fatalf("recorded version = %d; want %d", v, first.Versions[len(first.Versions)-1])
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, table := range []string{"organizations", "users", "memberships", "outbox"} {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", "public."+table).Scan(&exists); err != nil || !exists {
			t.Errorf("table %s exists = %v (%v); want true", table, exists, err)
		}
	}
	// The schema holds its constraints: a bad slug is refused.
	if _, err := conn.Exec(ctx, "INSERT INTO organizations (slug, name) VALUES ('Bad Slug', 'x')"); err == nil {
		t.Fatal("insert of an invalid slug succeeded; want a check violation")
	}
}

func TestPostgresCreatesMissingDatabase(t *testing.T) {
	url := testenv.PostgresURL(t)
	// Point at a database that does not exist yet on the same server; the
	// cleanup of a second PostgresURL-made name drops it.
	missing := testenv.PostgresURL(t)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := pgx.ParseConfig(missing)
	if _, err := conn.Exec(t.Context(), "DROP DATABASE "+cfg.Database); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	if _, err := migrate.Postgres(t.Context(), missing, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate into a missing database: %v", err)
	}
	if _, err := migrate.PostgresVersion(t.Context(), missing); err != nil {
		t.Fatalf("version after creating the database: %v", err)
	}
}

func TestPostgresConcurrentRuns(t *testing.T) {
	url := testenv.PostgresURL(t)
	runConcurrently(t, 4, func() ([]int64, error) {
		res, err := migrate.Postgres(t.Context(), url, testenv.Logger(t))
		return res.Versions, err
	}, postgresMigrationCount(t))
}

// runConcurrently runs fn n times at once and checks that none failed and
// that, together, they applied each migration exactly once.
func runConcurrently(t *testing.T, n int, fn func() ([]int64, error), want int) {
	t.Helper()
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		all []int64
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := fn()
			if err != nil {
				t.Errorf("concurrent run: %v", err)
			}
			mu.Lock()
			all = append(all, v...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(all)
	if got := slices.Compact(slices.Clone(all)); len(got) != want {
		t.Fatalf("concurrent runs applied %v; want each of %d migrations", all, want)
	}
}

func TestClickHouseAppliesOnceAndTablesWork(t *testing.T) {
	ctx := t.Context()
	addr, db := testenv.ClickHouseAddr(t)
	cfg := migrate.ClickHouseConfig{Addr: addr, Database: db}
	all, err := migrate.ClickHouseMigrations()
	if err != nil {
		t.Fatal(err)
	}

	runTwice(t, len(all), func() (migrate.Applied, error) { return migrate.ClickHouse(ctx, cfg, testenv.Logger(t)) })
	versions, err := migrate.ClickHouseVersions(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if !versions[m.Version] {
			t.Errorf("version %d (%s) not recorded", m.Version, m.Name)
		}
	}

	conn, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: cfg.Addr, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	at := time.Date(2026, 11, 26, 10, 15, 30, 0, time.UTC)
	batch, err := conn.PrepareBatch(ctx, `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
		status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatalf("prepare insert: %v", err)
	}
	for i, units := range []string{"1.5", "0.000001", "2"} {
		if err := batch.Append("e"+string(rune('a'+i)), "/src", "veil.api.request", "sub_1", at, "api_1", "key_1", "GET", "/r", "/r",
			uint16(200+i*100), uint32(10*(i+1)), uint64(1), uint64(2), decimal.RequireFromString(units), at, int32(0), int64(i)); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("insert usage_events: %v", err)
	}

	// Units are exact, and the materialized views filled every roll-up.
	var total decimal.Decimal
	if err := conn.QueryRow(ctx, "SELECT sum(units) FROM usage_events").Scan(&total); err != nil {
		t.Fatal(err)
	}
	if want := decimal.RequireFromString("3.500001"); !total.Equal(want) {
		t.Fatalf("sum(units) = %s; want %s", total, want)
	}
	for _, table := range []string{"usage_rollup_minute", "usage_rollup_hour", "usage_rollup_day"} {
		var (
			requests uint64
			units    decimal.Decimal
		)
		if err := conn.QueryRow(ctx, "SELECT countMerge(requests), sumMerge(units) FROM "+table+" WHERE subject = 'sub_1'").Scan(&requests, &units); err != nil {
			t.Fatalf("read %s: %v", table, err)
		}
		if requests != 3 || !units.Equal(total) {
			t.Errorf("%s: requests %d units %s; want 3 and %s", table, requests, units, total)
		}
	}
	var classes uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(status_class) FROM usage_rollup_minute").Scan(&classes); err != nil {
		t.Fatal(err)
	}
	if classes != 3 {
		t.Fatalf("status classes in the minute roll-up = %d; want 3 (2xx, 3xx, 4xx)", classes)
	}
}

func TestClickHouseConcurrentRuns(t *testing.T) {
	addr, db := testenv.ClickHouseAddr(t)
	all, err := migrate.ClickHouseMigrations()
	if err != nil {
		t.Fatal(err)
	}
	// Runs at once wait for each other on the Postgres lock, as veil
	// migrate's do (a roll-up's backfill run twice at once would count
	// twice).
	cfg := migrate.ClickHouseConfig{Addr: addr, Database: db, LockURL: testenv.PostgresURL(t)}
	var (
		wg   sync.WaitGroup
		errs = make(chan error, 3)
	)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := migrate.ClickHouse(t.Context(), cfg, testenv.Logger(t)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent run: %v", err)
	}
	versions, err := migrate.ClickHouseVersions(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != len(all) {
		t.Fatalf("recorded versions %v; want %d", versions, len(all))
	}
}

func TestSplitStatements(t *testing.T) {
	got := migrate.SplitStatements("-- comment\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n\n-- two\nCREATE TABLE b (y String) ENGINE = Memory;\nSELECT 1")
	want := []string{"CREATE TABLE a (x UInt8)\nENGINE = Memory", "CREATE TABLE b (y String) ENGINE = Memory", "SELECT 1"}
	if !slices.Equal(got, want) {
		t.Fatalf("SplitStatements = %q; want %q", got, want)
	}
}
