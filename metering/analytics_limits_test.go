package metering_test

import (
	"context"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/metering"
)

// TestQueriesCarryMaxExecutionTime: an analytics read and an export whose
// caller set no deadline still reach ClickHouse with max_execution_time,
// so the server stops them even when nobody cancels.
func TestQueriesCarryMaxExecutionTime(t *testing.T) {
	r := setupAnalytics(t)
	conn := clickHouseUTC(t)
	from, to, cuts := analyticsWindow(t)
	logged := func(id string) context.Context {
		return clickhouse.Context(context.Background(), clickhouse.WithQueryID(id), clickhouse.WithSettings(clickhouse.Settings{"log_queries": 1}))
	}
	aid, eid := uuid.NewString(), uuid.NewString()
	if _, err := r.Analytics(logged(aid), metering.AnalyticsQuery{Subject: "sub_a", From: from, To: to, DayStarts: cuts}); err != nil {
		t.Fatal(err)
	}
	if err := r.Export(logged(eid), metering.ExportQuery{Subject: "sub_a", From: from, To: to}, func(metering.ExportRow) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for what, id := range map[string]string{"analytics": aid, "export": eid} {
		// The query log is written in the background: flush it and look
		// again until the query shows, for a while.
		var (
			n     uint64
			limit string
		)
		for deadline := time.Now().Add(15 * time.Second); ; {
			if err := conn.Exec(t.Context(), "SYSTEM FLUSH LOGS"); err != nil {
				t.Fatal(err)
			}
			if err := conn.QueryRow(t.Context(), `SELECT count(), any(Settings.Values[indexOf(Settings.Names, 'max_execution_time')])
			FROM system.query_log WHERE query_id = ? AND type = 1 AND query LIKE '%FROM usage_events%'`, id).Scan(&n, &limit); err != nil {
				t.Fatal(err)
			}
			if n > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if n == 0 {
			t.Fatalf("%s: no query %s in system.query_log", what, id)
		}
		if limit == "" || limit == "0" {
			t.Errorf("%s ran with max_execution_time %q; want a limit", what, limit)
		}
	}
}
