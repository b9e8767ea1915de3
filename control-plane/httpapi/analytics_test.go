package httpapi_test

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// analyticsFixture: acme's API with a units meter priced 0.5 USD per
// unit, initech's subscription to it (backdated to March 2026, its current
// period) with two keys, and usage in ClickHouse on either side of
// Asia/Kolkata's midnights (18:30 UTC); globex is a stranger, and
// umbrella's subscription to the same API a neighbour whose usage must
// never show.
type analyticsFixture struct {
	e                            *testEnv
	ch                           driver.Conn
	bill                         *billing.Service
	prov, buyer, stranger, other string
	apiID, subID, otherSub       string
	key1, key2                   string
	events                       []fixtureEvent
}

type fixtureEvent struct {
	sub, key, at, method, route, path string
	status                            uint16
	latency                           uint32
	units                             string
}

func newAnalyticsFixture(t *testing.T) *analyticsFixture {
	t.Helper()
	f := &analyticsFixture{}
	f.e = newTestEnvWith(t, func(cfg *httpapi.Config) {
		f.ch, _, _ = testenv.ClickHouseDB(t)
		var err error
		if f.bill, err = billing.New(billing.Config{Pool: cfg.Pool, ClickHouse: f.ch, Logger: cfg.Logger}); err != nil {
			t.Fatal(err)
		}
		if cfg.Analytics, err = analytics.New(analytics.Config{Pool: cfg.Pool, ClickHouse: f.ch, Billing: f.bill, Logger: cfg.Logger}); err != nil {
			t.Fatal(err)
		}
	})
	e := f.e
	f.prov, f.buyer = e.token("acme", "alice", identity.RoleProvider), e.token("initech", "bob", identity.RoleConsumer)
	f.stranger, f.other = e.token("globex", "carol", identity.RoleProvider), e.token("umbrella", "dave", identity.RoleConsumer)
	var api, plan, sub, other, k1, k2 struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis", f.prov, weather("analytics"), &api)
	forceState(t, e, api.ID, "active")
	e.must(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/meters", f.prov, map[string]any{"slug": "units", "aggregation": "sum", "field": "units"}, nil)
	e.must(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/plans", f.prov, map[string]any{"name": "Usage", "slug": "usage", "status": "active",
		"terms": map[string]any{"type": "usage_based", "currency": "USD", "charges": []any{
			map[string]any{"meter": "units", "model": "per_unit", "unit_price": "0.5"}}}}, &plan)
	e.must(http.StatusCreated, "POST", "/v1/subscriptions", f.buyer, map[string]any{"plan_id": plan.ID}, &sub)
	e.must(http.StatusCreated, "POST", "/v1/subscriptions", f.other, map[string]any{"plan_id": plan.ID}, &other)
	e.must(http.StatusCreated, "POST", "/v1/subscriptions/"+sub.ID+"/keys", f.buyer, map[string]any{"name": "one"}, &k1)
	e.must(http.StatusCreated, "POST", "/v1/subscriptions/"+sub.ID+"/keys", f.buyer, map[string]any{"name": "two"}, &k2)
	f.apiID, f.subID, f.otherSub, f.key1, f.key2 = api.ID, sub.ID, other.ID, k1.ID, k2.ID
	// March 2026 is the subscription's current period, so that its usage
	// there is priced.
	start, end := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	for _, q := range []string{
		`UPDATE subscriptions SET created_at = $2, current_period_start = $2, current_period_end = $3 WHERE id = $1`,
		`UPDATE subscription_history SET effective_at = $2 WHERE subscription_id = $1 AND $3::timestamptz IS NOT NULL`,
	} {
		if _, err := e.Pool.Exec(t.Context(), q, sub.ID, start, end); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	item, items := "/v1/items/{id}", "/v1/items"
	f.events = []fixtureEvent{
		{f.subID, f.key1, "2026-03-01 10:15:29", "GET", item, "/v1/items/0", 200, 999, "100"}, // before the window
		{f.subID, f.key1, "2026-03-01 10:15:30", "GET", item, "/v1/items/1", 200, 10, "1.5"},
		{f.subID, f.key2, "2026-03-01 18:29:59", "GET", item, "=HYPERLINK(\"x\")", 500, 10, "0"},
		{f.subID, f.key1, "2026-03-01 18:30:00", "GET", item, "/v1/items/2", 404, 20, "0"},
		{f.subID, f.key1, "2026-03-02 12:00:00", "POST", items, "/v1/items", 201, 20, "2.25"},
		{f.subID, f.key2, "2026-03-02 18:29:59", "GET", item, "/v1/items/3,\"q\"", 200, 20, "1"},
		{f.subID, f.key1, "2026-03-02 18:30:00", "GET", item, "/v1/items/4", 503, 40, "0.000001"},
		{f.subID, f.key1, "2026-03-03 19:00:09", "GET", item, "/v1/items/5", 429, 40, "0"},
		{f.subID, f.key1, "2026-03-03 19:00:10", "GET", item, "/v1/items/6", 200, 999, "100"}, // at the window's end
		{f.otherSub, "", "2026-03-01 18:29:59", "GET", item, "/v1/items/7", 500, 999, "100"},
		{f.otherSub, "", "2026-03-02 12:00:00", "GET", "/v1/other", "/v1/other", 200, 999, "100"},
	}
	f.insert(t, f.events, 0)
	return f
}

// insert writes events to usage_events, ids from offset on.
func (f *analyticsFixture) insert(t *testing.T, events []fixtureEvent, offset int) {
	t.Helper()
	batch, err := f.ch.PrepareBatch(t.Context(), `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
		status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range events {
		at, err := time.ParseInLocation(time.DateTime, ev.at, time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		if err := batch.Append(fmt.Sprintf("e%07d", offset+i), "/gateway", "veil.api.request", ev.sub, at, f.apiID, ev.key, ev.method, ev.route, ev.path,
			ev.status, ev.latency, uint64(1), uint64(2), decimal.RequireFromString(ev.units), at, int32(0), int64(offset+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

// window is the Kolkata window: ragged ends, days 03-01 to 03-04.
const kolkataWindow = "from=2026-03-01T10:15:30Z&to=2026-03-03T19:00:10Z&tz=Asia/Kolkata"

type analyticsAnswer struct {
	SubscriptionID string  `json:"subscription_id"`
	KeyID          *string `json:"key_id"`
	From, To       time.Time
	TimeZone       string `json:"time_zone"`
	Currency       string
	Totals         analyticsCounts
	ByDay          []struct {
		Day string
		analyticsCounts
	} `json:"by_day"`
	ByRoute []struct {
		Method, Route string
		analyticsCounts
	} `json:"by_route"`
	ByStatusClass []struct {
		StatusClass string `json:"status_class"`
		Calls       uint64
	} `json:"by_status_class"`
}

type analyticsCounts struct {
	Calls        uint64
	Units        decimal.Decimal
	Cost         *decimal.Decimal
	Errors       uint64
	ClientErrors uint64                          `json:"client_errors"`
	ErrorRate    string                          `json:"error_rate"`
	Latency      struct{ P50, P90, P99 float64 } `json:"latency_ms"`
}

func (f *analyticsFixture) get(t *testing.T, path, tok string) analyticsAnswer {
	t.Helper()
	var out analyticsAnswer
	f.e.must(http.StatusOK, "GET", path, tok, nil, &out)
	return out
}

// TestSubscriptionAnalyticsKolkata checks every figure of a subscription's
// view cut at Kolkata's midnights, as its member and its API's provider
// see it.
func TestSubscriptionAnalyticsKolkata(t *testing.T) {
	f := newAnalyticsFixture(t)
	for _, tok := range []string{f.buyer, f.prov} {
		got := f.get(t, "/v1/subscriptions/"+f.subID+"/analytics?"+kolkataWindow, tok)
		if got.SubscriptionID != f.subID || got.KeyID != nil || got.TimeZone != "Asia/Kolkata" || got.Currency != "USD" ||
			got.From.Format(time.RFC3339) != "2026-03-01T10:15:30Z" || got.To.Format(time.RFC3339) != "2026-03-03T19:00:10Z" {
			t.Fatalf("header %+v", got)
		}
		// In the window: 7 calls of 1.5, 0, 0, 2.25, 1, 0.000001, 0 units;
		// 5xx: 500 and 503; 4xx: 404 and 429.
		checkCounts(t, "totals", got.Totals.analyticsCountsNoCost(), 7, "4.750001", 2, 2, "0.2857", [3]float64{20, 40, 40})
		days := []struct {
			day                    string
			calls, errs, clientErr uint64
			units, rate            string
			lat                    float64
		}{
			{"2026-03-01", 2, 1, 0, "1.5", "0.5000", 10},      // 10:15:30 and 18:29:59 UTC
			{"2026-03-02", 3, 0, 1, "3.25", "0.0000", 20},     // 18:30:00 on 03-01 to 18:29:59 on 03-02
			{"2026-03-03", 1, 1, 0, "0.000001", "1.0000", 40}, // 18:30:00 on 03-02
			{"2026-03-04", 1, 0, 1, "0", "0.0000", 40},        // 19:00:09 on 03-03, local 00:30:09
		}
		if len(got.ByDay) != len(days) {
			t.Fatalf("by_day %+v; want %d days", got.ByDay, len(days))
		}
		sum := decimal.Zero
		for i, d := range days {
			g := got.ByDay[i]
			if g.Day != d.day {
				t.Errorf("day %d is %s; want %s", i, g.Day, d.day)
			}
			checkCounts(t, d.day, g.analyticsCountsNoCost(), d.calls, d.units, d.errs, d.clientErr, d.rate, [3]float64{d.lat, d.lat, d.lat})
			if g.Cost == nil {
				t.Fatalf("%s: cost null in the subscription view", d.day)
			}
			sum = sum.Add(*g.Cost)
		}
		// Billable units (status below 500) at 0.5 USD: 1.5 + 2.25 + 1
		// = 4.75 units, 2.375 USD, which the days split and the total
		// rounds once per line: 2.38.
		if got.Totals.Cost == nil || !got.Totals.Cost.Equal(sum) || !sum.Equal(decimal.RequireFromString("2.38")) {
			t.Errorf("total cost %v, days sum to %s; want both 2.38", got.Totals.Cost, sum)
		}
		checkDayCosts(t, f, got)
		if len(got.ByRoute) != 2 || got.ByRoute[0].Route != "/v1/items/{id}" || got.ByRoute[0].Method != "GET" || got.ByRoute[1].Method != "POST" {
			t.Fatalf("by_route %+v; want GET /v1/items/{id} then POST /v1/items", got.ByRoute)
		}
		checkCounts(t, "GET items", got.ByRoute[0].analyticsCountsNoCost(), 6, "2.500001", 2, 2, "0.3333", [3]float64{20, 40, 40})
		checkCounts(t, "POST items", got.ByRoute[1].analyticsCountsNoCost(), 1, "2.25", 0, 0, "0.0000", [3]float64{20, 20, 20})
		classes := map[string]uint64{}
		for _, c := range got.ByStatusClass {
			classes[c.StatusClass] = c.Calls
		}
		if fmt.Sprint(classes) != "map[2xx:3 4xx:2 5xx:2]" || len(got.ByStatusClass) != 3 {
			t.Errorf("by_status_class %+v; want 2xx 3, 4xx 2, 5xx 2", got.ByStatusClass)
		}
	}
}

// analyticsCountsNoCost drops the cost, which checkCounts does not read.
func (c analyticsCounts) analyticsCountsNoCost() analyticsCounts { c.Cost = nil; return c }

func checkCounts(t *testing.T, what string, g analyticsCounts, calls uint64, units string, errs, clientErrs uint64, rate string, lat [3]float64) {
	t.Helper()
	if g.Calls != calls || !g.Units.Equal(decimal.RequireFromString(units)) || g.Errors != errs || g.ClientErrors != clientErrs || g.ErrorRate != rate ||
		g.Latency.P50 != lat[0] || g.Latency.P90 != lat[1] || g.Latency.P99 != lat[2] {
		t.Errorf("%s: %+v; want calls %d, units %s, errors %d, client errors %d, rate %s, latency %v", what, g, calls, units, errs, clientErrs, rate, lat)
	}
}

// checkDayCosts: each day costs what billing's CostByDay says of it.
func checkDayCosts(t *testing.T, f *analyticsFixture, got analyticsAnswer) {
	t.Helper()
	loc, _ := time.LoadLocation("Asia/Kolkata")
	_, days, err := f.bill.CostByDay(t.Context(), uuid.MustParse(f.subID), got.From, got.To, loc)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]decimal.Decimal{}
	for _, d := range days {
		want[d.Day] = d.Cost
	}
	for _, d := range got.ByDay {
		if !d.Cost.Equal(want[d.Day]) {
			t.Errorf("%s costs %s; billing says %s", d.Day, d.Cost, want[d.Day])
		}
	}
}

// TestKeyAnalytics: a key's view has its calls only and no cost; the
// subscription view's key_id filter gives the same counts, with cost.
func TestKeyAnalytics(t *testing.T) {
	f := newAnalyticsFixture(t)
	got := f.get(t, "/v1/keys/"+f.key2+"/analytics?"+kolkataWindow, f.buyer)
	if got.SubscriptionID != f.subID || got.KeyID == nil || *got.KeyID != f.key2 || got.Totals.Cost != nil || got.Currency != "USD" {
		t.Fatalf("key view %+v", got)
	}
	// key_2: 18:29:59 on 03-01 (500, 10 ms) and on 03-02 (200, 20 ms);
	// quantileTiming takes the rank n·level, 20 ms for each quantile.
	checkCounts(t, "key_2", got.Totals, 2, "1", 1, 0, "0.5000", [3]float64{20, 20, 20})
	for i, want := range []uint64{1, 1, 0, 0} {
		if got.ByDay[i].Calls != want || got.ByDay[i].Cost != nil {
			t.Errorf("key_2 day %d: %+v; want %d calls, cost null", i, got.ByDay[i], want)
		}
	}
	filtered := f.get(t, "/v1/subscriptions/"+f.subID+"/analytics?"+kolkataWindow+"&key_id="+f.key2, f.prov)
	if filtered.KeyID == nil || *filtered.KeyID != f.key2 || filtered.Totals.Calls != 2 || filtered.Totals.Cost == nil {
		t.Errorf("key_id filter: %+v", filtered)
	}
}

// TestAnalyticsDefaultWindowAndDST: without from, the window starts at the
// local midnight 29 days before today, so it shows 30 dates; New York's
// 2026-03-08 is cut at its midnights whatever its 23 hours.
func TestAnalyticsDefaultWindowAndDST(t *testing.T) {
	f := newAnalyticsFixture(t)
	got := f.get(t, "/v1/subscriptions/"+f.subID+"/analytics?tz=America/New_York", f.buyer)
	ny, _ := time.LoadLocation("America/New_York")
	if len(got.ByDay) != 30 || got.From.In(ny).Format("15:04:05") != "00:00:00" || got.ByDay[29].Day != got.To.In(ny).Format(time.DateOnly) {
		t.Errorf("default window %s to %s, %d days; want 30 local dates from a local midnight", got.From, got.To, len(got.ByDay))
	}
	f.insert(t, []fixtureEvent{
		{f.subID, f.key1, "2026-03-08 04:59:59", "GET", "/v1/items/{id}", "/x", 200, 5, "1"}, // 23:59:59 EST on 03-07
		{f.subID, f.key1, "2026-03-08 05:00:00", "GET", "/v1/items/{id}", "/x", 200, 5, "1"}, // 00:00 EST on 03-08
		{f.subID, f.key1, "2026-03-09 03:59:59", "GET", "/v1/items/{id}", "/x", 200, 5, "1"}, // 23:59:59 EDT on 03-08
		{f.subID, f.key1, "2026-03-09 04:00:00", "GET", "/v1/items/{id}", "/x", 200, 5, "1"}, // 00:00 EDT on 03-09
	}, 100)
	dst := f.get(t, "/v1/subscriptions/"+f.subID+"/analytics?from=2026-03-07T05:00:00Z&to=2026-03-10T04:00:00Z&tz=America/New_York", f.buyer)
	var days []string
	for _, d := range dst.ByDay {
		days = append(days, fmt.Sprintf("%s:%d", d.Day, d.Calls))
	}
	if strings.Join(days, " ") != "2026-03-07:1 2026-03-08:2 2026-03-09:1" {
		t.Errorf("New York days %v; want 03-07:1 03-08:2 03-09:1", days)
	}
}

// TestAnalyticsRefusals: malformed parameters are 400 problems; someone
// else's subscription or key, or a key of another subscription, 404.
func TestAnalyticsRefusals(t *testing.T) {
	f := newAnalyticsFixture(t)
	sub := "/v1/subscriptions/" + f.subID + "/analytics?"
	for _, q := range []string{"tz=Mars/Olympus", "tz=Local", "tz=../../etc/passwd", "tz=", "from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
		"from=2026-03-01T00:00:00Z&to=2026-03-01T00:00:00Z", "from=2025-01-01T00:00:00Z&to=2026-03-01T00:00:00Z", "from=yesterday",
		"from=1969-12-31T00:00:00Z&to=1970-01-02T00:00:00Z", "key_id=nope"} {
		status, b := f.e.do("GET", sub+q, f.buyer, nil)
		if status != http.StatusBadRequest || !strings.Contains(string(b), "invalid-parameter") {
			t.Errorf("?%s = %d %s; want 400 invalid-parameter", q, status, b)
		}
	}
	for _, c := range []struct{ path, tok string }{
		{"/v1/subscriptions/" + f.subID + "/analytics", f.stranger},
		{"/v1/subscriptions/" + f.subID + "/analytics", f.other},
		{"/v1/keys/" + f.key1 + "/analytics", f.other},
		{"/v1/subscriptions/" + f.otherSub + "/analytics", f.buyer},
		{"/v1/subscriptions/" + f.otherSub + "/analytics?key_id=" + f.key1, f.prov},
		{"/v1/subscriptions/" + uuid.NewString() + "/analytics", f.buyer},
	} {
		if status, b := f.e.do("GET", c.path, c.tok, nil); status != http.StatusNotFound || !strings.Contains(string(b), "not-found") {
			t.Errorf("%s = %d %s; want 404", c.path, status, b)
		}
	}
}

// exportWindow is a window of the export tests: every event of the
// fixture.
const exportWindow = "from=2026-03-01T00:00:00Z&to=2026-03-05T00:00:00Z"

// TestExportNDJSON: the subscription's rows only, in time order, one JSON
// object per line, each line whole, and the trailer with the count.
func TestExportNDJSON(t *testing.T) {
	f := newAnalyticsFixture(t)
	resp := f.export(t, "/v1/subscriptions/"+f.subID+"/usage/export?"+exportWindow, f.buyer)
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(body), "\n")
	if lines[len(lines)-1] != "" {
		t.Fatalf("the body does not end with a newline: %q", body)
	}
	lines = lines[:len(lines)-1]
	want := f.mine()
	if len(lines) != len(want) || resp.Trailer.Get("Veil-Export-Rows") != fmt.Sprint(len(want)) {
		t.Fatalf("%d lines, trailer %q; want %d", len(lines), resp.Trailer.Get("Veil-Export-Rows"), len(want))
	}
	for i, line := range lines {
		var row map[string]any
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("line %d %q: %v", i, line, err)
		}
		w := want[i]
		at, _ := time.ParseInLocation(time.DateTime, w.at, time.UTC)
		if row["time"] != at.Format(time.RFC3339) || row["subject"] != f.subID || row["key_id"] != w.key || row["path"] != w.path ||
			row["units"] != w.units || row["status"] != float64(w.status) || row["api_id"] != f.apiID || len(row) != 14 {
			t.Errorf("line %d: %s; want %+v", i, line, w)
		}
	}
}

// mine are the fixture's events of initech's subscription, in time order.
func (f *analyticsFixture) mine() []fixtureEvent {
	var out []fixtureEvent
	for _, ev := range f.events {
		if ev.sub == f.subID {
			out = append(out, ev)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

func (f *analyticsFixture) export(t *testing.T, path, tok string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", f.e.Server.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s = %d %s", path, resp.StatusCode, b)
	}
	return resp
}

// TestExportCSV: RFC 4180 (CRLF, quoted commas and quotes), a header row,
// formulas neutralized; the API's export as its provider, filtered.
func TestExportCSV(t *testing.T) {
	f := newAnalyticsFixture(t)
	resp := f.export(t, "/v1/subscriptions/"+f.subID+"/usage/export?"+exportWindow, f.buyer, "Accept", "text/csv")
	body, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(body), "time,id,source,subject,api_id,key_id,method,route,path,status,latency_ms,request_bytes,response_bytes,units\r\n") ||
		!strings.HasSuffix(string(body), "\r\n") {
		t.Fatalf("CSV %q", body)
	}
	if !strings.Contains(string(body), `,"'=HYPERLINK(""x"")",500,`) || !strings.Contains(string(body), `,"/v1/items/3,""q""",200,`) {
		t.Errorf("CSV does not neutralize or quote: %q", body)
	}
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil || len(recs) != len(f.mine())+1 {
		t.Fatalf("%d records, %v; want a header and %d rows", len(recs), err, len(f.mine()))
	}
	resp = f.export(t, "/v1/apis/"+f.apiID+"/usage/export?format=csv&status_class=5xx&"+exportWindow, f.prov)
	recs, err = csv.NewReader(resp.Body).ReadAll()
	if err != nil || len(recs) != 3 || recs[1][3] != f.subID || recs[2][3] != f.subID || recs[1][9] != "500" || recs[2][9] != "503" {
		// 2026-03-01 18:29:59 has initech's 500 (id e0000002) before
		// umbrella's (e0000009); umbrella's is the third 5xx.
		if len(recs) != 4 || recs[2][3] != f.otherSub {
			t.Errorf("API export of 5xx: %v (%v)", recs, err)
		}
	}
	resp = f.export(t, "/v1/apis/"+f.apiID+"/usage/export?format=csv&subscription_id="+f.otherSub+"&"+exportWindow, f.prov)
	recs, _ = csv.NewReader(resp.Body).ReadAll()
	if len(recs) != 3 || recs[1][3] != f.otherSub || recs[2][3] != f.otherSub {
		t.Errorf("API export of umbrella's rows: %v", recs)
	}
}

// TestExportStreams: more rows than the flush interval (1,000) and than
// a ClickHouse block (a read of usage_events gives blocks of at most
// 8,192 rows), all of them in order, counted by the trailer, and sent
// chunked as they came (TestStreamFirstBytesEarly shows the first bytes
// leave before the last).
func TestExportStreams(t *testing.T) {
	f := newAnalyticsFixture(t)
	const n = 25000
	base := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	events := make([]fixtureEvent, n)
	for i := range events {
		events[i] = fixtureEvent{f.subID, f.key1, base.Add(time.Duration(i) * time.Second).Format(time.DateTime), "GET", "/v1/items/{id}", fmt.Sprintf("/v1/items/%d", i), 200, 1, "1"}
	}
	f.insert(t, events, 1000)
	resp := f.export(t, "/v1/subscriptions/"+f.subID+"/usage/export?from=2026-03-10T00:00:00Z&to=2026-03-11T00:00:00Z", f.buyer)
	sc := bufio.NewScanner(resp.Body)
	i := 0
	for ; sc.Scan(); i++ {
		var row struct{ Path string }
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil || row.Path != fmt.Sprintf("/v1/items/%d", i) {
			t.Fatalf("row %d: %s (%v)", i, sc.Bytes(), err)
		}
	}
	if err := sc.Err(); err != nil || i != n || resp.Trailer.Get("Veil-Export-Rows") != fmt.Sprint(n) {
		t.Fatalf("%d rows, %v, trailer %q; want %d", i, err, resp.Trailer.Get("Veil-Export-Rows"), n)
	}
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("transfer encoding %v; want chunked (streamed, not buffered whole)", resp.TransferEncoding)
	}
}

// TestExportRefusals: a window is required and at most 31 days; bad
// filters are 400; the API export is its provider's, not a subscriber's.
func TestExportRefusals(t *testing.T) {
	f := newAnalyticsFixture(t)
	sub := "/v1/subscriptions/" + f.subID + "/usage/export?"
	for _, q := range []string{"", "from=2026-03-01T00:00:00Z", "from=2026-03-01T00:00:00Z&to=2026-04-02T00:00:00Z", exportWindow + "&format=xlsx",
		exportWindow + "&status_class=6xx", exportWindow + "&method=get", exportWindow + "&route=items", exportWindow + "&key_id=1",
		exportWindow + "&subscription_id=" + f.subID, exportWindow + "&tz=Nowhere"} {
		status, b := f.e.do("GET", sub+q, f.buyer, nil)
		if status != http.StatusBadRequest || !strings.Contains(string(b), "invalid-parameter") {
			t.Errorf("?%s = %d %s; want 400 invalid-parameter", q, status, b)
		}
	}
	for _, c := range []struct{ path, tok string }{
		{"/v1/apis/" + f.apiID + "/usage/export?" + exportWindow, f.buyer},
		{"/v1/apis/" + f.apiID + "/usage/export?" + exportWindow, f.stranger},
		{"/v1/subscriptions/" + f.subID + "/usage/export?" + exportWindow, f.other},
		{"/v1/subscriptions/" + f.otherSub + "/usage/export?" + exportWindow, f.buyer},
	} {
		if status, b := f.e.do("GET", c.path, c.tok, nil); status != http.StatusNotFound {
			t.Errorf("%s = %d %s; want 404", c.path, status, b)
		}
	}
}
