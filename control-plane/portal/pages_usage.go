package portal

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// analyticsView is GET /v1/subscriptions/{id}/analytics's answer.
type analyticsView struct {
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	TimeZone string    `json:"time_zone"`
	Currency string    `json:"currency"`
	Totals   struct {
		usageFigures
		Cost *string `json:"cost"`
	} `json:"totals"`
	ByDay []struct {
		Day string `json:"day"`
		usageFigures
		Cost *string `json:"cost"`
	} `json:"by_day"`
	ByRoute []struct {
		Method string `json:"method"`
		Route  string `json:"route"`
		usageFigures
	} `json:"by_route"`
	ByRouteTruncated bool `json:"by_route_truncated"`
	ByStatusClass    []struct {
		StatusClass string `json:"status_class"`
		Calls       int64  `json:"calls"`
	} `json:"by_status_class"`
}

// usageFigures are the figures of a total, a day or a route.
type usageFigures struct {
	Calls        int64  `json:"calls"`
	Units        string `json:"units"`
	Errors       int64  `json:"errors"`
	ClientErrors int64  `json:"client_errors"`
	ErrorRate    string `json:"error_rate"`
	Latency      struct {
		P50 float64 `json:"p50"`
		P90 float64 `json:"p90"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
}

// previewView is GET /v1/subscriptions/{id}/preview's answer.
type previewView struct {
	Currency    string    `json:"currency"`
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
	Total       string    `json:"total"`
	AsOf        time.Time `json:"as_of"`
	CostSoFar   string    `json:"cost_so_far"`
	Projection  struct {
		Total      string `json:"total"`
		TotalLow   string `json:"total_low"`
		TotalHigh  string `json:"total_high"`
		Confidence string `json:"confidence"`
		Method     string `json:"method"`
	} `json:"projection"`
	Meters []struct {
		Meter         string     `json:"meter"`
		Used          string     `json:"used"`
		Projected     string     `json:"projected"`
		ProjectedLow  string     `json:"projected_low"`
		ProjectedHigh string     `json:"projected_high"`
		Quota         *string    `json:"quota"`
		QuotaHard     bool       `json:"quota_hard"`
		RunsOutAt     *time.Time `json:"runs_out_at"`
	} `json:"meters"`
}

// usageChart is the JSON portal.js draws a chart from (see portal.js).
type usageChart struct {
	X      []int64       `json:"x"`
	Series []usageSeries `json:"series"`
	Y      string        `json:"y"`
	Bars   bool          `json:"bars"`
}

type usageSeries struct {
	Label  string    `json:"label"`
	Values []float64 `json:"values"`
}

// usageShare is a row of a table drawn as bars: a label and its part of the
// whole.
type usageShare struct {
	Label   string
	Calls   int64
	Percent int64
}

// usageWindows are the windows the usage page offers, in days.
var usageWindows = []int{7, 30, 90}

type usagePage struct {
	Sub  subscriptionView
	API  apiView
	Keys []keyView
	// Days, TZ and KeyID are the window, zone and key asked for.
	Days    int
	Windows []int
	TZ      string
	KeyID   string

	// Analytics is nil when the API could not answer it (AnalyticsProblem
	// says why).
	Analytics        *analyticsView
	AnalyticsProblem *Problem
	Calls, Units     usageChart
	Cost             *usageChart
	Classes, Latency usageChart
	Routes, Statuses []usageShare

	Preview        *previewView
	PreviewProblem *Problem
}

// usagePage shows a subscription's usage over 7, 30 or 90 days in a time
// zone, narrowed to one key if asked: calls, units, cost, status classes
// and latency by day, the routes and status classes, and the preview of
// the period with its projection and the date its quota runs out.
func (p *portal) usagePage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.noSuch(w, r, "subscription")
		return
	}
	out := usagePage{Windows: usageWindows, Days: 30, TZ: "UTC"}
	q := r.URL.Query()
	if d, err := strconv.Atoi(q.Get("days")); err == nil {
		for _, ok := range usageWindows {
			if d == ok {
				out.Days = d
			}
		}
	}
	if tz := q.Get("tz"); tz != "" && len(tz) <= 64 {
		out.TZ = tz
	}
	if k := q.Get("key_id"); uuidPattern.MatchString(k) {
		out.KeyID = k
	}
	if err := p.api.get(r, "/v1/subscriptions/"+id, nil, &out.Sub); err != nil {
		p.failAPI(w, r, err)
		return
	}
	if err := p.api.get(r, "/v1/apis/"+out.Sub.APIID, nil, &out.API); err != nil {
		p.failAPI(w, r, err)
		return
	}
	var keys page[keyView]
	if err := p.api.get(r, "/v1/subscriptions/"+id+"/keys", url.Values{"limit": {"100"}}, &keys); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Keys = keys.Data

	// The window ends now and starts at the local midnight Days-1 days
	// ago, so that it shows Days dates. A zone Go does not know is sent
	// as it is: the API says what is wrong with it, next to the field.
	loc, err := time.LoadLocation(out.TZ)
	if err != nil {
		loc = time.UTC
	}
	now := time.Now()
	y, m, d := now.In(loc).Date()
	from := time.Date(y, m, d-(out.Days-1), 0, 0, 0, 0, loc)
	aq := url.Values{"from": {from.UTC().Format(time.RFC3339)}, "to": {now.UTC().Format(time.RFC3339)}, "tz": {out.TZ}}
	if out.KeyID != "" {
		aq.Set("key_id", out.KeyID)
	}
	var a analyticsView
	status := http.StatusOK
	var shown *Problem
	if err := p.api.get(r, "/v1/subscriptions/"+id+"/analytics", aq, &a); err != nil {
		pr, ok := asProblem(err)
		if !ok || pr.Status == http.StatusNotFound || pr.Status == http.StatusForbidden {
			p.failAPI(w, r, err)
			return
		}
		out.AnalyticsProblem = pr
		if pr.Status/100 == 4 {
			// The form's own values were refused: the page says so
			// next to them, as a form's refusal.
			status, shown = pr.Status, parameterProblem(pr)
		}
	} else {
		out.Analytics = &a
		out.chartsOf(a, loc)
	}

	var pv previewView
	if err := p.api.get(r, "/v1/subscriptions/"+id+"/preview", nil, &pv); err != nil {
		pr, ok := asProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		out.PreviewProblem = pr
	} else {
		out.Preview = &pv
	}
	p.render(w, r, status, "usage", view{Title: "Usage of " + out.API.Name, Nav: "subscriptions", Data: out, Problem: shown})
}

// usageParameters are the usage form's fields, by the API's names.
var usageParameters = map[string]bool{"tz": true, "key_id": true, "from": true, "to": true}

// parameterProblem is pr with a field error for the query parameter an
// invalid-parameter problem names in its detail ("invalid parameter: tz
// … is not a time zone"): the analytics routes answer no field errors,
// and the form shows the refusal next to its field.
func parameterProblem(pr *Problem) *Problem {
	rest, ok := strings.CutPrefix(pr.Detail, "invalid parameter: ")
	if len(pr.Errors) > 0 || !ok {
		return pr
	}
	name, detail, _ := strings.Cut(rest, " ")
	if !usageParameters[name] {
		return pr
	}
	out := *pr
	out.Errors = []FieldError{{Field: name, Detail: detail}}
	return &out
}

// chartsOf fills the page's charts and bar tables from a.
func (out *usagePage) chartsOf(a analyticsView, loc *time.Location) {
	n := len(a.ByDay)
	x := make([]int64, n)
	calls, units := make([]float64, n), make([]float64, n)
	ok, c4, c5 := make([]float64, n), make([]float64, n), make([]float64, n)
	p50, p90, p99 := make([]float64, n), make([]float64, n), make([]float64, n)
	var cost []float64
	if a.Totals.Cost != nil {
		cost = make([]float64, n)
	}
	for i, d := range a.ByDay {
		if t, err := time.ParseInLocation(time.DateOnly, d.Day, loc); err == nil {
			x[i] = t.Unix()
		}
		calls[i], units[i] = float64(d.Calls), decimalFloat(d.Units)
		ok[i], c4[i], c5[i] = float64(d.Calls-d.Errors-d.ClientErrors), float64(d.ClientErrors), float64(d.Errors)
		p50[i], p90[i], p99[i] = d.Latency.P50, d.Latency.P90, d.Latency.P99
		if cost != nil && d.Cost != nil {
			cost[i] = decimalFloat(*d.Cost)
		}
	}
	out.Calls = usageChart{X: x, Series: []usageSeries{{Label: "Calls", Values: calls}}, Y: "calls", Bars: true}
	out.Units = usageChart{X: x, Series: []usageSeries{{Label: "Units", Values: units}}, Y: "units", Bars: true}
	if cost != nil {
		out.Cost = &usageChart{X: x, Series: []usageSeries{{Label: "Cost (" + a.Currency + ")", Values: cost}}, Y: a.Currency, Bars: true}
	}
	out.Classes = usageChart{X: x, Series: []usageSeries{
		{Label: "Answered (1xx–3xx)", Values: ok}, {Label: "Client errors (4xx)", Values: c4}, {Label: "Server errors (5xx)", Values: c5},
	}, Y: "calls"}
	out.Latency = usageChart{X: x, Series: []usageSeries{
		{Label: "p50", Values: p50}, {Label: "p90", Values: p90}, {Label: "p99", Values: p99},
	}, Y: "ms"}
	for _, rt := range a.ByRoute {
		out.Routes = append(out.Routes, usageShare{Label: rt.Method + " " + rt.Route, Calls: rt.Calls, Percent: sharePercent(rt.Calls, a.Totals.Calls)})
	}
	for _, c := range a.ByStatusClass {
		out.Statuses = append(out.Statuses, usageShare{Label: c.StatusClass, Calls: c.Calls, Percent: sharePercent(c.Calls, a.Totals.Calls)})
	}
}

// decimalFloat is a decimal string as a float, for a chart (the tables show
// the exact string); 0 if it is none.
func decimalFloat(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return f
}

// sharePercent is part of whole, 0 to 100.
func sharePercent(part, whole int64) int64 {
	if whole <= 0 {
		return 0
	}
	return min(100, part*100/whole)
}
