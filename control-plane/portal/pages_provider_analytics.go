package portal

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/shopspring/decimal"
)

func (p *portal) providerAnalyticsRoutes(r chi.Router) {
	r.Get("/analytics", p.analyticsPage)
}

// countsView is what a group of calls amounts to (analytics.Counts).
type countsView struct {
	Calls        uint64          `json:"calls"`
	Units        decimal.Decimal `json:"units"`
	Errors       uint64          `json:"errors"`
	ClientErrors uint64          `json:"client_errors"`
	ErrorRate    string          `json:"error_rate"`
	LatencyMS    struct {
		P50 float64 `json:"p50"`
		P90 float64 `json:"p90"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
}

// ErrorPercent is the error rate as a percentage, 2 decimals.
func (c countsView) ErrorPercent() string {
	d, err := decimal.NewFromString(c.ErrorRate)
	if err != nil {
		return c.ErrorRate
	}
	return d.Mul(decimal.NewFromInt(100)).StringFixed(2) + "%"
}

// providerViewJSON is the provider analytics' answer (analytics.ProviderView).
type providerViewJSON struct {
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	TimeZone string    `json:"time_zone"`
	Totals   struct {
		countsView
		UniqueConsumers uint64 `json:"unique_consumers"`
	} `json:"totals"`
	ByDay []struct {
		Day string `json:"day"`
		countsView
	} `json:"by_day"`
	TopConsumers []topConsumer `json:"top_consumers"`
	TopRoutes    []struct {
		Method string `json:"method"`
		Route  string `json:"route"`
		countsView
	} `json:"top_routes"`
	ByAPI []struct {
		APIID           string `json:"api_id"`
		Name            string `json:"name"`
		UniqueConsumers uint64 `json:"unique_consumers"`
		countsView
	} `json:"by_api"`
	Revenue map[string][]struct {
		Day      string          `json:"day"`
		PlanID   string          `json:"plan_id"`
		PlanName string          `json:"plan_name"`
		Invoiced decimal.Decimal `json:"invoiced"`
		Accrued  decimal.Decimal `json:"accrued"`
	} `json:"revenue"`
	QuotaHealth []quotaHealthView `json:"quota_health"`
}

// topConsumer is a subscription among the busiest.
type topConsumer struct {
	SubscriptionID   string          `json:"subscription_id"`
	OrganizationName *string         `json:"organization_name"`
	Calls            uint64          `json:"calls"`
	Units            decimal.Decimal `json:"units"`
}

// Linkable says whether the consumer is a subscription with a page (the
// gateway's refusals of unknown keys count under no subscription).
func (t topConsumer) Linkable() bool { return uuidPattern.MatchString(t.SubscriptionID) }

// chartSeries and chartData are the JSON portal.js draws a chart from.
type chartSeries struct {
	Label  string    `json:"label"`
	Values []float64 `json:"values"`
}

type chartData struct {
	X      []int64       `json:"x"`
	Series []chartSeries `json:"series"`
	Y      string        `json:"y"`
	Bars   bool          `json:"bars"`
}

// chart is one chart of the page, with the table of its numbers.
type chart struct {
	ID, Caption string
	Data        chartData
	// Head and Rows are the table: the day, then one column a series.
	Head []string
	Rows [][]string
}

func newChart(id, caption, y string, bars bool, days []string, loc *time.Location, series []chartSeries) chart {
	c := chart{ID: id, Caption: caption, Data: chartData{X: []int64{}, Series: series, Y: y, Bars: bars}, Head: []string{"Day"}}
	for _, d := range days {
		t, err := time.ParseInLocation(time.DateOnly, d, loc)
		if err != nil {
			continue
		}
		c.Data.X = append(c.Data.X, t.Unix())
	}
	for _, s := range series {
		c.Head = append(c.Head, s.Label)
	}
	for i, d := range days {
		row := []string{d}
		for _, s := range series {
			row = append(row, strconv.FormatFloat(s.Values[i], 'f', -1, 64))
		}
		c.Rows = append(c.Rows, row)
	}
	return c
}

// revenueRow is one day and plan of revenue, in one currency.
type revenueRow struct {
	Day, Plan, Currency string
	Invoiced, Accrued   decimal.Decimal
}

type analyticsPage struct {
	Days    int
	Zone    string
	APIID   string
	APIs    []ownAPI
	View    *providerViewJSON
	Charts  []chart
	Revenue []revenueRow
	// Unavailable says why there are no figures.
	Unavailable string
	Windows     []int
}

// analyticsWindows are the window selector's choices, in days.
var analyticsWindows = []int{7, 30, 90}

func (p *portal) analyticsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	out := analyticsPage{Days: 30, Zone: strings.TrimSpace(q.Get("tz")), Windows: analyticsWindows}
	if n, err := strconv.Atoi(q.Get("days")); err == nil && slices.Contains(analyticsWindows, n) {
		out.Days = n
	}
	if out.Zone == "" {
		out.Zone = "UTC"
	}
	apis, err := p.ownAPIs(r)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.APIs = apis
	path := ""
	if id := q.Get("api"); uuidPattern.MatchString(id) {
		out.APIID, path = id, "/v1/apis/"+id+"/analytics"
	} else {
		org, err := p.orgID(r)
		if err != nil {
			p.failAPI(w, r, err)
			return
		}
		path = "/v1/providers/" + org + "/analytics"
	}
	// The window starts at midnight in the zone, days-1 days ago; a zone
	// this server cannot load is the API's to refuse, by name.
	loc, err := time.LoadLocation(out.Zone)
	if err != nil {
		loc = time.UTC
	}
	y, m, d := time.Now().In(loc).Date()
	from := time.Date(y, m, d-(out.Days-1), 0, 0, 0, 0, loc)
	aq := url.Values{"tz": {out.Zone}, "from": {from.UTC().Format(time.RFC3339)}, "top": {"10"}}
	var v providerViewJSON
	status := http.StatusOK
	var shown *Problem
	if err := p.api.get(r, path, aq, &v); err != nil {
		pr, ok := asProblem(err)
		switch {
		case ok && (pr.Status == http.StatusNotFound || pr.Status == http.StatusForbidden):
			p.failAPI(w, r, err)
			return
		case ok && pr.Status < 500:
			// A bad zone: shown next to its field (the API names the
			// parameter in its detail: "invalid parameter: tz must be …").
			status, shown = pr.Status, pr
			if _, after, ok := strings.Cut(pr.Detail, ": tz "); ok && len(pr.Errors) == 0 {
				pr.Errors = []FieldError{{Field: "tz", Detail: after}}
			}
		default:
			out.Unavailable = problemText(err)
		}
	} else {
		out.View = &v
		out.Charts, out.Revenue = analyticsCharts(v, loc)
	}
	p.render(w, r, status, "provider_analytics", view{Title: "Analytics", Nav: "analytics", Data: out, Problem: shown})
}

// analyticsCharts turns the view into its charts (calls, errors, latency,
// revenue a currency) and the revenue's table.
func analyticsCharts(v providerViewJSON, loc *time.Location) ([]chart, []revenueRow) {
	var days []string
	calls, errs, clientErrs := chartSeries{Label: "Calls"}, chartSeries{Label: "Errors (5xx)"}, chartSeries{Label: "Client errors (4xx)"}
	p50, p90, p99 := chartSeries{Label: "p50"}, chartSeries{Label: "p90"}, chartSeries{Label: "p99"}
	for _, d := range v.ByDay {
		days = append(days, d.Day)
		calls.Values = append(calls.Values, float64(d.Calls))
		errs.Values = append(errs.Values, float64(d.Errors))
		clientErrs.Values = append(clientErrs.Values, float64(d.ClientErrors))
		p50.Values = append(p50.Values, d.LatencyMS.P50)
		p90.Values = append(p90.Values, d.LatencyMS.P90)
		p99.Values = append(p99.Values, d.LatencyMS.P99)
	}
	charts := []chart{
		newChart("chart-calls", "Calls by day", "calls", true, days, loc, []chartSeries{calls}),
		newChart("chart-errors", "Errors by day", "calls", false, days, loc, []chartSeries{errs, clientErrs}),
		newChart("chart-latency", "Latency percentiles by day (ms)", "ms", false, days, loc, []chartSeries{p50, p90, p99}),
	}
	var rows []revenueRow
	currencies := make([]string, 0, len(v.Revenue))
	for cur := range v.Revenue {
		currencies = append(currencies, cur)
	}
	slices.Sort(currencies)
	for i, cur := range currencies {
		// One series a plan, over the days any plan has revenue.
		var rdays []string
		plans := map[string]int{}
		var series []chartSeries
		for _, rd := range v.Revenue[cur] {
			if !slices.Contains(rdays, rd.Day) {
				rdays = append(rdays, rd.Day)
			}
			if _, ok := plans[rd.PlanID]; !ok {
				plans[rd.PlanID] = len(series)
				series = append(series, chartSeries{Label: rd.PlanName})
			}
			rows = append(rows, revenueRow{Day: rd.Day, Plan: rd.PlanName, Currency: cur, Invoiced: rd.Invoiced, Accrued: rd.Accrued})
		}
		slices.Sort(rdays)
		for j := range series {
			series[j].Values = make([]float64, len(rdays))
		}
		for _, rd := range v.Revenue[cur] {
			k := slices.Index(rdays, rd.Day)
			f, _ := rd.Invoiced.Float64()
			series[plans[rd.PlanID]].Values[k] += f
		}
		charts = append(charts, newChart("chart-revenue-"+strconv.Itoa(i), "Invoiced revenue by day and plan ("+cur+")", cur, true, rdays, loc, series))
	}
	return charts, rows
}
