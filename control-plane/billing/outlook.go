package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/metering"
)

// Outlook is where a subscription's current period stands and is
// heading: the preview's cost so far and, rated by the same engine, the
// period's total were its meters to reach their projections
// (metering.Project) by its end.
type Outlook struct {
	SubscriptionID               uuid.UUID
	Currency                     string
	PeriodStart, PeriodEnd, AsOf time.Time
	// CostSoFar is the preview invoice's total (after discounts and tax,
	// before credits).
	CostSoFar decimal.Decimal
	// Projected, ProjectedLow and ProjectedHigh are the period's total at
	// its end: the point and the ends of the range.
	Projected, ProjectedLow, ProjectedHigh decimal.Decimal
	// Method is the projection's (metering.ForecastMethod), or
	// metering.ForecastMethodEarly when a meter had less than a day of
	// history: its range is then not calibrated.
	Method string
	Meters []MeterOutlook
}

// MeterOutlook is one meter of the current plan version: what the period
// used and where it is heading.
type MeterOutlook struct {
	Meter         string           `json:"meter"`
	Used          decimal.Decimal  `json:"used"`
	Projected     decimal.Decimal  `json:"projected"`
	ProjectedLow  decimal.Decimal  `json:"projected_low"`
	ProjectedHigh decimal.Decimal  `json:"projected_high"`
	Quota         *decimal.Decimal `json:"quota"`
	QuotaHard     bool             `json:"quota_hard"`
	// RunsOutAt is when the quota is reached at the current pace (the
	// projection's point): as of now when it is reached already, nil when
	// not within the period or without a quota.
	RunsOutAt *time.Time `json:"runs_out_at"`
}

// Outlook computes subID's outlook now. It checks no actor: the outlooks
// job, budgets and analytics call it; the API's callers go through
// PreviewOutlook.
func (s *Service) Outlook(ctx context.Context, subID uuid.UUID) (Outlook, error) {
	_, o, err := s.previewOutlook(ctx, nil, subID)
	return o, err
}

// PreviewOutlook is Preview together with the outlook of the same
// usage, counted once: what GET /v1/subscriptions/{id}/preview answers.
func (s *Service) PreviewOutlook(ctx context.Context, actor identity.Actor, subID uuid.UUID) (Invoice, Outlook, error) {
	return s.previewOutlook(ctx, &actor, subID)
}

// previewOutlook computes the preview and the meters' histories at
// once, then the outlook; actor nil checks no one.
func (s *Service) previewOutlook(ctx context.Context, actor *identity.Actor, subID uuid.UUID) (Invoice, Outlook, error) {
	q := db.New(s.pool)
	sub, err := q.PreviewSubscription(ctx, subID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Invoice{}, Outlook{}, ErrSubscriptionNotFound
	}
	if err != nil {
		return Invoice{}, Outlook{}, fmt.Errorf("read subscription: %w", err)
	}
	if actor != nil && !(parties{sub.IssuerID, sub.CustomerID}).canSee(*actor) {
		return Invoice{}, Outlook{}, ErrSubscriptionNotFound
	}
	if s.cfg.ClickHouse == nil {
		return Invoice{}, Outlook{}, ErrPreviewUnavailable
	}
	now := s.now().UTC()
	var (
		p preview
		h meterHistory
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		p, err = s.buildPreview(gctx, q, sub, now)
		return err
	})
	g.Go(func() (err error) {
		h, err = s.meterHistory(gctx, sub, now)
		return err
	})
	if err := g.Wait(); err != nil {
		return Invoice{}, Outlook{}, err
	}
	o, err := outlookOf(sub, p, h, now)
	if err != nil {
		return Invoice{}, Outlook{}, err
	}
	return previewInvoice(sub, p.out, now), o, nil
}

// meterHistory is what projecting the meters of the version in force now
// reads: its meters, their charges (quotas) and their daily usage.
type meterHistory struct {
	version uuid.UUID
	meters  []metering.Meter
	charges []pricing.Charge
	series  map[string][]decimal.Decimal
	// end is where the history's last day ends; skip how many of its
	// first days are before the subscription began.
	end  time.Time
	skip int
}

// meterHistory reads sub's meter history at now.
func (s *Service) meterHistory(ctx context.Context, sub db.PreviewSubscriptionRow, now time.Time) (meterHistory, error) {
	hist, err := s.histories(ctx, []uuid.UUID{sub.ID})
	if err != nil {
		return meterHistory{}, err
	}
	h := meterHistory{version: versionAt(hist[sub.ID], now).version, end: now.Truncate(time.Hour)}
	meters, err := s.versionMeters(ctx, []uuid.UUID{h.version})
	if err != nil {
		return meterHistory{}, err
	}
	if h.meters = meters[h.version]; len(h.meters) == 0 {
		return h, nil
	}
	charges, err := pricing.ChargesForVersions(ctx, s.pool, []uuid.UUID{h.version})
	if err != nil {
		return meterHistory{}, fmt.Errorf("read charges: %w", err)
	}
	h.charges = charges[h.version]
	began := sub.CurrentPeriodStart.UTC()
	if rows := hist[sub.ID]; len(rows) > 0 && rows[0].at.Before(began) {
		began = rows[0].at
	}
	h.series, err = metering.MeterSeries(ctx, s.cfg.ClickHouse, sub.ID.String(), h.meters, began, h.end, metering.ForecastDays)
	if err != nil {
		return meterHistory{}, fmt.Errorf("read usage history: %w", err)
	}
	// Only whole days since the subscription began are history: a day
	// before it would read as a day without usage.
	for d := metering.ForecastDays; d > 0 && h.end.Add(-time.Duration(d)*24*time.Hour).Before(began); d-- {
		h.skip++
	}
	return h, nil
}

// outlookOf projects each meter of the version in force now and rates
// the period with the projections.
func outlookOf(sub db.PreviewSubscriptionRow, p preview, h meterHistory, now time.Time) (Outlook, error) {
	o := Outlook{
		SubscriptionID: sub.ID, Currency: p.out.Currency, PeriodStart: p.in.PeriodStart, PeriodEnd: p.in.PeriodEnd, AsOf: now,
		CostSoFar: p.out.Total, Projected: p.out.Total, ProjectedLow: p.out.Total, ProjectedHigh: p.out.Total,
		Method: metering.ForecastMethod,
	}
	at := segmentAt(p.in.Segments, now)
	if p.in.Segments[at].PlanVersionID != h.version.String() {
		// The history was read for another version (a change at this
		// very instant): the next computation has them agree.
		return Outlook{}, fmt.Errorf("project usage: version %s in force, history of %s", p.in.Segments[at].PlanVersionID, h.version)
	}
	o.Meters, o.Method = projectMeters(sub, p.in, h, now)
	if len(o.Meters) == 0 {
		return o, nil
	}
	totals := [3]*decimal.Decimal{&o.Projected, &o.ProjectedLow, &o.ProjectedHigh}
	for k, total := range totals {
		out, err := metering.BuildInvoice(withProjection(p.in, at, o.Meters, k))
		if err != nil {
			return Outlook{}, fmt.Errorf("rate projection: %w", err)
		}
		*total = out.Total
	}
	return o, nil
}

// projectMeters projects each meter of h from its daily history; method
// is metering.ForecastMethodEarly when any meter's projection is.
func projectMeters(sub db.PreviewSubscriptionRow, in metering.InvoiceInput, h meterHistory, now time.Time) (_ []MeterOutlook, method string) {
	method = metering.ForecastMethod
	countedFrom := in.PeriodStart
	if sub.TrialEndsAt != nil && sub.TrialEndsAt.After(countedFrom) {
		countedFrom = sub.TrialEndsAt.UTC()
	}
	out := make([]MeterOutlook, len(h.meters))
	for i, m := range h.meters {
		fi := metering.ForecastInput{
			Aggregation: m.Aggregation, Scale: m.Scale(), Used: usedOf(in.Segments, m),
			HistoryEnd: h.end, CountedFrom: countedFrom, AsOf: now, End: in.PeriodEnd,
		}
		if vs := h.series[m.Slug]; len(vs) > h.skip {
			fi.History = make([]float64, 0, len(vs)-h.skip)
			for _, v := range vs[h.skip:] {
				f, _ := v.Float64()
				fi.History = append(fi.History, f)
			}
		}
		mo := MeterOutlook{Meter: m.Slug, Used: fi.Used}
		for _, c := range h.charges {
			if c.Meter == m.Slug {
				fi.Quota, fi.QuotaHard, mo.Quota, mo.QuotaHard = c.Quota, c.QuotaHard, c.Quota, c.QuotaHard
			}
		}
		pr := metering.Project(fi)
		mo.Projected, mo.ProjectedLow, mo.ProjectedHigh, mo.RunsOutAt = pr.Projected, pr.Low, pr.High, pr.RunsOutAt
		if pr.Method == metering.ForecastMethodEarly {
			method = pr.Method
		}
		out[i] = mo
	}
	return out, method
}

// usedOf is what the period's segments metered of m: the sum of the
// segments' values (the invoice rates each on top of those before it),
// or the largest for a max meter.
func usedOf(segs []metering.Segment, m metering.Meter) decimal.Decimal {
	used := decimal.Zero
	for _, g := range segs {
		v := g.Usage[m.Slug]
		if m.Aggregation == metering.AggMax {
			used = decimal.Max(used, v)
		} else {
			used = used.Add(v)
		}
	}
	return used
}

// segmentAt is the index of the segment in force at now: the usage still
// to come is billed by it (a change scheduled later in the period is not
// foreseen).
func segmentAt(segs []metering.Segment, now time.Time) int {
	for i, g := range segs {
		if !now.Before(g.From) && now.Before(g.To) {
			return i
		}
	}
	return len(segs) - 1
}

// withProjection is in with segment at's usage raised by what each meter
// is projected to add (k: 0 the point, 1 the low end, 2 the high end).
func withProjection(in metering.InvoiceInput, at int, ms []MeterOutlook, k int) metering.InvoiceInput {
	segs := make([]metering.Segment, len(in.Segments))
	copy(segs, in.Segments)
	usage := make(map[string]decimal.Decimal, len(segs[at].Usage))
	for slug, v := range segs[at].Usage {
		usage[slug] = v
	}
	for _, m := range ms {
		target := [3]decimal.Decimal{m.Projected, m.ProjectedLow, m.ProjectedHigh}[k]
		if extra := target.Sub(m.Used); extra.IsPositive() {
			usage[m.Meter] = usage[m.Meter].Add(extra)
		}
	}
	segs[at].Usage = usage
	in.Segments = segs
	return in
}
