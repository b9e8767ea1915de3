package migrate_test

import (
	"io/fs"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas"
	"github.com/veil-platform/veil/schemas/migrate"
)

// TestClickHouseRefusalColumn: usage_events gains refusal, empty by default,
// so inserts that do not name it (rows written before the column) read as
// admitted.
func TestClickHouseRefusalColumn(t *testing.T) {
	ctx := t.Context()
	conn, _, db := testenv.ClickHouseDB(t)
	var typ, kind, def string
	if err := conn.QueryRow(ctx,
		"SELECT type, default_kind, default_expression FROM system.columns WHERE database = ? AND table = 'usage_events' AND name = 'refusal'",
		db).Scan(&typ, &kind, &def); err != nil {
		t.Fatalf("look up usage_events.refusal: %v", err)
	}
	if typ != "String" || kind != "DEFAULT" || def != "''" {
		t.Fatalf("usage_events.refusal = %s %s %s; want String DEFAULT ''", typ, kind, def)
	}

	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for _, insert := range []struct {
		query string
		args  []any
	}{
		{`INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
			status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)`,
			[]any{"old", "/src", "veil.api.request", "sub_1", at, "api_1", "key_1", "GET", "/r", "/r",
				uint16(200), uint32(1), uint64(1), uint64(1), decimal.NewFromInt(1), at, int32(0), int64(0)}},
		{`INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
			status, latency_ms, request_bytes, response_bytes, units, refusal, ingested_at, kafka_partition, kafka_offset)`,
			[]any{"new", "/src", "veil.api.request", "sub_1", at, "api_1", "key_1", "GET", "/r", "/r",
				uint16(429), uint32(1), uint64(1), uint64(1), decimal.NewFromInt(1), "rate_limited", at, int32(0), int64(1)}},
	} {
		batch, err := conn.PrepareBatch(ctx, insert.query)
		if err != nil {
			t.Fatalf("prepare insert: %v", err)
		}
		if err := batch.Append(insert.args...); err != nil {
			t.Fatalf("append: %v", err)
		}
		if err := batch.Send(); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
	for id, want := range map[string]string{"old": "", "new": "rate_limited"} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT refusal FROM usage_events WHERE id = ?", id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("refusal of %s = %q; want %q", id, got, want)
		}
	}
}

// TestClickHouseAddColumnWhenPresent: a migration adding a column that the
// table already has (another run added it and has not recorded its version
// yet) succeeds without touching it, even on a server that cannot parse ADD
// COLUMN IF NOT EXISTS.
func TestClickHouseAddColumnWhenPresent(t *testing.T) {
	ctx := t.Context()
	addr, db := testenv.ClickHouseAddr(t)
	cfg := migrate.ClickHouseConfig{Addr: addr, Database: db}
	admin, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: cfg.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	conn, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: cfg.Addr, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	first, err := fs.ReadFile(schemas.ClickHouse, "clickhouse/0001_usage_events.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range migrate.SplitStatements(string(first)) {
		if err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("0001: %v", err)
		}
	}
	if err := conn.Exec(ctx, "ALTER TABLE usage_events ADD COLUMN refusal String DEFAULT ''"); err != nil {
		t.Fatal(err)
	}

	if _, err := migrate.ClickHouse(ctx, cfg, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate with refusal already present: %v", err)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = 'usage_events' AND name = 'refusal'", db).Scan(&n); err != nil || n != 1 {
		t.Fatalf("usage_events refusal columns = %d (%v); want 1", n, err)
	}
	versions, err := migrate.ClickHouseVersions(ctx, cfg)
	if err != nil || !versions[3] {
		t.Fatalf("recorded versions = %v (%v); want 3 among them", versions, err)
	}
}
