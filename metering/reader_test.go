package metering_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
)

// event is one row of the known rollupDataset.
type rollupEvent struct {
	subject, at, key    string
	status              uint16
	latency             uint32
	units               string
	reqBytes, respBytes uint64
}

// rollupDataset: sub_a with two keys over 2026-03-02 to 03-04 (UTC), and sub_b
// in the same hours, which sub_a's reports must never show. Latencies are
// equal within each hour of sub_a, so every bucket's quantiles are that
// value, and chosen so that the merged quantiles of a range differ from any
// average of the buckets'.
var rollupDataset = []rollupEvent{
	{"sub_a", "2026-03-02 09:59:59", "key_1", 200, 10, "7", 1, 1},
	{"sub_a", "2026-03-02 10:05:00", "key_1", 200, 10, "1.5", 100, 1000},
	{"sub_a", "2026-03-02 10:05:30", "key_2", 404, 10, "0", 10, 20},
	{"sub_a", "2026-03-02 10:20:00", "key_1", 201, 10, "2.25", 200, 2000},
	{"sub_a", "2026-03-02 10:59:59", "key_2", 302, 10, "0.000001", 300, 3000},
	// No usage from 11:00 to 12:00.
	{"sub_a", "2026-03-02 12:00:00", "key_1", 500, 50, "1", 400, 0},
	{"sub_a", "2026-03-02 12:30:00", "key_2", 429, 50, "0", 50, 0},
	{"sub_a", "2026-03-02 12:59:59", "key_1", 503, 50, "1", 60, 0},
	{"sub_a", "2026-03-03 09:00:00", "key_2", 200, 50, "1.5", 500, 5000},
	{"sub_a", "2026-03-04 00:00:00", "key_1", 200, 50, "3", 1, 1},
	{"sub_b", "2026-03-02 10:10:00", "key_b", 200, 999, "100", 9999, 9999},
	{"sub_b", "2026-03-02 12:00:00", "key_b", 500, 999, "100", 9999, 9999},
}

// setup returns a Reader over a fresh database holding rollupDataset. The
// materialized views fill the roll-ups as the insert runs.
func setup(t *testing.T) *metering.Reader {
	t.Helper()
	conn := clickHouseUTC(t)
	var rows [][]any
	for i, e := range rollupDataset {
		ts := utc(t, e.at)
		rows = append(rows, []any{fmt.Sprintf("e%02d", i), "/gateway", "veil.api.request", e.subject, ts, "api_x", e.key,
			"GET", "/v1/items/{id}", "/v1/items/1", e.status, e.latency, e.reqBytes, e.respBytes,
			decimal.RequireFromString(e.units), ts.Add(time.Second), int32(0), int64(i)})
	}
	insertEvents(t, conn, rows)
	return metering.NewReader(conn)
}

// clickHouseUTC returns a connection to a new, migrated ClickHouse
// database, once it has checked that the server runs in UTC: the roll-ups
// bucket in the server's time zone, and the tests expect UTC hours and
// days.
func clickHouseUTC(t *testing.T) driver.Conn {
	t.Helper()
	conn, _, _ := testenv.ClickHouseDB(t)
	var tz string
	if err := conn.QueryRow(t.Context(), "SELECT timezone()").Scan(&tz); err != nil {
		t.Fatal(err)
	}
	if loc, err := time.LoadLocation(tz); err != nil || utc(t, "2026-03-02 10:00:00").In(loc).Format(time.DateTime) != "2026-03-02 10:00:00" {
		t.Fatalf("ClickHouse runs in time zone %q (%v); these expectations need UTC", tz, err)
	}
	return conn
}

// insertEvents writes rows to usage_events, each with the values of
// every column the gateway writes, in the order of the insert below.
func insertEvents(t *testing.T, conn driver.Conn, rows [][]any) {
	t.Helper()
	batch, err := conn.PrepareBatch(t.Context(), `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
		status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatalf("prepare insert: %v", err)
	}
	for _, r := range rows {
		if err := batch.Append(r...); err != nil {
			t.Fatalf("append event %v: %v", r[0], err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("insert usage_events: %v", err)
	}
}

// b builds an expected bucket; lat is p50, p90, p99 (nil for none).
func b(t *testing.T, start string, requests, ok, c4xx, c5xx uint64, units string, reqBytes, respBytes uint64, lat ...float64) metering.Bucket {
	t.Helper()
	out := metering.Bucket{Start: utc(t, start), Requests: requests, Successful: ok, ClientErrors: c4xx, ServerErrors: c5xx,
		Units: decimal.RequireFromString(units), RequestBytes: reqBytes, ResponseBytes: respBytes}
	if len(lat) == 3 {
		out.LatencyP50, out.LatencyP90, out.LatencyP99 = lat[0], lat[1], lat[2]
	}
	return out
}

func TestUsage(t *testing.T) {
	r := setup(t)
	for _, tc := range []struct {
		name             string
		q                metering.Query
		wantFrom, wantTo string
		want             []metering.Bucket
		total            metering.Bucket
	}{
		{
			name: "hours with a gap, range widened",
			q: metering.Query{Subject: "sub_a", Granularity: metering.Hour,
				From: utc(t, "2026-03-02 10:30:00"), To: utc(t, "2026-03-02 13:10:00")},
			wantFrom: "2026-03-02 10:00:00", wantTo: "2026-03-02 14:00:00",
			want: []metering.Bucket{
				b(t, "2026-03-02 10:00:00", 4, 3, 1, 0, "3.750001", 610, 6020, 10, 10, 10),
				b(t, "2026-03-02 11:00:00", 0, 0, 0, 0, "0", 0, 0),
				b(t, "2026-03-02 12:00:00", 3, 0, 1, 2, "2", 510, 0, 50, 50, 50),
				b(t, "2026-03-02 13:00:00", 0, 0, 0, 0, "0", 0, 0),
			},
			// Sorted latencies 10 x4, 50 x3: the merged median is 10;
			// averaging the buckets' medians would give 30.
			total: b(t, "2026-03-02 10:00:00", 7, 3, 2, 2, "5.750001", 1120, 6020, 10, 50, 50),
		},
		{
			name: "one key",
			q: metering.Query{Subject: "sub_a", KeyID: "key_1", Granularity: metering.Hour,
				From: utc(t, "2026-03-02 10:00:00"), To: utc(t, "2026-03-02 13:00:00")},
			wantFrom: "2026-03-02 10:00:00", wantTo: "2026-03-02 13:00:00",
			want: []metering.Bucket{
				b(t, "2026-03-02 10:00:00", 2, 2, 0, 0, "3.75", 300, 3000, 10, 10, 10),
				b(t, "2026-03-02 11:00:00", 0, 0, 0, 0, "0", 0, 0),
				b(t, "2026-03-02 12:00:00", 2, 0, 0, 2, "2", 460, 0, 50, 50, 50),
			},
			// Sorted 10, 10, 50, 50: p50 interpolates to 30, p90 and p99 fall
			// between the two 50s.
			total: b(t, "2026-03-02 10:00:00", 4, 2, 0, 2, "5.75", 760, 3000, 30, 50, 50),
		},
		{
			name: "days, half-open",
			q: metering.Query{Subject: "sub_a", Granularity: metering.Day,
				From: utc(t, "2026-03-02 10:30:00"), To: utc(t, "2026-03-04 00:00:00")},
			wantFrom: "2026-03-02 00:00:00", wantTo: "2026-03-04 00:00:00",
			want: []metering.Bucket{
				b(t, "2026-03-02 00:00:00", 8, 4, 2, 2, "12.750001", 1121, 6021, 10, 50, 50),
				b(t, "2026-03-03 00:00:00", 1, 1, 0, 0, "1.5", 500, 5000, 50, 50, 50),
			},
			// Sorted 10 x5, 50 x4: p50 is the 5th, 10.
			total: b(t, "2026-03-02 00:00:00", 9, 5, 2, 2, "14.250001", 1621, 11021, 10, 50, 50),
		},
		{
			name: "days with an empty one at the end",
			q: metering.Query{Subject: "sub_a", Granularity: metering.Day,
				From: utc(t, "2026-03-02 00:00:00"), To: utc(t, "2026-03-05 01:00:00")},
			wantFrom: "2026-03-02 00:00:00", wantTo: "2026-03-06 00:00:00",
			want: []metering.Bucket{
				b(t, "2026-03-02 00:00:00", 8, 4, 2, 2, "12.750001", 1121, 6021, 10, 50, 50),
				b(t, "2026-03-03 00:00:00", 1, 1, 0, 0, "1.5", 500, 5000, 50, 50, 50),
				b(t, "2026-03-04 00:00:00", 1, 1, 0, 0, "3", 1, 1, 50, 50, 50),
				b(t, "2026-03-05 00:00:00", 0, 0, 0, 0, "0", 0, 0),
			},
			// Sorted 10 x5, 50 x5: p50 halfway between 10 and 50; the
			// buckets' medians (10, 50, 50) average to 36.7.
			total: b(t, "2026-03-02 00:00:00", 10, 6, 2, 2, "17.250001", 1622, 11022, 30, 50, 50),
		},
		{
			name: "minutes",
			q: metering.Query{Subject: "sub_a", Granularity: metering.Minute,
				From: utc(t, "2026-03-02 10:04:10"), To: utc(t, "2026-03-02 10:06:00")},
			wantFrom: "2026-03-02 10:04:00", wantTo: "2026-03-02 10:06:00",
			want: []metering.Bucket{
				b(t, "2026-03-02 10:04:00", 0, 0, 0, 0, "0", 0, 0),
				b(t, "2026-03-02 10:05:00", 2, 1, 1, 0, "1.5", 110, 1020, 10, 10, 10),
			},
			total: b(t, "2026-03-02 10:04:00", 2, 1, 1, 0, "1.5", 110, 1020, 10, 10, 10),
		},
		{
			name: "another subject",
			q: metering.Query{Subject: "sub_b", Granularity: metering.Hour,
				From: utc(t, "2026-03-02 10:00:00"), To: utc(t, "2026-03-02 13:00:00")},
			wantFrom: "2026-03-02 10:00:00", wantTo: "2026-03-02 13:00:00",
			want: []metering.Bucket{
				b(t, "2026-03-02 10:00:00", 1, 1, 0, 0, "100", 9999, 9999, 999, 999, 999),
				b(t, "2026-03-02 11:00:00", 0, 0, 0, 0, "0", 0, 0),
				b(t, "2026-03-02 12:00:00", 1, 0, 0, 1, "100", 9999, 9999, 999, 999, 999),
			},
			total: b(t, "2026-03-02 10:00:00", 2, 1, 0, 1, "200", 19998, 19998, 999, 999, 999),
		},
		{
			name: "a key of another subject",
			q: metering.Query{Subject: "sub_a", KeyID: "key_b", Granularity: metering.Hour,
				From: utc(t, "2026-03-02 10:00:00"), To: utc(t, "2026-03-02 12:00:00")},
			wantFrom: "2026-03-02 10:00:00", wantTo: "2026-03-02 12:00:00",
			want: []metering.Bucket{
				b(t, "2026-03-02 10:00:00", 0, 0, 0, 0, "0", 0, 0),
				b(t, "2026-03-02 11:00:00", 0, 0, 0, 0, "0", 0, 0),
			},
			total: b(t, "2026-03-02 10:00:00", 0, 0, 0, 0, "0", 0, 0),
		},
		{
			name: "no usage at all",
			q: metering.Query{Subject: "sub_none", Granularity: metering.Day,
				From: utc(t, "2026-03-01 00:00:00"), To: utc(t, "2026-03-03 00:00:00")},
			wantFrom: "2026-03-01 00:00:00", wantTo: "2026-03-03 00:00:00",
			want: []metering.Bucket{
				b(t, "2026-03-01 00:00:00", 0, 0, 0, 0, "0", 0, 0),
				b(t, "2026-03-02 00:00:00", 0, 0, 0, 0, "0", 0, 0),
			},
			total: b(t, "2026-03-01 00:00:00", 0, 0, 0, 0, "0", 0, 0),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := r.Usage(t.Context(), tc.q)
			if err != nil {
				t.Fatalf("Usage(%+v) error = %v; want nil", tc.q, err)
			}
			if rep.Subject != tc.q.Subject || rep.KeyID != tc.q.KeyID || rep.Granularity != tc.q.Granularity {
				t.Errorf("Usage() = subject %q, key %q, granularity %q; want %q, %q, %q",
					rep.Subject, rep.KeyID, rep.Granularity, tc.q.Subject, tc.q.KeyID, tc.q.Granularity)
			}
			if !rep.From.Equal(utc(t, tc.wantFrom)) || !rep.To.Equal(utc(t, tc.wantTo)) {
				t.Errorf("Usage() range = [%s, %s); want [%s, %s)", rep.From, rep.To, tc.wantFrom, tc.wantTo)
			}
			if len(rep.Buckets) != len(tc.want) {
				t.Fatalf("Usage() = %d buckets: %+v; want %d", len(rep.Buckets), rep.Buckets, len(tc.want))
			}
			for i, got := range rep.Buckets {
				checkBucket(t, fmt.Sprintf("bucket %d", i), got, tc.want[i])
			}
			checkBucket(t, "total", rep.Total, tc.total)
		})
	}
}

func checkBucket(t *testing.T, name string, got, want metering.Bucket) {
	t.Helper()
	if got.Start.Location() != time.UTC {
		t.Errorf("%s start %s is in %v; want UTC", name, got.Start, got.Start.Location())
	}
	if !got.Units.Equal(want.Units) {
		t.Errorf("%s units = %s; want %s", name, got.Units, want.Units)
	}
	got.Units, want.Units = decimal.Zero, decimal.Zero
	if !got.Start.Equal(want.Start) {
		t.Errorf("%s start = %s; want %s", name, got.Start, want.Start)
	}
	got.Start, want.Start = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("%s = %+v; want %+v", name, got, want)
	}
}

func TestUsageRefuses(t *testing.T) {
	r := setup(t)
	from := utc(t, "2026-03-02 10:00:00")
	for _, tc := range []struct {
		name string
		q    metering.Query
	}{
		{"no subject", metering.Query{Granularity: metering.Hour, From: from, To: from.Add(time.Hour)}},
		{"unknown granularity", metering.Query{Subject: "sub_a", Granularity: "week", From: from, To: from.Add(time.Hour)}},
		{"no granularity", metering.Query{Subject: "sub_a", From: from, To: from.Add(time.Hour)}},
		{"from equals to", metering.Query{Subject: "sub_a", Granularity: metering.Hour, From: from, To: from}},
		{"from after to", metering.Query{Subject: "sub_a", Granularity: metering.Hour, From: from, To: from.Add(-time.Minute)}},
		{"1,001 minutes", metering.Query{Subject: "sub_a", Granularity: metering.Minute, From: from, To: from.Add(1001 * time.Minute)}},
		{"1,001 hours", metering.Query{Subject: "sub_a", Granularity: metering.Hour, From: from, To: from.Add(1001 * time.Hour)}},
		{"1,001 days", metering.Query{Subject: "sub_a", Granularity: metering.Day, From: from, To: from.AddDate(0, 0, 1001)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := r.Usage(t.Context(), tc.q)
			if !errors.Is(err, metering.ErrBadQuery) {
				t.Errorf("Usage(%+v) = %+v, %v; want an error wrapping ErrBadQuery", tc.q, rep, err)
			}
		})
	}

	// The largest query allowed is answered.
	q := metering.Query{Subject: "sub_a", Granularity: metering.Minute, From: from, To: from.Add(metering.MaxBuckets * time.Minute)}
	rep, err := r.Usage(t.Context(), q)
	if err != nil {
		t.Fatalf("Usage(%d minutes) error = %v; want nil", metering.MaxBuckets, err)
	}
	if len(rep.Buckets) != metering.MaxBuckets || rep.Total.Requests != 7 {
		t.Errorf("Usage(%d minutes) = %d buckets, %d requests; want %d, 7", metering.MaxBuckets, len(rep.Buckets), rep.Total.Requests, metering.MaxBuckets)
	}
}
