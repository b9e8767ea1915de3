package portal

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/shopspring/decimal"
)

// adminOverview is GET /v1/admin/overview's answer: each part null when
// its store did not answer, and named in Unavailable.
type adminOverview struct {
	AsOf   time.Time `json:"as_of"`
	Volume *struct {
		Calls24h uint64 `json:"calls_24h"`
		Calls30d uint64 `json:"calls_30d"`
		ByDay    []struct {
			Day   string `json:"day"`
			Calls uint64 `json:"calls"`
		} `json:"by_day"`
	} `json:"volume"`
	Revenue  map[string]adminRevenue `json:"revenue"`
	Pipeline struct {
		ConsumerLag *struct {
			Group   string           `json:"group"`
			State   string           `json:"state"`
			Members int              `json:"members"`
			Total   int64            `json:"total"`
			Topics  map[string]int64 `json:"topics"`
		} `json:"consumer_lag"`
		DLQ *struct {
			RejectsLastHour uint64 `json:"rejects_last_hour"`
			EventsLastHour  uint64 `json:"events_last_hour"`
			RejectRate      string `json:"reject_rate"`
		} `json:"dlq"`
		Drift *struct {
			FinishedAt time.Time `json:"finished_at"`
			Checked    int       `json:"checked"`
			InFlight   int       `json:"in_flight"`
			Drifted    int       `json:"drifted"`
			Healed     int       `json:"healed"`
			Unhealed   int       `json:"unhealed"`
			MeterDrift int       `json:"meter_drift"`
		} `json:"drift"`
	} `json:"pipeline"`
	Approvals *struct {
		Pending int        `json:"pending"`
		Oldest  *time.Time `json:"oldest"`
	} `json:"approvals"`
	Unavailable []struct {
		Part   string `json:"part"`
		Reason string `json:"reason"`
	} `json:"unavailable"`
}

type adminRevenue struct {
	Invoiced decimal.Decimal `json:"invoiced"`
	Paid     decimal.Decimal `json:"paid"`
	Accrued  decimal.Decimal `json:"accrued"`
}

// adminNamed is one currency's revenue, or one topic's lag, in order.
type adminNamed[T any] struct {
	Name  string
	Value T
}

type adminPipelinePage struct {
	O       adminOverview
	Revenue []adminNamed[adminRevenue]
	// RevenueKnown: the revenue part answered (it may hold no currency).
	RevenueKnown bool
	Topics       []adminNamed[int64]
	// RejectPercent is the DLQ's reject rate in percent, or "".
	RejectPercent string
	// OldestWait is how long the oldest pending request has waited.
	OldestWait string
	Chart      *adminChart
}

func (p *portal) adminPipeline(w http.ResponseWriter, r *http.Request) {
	var out adminPipelinePage
	if err := p.api.get(r, "/v1/admin/overview", nil, &out.O); err != nil {
		p.failAPI(w, r, err)
		return
	}
	o := out.O
	out.RevenueKnown = o.Revenue != nil
	for _, c := range slices.Sorted(maps.Keys(o.Revenue)) {
		out.Revenue = append(out.Revenue, adminNamed[adminRevenue]{c, o.Revenue[c]})
	}
	if l := o.Pipeline.ConsumerLag; l != nil {
		for _, t := range slices.Sorted(maps.Keys(l.Topics)) {
			out.Topics = append(out.Topics, adminNamed[int64]{t, l.Topics[t]})
		}
	}
	if d := o.Pipeline.DLQ; d != nil {
		if rate, err := decimal.NewFromString(d.RejectRate); err == nil {
			out.RejectPercent = rate.Mul(decimal.NewFromInt(100)).StringFixed(2) + "%"
		}
	}
	if a := o.Approvals; a != nil && a.Oldest != nil {
		out.OldestWait = adminDuration(o.AsOf.Sub(*a.Oldest))
	}
	if v := o.Volume; v != nil && len(v.ByDay) > 0 {
		c := &adminChart{ID: "chart-volume", Title: "Calls per day, last 30 days (UTC)", Y: "calls", Bars: true,
			Series: []adminChartSeries{{Label: "Calls"}}}
		for _, d := range v.ByDay {
			day, err := time.Parse(time.DateOnly, d.Day)
			if err != nil {
				continue
			}
			c.X = append(c.X, day.Unix())
			c.Series[0].Values = append(c.Series[0].Values, float64(d.Calls))
		}
		out.Chart = c
	}
	p.render(w, r, http.StatusOK, "admin_pipeline", view{Title: "Pipeline", Nav: "pipeline", Data: out})
}

// Day is a chart point's day, for its data table.
func (c adminChart) Day(i int) string { return time.Unix(c.X[i], 0).UTC().Format(time.DateOnly) }

// Count prints a chart value as a whole number.
func (c adminChart) Count(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
