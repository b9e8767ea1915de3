package portal

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// TestPortalProviderChartJSON: the analytics page's charts carry their
// numbers as JSON that parses back to what was computed, days at midnight
// in the viewer's zone, with a plan name that tries to close the script
// escaped inside it.
func TestPortalProviderChartJSON(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	p := &portal{cfg: Config{Logger: slog.New(slog.DiscardHandler)}, pages: pages}
	var v providerViewJSON
	if err := json.Unmarshal([]byte(`{"time_zone":"Europe/Paris","totals":{"calls":30,"error_rate":"0.1000"},
		"by_day":[{"day":"2026-03-01","calls":10,"errors":1,"latency_ms":{"p50":12.5}},{"day":"2026-03-02","calls":20,"errors":2}],
		"revenue":{"EUR":[{"day":"2026-03-02","plan_id":"p1","plan_name":"Pro </script><script>alert(1)</script>","invoiced":"12.34","accrued":"0"}]}}`), &v); err != nil {
		t.Fatal(err)
	}
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	charts, revenue := analyticsCharts(v, paris)
	w := httptest.NewRecorder()
	p.render(w, httptest.NewRequest(http.MethodGet, "/provider/analytics", nil), http.StatusOK, "provider_analytics",
		view{Data: analyticsPage{Days: 30, Zone: "Europe/Paris", View: &v, Charts: charts, Revenue: revenue, Windows: analyticsWindows}})
	body := w.Body.String()
	scripts := regexp.MustCompile(`<script type="application/json" id="([a-z0-9-]+)">(.*?)</script>`).FindAllStringSubmatch(body, -1)
	if len(scripts) != 4 {
		t.Fatalf("%d chart scripts; want calls, errors, latency and revenue: %s", len(scripts), body)
	}
	got := map[string]chartData{}
	for _, s := range scripts {
		var c chartData
		if err := json.Unmarshal([]byte(s[2]), &c); err != nil {
			t.Fatalf("chart %s: %v in %s", s[1], err, s[2])
		}
		got[s[1]] = c
		if !strings.Contains(body, `data-chart="`+s[1]+`"`) {
			t.Errorf("no figure for chart %s", s[1])
		}
	}
	day1 := time.Date(2026, 3, 1, 0, 0, 0, 0, paris).Unix()
	calls := got["chart-calls"]
	if len(calls.X) != 2 || calls.X[0] != day1 || calls.X[1] != day1+86400 || calls.Series[0].Values[1] != 20 || !calls.Bars {
		t.Errorf("calls chart = %+v; want two Paris days with 10 and 20 calls, as bars", calls)
	}
	if lat := got["chart-latency"]; lat.Series[0].Label != "p50" || lat.Series[0].Values[0] != 12.5 {
		t.Errorf("latency chart = %+v", lat)
	}
	rev := got["chart-revenue-0"]
	if len(rev.Series) != 1 || rev.Series[0].Label != "Pro </script><script>alert(1)</script>" || rev.Series[0].Values[0] != 12.34 {
		t.Errorf("revenue chart = %+v", rev)
	}
	if strings.Contains(body, "<script>alert(1)") {
		t.Errorf("the plan name closes the data script")
	}
	if !strings.Contains(body, "12.34 EUR") || !decimal.RequireFromString("12.34").Equal(revenue[0].Invoiced) {
		t.Errorf("the revenue table lacks 12.34 EUR")
	}
}
