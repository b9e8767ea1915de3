package migrate_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/migrate"
)

// insertUsage writes n events numbered from first, stamped ingested_at,
// spread over hours, APIs, routes, statuses and subjects.
func insertUsage(ctx context.Context, conn driver.Conn, first, n int, ingested time.Time) error {
	batch, err := conn.PrepareBatch(ctx, `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
		status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		return err
	}
	base := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	for i := first; i < first+n; i++ {
		at := base.Add(time.Duration(i%97) * 37 * time.Minute)
		status := []uint16{200, 201, 404, 500}[i%4]
		if err := batch.Append(fmt.Sprint("e", i), "/src", "veil.api.request", fmt.Sprint("sub_", i%5), at,
			fmt.Sprint("api_", i%3), "key", "GET", fmt.Sprint("/r", i%2), "/p", status, uint32(i%300),
			uint64(1), uint64(1), decimal.New(int64(i%7), -2), ingested.UTC().Truncate(time.Second), int32(0), int64(i)); err != nil {
			return err
		}
	}
	return batch.Send()
}

// rollupMatchesBase compares a roll-up's counts and unit sums per group
// with the same groups over usage_events.
func rollupMatchesBase(t *testing.T, conn driver.Conn, table, bucket, groups, baseGroups string) {
	t.Helper()
	ctx := t.Context()
	q := `SELECT count() FROM
(SELECT ` + groups + `, bucket, countMerge(requests) AS n, sumMerge(units) AS u FROM ` + table + ` GROUP BY ` + groups + `, bucket) r
FULL OUTER JOIN
(SELECT ` + baseGroups + `, ` + bucket + ` AS bucket, count() AS n, sum(units) AS u FROM usage_events GROUP BY ` + groups + `, bucket) b
USING (` + groups + `, bucket)
WHERE r.n != b.n OR r.u != b.u`
	var diff, rows, events uint64
	if err := conn.QueryRow(ctx, q).Scan(&diff); err != nil {
		t.Fatalf("compare %s: %v", table, err)
	}
	if err := conn.QueryRow(ctx, "SELECT sum(n) FROM (SELECT countMerge(requests) AS n FROM "+table+")").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&events); err != nil {
		t.Fatal(err)
	}
	if diff != 0 || rows != events {
		t.Errorf("%s: %d groups differ from usage_events; it counts %d requests, usage_events has %d", table, diff, rows, events)
	}
}

// TestClickHouseRollupBackfill: rows written before the API roll-ups (0006
// to 0008) exist, while the migration runs, and after it are each counted
// exactly once, and running the migrator again changes nothing.
func TestClickHouseRollupBackfill(t *testing.T) {
	ctx := t.Context()
	// Slices of at most 97 rows: the 500 rows before the cutoff are copied
	// by several INSERTs.
	cfg, conn := migratedWithUsage(t, 5)

	// Live inserts, stamped as the processors do (the time of the batch),
	// during the whole migration. ClickHouse 18.16 can fail an insert that
	// meets a materialized view being created ("… _mv doesn't exist"),
	// after it wrote usage_events: the processors then keep what was
	// written, and so does this test (the roll-ups are compared with
	// usage_events, whatever it holds).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written, failed int
	next := 1000
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := insertUsage(ctx, conn, next, 20, time.Now()); err != nil {
				failed++
			} else {
				written++
			}
			next += 20
			time.Sleep(20 * time.Millisecond)
		}
	}()
	cfg.UpTo = 0
	_, err := migrate.ClickHouse(ctx, cfg, testenv.Logger(t))
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if written == 0 {
		t.Fatalf("no live insert succeeded during the migration (%d failed)", failed)
	}
	t.Logf("live inserts during the migration: %d written, %d failed", written, failed)
	if err := insertUsage(ctx, conn, 100000, 50, time.Now()); err != nil {
		t.Fatal(err)
	}

	for _, r := range []struct{ table, bucket, groups, baseGroups string }{
		{"usage_api_hour", "toStartOfHour(time, 'UTC')", "api_id, route, method, status_class", "api_id, route, method, toUInt8(intDiv(status, 100)) AS status_class"},
		{"usage_api_day", "toDate(time, 'UTC')", "api_id, route, method, status_class", "api_id, route, method, toUInt8(intDiv(status, 100)) AS status_class"},
		{"usage_api_consumer_hour", "toStartOfHour(time, 'UTC')", "api_id, subject", "api_id, subject"},
		{"usage_api_consumer_day", "toDate(time, 'UTC')", "api_id, subject", "api_id, subject"},
		{"usage_api_minute", "toStartOfMinute(time, 'UTC')", "api_id, route, method, status_class", "api_id, route, method, toUInt8(intDiv(status, 100)) AS status_class"},
		{"usage_api_consumer_minute", "toStartOfMinute(time, 'UTC')", "api_id, subject", "api_id, subject"},
		{"usage_api_class_quarter", "toStartOfFifteenMinutes(time, 'UTC')", "api_id, status_class", "api_id, toUInt8(intDiv(status, 100)) AS status_class"},
		{"usage_api_class_hour", "toStartOfHour(time, 'UTC')", "api_id, status_class", "api_id, toUInt8(intDiv(status, 100)) AS status_class"},
	} {
		rollupMatchesBase(t, conn, r.table, r.bucket, r.groups, r.baseGroups)
	}
	// 0007 made the roll-ups by API again with 256 rows per granule, and
	// 0008 made its own so.
	for _, table := range []string{"usage_api_minute", "usage_api_hour", "usage_api_day", "usage_api_consumer_minute", "usage_api_consumer_hour",
		"usage_api_consumer_day", "usage_api_class_quarter", "usage_api_class_hour"} {
		var query string
		if err := conn.QueryRow(ctx, "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = ?", table).Scan(&query); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(query, "index_granularity = 256") {
			t.Errorf("%s: %s; want index_granularity = 256", table, query)
		}
	}
	for _, table := range []string{"usage_api_hour", "usage_api_day", "usage_api_minute", "usage_api_consumer_minute", "usage_api_consumer_hour",
		"usage_api_consumer_day", "usage_api_class_hour", "usage_api_class_quarter"} {
		var backfilled uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+table+" WHERE backfilled = 1").Scan(&backfilled); err != nil || backfilled == 0 {
			t.Fatalf("%s holds %d backfilled rows (%v); want the rows before the cutoff", table, backfilled, err)
		}
	}
}

// TestClickHouseRollupBackfillRedoesAnUnfinishedView: a run that died after
// making a view too late (rows stamped between its cutoff and its creation
// are in neither the view nor the copy) leaves no backfill record; the
// next run makes the view and its table again instead of trusting them,
// and every row is counted once.
func TestClickHouseRollupBackfillRedoesAnUnfinishedView(t *testing.T) {
	ctx := t.Context()
	cfg, conn := migratedWithUsage(t, 6)
	all, err := migrate.ClickHouseMigrations()
	if err != nil {
		t.Fatal(err)
	}
	var m7 migrate.Migration
	for _, m := range all {
		if m.Version == 7 {
			m7 = m
		}
	}
	// The dead run: usage_api_minute made, rows stamped after a cutoff
	// ten seconds ago, then the view with that cutoff.
	cutoff := time.Now().UTC().Truncate(time.Second).Add(-10 * time.Second)
	var view string
	for _, stmt := range m7.Statements {
		if strings.Contains(stmt, "MATERIALIZED VIEW IF NOT EXISTS usage_api_minute_mv") {
			view = stmt
			break
		}
		if err := conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if view == "" {
		t.Fatal("migration 7 makes no usage_api_minute_mv")
	}
	if err := insertUsage(ctx, conn, 5000, 7, cutoff.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, strings.ReplaceAll(view, migrate.BackfillCutoff, "toDateTime('"+cutoff.Format(time.DateTime)+"', 'UTC')")); err != nil {
		t.Fatal(err)
	}
	cfg.UpTo = 0
	if _, err := migrate.ClickHouse(ctx, cfg, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	rollupMatchesBase(t, conn, "usage_api_minute", "toStartOfMinute(time, 'UTC')", "api_id, route, method, status_class",
		"api_id, route, method, toUInt8(intDiv(status, 100)) AS status_class")
}

// TestClickHouseRollupBackfillAfterAnEarlyDeath: a run of 0006 that died
// after making a view, before rollup_backfills existed, is finished by the
// next run, every row counted once.
func TestClickHouseRollupBackfillAfterAnEarlyDeath(t *testing.T) {
	ctx := t.Context()
	cfg, conn := migratedWithUsage(t, 5)
	all, err := migrate.ClickHouseMigrations()
	if err != nil {
		t.Fatal(err)
	}
	// The dead run: 0006's first table and its view, with a cutoff a
	// moment ago, and nothing more.
	m6 := all[5]
	if m6.Version != 6 {
		t.Fatalf("migration 6 is %s", m6.Name)
	}
	cutoff := time.Now().UTC().Truncate(time.Second).Add(-5 * time.Second)
	for _, stmt := range m6.Statements[:2] {
		if err := conn.Exec(ctx, strings.ReplaceAll(stmt, migrate.BackfillCutoff, "toDateTime('"+cutoff.Format(time.DateTime)+"', 'UTC')")); err != nil {
			t.Fatal(err)
		}
	}
	cfg.UpTo = 0
	if _, err := migrate.ClickHouse(ctx, cfg, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	rollupMatchesBase(t, conn, "usage_api_hour", "toStartOfHour(time, 'UTC')", "api_id, route, method, status_class",
		"api_id, route, method, toUInt8(intDiv(status, 100)) AS status_class")
}

// migratedWithUsage migrates a new ClickHouse database up to version upTo
// and writes 500 events ingested an hour ago; cfg copies in slices of at
// most 97 rows and waits 2 s for batches in flight.
// TestClickHouseRollupBackfillRowDuringAnEmptyStart: on an empty
// usage_events a new view takes every row without a copy; a row written
// between the count that found it empty and the view's creation is in
// neither, so the view and its table are made again with a copy.
func TestClickHouseRollupBackfillRowDuringAnEmptyStart(t *testing.T) {
	ctx := t.Context()
	addr, db := testenv.ClickHouseAddr(t)
	cfg := migrate.ClickHouseConfig{Addr: addr, Database: db, UpTo: 7, BackfillGrace: 2 * time.Second}
	if _, err := migrate.ClickHouse(ctx, cfg, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	conn, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: addr, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	written := false
	migrate.AfterCount(t, func(table string) {
		if written {
			return
		}
		written = true
		if err := insertUsage(ctx, conn, 0, 3, time.Now()); err != nil {
			t.Errorf("insert during the migration of %s: %v", table, err)
		}
	})
	cfg.UpTo = 8
	if _, err := migrate.ClickHouse(ctx, cfg, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	if !written {
		t.Fatal("0008 made no view")
	}
	rollupMatchesBase(t, conn, "usage_api_class_quarter", "toStartOfFifteenMinutes(time, 'UTC')", "api_id, status_class", "api_id, toUInt8(intDiv(status, 100)) AS status_class")
	rollupMatchesBase(t, conn, "usage_api_class_hour", "toStartOfHour(time, 'UTC')", "api_id, status_class", "api_id, toUInt8(intDiv(status, 100)) AS status_class")
}

func migratedWithUsage(t *testing.T, upTo uint32) (migrate.ClickHouseConfig, driver.Conn) {
	t.Helper()
	addr, db := testenv.ClickHouseAddr(t)
	cfg := migrate.ClickHouseConfig{Addr: addr, Database: db, UpTo: upTo, BackfillGrace: 2 * time.Second, BackfillSliceRows: 97}
	if _, err := migrate.ClickHouse(t.Context(), cfg, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	conn, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: addr, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := insertUsage(t.Context(), conn, 0, 500, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	return cfg, conn
}
