package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/metering"
)

// DayCost is a day's usage charge: the invoice's meter lines only
// (before discounts, tax and the base fee), as the marginal cost, what
// rating the period's usage up to the day's end adds to rating it up to
// the day's start. The days of one period sum to its usage lines. Day is
// the local date, 2006-01-02.
type DayCost struct {
	Day  string          `json:"day"`
	Cost decimal.Decimal `json:"cost"`
}

// ErrInvalidWindow: CostByDay's window is empty, too long, or has no time
// zone.
var ErrInvalidWindow = errors.New("invalid cost window")

// ErrCurrencyChange: CostByDay's window spans billing periods priced in
// different currencies (a plan change to another plan of the API); its
// days would add amounts of both under one currency.
var ErrCurrencyChange = errors.New("cost window spans a currency change")

// MaxCostDays bounds CostByDay's window.
const MaxCostDays = 400

// CostByDay returns subID's usage charge per day of loc from from to to
// (each day cut at local midnight, the first and last cut at from and to),
// in the currency of the subscription's current plan. Days after now cost
// nothing. A window reaching back into periods priced in another
// currency is refused with ErrCurrencyChange, naming where the change
// lies, rather than adding amounts of two currencies. It checks no actor:
// callers check who may see the subscription.
func (s *Service) CostByDay(ctx context.Context, subID uuid.UUID, from, to time.Time, loc *time.Location) (currency string, days []DayCost, err error) {
	if loc == nil || !to.After(from) || to.Sub(from) > MaxCostDays*24*time.Hour {
		return "", nil, fmt.Errorf("%w: [%s, %s)", ErrInvalidWindow, from, to)
	}
	q := db.New(s.pool)
	sub, err := q.PreviewSubscription(ctx, subID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil, ErrSubscriptionNotFound
	}
	if err != nil {
		return "", nil, fmt.Errorf("read subscription: %w", err)
	}
	if s.cfg.ClickHouse == nil {
		return "", nil, ErrPreviewUnavailable
	}
	c := &dayCoster{s: s, sub: sub, terms: map[uuid.UUID]metering.PlanTerms{}}
	h, err := s.histories(ctx, []uuid.UUID{sub.ID})
	if err != nil {
		return "", nil, err
	}
	c.hist = h[sub.ID]
	// The currency of the version in force now; a period of the window
	// priced in another is refused in addPeriod.
	cur, err := c.termsOf(ctx, versionAt(c.hist, s.now().UTC()).version)
	if err != nil {
		return "", nil, err
	}
	bounds := dayBounds(from, to, loc)
	days = make([]DayCost, len(bounds)-1)
	for i := range days {
		days[i] = DayCost{Day: bounds[i].In(loc).Format(time.DateOnly), Cost: decimal.Zero}
	}
	periods, err := c.periods(ctx, q, from, minTime(to, s.now().UTC()))
	if err != nil {
		return "", nil, err
	}
	for _, p := range periods {
		if err := c.addPeriod(ctx, p, cur.Currency.Code, bounds, days); err != nil {
			return "", nil, err
		}
	}
	return cur.Currency.Code, days, nil
}

// dayBounds are from, each local day's start in (from, to), and to. A
// day starts where its date begins, not at a midnight the clocks may skip
// (America/Santiago, America/Havana), so that no two days share a date.
func dayBounds(from, to time.Time, loc *time.Location) []time.Time {
	return append(append([]time.Time{from}, metering.DayStarts(from, to, loc)...), to)
}

// costPeriod is a billing period of the window, the part [from, to) of it
// that has happened.
type costPeriod struct {
	start, end time.Time
	trial      bool
	upTo       time.Time
}

type dayCoster struct {
	s     *Service
	sub   db.PreviewSubscriptionRow
	terms map[uuid.UUID]metering.PlanTerms
	hist  []historyRow
}

func (c *dayCoster) termsOf(ctx context.Context, version uuid.UUID) (metering.PlanTerms, error) {
	if t, ok := c.terms[version]; ok {
		return t, nil
	}
	t, err := pricing.TermsForVersion(ctx, c.s.pool, version)
	if err != nil {
		return metering.PlanTerms{}, fmt.Errorf("load terms of plan version %s: %w", version, err)
	}
	c.terms[version] = t
	return t, nil
}

// periods are the subscription's periods that overlap [from, upTo): the
// recorded ones and the current one.
func (c *dayCoster) periods(ctx context.Context, q *db.Queries, from, upTo time.Time) ([]costPeriod, error) {
	if !upTo.After(from) {
		return nil, nil
	}
	rows, err := q.PeriodsOverlapping(ctx, db.PeriodsOverlappingParams{SubscriptionID: c.sub.ID, WindowFrom: from, WindowTo: upTo})
	if err != nil {
		return nil, fmt.Errorf("read billing periods: %w", err)
	}
	var out []costPeriod
	seen := map[int64]bool{}
	for _, r := range rows {
		out = append(out, costPeriod{start: r.PeriodStart.UTC(), end: r.PeriodEnd.UTC(), trial: r.Trial, upTo: minTime(r.PeriodEnd.UTC(), upTo)})
		seen[r.PeriodStart.Unix()] = true
	}
	cs, ce := c.sub.CurrentPeriodStart.UTC(), c.sub.CurrentPeriodEnd.UTC()
	if !seen[cs.Unix()] && cs.Before(upTo) && ce.After(from) {
		trial := c.sub.TrialEndsAt != nil && !c.sub.TrialEndsAt.Before(ce)
		out = append(out, costPeriod{start: cs, end: ce, trial: trial, upTo: minTime(ce, upTo)})
	}
	return out, nil
}

// addPeriod adds to each day the usage charge its part of p adds, when
// p prices in currency.
func (c *dayCoster) addPeriod(ctx context.Context, p costPeriod, currency string, bounds []time.Time, days []DayCost) error {
	if p.trial {
		return nil
	}
	gs := segmentsOf(c.hist, p.start, p.end, c.sub.TrialEndsAt, c.sub.CanceledAt)
	for _, g := range gs {
		t, err := c.termsOf(ctx, g.version)
		if err != nil {
			return err
		}
		if t.Currency.Code != currency {
			return fmt.Errorf("%w: %s from %s, %s now; ask a window on one side of it", ErrCurrencyChange,
				t.Currency.Code, g.from.Format(time.RFC3339), currency)
		}
	}
	// The instants the period is rated at: its start, each day bound
	// inside it up to now, and now (or its end).
	at := []time.Time{p.start}
	for _, b := range bounds {
		if b.After(p.start) && b.Before(p.upTo) {
			at = append(at, b)
		}
	}
	at = append(at, p.upTo)
	charges, err := c.usageCharges(ctx, p, gs, at)
	if err != nil {
		return err
	}
	for i := 1; i < len(at); i++ {
		// The interval [at[i-1], at[i]) lies in one day of the window
		// (or before it: the period's start may precede from).
		d := dayIndex(bounds, at[i-1])
		if d < 0 {
			continue
		}
		days[d].Cost = days[d].Cost.Add(charges[i].Sub(charges[i-1]))
	}
	return nil
}

// dayIndex is the day of bounds t falls in, -1 outside them.
func dayIndex(bounds []time.Time, t time.Time) int {
	for i := 1; i < len(bounds); i++ {
		if t.Before(bounds[i]) {
			if t.Before(bounds[i-1]) {
				return -1
			}
			return i - 1
		}
	}
	return -1
}

// usageCharges is the period's usage charge (its invoice's usage lines)
// with its usage counted up to each instant of at.
func (c *dayCoster) usageCharges(ctx context.Context, p costPeriod, gs []segment, at []time.Time) ([]decimal.Decimal, error) {
	versions := make([]uuid.UUID, len(gs))
	for i, g := range gs {
		versions[i] = g.version
	}
	meters, err := c.s.versionMeters(ctx, versions)
	if err != nil {
		return nil, err
	}
	// Each segment's usage up to each instant: its window [countFrom, to)
	// cut at the instant.
	totals := make([][]map[string]decimal.Decimal, len(gs))
	for j, g := range gs {
		from, to := g.window()
		cut := make([]time.Time, len(at))
		for i, t := range at {
			cut[i] = maxTimeOf(from, minTime(to, t))
		}
		totals[j], err = metering.MeterTotalsAt(ctx, c.s.cfg.ClickHouse, c.sub.ID.String(), meters[g.version], from, cut)
		if err != nil {
			return nil, fmt.Errorf("count usage by day: %w", err)
		}
	}
	out := make([]decimal.Decimal, len(at))
	for i := range at {
		segs := make([]metering.Segment, len(gs))
		for j, g := range gs {
			terms, err := c.termsOf(ctx, g.version)
			if err != nil {
				return nil, err
			}
			segs[j] = g.metered(terms, totals[j][i])
		}
		inv, err := metering.BuildInvoice(metering.InvoiceInput{
			Currency: segs[0].Terms.Currency, PeriodStart: p.start, PeriodEnd: gs[len(gs)-1].to, Segments: segs, CreditAvailable: decimal.Zero,
		})
		if err != nil {
			return nil, fmt.Errorf("rate usage by day: %w", err)
		}
		out[i] = decimal.Zero
		for _, l := range inv.Lines {
			if l.Kind == metering.LineUsage {
				out[i] = out[i].Add(l.Amount)
			}
		}
	}
	return out, nil
}

func maxTimeOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
