package metering_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

// analystQueries lists every exported query with the literal values
// docs/analyst-sql.md shows it with (the 10M-row benchmark's ranges).
var analystQueries = []struct {
	name    string
	sql     string
	literal map[string]string // @param -> SQL literal in the docs
}{
	{"DailyUsageBySubscription", metering.DailyUsageBySubscription, map[string]string{
		"subject": "'sub_0042'", "from": "'2026-10-27'", "to": "'2026-11-27'",
	}},
	{"TopRoutesByAPI", metering.TopRoutesByAPI, map[string]string{
		"api_id": "'api_07'", "from": "toDateTime('2026-11-19 00:00:00')", "to": "toDateTime('2026-11-26 00:00:00')", "limit": "10",
	}},
	{"ErrorRatesByAPIHourly", metering.ErrorRatesByAPIHourly, map[string]string{
		"from": "toDateTime('2026-11-25 18:00:00')", "to": "toDateTime('2026-11-26 18:00:00')",
	}},
	{"LatencyByAPIDaily", metering.LatencyByAPIDaily, map[string]string{
		"from": "'2026-11-19'", "to": "'2026-11-26'",
	}},
	{"KeyActivityBySubscription", metering.KeyActivityBySubscription, map[string]string{
		"subject": "'sub_0042'", "from": "toDateTime('2026-10-27 00:00:00')", "to": "toDateTime('2026-11-27 00:00:00')",
	}},
	{"APIDailyUsage", metering.APIDailyUsage, map[string]string{
		"api_id": "'api_07'", "from": "'2026-10-27'", "to": "'2026-11-27'",
	}},
	{"APITopRoutes", metering.APITopRoutes, map[string]string{
		"api_id": "'api_07'", "from": "toDateTime('2026-11-19 00:00:00', 'UTC')", "to": "toDateTime('2026-11-26 00:00:00', 'UTC')", "limit": "10",
	}},
	{"APILatencyDaily", metering.APILatencyDaily, map[string]string{
		"from": "'2026-10-27'", "to": "'2026-11-26'",
	}},
	{"APITopConsumers", metering.APITopConsumers, map[string]string{
		"api_id": "'api_07'", "from": "'2026-10-27'", "to": "'2026-11-27'", "limit": "10",
	}},
	{"APIUniqueConsumers", metering.APIUniqueConsumers, map[string]string{
		"from": "'2026-10-27'", "to": "'2026-11-27'",
	}},
}

var (
	placeholder   = regexp.MustCompile(`@[A-Za-z0-9_]+`)
	dateTimeBound = regexp.MustCompile(`bucket\s*[<>]=?\s*@`)
)

// TestEveryQueryIsListed fails when queries.go gains an exported constant
// that analystQueries (and so the data and docs tests) does not cover.
func TestEveryQueryIsListed(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "queries.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared, listed []string
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.CONST {
			for _, spec := range g.Specs {
				for _, name := range spec.(*ast.ValueSpec).Names {
					if name.IsExported() {
						declared = append(declared, name.Name)
					}
				}
			}
		}
	}
	for _, q := range analystQueries {
		listed = append(listed, q.name)
	}
	slices.Sort(declared)
	slices.Sort(listed)
	if !slices.Equal(declared, listed) {
		t.Fatalf("queries.go declares %v; analystQueries lists %v", declared, listed)
	}
}

// literalSQL returns the query with its placeholders replaced by literals.
func literalSQL(t *testing.T, sql string, literal map[string]string) string {
	t.Helper()
	return placeholder.ReplaceAllStringFunc(sql, func(p string) string {
		v, ok := literal[p[1:]]
		if !ok {
			t.Errorf("no literal for %s", p)
		}
		return v
	})
}

func TestQueriesAreWellFormed(t *testing.T) {
	tables := regexp.MustCompile(`[^@\w](FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_.]*)`)
	for _, q := range analystQueries {
		t.Run(q.name, func(t *testing.T) {
			var params []string
			for _, p := range placeholder.FindAllString(q.sql, -1) {
				params = append(params, p[1:])
			}
			slices.Sort(params)
			params = slices.Compact(params)
			var want []string
			for p := range q.literal {
				want = append(want, p)
			}
			slices.Sort(want)
			if !slices.Equal(params, want) {
				t.Errorf("placeholders %v; want %v", params, want)
			}
			for _, m := range tables.FindAllStringSubmatch(q.sql, -1) {
				if !slices.Contains([]string{"usage_events", "usage_rollup_hour", "usage_rollup_day", "usage_api_hour", "usage_api_day", "usage_api_consumer_day"}, m[2]) {
					t.Errorf("reads %q; want an unqualified usage table", m[2])
				}
			}
			for _, bad := range []string{"veil.", "FINAL", "{", "DateTime64", "$1", "?"} {
				if strings.Contains(q.sql, bad) {
					t.Errorf("contains %q", bad)
				}
			}
			if (strings.Contains(q.sql, "usage_rollup_day") || strings.Contains(q.sql, "_day\n")) && dateTimeBound.MatchString(q.sql) {
				t.Errorf("compares the Date bucket with a time (%q): 18.16 compares Date with DateTime as raw numbers; use toDate(@param)",
					dateTimeBound.FindString(q.sql))
			}
		})
	}
}

// TestDocsShowTheQueries keeps docs/analyst-sql.md in step with the
// constants: each query appears there in full, with its literal values.
func TestDocsShowTheQueries(t *testing.T) {
	doc, err := os.ReadFile("../docs/analyst-sql.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range analystQueries {
		want := "```sql\n" + literalSQL(t, q.sql, q.literal) + "\n```"
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs/analyst-sql.md does not show %s as:\n%s", q.name, want)
		}
	}
}

// event is one row of the known dataset.
type event struct {
	id, subject, at, api, key, method, route, path string
	status                                         uint16
	latency                                        uint32
	units                                          string
}

// dataset: two days (2026-03-02 and 03-03, UTC) of three subscriptions on
// two APIs, plus one event just before and one exactly at the end of the
// range the tests ask for, which every query must leave out.
var dataset = []event{
	{"e01", "sub_a", "2026-03-02 10:05:00", "api_x", "key_a1", "GET", "/v1/items/{id}", "/v1/items/1", 200, 10, "1"},
	{"e02", "sub_a", "2026-03-02 10:20:00", "api_x", "key_a1", "GET", "/v1/items/{id}", "/v1/items/2", 404, 20, "1"},
	{"e03", "sub_a", "2026-03-02 10:59:59", "api_x", "key_a2", "POST", "/v1/items", "/v1/items", 201, 30, "2.5"},
	{"e04", "sub_a", "2026-03-02 11:00:00", "api_x", "key_a2", "GET", "/v1/items/{id}", "/v1/items/1", 503, 30, "0.000001"},
	{"e05", "sub_a", "2026-03-03 00:00:00", "api_x", "key_a1", "GET", "/v1/search", "/v1/search", 200, 40, "1"},
	{"e06", "sub_a", "2026-03-03 23:59:59", "api_x", "key_a1", "GET", "/v1/search", "/v1/search", 429, 2, "0"},
	{"e07", "sub_b", "2026-03-02 10:30:00", "api_x", "key_b1", "GET", "/v1/search", "/v1/search", 200, 60, "1"},
	{"e08", "sub_b", "2026-03-02 11:30:00", "api_x", "key_b1", "GET", "/v1/items/{id}", "/v1/items/9", 500, 60, "1"},
	{"e09", "sub_c", "2026-03-02 10:10:00", "api_y", "key_c1", "DELETE", "/v1/items/{id}", "/v1/items/3", 204, 5, "1"},
	{"e10", "sub_c", "2026-03-02 12:00:00", "api_y", "key_c1", "GET", "/v1/items/{id}", "/v1/items/3", 200, 15, "1"},
	{"e11", "sub_c", "2026-03-02 12:30:00", "api_y", "key_c2", "GET", "/v1/items/{id}", "/v1/items/4", 401, 15, "1"},
	{"e12", "sub_a", "2026-03-03 12:00:00", "api_x", "key_a2", "GET", "/v1/items/{id}", "/v1/items/5", 200, 40, "1.25"},
	// Outside [2026-03-02 00:00:00, 2026-03-04 00:00:00).
	{"e13", "sub_a", "2026-03-01 23:59:59", "api_x", "key_a1", "GET", "/v1/items/{id}", "/v1/items/1", 200, 1000, "7"},
	{"e14", "sub_a", "2026-03-04 00:00:00", "api_x", "key_a1", "GET", "/v1/items/{id}", "/v1/items/1", 200, 1000, "7"},
}

// latencyDay adds 21 calls of sub_z to api_z in one hour, with latencies 1
// to 19 ms and two of 100 ms: sorted, the median is the 11th (11 ms), the
// 90th percentile the 19th (19 ms) and the 99th falls between the two 100s,
// so each quantile is exact and tells the three apart.
func latencyDay() []event {
	var out []event
	for i := range 21 {
		latency := uint32(i + 1)
		if i >= 19 {
			latency = 100
		}
		out = append(out, event{fmt.Sprintf("z%02d", i), "sub_z", fmt.Sprintf("2026-03-03 09:%02d:00", i), "api_z", "key_z1",
			"GET", "/v1/health", "/v1/health", 200, latency, "1"})
	}
	return out
}

func utc(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.ParseInLocation(time.DateTime, s, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func TestQueriesOnKnownData(t *testing.T) {
	conn := clickHouseUTC(t)
	var rows [][]any
	for i, e := range append(slices.Clone(dataset), latencyDay()...) {
		at := utc(t, e.at)
		rows = append(rows, []any{e.id, "/gateway", "veil.api.request", e.subject, at, e.api, e.key, e.method, e.route, e.path,
			e.status, e.latency, uint64(100), uint64(200), decimal.RequireFromString(e.units), at.Add(time.Second), int32(0), int64(i)})
	}
	insertEvents(t, conn, rows)

	from, to := utc(t, "2026-03-02 00:00:00"), utc(t, "2026-03-04 00:00:00")
	cases := []struct {
		name string
		sql  string
		args []any
		want []string // header, then one line per row
	}{
		{"DailyUsageBySubscription", metering.DailyUsageBySubscription, []any{
			clickhouse.Named("subject", "sub_a"), clickhouse.Named("from", from), clickhouse.Named("to", to),
		}, []string{
			"subject day requests units",
			"sub_a 2026-03-02 4 4.500001",
			"sub_a 2026-03-03 3 2.25",
		}},
		// Times inside a day select the whole day: [toDate(from), toDate(to)).
		{"DailyUsageBySubscription/partial days", metering.DailyUsageBySubscription, []any{
			clickhouse.Named("subject", "sub_a"),
			clickhouse.Named("from", utc(t, "2026-03-02 15:00:00")), clickhouse.Named("to", utc(t, "2026-03-03 09:00:00")),
		}, []string{
			"subject day requests units",
			"sub_a 2026-03-02 4 4.500001",
		}},
		{"TopRoutesByAPI", metering.TopRoutesByAPI, []any{
			clickhouse.Named("api_id", "api_x"), clickhouse.Named("from", from), clickhouse.Named("to", to), clickhouse.Named("limit", 2),
		}, []string{
			"method route requests errors_4xx errors_5xx error_rate",
			"GET /v1/items/{id} 5 1 2 0.6",
			"GET /v1/search 3 1 0 " + ftoa(1.0/3),
		}},
		{"TopRoutesByAPI/all", metering.TopRoutesByAPI, []any{
			clickhouse.Named("api_id", "api_x"), clickhouse.Named("from", from), clickhouse.Named("to", to), clickhouse.Named("limit", 10),
		}, []string{
			"method route requests errors_4xx errors_5xx error_rate",
			"GET /v1/items/{id} 5 1 2 0.6",
			"GET /v1/search 3 1 0 " + ftoa(1.0/3),
			"POST /v1/items 1 0 0 0",
		}},
		// The first hour is in, the hour that starts at @to is out.
		{"TopRoutesByAPI/hour bounds", metering.TopRoutesByAPI, []any{
			clickhouse.Named("api_id", "api_x"), clickhouse.Named("from", utc(t, "2026-03-02 11:00:00")),
			clickhouse.Named("to", utc(t, "2026-03-03 00:00:00")), clickhouse.Named("limit", 10),
		}, []string{
			"method route requests errors_4xx errors_5xx error_rate",
			"GET /v1/items/{id} 2 0 2 1",
		}},
		{"ErrorRatesByAPIHourly/hour bounds", metering.ErrorRatesByAPIHourly, []any{
			clickhouse.Named("from", utc(t, "2026-03-02 11:00:00")), clickhouse.Named("to", utc(t, "2026-03-03 00:00:00")),
		}, []string{
			"api_id hour requests errors_4xx errors_5xx rate_4xx rate_5xx",
			"api_x 2026-03-02 11:00:00 2 0 2 0 1",
			"api_y 2026-03-02 12:00:00 2 1 0 0.5 0",
		}},
		{"ErrorRatesByAPIHourly", metering.ErrorRatesByAPIHourly, []any{
			clickhouse.Named("from", from), clickhouse.Named("to", to),
		}, []string{
			"api_id hour requests errors_4xx errors_5xx rate_4xx rate_5xx",
			"api_x 2026-03-02 10:00:00 4 1 0 0.25 0",
			"api_x 2026-03-02 11:00:00 2 0 2 0 1",
			"api_x 2026-03-03 00:00:00 1 0 0 0 0",
			"api_x 2026-03-03 12:00:00 1 0 0 0 0",
			"api_x 2026-03-03 23:00:00 1 1 0 1 0",
			"api_y 2026-03-02 10:00:00 1 0 0 0 0",
			"api_y 2026-03-02 12:00:00 2 1 0 0.5 0",
			"api_z 2026-03-03 09:00:00 21 0 0 0 0",
		}},
		// Quantiles interpolate between the sorted latencies: api_x on
		// 03-02 has 10 20 30 30 60 60 (p50 between the two 30s, p99 between
		// the two 60s), so the answers are whole on every release (18.16
		// truncates quantiles of UInt32 to integers).
		{"LatencyByAPIDaily", metering.LatencyByAPIDaily, []any{
			clickhouse.Named("from", from), clickhouse.Named("to", to),
		}, []string{
			"api_id day requests p50_ms p99_ms",
			"api_x 2026-03-02 6 30 60",
			"api_x 2026-03-03 3 40 40",
			"api_y 2026-03-02 3 15 15",
			"api_z 2026-03-03 21 11 100",
		}},
		{"KeyActivityBySubscription", metering.KeyActivityBySubscription, []any{
			clickhouse.Named("subject", "sub_a"), clickhouse.Named("from", from), clickhouse.Named("to", to),
		}, []string{
			"key_id requests distinct_paths first_seen last_seen max_latency_ms",
			"key_a1 4 3 2026-03-02 10:05:00 2026-03-03 23:59:59 40",
			"key_a2 3 3 2026-03-02 10:59:59 2026-03-03 12:00:00 40",
		}},
		{"APIDailyUsage", metering.APIDailyUsage, []any{
			clickhouse.Named("api_id", "api_x"), clickhouse.Named("from", from), clickhouse.Named("to", to),
		}, []string{
			"day requests errors_5xx units",
			"2026-03-02 6 2 6.500001",
			"2026-03-03 3 0 2.25",
		}},
		{"APITopRoutes", metering.APITopRoutes, []any{
			clickhouse.Named("api_id", "api_x"), clickhouse.Named("from", from), clickhouse.Named("to", to), clickhouse.Named("limit", 10),
		}, []string{
			"method route requests errors_4xx errors_5xx error_rate",
			"GET /v1/items/{id} 5 1 2 0.6",
			"GET /v1/search 3 1 0 " + ftoa(1.0/3),
			"POST /v1/items 1 0 0 0",
		}},
		{"APITopRoutes/hour bounds", metering.APITopRoutes, []any{
			clickhouse.Named("api_id", "api_x"), clickhouse.Named("from", utc(t, "2026-03-02 11:00:00")),
			clickhouse.Named("to", utc(t, "2026-03-03 00:00:00")), clickhouse.Named("limit", 10),
		}, []string{
			"method route requests errors_4xx errors_5xx error_rate",
			"GET /v1/items/{id} 2 0 2 1",
		}},
		{"APITopConsumers", metering.APITopConsumers, []any{
			clickhouse.Named("api_id", "api_x"), clickhouse.Named("from", from), clickhouse.Named("to", to), clickhouse.Named("limit", 10),
		}, []string{
			"subject requests units",
			"sub_a 7 6.750001",
			"sub_b 2 2",
		}},
		{"APITopConsumers/limit", metering.APITopConsumers, []any{
			clickhouse.Named("api_id", "api_x"), clickhouse.Named("from", from), clickhouse.Named("to", to), clickhouse.Named("limit", 1),
		}, []string{
			"subject requests units",
			"sub_a 7 6.750001",
		}},
		{"APIUniqueConsumers", metering.APIUniqueConsumers, []any{
			clickhouse.Named("from", from), clickhouse.Named("to", to),
		}, []string{
			"api_id consumers",
			"api_x 2",
			"api_y 1",
			"api_z 1",
		}},
		// The quantiles merged from the day roll-up's timing states equal
		// ClickHouse's quantilesTiming of the same calls in usage_events.
		{"APILatencyDaily", metering.APILatencyDaily, []any{
			clickhouse.Named("from", from), clickhouse.Named("to", to),
		}, queryLines(t, conn, `SELECT api_id, toDate(time) AS day, count() AS requests,
    toFloat64(quantilesTiming(0.5, 0.9, 0.99)(latency_ms)[1]) AS p50_ms,
    toFloat64(quantilesTiming(0.5, 0.9, 0.99)(latency_ms)[2]) AS p90_ms,
    toFloat64(quantilesTiming(0.5, 0.9, 0.99)(latency_ms)[3]) AS p99_ms
FROM usage_events WHERE time >= @from AND time < @to GROUP BY api_id, day ORDER BY api_id, day`,
			clickhouse.Named("from", from), clickhouse.Named("to", to))},
		// To the second: an event at @from is in, one at @to is out.
		{"KeyActivityBySubscription/second bounds", metering.KeyActivityBySubscription, []any{
			clickhouse.Named("subject", "sub_a"), clickhouse.Named("from", utc(t, "2026-03-02 10:05:00")),
			clickhouse.Named("to", utc(t, "2026-03-03 23:59:59")),
		}, []string{
			"key_id requests distinct_paths first_seen last_seen max_latency_ms",
			"key_a1 3 3 2026-03-02 10:05:00 2026-03-03 00:00:00 40",
			"key_a2 3 3 2026-03-02 10:59:59 2026-03-03 12:00:00 40",
		}},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[strings.Split(c.name, "/")[0]] = true
		t.Run(c.name, func(t *testing.T) {
			got := queryLines(t, conn, c.sql, c.args...)
			if !slices.Equal(got, c.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}
	for _, q := range analystQueries {
		if !covered[q.name] {
			t.Errorf("%s is not run against the known dataset", q.name)
		}
	}
}

// queryLines runs a query and returns its column names, then each row, as
// space-separated text: dates as 2006-01-02, times as 2006-01-02 15:04:05,
// decimals and floats in their shortest exact form.
func queryLines(t *testing.T, conn driver.Conn, sql string, args ...any) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), sql, args...)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	lines := []string{strings.Join(rows.Columns(), " ")}
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatalf("scan: %v", err)
		}
		fields := make([]string, len(dest))
		for i, d := range dest {
			switch v := reflect.ValueOf(d).Elem().Interface().(type) {
			case time.Time:
				if types[i].DatabaseTypeName() == "Date" {
					fields[i] = v.UTC().Format(time.DateOnly)
				} else {
					fields[i] = v.UTC().Format(time.DateTime)
				}
			case decimal.Decimal:
				fields[i] = v.String()
			case float64:
				fields[i] = ftoa(v)
			default:
				fields[i] = fmt.Sprint(v)
			}
		}
		lines = append(lines, strings.Join(fields, " "))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows: %v", err)
	}
	return lines
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
