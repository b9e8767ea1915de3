package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// providerFixture: acme provides two APIs; initech subscribes to both
// (subA, subB), umbrella to the first (subU); globex provides a third API
// with its own subscriber. Usage in ClickHouse, invoices and outlooks in
// Postgres, each figure known.
type providerFixture struct {
	e                         *testEnv
	ch                        driver.Conn
	prov, buyer, other, admin string
	stranger                  string
	acme                      string
	apiA, apiB, apiG          string
	subA, subB, subU, subG    string
	planA                     string
	initechName, umbrellaName string
	lags                      *fakeLagger
}

// fakeLagger answers a fixed lag of the processors' group.
type fakeLagger struct{ err error }

func (f *fakeLagger) Lag(_ context.Context, groups ...string) (kadm.DescribedGroupLags, error) {
	if f.err != nil {
		return nil, f.err
	}
	return kadm.DescribedGroupLags{groups[0]: {Group: groups[0], State: "Stable", Lag: kadm.GroupLag{
		"veil.usage.raw": {0: {Topic: "veil.usage.raw", Partition: 0, Lag: 3}, 1: {Topic: "veil.usage.raw", Partition: 1, Lag: 4}},
	}}}, nil
}

// providerNow is the analytics service's clock in the fixture: the end of
// the usage's last day.
var providerNow = time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)

func newProviderFixture(t *testing.T) *providerFixture {
	t.Helper()
	f := &providerFixture{lags: &fakeLagger{}}
	f.e = newTestEnvWith(t, func(cfg *httpapi.Config) {
		f.ch, _, _ = testenv.ClickHouseDB(t)
		var err error
		if cfg.Analytics, err = analytics.New(analytics.Config{Pool: cfg.Pool, ClickHouse: f.ch, Logger: cfg.Logger,
			Kafka: f.lags, Now: func() time.Time { return providerNow }}); err != nil {
			t.Fatal(err)
		}
	})
	e := f.e
	f.prov, f.buyer = e.token("acme", "alice", identity.RoleProvider), e.token("initech", "bob", identity.RoleConsumer)
	f.other, f.stranger = e.token("umbrella", "dave", identity.RoleConsumer), e.token("globex", "carol", identity.RoleProvider)
	f.admin = e.token("platform", "root", identity.RoleAdmin)
	api := func(tok, slug string) (string, string) {
		var a struct{ ID string }
		e.must(http.StatusCreated, "POST", "/v1/apis", tok, authzAPIBody(slug, catalog.VisibilityPublic), &a)
		forceState(t, e, a.ID, "active")
		var p struct{ ID string }
		e.must(http.StatusCreated, "POST", "/v1/apis/"+a.ID+"/plans", tok, map[string]any{"name": "Usage " + slug, "slug": "usage", "status": "active",
			"terms": map[string]any{"type": "subscription", "currency": "USD", "base_fee": "1"}}, &p)
		return a.ID, p.ID
	}
	var planB, planG string
	f.apiA, f.planA = api(f.prov, "acme-a")
	f.apiB, planB = api(f.prov, "acme-b")
	f.apiG, planG = api(f.stranger, "globex-g")
	sub := func(tok, plan string) string {
		var s struct{ ID string }
		e.must(http.StatusCreated, "POST", "/v1/subscriptions", tok, map[string]any{"plan_id": plan}, &s)
		return s.ID
	}
	f.subA, f.subB, f.subU, f.subG = sub(f.buyer, f.planA), sub(f.buyer, planB), sub(f.other, f.planA), sub(f.buyer, planG)
	var me struct {
		OrganizationID string `json:"organization_id"`
	}
	e.must(http.StatusOK, "GET", "/v1/me", f.prov, nil, &me)
	f.acme = me.OrganizationID
	f.initechName, f.umbrellaName = f.orgName(t, f.subA), f.orgName(t, f.subU)
	f.usage(t)
	f.billing(t)
	return f
}

func (f *providerFixture) orgName(t *testing.T, sub string) string {
	t.Helper()
	var name string
	if err := f.e.Pool.QueryRow(t.Context(), `SELECT o.name FROM subscriptions s JOIN organizations o ON o.id = s.organization_id WHERE s.id = $1`, sub).Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// usage writes the events, stamped as the processors stamp them (the
// roll-ups by API take rows ingested after their migration).
func (f *providerFixture) usage(t *testing.T) {
	t.Helper()
	type ev struct {
		sub, api, at, method, route string
		status                      uint16
		latency                     uint32
		units                       string
	}
	events := []ev{
		{f.subA, f.apiA, "2026-03-01 22:59:59", "GET", "/a", 200, 999, "100"}, // before the window
		{f.subA, f.apiA, "2026-03-01 23:30:00", "GET", "/a", 200, 10, "1"},
		{f.subA, f.apiA, "2026-03-02 05:00:00", "GET", "/a", 500, 30, "0.5"},
		{f.subA, f.apiA, "2026-03-02 12:00:00", "POST", "/b", 404, 40, "2"},
		{f.subU, f.apiA, "2026-03-02 13:00:00", "GET", "/a", 200, 20, "1"},
		{f.subA, f.apiA, "2026-03-03 00:00:00", "GET", "/a", 200, 999, "100"}, // at the window's end
		{f.subB, f.apiB, "2026-03-02 10:00:00", "GET", "/x", 200, 5, "3"},
		{f.subG, f.apiG, "2026-03-02 11:00:00", "GET", "/g", 200, 5, "7"},
	}
	batch, err := f.ch.PrepareBatch(t.Context(), `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
		status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for i, x := range events {
		at, err := time.ParseInLocation(time.DateTime, x.at, time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		if err := batch.Append(fmt.Sprintf("p%03d", i), "/gateway", "veil.api.request", x.sub, at, x.api, "", x.method, x.route, x.route,
			x.status, x.latency, uint64(1), uint64(1), decimal.RequireFromString(x.units), now, int32(0), int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

// billing writes invoices (an open and a void one of acme's API A, a
// paid one of globex's) and outlooks with quotas near, over and well
// within.
func (f *providerFixture) billing(t *testing.T) {
	t.Helper()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := f.e.Pool.Exec(t.Context(), sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	invoice := `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end, total,
		finalized_at, paid_at, voided_at)
		SELECT a.organization_id, s.organization_id, s.id, $2::invoice_status, $3, 'USD', '2026-02-01', '2026-03-01', $4, $5,
			CASE WHEN $2 = 'paid' THEN $5::timestamptz END, CASE WHEN $2 = 'void' THEN $5::timestamptz END
		FROM subscriptions s JOIN apis a ON a.id = s.api_id WHERE s.id = $1`
	exec(invoice, f.subA, "open", "A-1", "12.5", "2026-03-02T10:00:00Z")
	exec(invoice, f.subU, "void", "A-2", "99", "2026-03-02T10:00:00Z")
	exec(invoice, f.subG, "paid", "G-1", "7", "2026-03-02T10:00:00Z")
	outlook := `INSERT INTO subscription_outlooks (subscription_id, period_start, period_end, currency, cost_so_far, projected, projected_low,
		projected_high, meters, computed_at)
		SELECT id, current_period_start, current_period_end, 'USD', $2, $2, $2, $2, $3::jsonb, '2026-03-02T20:00:00Z' FROM subscriptions WHERE id = $1`
	exec(outlook, f.subA, "3.25", `[{"meter": "units", "used": "85", "quota": "100", "quota_hard": false, "runs_out_at": null},
		{"meter": "calls", "used": "10", "quota": null, "quota_hard": false, "runs_out_at": null}]`)
	exec(outlook, f.subU, "0", `[{"meter": "units", "used": "120", "quota": "100", "quota_hard": true, "runs_out_at": "2026-03-02T15:00:00Z"},
		{"meter": "small", "used": "1", "quota": "10", "quota_hard": false, "runs_out_at": null}]`)
	exec(outlook, f.subG, "5", `[{"meter": "units", "used": "99", "quota": "100", "quota_hard": false, "runs_out_at": null}]`)
}

type providerCounts struct {
	Calls        uint64
	Units        string
	Errors       uint64
	ClientErrors uint64                          `json:"client_errors"`
	ErrorRate    string                          `json:"error_rate"`
	LatencyMS    struct{ P50, P90, P99 float64 } `json:"latency_ms"`
}

type providerAnswer struct {
	APIID    *string `json:"api_id"`
	From, To time.Time
	TimeZone string `json:"time_zone"`
	Totals   struct {
		providerCounts
		UniqueConsumers uint64 `json:"unique_consumers"`
	}
	ByDay []struct {
		Day string
		providerCounts
	} `json:"by_day"`
	TopConsumers []struct {
		SubscriptionID   string  `json:"subscription_id"`
		OrganizationName *string `json:"organization_name"`
		Calls            uint64
		Units            string
	} `json:"top_consumers"`
	TopRoutes []struct {
		Method, Route string
		providerCounts
	} `json:"top_routes"`
	ByAPI []struct {
		APIID           string `json:"api_id"`
		UniqueConsumers uint64 `json:"unique_consumers"`
		providerCounts
	} `json:"by_api"`
	Revenue map[string][]struct {
		Day      string
		PlanID   string `json:"plan_id"`
		PlanName string `json:"plan_name"`
		Invoiced string
		Accrued  string
	}
	QuotaHealth []struct {
		SubscriptionID   string `json:"subscription_id"`
		OrganizationName string `json:"organization_name"`
		Meter            string
		Used, Quota      string
		Percent          string
		State            string
		RunsOutAt        *time.Time `json:"runs_out_at"`
	} `json:"quota_health"`
}

const providerWindowQuery = "from=2026-03-01T23:00:00Z&to=2026-03-03T00:00:00Z"

func (f *providerFixture) get(t *testing.T, path, tok string) providerAnswer {
	t.Helper()
	var out providerAnswer
	f.e.must(http.StatusOK, "GET", path, tok, nil, &out)
	return out
}

func TestProviderAnalyticsOfAnAPI(t *testing.T) {
	f := newProviderFixture(t)
	got := f.get(t, "/v1/apis/"+f.apiA+"/analytics?"+providerWindowQuery, f.prov)
	if got.APIID == nil || *got.APIID != f.apiA || got.TimeZone != "UTC" || !got.From.Equal(time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC)) {
		t.Errorf("api_id %v, time_zone %s, from %s", got.APIID, got.TimeZone, got.From)
	}
	tot := got.Totals
	if tot.Calls != 4 || tot.UniqueConsumers != 2 || tot.Errors != 1 || tot.ClientErrors != 1 || tot.ErrorRate != "0.2500" || tot.Units != "4.5" {
		t.Errorf("totals = %+v; want 4 calls, 2 consumers, 1 error, 1 client error, rate 0.2500, 4.5 units", tot)
	}
	if tot.LatencyMS.P50 < 10 || tot.LatencyMS.P99 > 40 || tot.LatencyMS.P99 < tot.LatencyMS.P50 {
		t.Errorf("latency = %+v; want within the calls' 10 to 40 ms", tot.LatencyMS)
	}
	var days []string
	for _, d := range got.ByDay {
		days = append(days, fmt.Sprintf("%s %d %d %s", d.Day, d.Calls, d.Errors, d.Units))
	}
	if want := []string{"2026-03-01 1 0 1", "2026-03-02 3 1 3.5"}; !slices.Equal(days, want) {
		t.Errorf("by_day = %q; want %q", days, want)
	}
	var consumers []string
	for _, c := range got.TopConsumers {
		name := "<nil>"
		if c.OrganizationName != nil {
			name = *c.OrganizationName
		}
		consumers = append(consumers, fmt.Sprintf("%s %s %d %s", c.SubscriptionID, name, c.Calls, c.Units))
	}
	if want := []string{f.subA + " " + f.initechName + " 3 3.5", f.subU + " " + f.umbrellaName + " 1 1"}; !slices.Equal(consumers, want) {
		t.Errorf("top_consumers = %q; want %q", consumers, want)
	}
	var routes []string
	for _, r := range got.TopRoutes {
		routes = append(routes, fmt.Sprintf("%s %s %d %d %s", r.Method, r.Route, r.Calls, r.Errors, r.ErrorRate))
	}
	if want := []string{"GET /a 3 1 0.3333", "POST /b 1 0 0.0000"}; !slices.Equal(routes, want) {
		t.Errorf("top_routes = %q; want %q", routes, want)
	}
	if got.ByAPI != nil {
		t.Errorf("by_api = %+v in an API's view", got.ByAPI)
	}
	usd := got.Revenue["USD"]
	if len(got.Revenue) != 1 || len(usd) != 1 || usd[0].Day != "2026-03-02" || usd[0].PlanID != f.planA || usd[0].PlanName != "Usage acme-a" ||
		usd[0].Invoiced != "12.5" || usd[0].Accrued != "3.25" {
		t.Errorf("revenue = %+v; want USD 2026-03-02 Usage acme-a invoiced 12.5 (the void invoice left out), accrued 3.25", got.Revenue)
	}
	var health []string
	for _, h := range got.QuotaHealth {
		runs := "-"
		if h.RunsOutAt != nil {
			runs = h.RunsOutAt.Format(time.RFC3339)
		}
		health = append(health, fmt.Sprintf("%s %s %s %s/%s %s %s %s", h.SubscriptionID, h.OrganizationName, h.Meter, h.Used, h.Quota, h.Percent, h.State, runs))
	}
	want := []string{
		f.subU + " " + f.umbrellaName + " units 120/100 120 over 2026-03-02T15:00:00Z",
		f.subA + " " + f.initechName + " units 85/100 85 near -",
		f.subU + " " + f.umbrellaName + " small 1/10 10 ok -",
	}
	if !slices.Equal(health, want) {
		t.Errorf("quota_health =\n  %q\nwant\n  %q", health, want)
	}
}

// TestProviderAnalyticsOfAProvider: all of acme's APIs, each with its
// figures; globex's API and subscriber never show.
func TestProviderAnalyticsOfAProvider(t *testing.T) {
	f := newProviderFixture(t)
	got := f.get(t, "/v1/providers/"+f.acme+"/analytics?"+providerWindowQuery+"&top=1", f.prov)
	if got.Totals.Calls != 5 || got.Totals.UniqueConsumers != 3 || got.Totals.Units != "7.5" {
		t.Errorf("totals = %+v; want 5 calls, 3 consumers, 7.5 units", got.Totals)
	}
	var apis []string
	for _, a := range got.ByAPI {
		apis = append(apis, fmt.Sprintf("%s %d %d", a.APIID, a.Calls, a.UniqueConsumers))
	}
	if want := []string{f.apiA + " 4 2", f.apiB + " 1 1"}; !slices.Equal(apis, want) {
		t.Errorf("by_api = %q; want %q", apis, want)
	}
	if len(got.TopConsumers) != 1 || got.TopConsumers[0].SubscriptionID != f.subA || len(got.TopRoutes) != 1 || got.TopRoutes[0].Route != "/a" {
		t.Errorf("top=1: consumers %+v, routes %+v; want subA and GET /a", got.TopConsumers, got.TopRoutes)
	}
	for _, h := range got.QuotaHealth {
		if h.SubscriptionID == f.subG {
			t.Errorf("quota_health shows globex's subscriber: %+v", h)
		}
	}
	// An admin sees any provider's view.
	if g := f.get(t, "/v1/providers/"+f.acme+"/analytics?"+providerWindowQuery, f.admin); g.Totals.Calls != 5 {
		t.Errorf("admin's view: %d calls; want 5", g.Totals.Calls)
	}
}

// TestProviderAnalyticsZone: days cut at Tokyo's midnight (UTC+9): every
// call of API A falls on 2026-03-02 there.
func TestProviderAnalyticsZone(t *testing.T) {
	f := newProviderFixture(t)
	got := f.get(t, "/v1/apis/"+f.apiA+"/analytics?"+providerWindowQuery+"&tz=Asia/Tokyo", f.prov)
	if got.TimeZone != "Asia/Tokyo" || len(got.ByDay) != 1 || got.ByDay[0].Day != "2026-03-02" || got.ByDay[0].Calls != 4 {
		t.Errorf("time_zone %s, by_day %+v; want Asia/Tokyo, 2026-03-02 with 4 calls", got.TimeZone, got.ByDay)
	}
}

// TestProviderAnalyticsRefusals: a subscriber of the API, another provider
// and unknown ids find nothing; bad parameters are 400 problems.
func TestProviderAnalyticsRefusals(t *testing.T) {
	f := newProviderFixture(t)
	for _, c := range []struct {
		path, tok string
		want      int
		problem   string
	}{
		{"/v1/apis/" + f.apiA + "/analytics", f.buyer, 404, "not-found"},
		{"/v1/apis/" + f.apiA + "/analytics", f.other, 404, "not-found"},
		{"/v1/apis/" + f.apiA + "/analytics", f.stranger, 404, "not-found"},
		{"/v1/apis/" + f.apiG + "/analytics", f.prov, 404, "not-found"},
		{"/v1/apis/00000000-0000-4000-8000-000000000000/analytics", f.admin, 404, "not-found"},
		{"/v1/providers/" + f.acme + "/analytics", f.buyer, 404, "not-found"},
		{"/v1/providers/" + f.acme + "/analytics", f.stranger, 404, "not-found"},
		{"/v1/providers/00000000-0000-4000-8000-000000000000/analytics", f.admin, 404, "not-found"},
		{"/v1/apis/" + f.apiA + "/analytics?tz=Mars/Olympus", f.prov, 400, "invalid-parameter"},
		{"/v1/apis/" + f.apiA + "/analytics?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", f.prov, 400, "invalid-parameter"},
		{"/v1/apis/" + f.apiA + "/analytics?from=2025-01-01T00:00:00Z&to=2026-03-01T00:00:00Z", f.prov, 400, "invalid-parameter"},
		{"/v1/providers/" + f.acme + "/analytics?top=0", f.prov, 400, "invalid-parameter"},
		{"/v1/providers/" + f.acme + "/analytics?top=101", f.prov, 400, "invalid-parameter"},
		{"/v1/admin/overview", f.prov, 403, "forbidden"},
	} {
		status, b := f.e.do("GET", c.path, c.tok, nil)
		var p struct{ Type string }
		_ = json.Unmarshal(b, &p)
		if status != c.want || p.Type == "" || !endsWith(p.Type, c.problem) {
			t.Errorf("GET %s = %d %s; want %d %s", c.path, status, b, c.want, c.problem)
		}
	}
}

func endsWith(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

type overviewAnswer struct {
	Volume *struct {
		Calls24h uint64 `json:"calls_24h"`
		Calls30d uint64 `json:"calls_30d"`
		ByDay    []struct {
			Day   string
			Calls uint64
		} `json:"by_day"`
	}
	Revenue  map[string]struct{ Invoiced, Paid, Accrued string }
	Pipeline struct {
		ConsumerLag *struct {
			Group  string
			Total  int64
			Topics map[string]int64
		} `json:"consumer_lag"`
		DLQ *struct {
			RejectsLastHour uint64 `json:"rejects_last_hour"`
			EventsLastHour  uint64 `json:"events_last_hour"`
			RejectRate      string `json:"reject_rate"`
		}
		Drift *struct {
			Checked, Drifted, Healed, Unhealed int
		}
	}
	Approvals *struct {
		Pending int
		Oldest  *time.Time
	}
	Unavailable []struct{ Part, Reason string }
}

// TestAdminOverview checks each figure of the overview against the
// fixture (the service's clock is 2026-03-03 00:00 UTC).
func TestAdminOverview(t *testing.T) {
	f := newProviderFixture(t)
	ctx := t.Context()
	batch, err := f.ch.PrepareBatch(ctx, `INSERT INTO usage_rejects (received_at, reason, detail, source_topic, source_partition, source_offset, raw)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, at := range []time.Time{providerNow.Add(-30 * time.Minute), providerNow.Add(-2 * time.Hour)} {
		if err := batch.Append(at, "invalid", "", "veil.usage.raw", int32(0), int64(i), "{}"); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.Pool.Exec(ctx, `INSERT INTO usage_reconcile_runs (started_at, finished_at, report) VALUES
		('2026-03-01T00:00:00Z', '2026-03-01T00:00:01Z', '{"checked": 1}'),
		('2026-03-02T00:00:00Z', '2026-03-02T00:00:02Z', '{"checked": 4, "drifted": 2, "healed": 1, "unhealed": [{}], "meter_drift": []}')`); err != nil {
		t.Fatal(err)
	}
	var draft struct{ ID string }
	f.e.must(http.StatusCreated, "POST", "/v1/apis", f.prov, authzAPIBody("acme-draft", catalog.VisibilityPublic), &draft)
	f.e.must(http.StatusCreated, "POST", "/v1/apis/"+draft.ID+"/submit", f.prov, nil, nil)

	var got overviewAnswer
	f.e.must(http.StatusOK, "GET", "/v1/admin/overview", f.admin, nil, &got)
	if len(got.Unavailable) != 0 {
		t.Errorf("unavailable = %+v; want none", got.Unavailable)
	}
	// Volume: the last 30 days and 24 hours run up to the clock, 03-03
	// 00:00, and its call counts (today so far); 03-01 23:30 and 03-02
	// 00:00 fall before the last 24 hours (from 03-02 01:00).
	if v := got.Volume; v == nil || v.Calls30d != 8 || v.Calls24h != 6 || len(v.ByDay) != 3 || v.ByDay[0].Day != "2026-03-01" ||
		v.ByDay[0].Calls != 2 || v.ByDay[1].Calls != 5 || v.ByDay[2].Calls != 1 {
		t.Errorf("volume = %+v; want 8 calls in 30 days (03-01: 2, 03-02: 5, 03-03: 1), 6 in 24 hours", v)
	}
	usd, ok := got.Revenue["USD"]
	if !ok || len(got.Revenue) != 1 || usd.Invoiced != "19.5" || usd.Paid != "7" || usd.Accrued != "8.25" {
		t.Errorf("revenue = %+v; want USD invoiced 19.5 (void left out), paid 7, accrued 8.25", got.Revenue)
	}
	if l := got.Pipeline.ConsumerLag; l == nil || l.Group != "veil-processors" || l.Total != 7 || l.Topics["veil.usage.raw"] != 7 {
		t.Errorf("consumer_lag = %+v; want veil-processors, 7", l)
	}
	// Every fixture event was written now, after the clock's last hour
	// began; one reject is in that hour.
	if d := got.Pipeline.DLQ; d == nil || d.RejectsLastHour != 1 || d.EventsLastHour != 8 || d.RejectRate != "0.1111" {
		t.Errorf("dlq = %+v; want 1 reject, 8 events, rate 0.1111", d)
	}
	if d := got.Pipeline.Drift; d == nil || d.Checked != 4 || d.Drifted != 2 || d.Healed != 1 || d.Unhealed != 1 {
		t.Errorf("drift = %+v; want the last run's 4 checked, 2 drifted, 1 healed, 1 unhealed", d)
	}
	if a := got.Approvals; a == nil || a.Pending != 1 || a.Oldest == nil {
		t.Errorf("approvals = %+v; want 1 pending with its time", a)
	}
}

// TestAdminOverviewDegrades: with ClickHouse and Kafka failing, their
// parts are null with a reason and the rest still answers.
func TestAdminOverviewDegrades(t *testing.T) {
	ch, _, _ := testenv.ClickHouseDB(t)
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	var lags fakeLagger
	lags.err = fmt.Errorf("broker down")
	e := newTestEnvWith(t, func(cfg *httpapi.Config) {
		var err error
		if cfg.Analytics, err = analytics.New(analytics.Config{Pool: cfg.Pool, ClickHouse: ch, Logger: cfg.Logger, Kafka: &lags}); err != nil {
			t.Fatal(err)
		}
	})
	var got overviewAnswer
	e.must(http.StatusOK, "GET", "/v1/admin/overview", e.token("platform", "root", identity.RoleAdmin), nil, &got)
	var parts []string
	for _, u := range got.Unavailable {
		if u.Reason == "" {
			t.Errorf("part %s unavailable without a reason", u.Part)
		}
		parts = append(parts, u.Part)
	}
	if want := []string{"volume", "pipeline.consumer_lag", "pipeline.dlq"}; !slices.Equal(parts, want) {
		t.Errorf("unavailable = %q; want %q", parts, want)
	}
	if got.Volume != nil || got.Pipeline.ConsumerLag != nil || got.Pipeline.DLQ != nil {
		t.Errorf("failed parts not null: %+v", got)
	}
	if got.Revenue == nil || got.Approvals == nil || got.Approvals.Pending != 0 {
		t.Errorf("revenue %+v, approvals %+v; want both (empty)", got.Revenue, got.Approvals)
	}
}

// TestProviderAnalyticsWholeMinutes: a window asked to the second is read
// rounded out to whole minutes, and the answer says so: the call at 23:30:00
// counts from 23:30:30, the one at 12:00:00 up to 12:00:01.
func TestProviderAnalyticsWholeMinutes(t *testing.T) {
	f := newProviderFixture(t)
	got := f.get(t, "/v1/apis/"+f.apiA+"/analytics?from=2026-03-01T23:30:30Z&to=2026-03-02T12:00:01Z", f.prov)
	if !got.From.Equal(time.Date(2026, 3, 1, 23, 30, 0, 0, time.UTC)) || !got.To.Equal(time.Date(2026, 3, 2, 12, 1, 0, 0, time.UTC)) {
		t.Errorf("window %s to %s; want 23:30:00 to 12:01:00", got.From, got.To)
	}
	if got.Totals.Calls != 3 {
		t.Errorf("calls = %d; want 3 (23:30:00, 05:00:00, 12:00:00)", got.Totals.Calls)
	}
}
