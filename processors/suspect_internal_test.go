package processors

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/migrate"
	"github.com/veil-platform/veil/schemas/usage"
)

// failingRollup replaces the billing roll-up's view with the migration's,
// made to fail on the event id poison: an insert holding it stores its rows
// in usage_events and then fails while pushing them to the view, whose
// table gets none, as when the push hits a memory limit or too many parts.
func failingRollup(t *testing.T, conn driver.Conn) {
	t.Helper()
	ms, err := migrate.ClickHouseMigrations()
	if err != nil {
		t.Fatal(err)
	}
	var view string
	for _, m := range ms {
		for _, s := range m.Statements {
			if strings.Contains(s, "MATERIALIZED VIEW IF NOT EXISTS usage_billing_hour_mv") {
				view = s
			}
		}
	}
	const where = "WHERE refusal = '' AND status < 500"
	if !strings.Contains(view, where) {
		t.Fatalf("the roll-up's view has no %q", where)
	}
	view = strings.Replace(view, where, where+" AND throwIf(id = 'poison') = 0", 1)
	for _, q := range []string{"DROP TABLE usage_billing_hour_mv", view,
		"INSERT INTO usage_billing_since SELECT toDateTime('2026-01-01 00:00:00')"} {
		if err := conn.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// suspectRows are events of subject sus over three hours, offsets 100 on,
// one of them the poisoned one.
func suspectRows(hour time.Time) []row {
	var rows []row
	for i := range 30 {
		id := fmt.Sprintf("e%d", i)
		if i == 17 {
			id = "poison"
		}
		rows = append(rows, row{partition: 3, offset: int64(100 + i), event: usage.Event{
			ID: id, Source: "/test", Type: usage.TypeAPIRequest, Subject: "sus",
			Time: hour.Add(time.Duration(i) * 6 * time.Minute),
			Data: usage.Data{APIID: "api_1", Method: "GET", Status: 200, Units: decimal.NewFromInt(2)},
		}})
	}
	return rows
}

func suspectHours(t *testing.T, conn driver.Conn) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), "SELECT DISTINCT concat(subject, ' ', toString(toUInt32(hour))) FROM usage_billing_suspect ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestWriteEventsRecordsSuspectHours: an insert that wrote usage_events but
// failed in the billing roll-up's view leaves its rows out of the retry (so
// none is written twice) and records their subject's hours as suspect, so
// the roll-up-backed totals still equal the base table's.
func TestWriteEventsRecordsSuspectHours(t *testing.T) {
	conn, _, _ := testenv.ClickHouseDB(t)
	failingRollup(t, conn)
	hour := time.Date(2026, 3, 1, 5, 0, 0, 0, time.UTC)
	p := &Processor{cfg: Config{Now: time.Now}, ch: &chSink{conn: conn}}
	b := &batch{rows: suspectRows(hour)}
	if err := p.writeEvents(t.Context(), b); err == nil {
		t.Fatal("the insert succeeded; want the view's failure")
	}
	if len(b.rows) != 0 || b.unsettled {
		t.Fatalf("%d rows left to insert (unsettled %v); want none: usage_events holds them", len(b.rows), b.unsettled)
	}
	want := []string{}
	for h := range 3 {
		want = append(want, fmt.Sprintf("sus %d", hour.Add(time.Duration(h)*time.Hour).Unix()))
	}
	if got := suspectHours(t, conn); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("suspect hours %v; want %v", got, want)
	}
	windows := []metering.MeterWindow{{Subject: "sus", From: hour.Add(-time.Hour), To: hour.Add(4 * time.Hour), Meters: []metering.Meter{
		{Slug: "calls", Aggregation: metering.AggCount},
		{Slug: "units", Aggregation: metering.AggSum, Field: metering.FieldUnits},
	}}}
	base, err := metering.MeterTotalsMany(t.Context(), conn, windows)
	if err != nil {
		t.Fatal(err)
	}
	got, err := metering.MeterTotalsRollupMany(t.Context(), conn, windows)
	if err != nil {
		t.Fatal(err)
	}
	if !base[0]["calls"].Equal(decimal.NewFromInt(30)) || !got[0]["calls"].Equal(base[0]["calls"]) || !got[0]["units"].Equal(base[0]["units"]) {
		t.Fatalf("roll-up path %v, base table %v; want both 30 calls, 60 units", got[0], base[0])
	}
}

// suspectFailConn is the real connection, except that recording suspect
// hours fails.
type suspectFailConn struct{ driver.Conn }

func (c suspectFailConn) PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error) {
	if strings.Contains(query, "usage_billing_suspect") {
		return nil, &clickhouse.Exception{Code: 241, Name: "DB::Exception", Message: "Memory limit exceeded"}
	}
	return c.Conn.PrepareBatch(ctx, query, opts...)
}

// TestWriteEventsKeepsRowsUntilSuspectsRecorded: when the suspect hours
// cannot be recorded, the written rows stay in the batch and the next
// attempt records them before inserting anything, so neither are the hours
// lost nor the rows written twice.
func TestWriteEventsKeepsRowsUntilSuspectsRecorded(t *testing.T) {
	conn, _, _ := testenv.ClickHouseDB(t)
	failingRollup(t, conn)
	hour := time.Date(2026, 3, 1, 5, 0, 0, 0, time.UTC)
	b := &batch{rows: suspectRows(hour)}
	failing := &Processor{cfg: Config{Now: time.Now}, ch: &chSink{conn: suspectFailConn{conn}}}
	if err := failing.writeEvents(t.Context(), b); err == nil {
		t.Fatal("writeEvents succeeded; want the insert's and the record's failures")
	}
	if len(b.rows) != 30 || !b.unsettled {
		t.Fatalf("%d rows kept (unsettled %v); want all 30 until their hours are recorded", len(b.rows), b.unsettled)
	}
	if got := suspectHours(t, conn); len(got) != 0 {
		t.Fatalf("suspect hours %v recorded through a failing connection", got)
	}
	p := &Processor{cfg: Config{Now: time.Now}, ch: &chSink{conn: conn}}
	if err := p.writeEvents(t.Context(), b); err != nil {
		t.Fatalf("second attempt: %v; want the rows settled as written", err)
	}
	if got := suspectHours(t, conn); len(got) != 3 {
		t.Fatalf("suspect hours %v; want the three hours of the rows", got)
	}
	var n uint64
	if err := conn.QueryRow(t.Context(), "SELECT count() FROM usage_events").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 30 {
		t.Fatalf("usage_events holds %d rows; want 30, each once", n)
	}
}

// TestConfigRefusesMaxFutureOverRollupBound: a MaxFuture beyond what the
// billing roll-up's first served hour allows for is refused; the bound
// itself and the default are taken.
func TestConfigRefusesMaxFutureOverRollupBound(t *testing.T) {
	for _, c := range []struct {
		maxFuture time.Duration
		ok        bool
	}{{0, true}, {metering.RollupMaxFuture, true}, {metering.RollupMaxFuture + time.Second, false}, {2 * time.Hour, false}} {
		cfg := Config{Logger: testenv.Logger(t), Metrics: metrics.NewSet(), Brokers: []string{"127.0.0.1:9092"},
			ClickHouse: suspectFailConn{}, Redis: testenv.Redis(t), MaxFuture: c.maxFuture}
		if err := cfg.validate(); (err == nil) != c.ok {
			t.Errorf("MaxFuture %s: error %v; want ok %v", c.maxFuture, err, c.ok)
		}
	}
}

// TestWriteEventsOneByOneKeepsRowsTheViewRefused: inserted one by one, a
// row whose insert fails in the billing roll-up's view after usage_events
// took it is written, not a dead letter: its hour is recorded as suspect
// and it is not inserted again.
func TestWriteEventsOneByOneKeepsRowsTheViewRefused(t *testing.T) {
	conn, _, _ := testenv.ClickHouseDB(t)
	failingRollup(t, conn)
	hour := time.Date(2026, 3, 1, 5, 0, 0, 0, time.UTC)
	p := &Processor{cfg: Config{Now: time.Now, Logger: testenv.Logger(t)}, ch: &chSink{conn: conn}}
	b := &batch{rows: suspectRows(hour)}
	if err := p.writeEventsOneByOne(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if len(b.sinkFailed) != 0 || len(b.rows) != 0 {
		t.Fatalf("%d dead letters, %d rows left; want none: usage_events holds the refused row", len(b.sinkFailed), len(b.rows))
	}
	// The poisoned row is event 17, at 06:42.
	if got := suspectHours(t, conn); fmt.Sprint(got) != fmt.Sprintf("[sus %d]", hour.Add(time.Hour).Unix()) {
		t.Fatalf("suspect hours %v; want only the poisoned row's", got)
	}
	var n uint64
	if err := conn.QueryRow(t.Context(), "SELECT count() FROM usage_events").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 30 {
		t.Fatalf("usage_events holds %d rows; want 30, each once", n)
	}
}
