package metering_test

import (
	"context"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/metering"
)

// TestExportSlices: an export cut into slices of a row or two (the sizes
// from the hour roll-up) runs several queries, none sorting more than its
// slice, and yields the same rows in the same order as one query would;
// an export of an API without calls reads no row of usage_events, however
// many other APIs' rows its window holds.
func TestExportSlices(t *testing.T) {
	r := setupAnalytics(t)
	conn := clickHouseUTC(t)
	from, to, _ := analyticsWindow(t)
	read := func(id string, q metering.ExportQuery) []string {
		t.Helper()
		ctx := clickhouse.Context(context.Background(), clickhouse.WithQueryID(id), clickhouse.WithSettings(clickhouse.Settings{"log_queries": 1}))
		q.From, q.To = from, to
		var ids []string
		if err := r.Export(ctx, q, func(x metering.ExportRow) error { ids = append(ids, x.ID); return nil }); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	whole := read(uuid.NewString(), metering.ExportQuery{APIID: "api_x"})
	sliced := uuid.NewString()
	restore := metering.SetExportSliceRows(1)
	got := read(sliced, metering.ExportQuery{APIID: "api_x"})
	restore()
	if len(whole) != 9 || len(got) != len(whole) {
		t.Fatalf("sliced export %v; whole %v (want 9 rows)", got, whole)
	}
	for i := range got {
		if got[i] != whole[i] {
			t.Fatalf("sliced export %v; want %v", got, whole)
		}
	}
	empty := uuid.NewString()
	if ids := read(empty, metering.ExportQuery{APIID: "api_y"}); len(ids) != 0 {
		t.Fatalf("api_y: %v", ids)
	}
	// The server logs a query's end just after its client has the last
	// block: poll until the log has it.
	count := func(id string) (queries, maxRead uint64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			if err := conn.Exec(t.Context(), "SYSTEM FLUSH LOGS"); err != nil {
				t.Fatal(err)
			}
			if err := conn.QueryRow(t.Context(), `SELECT count(), max(read_rows) FROM system.query_log
				WHERE query_id = ? AND type = 2 AND query LIKE '%FROM usage_events%'`, id).Scan(&queries, &maxRead); err != nil {
				t.Fatal(err)
			}
			if queries > 0 || time.Now().After(deadline) {
				return queries, maxRead
			}
		}
	}
	if n, _ := count(sliced); n < 3 {
		t.Errorf("sliced export ran %d queries of usage_events; want one per busy hour (at least 3)", n)
	}
	if n, rows := count(empty); n == 0 || rows != 0 {
		t.Errorf("export of an API without calls: %d queries read up to %d rows of usage_events; want none read", n, rows)
	}
}
