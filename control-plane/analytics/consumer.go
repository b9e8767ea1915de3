package analytics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/metering"
)

// ErrSubscriptionNotFound: the subscription of a consumer view is gone.
var ErrSubscriptionNotFound = errors.New("subscription not found")

// Scope is what a consumer view is about; the caller has checked that the
// actor may see it.
type Scope struct {
	SubscriptionID uuid.UUID
	// KeyID restricts the view to one key (the key view, or the
	// subscription view's key_id filter).
	KeyID *uuid.UUID
	// WithCost prices the days (the subscription view); the key view
	// answers cost null, as a key's share of a graduated or volume price
	// is not defined.
	WithCost bool
}

// Latency is a group's latency quantiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// Counts is what a group of calls amounts to. Errors are status class 5
// (upstream failures), client errors class 4 (the gateway's refusals
// included); ErrorRate is errors per call, 4 decimals.
type Counts struct {
	Calls        uint64          `json:"calls"`
	Units        decimal.Decimal `json:"units"`
	Errors       uint64          `json:"errors"`
	ClientErrors uint64          `json:"client_errors"`
	ErrorRate    string          `json:"error_rate"`
	LatencyMS    Latency         `json:"latency_ms"`
}

// Totals are the window's counts and cost (null without a price).
type Totals struct {
	Counts
	Cost *decimal.Decimal `json:"cost"`
}

// Day is one day of the caller's time zone.
type Day struct {
	Day string `json:"day"`
	Counts
	Cost *decimal.Decimal `json:"cost"`
}

// Route is one method and route template.
type Route struct {
	Method string `json:"method"`
	Route  string `json:"route"`
	Counts
}

// StatusClass counts the calls of one class, "2xx" and so on.
type StatusClass struct {
	StatusClass string `json:"status_class"`
	Calls       uint64 `json:"calls"`
}

// ConsumerView answers GET /v1/subscriptions/{id}/analytics and GET
// /v1/keys/{id}/analytics.
type ConsumerView struct {
	SubscriptionID uuid.UUID  `json:"subscription_id"`
	KeyID          *uuid.UUID `json:"key_id,omitempty"`
	From           time.Time  `json:"from"`
	To             time.Time  `json:"to"`
	TimeZone       string     `json:"time_zone"`
	Currency       string     `json:"currency"`
	Totals         Totals     `json:"totals"`
	// ByDay has every day of the window, those without calls included.
	ByDay []Day `json:"by_day"`
	// ByRoute: the busiest first, at most metering.MaxAnalyticsRoutes;
	// ByRouteTruncated says there were more.
	ByRoute          []Route       `json:"by_route"`
	ByRouteTruncated bool          `json:"by_route_truncated"`
	ByStatusClass    []StatusClass `json:"by_status_class"`
}

// Consumer reads the view of sc over w: usage from ClickHouse's roll-ups in
// one query and, for the subscription view, the cost by day from billing,
// both at once.
func (s *Service) Consumer(ctx context.Context, sc Scope, w Window) (ConsumerView, error) {
	if s.ch == nil {
		return ConsumerView{}, ErrUnavailable
	}
	starts := w.DayStarts()
	q := metering.AnalyticsQuery{Subject: sc.SubscriptionID.String(), From: w.From, To: w.To, DayStarts: starts}
	if sc.KeyID != nil {
		q.KeyID = sc.KeyID.String()
	}
	var (
		usage    metering.Analytics
		currency string
		costs    map[string]decimal.Decimal
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		usage, err = metering.NewReader(s.ch).Analytics(gctx, q)
		return err
	})
	g.Go(func() (err error) {
		currency, costs, err = s.costs(gctx, sc, w)
		return err
	})
	if err := g.Wait(); err != nil {
		return ConsumerView{}, err
	}
	out := ConsumerView{SubscriptionID: sc.SubscriptionID, KeyID: sc.KeyID, From: w.From, To: w.To, TimeZone: w.Zone, Currency: currency,
		Totals: Totals{Counts: counts(usage.Total)}, ByRouteTruncated: usage.RoutesTruncated,
		ByRoute: make([]Route, 0, len(usage.Routes)), ByStatusClass: make([]StatusClass, 0, len(usage.StatusClasses))}
	var total *decimal.Decimal
	if costs != nil {
		zero := decimal.Zero
		total = &zero
	}
	for i, label := range w.Days(starts) {
		d := Day{Day: label, Counts: counts(usage.Days[i])}
		if costs != nil {
			c, sum := costs[label], total.Add(costs[label])
			d.Cost, total = &c, &sum
		}
		out.ByDay = append(out.ByDay, d)
	}
	out.Totals.Cost = total
	for _, r := range usage.Routes {
		out.ByRoute = append(out.ByRoute, Route{Method: r.Method, Route: r.Route, Counts: counts(r.Stats)})
	}
	for _, c := range usage.StatusClasses {
		out.ByStatusClass = append(out.ByStatusClass, StatusClass{StatusClass: strconv.Itoa(int(c.Class)) + "xx", Calls: c.Calls})
	}
	return out, nil
}

// costs prices sc's days when it asks for cost and billing is wired
// (costs nil otherwise), and says the currency either way: the
// subscription's plan's.
func (s *Service) costs(ctx context.Context, sc Scope, w Window) (string, map[string]decimal.Decimal, error) {
	if !sc.WithCost || s.billing == nil {
		var cur string
		err := s.pool.QueryRow(ctx, `SELECT pv.currency FROM subscriptions s JOIN plan_versions pv ON pv.id = s.plan_version_id WHERE s.id = $1`,
			sc.SubscriptionID).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", nil, ErrSubscriptionNotFound
		}
		if err != nil {
			return "", nil, fmt.Errorf("read subscription currency: %w", err)
		}
		return cur, nil, nil
	}
	cur, days, err := s.billing.CostByDay(ctx, sc.SubscriptionID, w.From, w.To, w.Loc)
	if err != nil {
		return "", nil, fmt.Errorf("price usage by day: %w", err)
	}
	out := make(map[string]decimal.Decimal, len(days))
	for _, d := range days {
		out[d.Day] = out[d.Day].Add(d.Cost)
	}
	return cur, out, nil
}

// counts turns a group's figures into the answer's.
func counts(st metering.Stats) Counts {
	return Counts{Calls: st.Calls, Units: st.Units, Errors: st.ServerErrors, ClientErrors: st.ClientErrors,
		ErrorRate: rate(st.ServerErrors, st.Calls), LatencyMS: Latency{P50: st.P50, P90: st.P90, P99: st.P99}}
}

// rate is n/of rounded half away from zero to 4 decimals, "0.0000"
// without calls.
func rate(n, of uint64) string {
	if of == 0 {
		return "0.0000"
	}
	return decimal.NewFromUint64(n).DivRound(decimal.NewFromUint64(of), 4).StringFixed(4)
}
