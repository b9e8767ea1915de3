package analytics_test

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
)

// TestExportFlushes: an export of more rows than its flush interval
// reaches the sink in pieces, flushed after the first row and every
// Rows rows, each piece holding at most Rows rows; every row arrives, in
// order, as RFC 4180 CSV.
func TestExportFlushes(t *testing.T) {
	ch, _, _ := testenv.ClickHouseDB(t)
	svc, err := analytics.New(analytics.Config{Pool: testenv.Postgres(t), ClickHouse: ch})
	if err != nil {
		t.Fatal(err)
	}
	const n, every = 2500, 100
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	batch, err := ch.PrepareBatch(t.Context(), `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
		status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		at := base.Add(time.Duration(i) * time.Second)
		if err := batch.Append(fmt.Sprintf("e%05d", i), "/gw", "veil.api.request", "sub_x", at, "api_x", "key_x", "GET", "/v1/items/{id}",
			fmt.Sprintf("/v1/items/%d", i), uint16(200), uint32(3), uint64(1), uint64(1), decimal.NewFromInt(1), at, int32(0), int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var pieces []int // rows written between flushes
	flushedAt := 0
	flush := func() error {
		rows := bytes.Count(out.Bytes(), []byte("\r\n")) - 1 // the header
		pieces = append(pieces, rows-flushedAt)
		flushedAt = rows
		return nil
	}
	got, err := svc.Export(t.Context(), metering.ExportQuery{Subject: "sub_x", From: base, To: base.Add(time.Hour)}, analytics.CSV,
		analytics.Sink{W: &out, Flush: flush, Rows: every})
	if err != nil || got != n {
		t.Fatalf("exported %d rows, %v; want %d", got, err, n)
	}
	// The first row alone, then 99 to reach row 100, then 100 at a time.
	if len(pieces) != 2+n/every || pieces[0] != 1 || pieces[1] != every-1 || pieces[len(pieces)-1] != 0 {
		t.Errorf("flushes %v; want 1, %d, then %d at a time, then the final flush", pieces, every-1, every)
	}
	for _, p := range pieces[2 : len(pieces)-1] {
		if p != every {
			t.Errorf("flushes %v; want %d rows between flushes", pieces, every)
			break
		}
	}
	recs, err := csv.NewReader(&out).ReadAll()
	if err != nil || len(recs) != n+1 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	for i, r := range recs[1:] {
		if r[8] != fmt.Sprintf("/v1/items/%d", i) || r[0] != base.Add(time.Duration(i)*time.Second).Format(time.RFC3339) {
			t.Fatalf("record %d: %v", i, r)
		}
	}
}

// TestExportEmpty: no rows is a header alone in CSV, nothing in NDJSON.
func TestExportEmpty(t *testing.T) {
	ch, _, _ := testenv.ClickHouseDB(t)
	svc, err := analytics.New(analytics.Config{Pool: testenv.Postgres(t), ClickHouse: ch})
	if err != nil {
		t.Fatal(err)
	}
	q := metering.ExportQuery{APIID: "api_none", From: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 5, 2, 0, 0, 0, 0, time.UTC)}
	for f, want := range map[analytics.Format]string{analytics.CSV: "time,id,source,subject,api_id,key_id,method,route,path,status,latency_ms,request_bytes,response_bytes,units\r\n", analytics.NDJSON: ""} {
		var out bytes.Buffer
		if n, err := svc.Export(t.Context(), q, f, analytics.Sink{W: &out}); err != nil || n != 0 || out.String() != want {
			t.Errorf("%s: %d rows, %v, %q; want %q", f, n, err, out.String(), want)
		}
	}
}
