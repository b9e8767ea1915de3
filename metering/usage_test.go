package metering

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.ParseInLocation(time.DateTime, s, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestGranularity(t *testing.T) {
	for _, tc := range []struct {
		g     Granularity
		valid bool
		d     time.Duration
	}{
		{Minute, true, time.Minute},
		{Hour, true, time.Hour},
		{Day, true, 24 * time.Hour},
		{"", false, 0},
		{"week", false, 0},
		{"Hour", false, 0},
	} {
		if got := tc.g.Valid(); got != tc.valid {
			t.Errorf("Granularity(%q).Valid() = %v; want %v", tc.g, got, tc.valid)
		}
		if got := tc.g.Duration(); got != tc.d {
			t.Errorf("Granularity(%q).Duration() = %v; want %v", tc.g, got, tc.d)
		}
	}
}

func TestQueryBounds(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name           string
		q              Query
		wantFrom, want string // UTC
	}{
		{"hour widened", Query{Subject: "s", Granularity: Hour,
			From: at(t, "2026-03-02 10:30:00"), To: at(t, "2026-03-02 13:10:00")},
			"2026-03-02 10:00:00", "2026-03-02 14:00:00"},
		{"hour aligned", Query{Subject: "s", Granularity: Hour,
			From: at(t, "2026-03-02 10:00:00"), To: at(t, "2026-03-02 14:00:00")},
			"2026-03-02 10:00:00", "2026-03-02 14:00:00"},
		{"minute, a nanosecond past", Query{Subject: "s", Granularity: Minute,
			From: at(t, "2026-03-02 10:04:59"), To: at(t, "2026-03-02 10:06:00").Add(time.Nanosecond)},
			"2026-03-02 10:04:00", "2026-03-02 10:07:00"},
		{"day in UTC whatever the location", Query{Subject: "s", Granularity: Day,
			From: at(t, "2026-03-02 00:30:00").In(paris), To: at(t, "2026-03-03 23:30:00").In(paris)},
			"2026-03-02 00:00:00", "2026-03-04 00:00:00"},
		{"within one bucket", Query{Subject: "s", Granularity: Day,
			From: at(t, "2026-03-02 10:00:00"), To: at(t, "2026-03-02 11:00:00")},
			"2026-03-02 00:00:00", "2026-03-03 00:00:00"},
		{"exactly MaxBuckets", Query{Subject: "s", Granularity: Minute,
			From: at(t, "2026-03-02 00:00:00"), To: at(t, "2026-03-02 00:00:00").Add(MaxBuckets * time.Minute)},
			"2026-03-02 00:00:00", "2026-03-02 16:40:00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, to, err := tc.q.bounds()
			if err != nil {
				t.Fatalf("bounds() error = %v; want nil", err)
			}
			if from.Location() != time.UTC || to.Location() != time.UTC {
				t.Errorf("bounds() locations = %v, %v; want UTC", from.Location(), to.Location())
			}
			if got := from.Format(time.DateTime); got != tc.wantFrom {
				t.Errorf("bounds() from = %s; want %s", got, tc.wantFrom)
			}
			if got := to.Format(time.DateTime); got != tc.want {
				t.Errorf("bounds() to = %s; want %s", got, tc.want)
			}
		})
	}
}

func TestQueryValidateRefuses(t *testing.T) {
	ok := Query{Subject: "s", Granularity: Hour, From: at(t, "2026-03-02 10:00:00"), To: at(t, "2026-03-02 12:00:00")}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v; want nil", ok, err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Query)
		want   string
	}{
		{"no subject", func(q *Query) { q.Subject = "" }, "subject is required"},
		{"no granularity", func(q *Query) { q.Granularity = "" }, `granularity "" is not one of minute, hour, day`},
		{"unknown granularity", func(q *Query) { q.Granularity = "week" }, `granularity "week"`},
		{"no from", func(q *Query) { q.From = time.Time{} }, "from and to are required"},
		{"no to", func(q *Query) { q.To = time.Time{} }, "from and to are required"},
		{"from equals to", func(q *Query) { q.To = q.From }, "from 2026-03-02T10:00:00Z is not before to 2026-03-02T10:00:00Z"},
		{"from after to", func(q *Query) { q.From, q.To = q.To, q.From }, "is not before"},
		{"too many minutes", func(q *Query) { q.Granularity = Minute; q.To = q.From.Add((MaxBuckets + 1) * time.Minute) }, "is 1001 buckets; at most 1000"},
		{"too many after rounding up", func(q *Query) {
			q.Granularity = Minute
			q.To = q.From.Add(MaxBuckets*time.Minute + time.Second)
		}, "is 1001 buckets"},
		{"too many days", func(q *Query) { q.Granularity = Day; q.To = q.From.AddDate(3, 0, 0) }, "buckets; at most 1000"},
		{"centuries", func(q *Query) { q.To = q.From.AddDate(500, 0, 0) }, "at most 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := ok
			tc.change(&q)
			err := q.Validate()
			if !errors.Is(err, ErrBadQuery) {
				t.Fatalf("Validate(%+v) = %v; want an error wrapping ErrBadQuery", q, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate(%+v) = %q; want it to say %q", q, err, tc.want)
			}
		})
	}
}

func TestBucketsSQL(t *testing.T) {
	want := `SELECT
    bucket AS bucket_start,
    countMerge(requests) AS n_requests,
    countMergeIf(requests, status_class >= 1 AND status_class <= 3) AS n_successful,
    countMergeIf(requests, status_class = 4) AS n_client_errors,
    countMergeIf(requests, status_class = 5) AS n_server_errors,
    sumMerge(units) AS sum_units,
    sumMerge(request_bytes) AS sum_request_bytes,
    sumMerge(response_bytes) AS sum_response_bytes,
    arrayMap(x -> toFloat64(x), quantilesMerge(0.5, 0.9, 0.99)(latency_ms)) AS latency_quantiles
FROM usage_rollup_day
WHERE subject = ?
  AND bucket >= toDate(?)
  AND bucket < toDate(?)
  AND key_id = ?
GROUP BY bucket_start
ORDER BY bucket_start`
	if got := bucketsSQL(Day, true); got != want {
		t.Errorf("bucketsSQL(day, true) =\n%s\nwant\n%s", got, want)
	}
	want = `SELECT
    arrayMap(x -> toFloat64(x), quantilesMerge(0.5, 0.9, 0.99)(latency_ms)) AS latency_quantiles
FROM usage_rollup_hour
WHERE subject = ?
  AND bucket >= ?
  AND bucket < ?
GROUP BY subject`
	if got := totalSQL(Hour, false); got != want {
		t.Errorf("totalSQL(hour, false) =\n%s\nwant\n%s", got, want)
	}
}

// TestSQLIsPortable checks every variant for what ClickHouse 18.16 gets
// wrong and for parameters that match queryArgs.
func TestSQLIsPortable(t *testing.T) {
	columns := []string{"bucket", "subject", "api_id", "key_id", "route", "method", "status_class",
		"requests", "units", "request_bytes", "response_bytes", "latency_ms"}
	for _, g := range []Granularity{Minute, Hour, Day} {
		for _, byKey := range []bool{false, true} {
			q := Query{Subject: "s", Granularity: g}
			if byKey {
				q.KeyID = "k"
			}
			nargs := len(queryArgs(q, time.Time{}, time.Time{}))
			for name, sql := range map[string]string{"bucketsSQL": bucketsSQL(g, byKey), "totalSQL": totalSQL(g, byKey)} {
				if got := strings.Count(sql, "?"); got != nargs {
					t.Errorf("%s(%s, %v) has %d placeholders; want %d (queryArgs)", name, g, byKey, got, nargs)
				}
				if !strings.Contains(sql, "FROM usage_rollup_"+string(g)+"\n") {
					t.Errorf("%s(%s, %v) does not read usage_rollup_%s", name, g, byKey, g)
				}
				if g == Day && strings.Contains(sql, "bucket >= ?") {
					t.Errorf("%s(day, %v) compares the Date bucket with a DateTime; want toDate(?)", name, byKey)
				}
				for _, alias := range strings.Split(sql, " AS ")[1:] {
					alias = strings.FieldsFunc(alias, func(r rune) bool { return r == ',' || r == '\n' || r == ' ' })[0]
					if slices.Contains(columns, alias) {
						t.Errorf("%s(%s, %v) aliases %q, a column name 18.16 would substitute", name, g, byKey, alias)
					}
				}
				for _, bad := range []string{"WITH FILL", "DateTime64", "FINAL", "veil."} {
					if strings.Contains(sql, bad) {
						t.Errorf("%s(%s, %v) contains %q", name, g, byKey, bad)
					}
				}
			}
		}
	}
}

func TestReportJSON(t *testing.T) {
	from := at(t, "2026-03-02 10:00:00")
	rep := Report{
		Subject: "sub_1", KeyID: "key_1", From: from, To: from.Add(time.Hour), Granularity: Hour,
		Buckets: []Bucket{{Start: from, Requests: 3, Successful: 1, ClientErrors: 1, ServerErrors: 1,
			Units: decimal.RequireFromString("1.500000"), RequestBytes: 10, ResponseBytes: 20,
			LatencyP50: 5, LatencyP90: 6.5, LatencyP99: 7}},
	}
	rep.Total = rep.Buckets[0]
	got, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	bucket := `{"start":"2026-03-02T10:00:00Z","requests":3,"successful_requests":1,"client_error_requests":1,` +
		`"server_error_requests":1,"units":"1.5","request_bytes":10,"response_bytes":20,` +
		`"latency_ms_p50":5,"latency_ms_p90":6.5,"latency_ms_p99":7}`
	want := `{"subject":"sub_1","key_id":"key_1","from":"2026-03-02T10:00:00Z","to":"2026-03-02T11:00:00Z",` +
		`"granularity":"hour","buckets":[` + bucket + `],"total":` + bucket + `}`
	if string(got) != want {
		t.Errorf("json.Marshal(report) =\n%s\nwant\n%s", got, want)
	}
}

func TestLatenciesClearNaN(t *testing.T) {
	if p50, p90, p99 := latencies([]float64{math.NaN(), 0, math.Inf(1)}); p50 != 0 || p90 != 0 || p99 != 0 {
		t.Errorf("latencies(NaN, 0, +Inf) = %v, %v, %v; want 0, 0, 0", p50, p90, p99)
	}
	if p50, p90, p99 := latencies(nil); p50 != 0 || p90 != 0 || p99 != 0 {
		t.Errorf("latencies(nil) = %v, %v, %v; want 0, 0, 0", p50, p90, p99)
	}
}
