package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/usage"
)

// Late usage. Events can reach ClickHouse after their period was closed
// and invoiced (a gateway's spool drained late, a processor's backlog).
// LateUsage recounts the invoiced periods that ended inside the late
// window, segment by segment with the same windows as the close, and
// records what the recount finds beyond the snapshot and the late usage
// already recorded as a late_usage adjustment of that segment and meter,
// billed on the next invoice; the finalized invoice is never edited. The
// comparison is of totals, so a run twice records nothing the second
// time, and a meter's max or unique count, which are not sums, gets the
// difference of its totals. Events later than the window are not billed.

// LateWindow is how long after its end a period's late events are still
// billed: the window ingest and the processors accept events in, by
// default (usage.DefaultLateWindow; one owner, so the two cannot drift).
// The control plane has no setting of its own: where VEIL_LATE_WINDOW
// widens the window of ingest and the processors, events older than this
// are still stored but not billed.
const LateWindow = usage.DefaultLateWindow

// latePeriod is an invoiced period being recounted.
type latePeriod struct {
	row      db.PeriodListLateRow
	segments []segment
	// snap is the snapshot's quantity per segment (by its start, in
	// microseconds) and meter.
	snap map[int64]map[string]decimal.Decimal
	// first is the index of its first segment's window in the recount.
	first int
}

// LateUsage recounts the invoiced periods that ended inside the late
// window before now and records the usage found since their snapshot as
// late_usage adjustments. It returns how many adjustments it recorded.
func (s *Service) LateUsage(ctx context.Context, now time.Time) (int, error) {
	if s.cfg.ClickHouse == nil {
		return 0, nil // nothing to recount from (Config.ClickHouse)
	}
	now = now.UTC()
	var (
		afterSub   uuid.UUID
		afterStart time.Time
		recorded   int
	)
	for {
		rows, err := db.New(s.pool).PeriodListLate(ctx, db.PeriodListLateParams{
			Since: now.Add(-LateWindow), AfterSub: afterSub, AfterStart: afterStart, RowLimit: periodBatch,
		})
		if err != nil {
			return recorded, fmt.Errorf("list invoiced periods: %w", err)
		}
		if len(rows) == 0 {
			return recorded, nil
		}
		afterSub, afterStart = rows[len(rows)-1].SubscriptionID, rows[len(rows)-1].PeriodStart
		n, err := s.recount(ctx, rows, now)
		recorded += n
		if err != nil {
			return recorded, err
		}
		if len(rows) < periodBatch {
			return recorded, nil
		}
	}
}

// recount recounts one batch of invoiced periods.
func (s *Service) recount(ctx context.Context, rows []db.PeriodListLateRow, now time.Time) (int, error) {
	ps, windows, err := s.lateWindows(ctx, rows)
	if err != nil {
		return 0, err
	}
	totals, err := metering.MeterTotalsMany(ctx, s.cfg.ClickHouse, windows)
	if err != nil {
		return 0, fmt.Errorf("recount late usage: %w", err)
	}
	recorded := 0
	for _, p := range ps {
		var found bool
		for j, g := range p.segments {
			for slug, q := range totals[p.first+j] {
				if q.GreaterThan(p.snap[g.from.UnixMicro()][slug]) {
					found = true
				}
			}
		}
		if !found {
			continue
		}
		n, err := s.recordLate(ctx, p, totals[p.first:p.first+len(p.segments)], now)
		recorded += n
		if err != nil {
			return recorded, err
		}
	}
	return recorded, nil
}

// lateWindows reads the periods' snapshots and segments and returns the
// windows to recount, those of each period's segments in order.
func (s *Service) lateWindows(ctx context.Context, rows []db.PeriodListLateRow) ([]latePeriod, []metering.MeterWindow, error) {
	ids := make([]uuid.UUID, len(rows))
	subs := make([]uuid.UUID, len(rows))
	for i, r := range rows {
		ids[i], subs[i] = r.ID, r.SubscriptionID
	}
	lines, err := db.New(s.pool).SnapshotLineListByPeriods(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("read usage snapshots: %w", err)
	}
	snaps := make(map[uuid.UUID]map[int64]map[string]decimal.Decimal, len(rows))
	for _, l := range lines {
		bySeg := snaps[l.BillingPeriodID]
		if bySeg == nil {
			bySeg = map[int64]map[string]decimal.Decimal{}
			snaps[l.BillingPeriodID] = bySeg
		}
		k := l.SegmentStart.UnixMicro()
		if bySeg[k] == nil {
			bySeg[k] = map[string]decimal.Decimal{}
		}
		bySeg[k][l.MeterSlug] = l.Quantity
	}
	hist, err := s.histories(ctx, subs)
	if err != nil {
		return nil, nil, err
	}
	ps := make([]latePeriod, len(rows))
	var versions []uuid.UUID
	for i, r := range rows {
		ps[i] = latePeriod{row: r, snap: snaps[r.ID],
			segments: segmentsOf(hist[r.SubscriptionID], r.PeriodStart.UTC(), r.PeriodEnd.UTC(), r.TrialEndsAt, r.CanceledAt)}
		for _, g := range ps[i].segments {
			versions = append(versions, g.version)
		}
	}
	meters, err := s.versionMeters(ctx, versions)
	if err != nil {
		return nil, nil, err
	}
	var windows []metering.MeterWindow
	for i := range ps {
		ps[i].first = len(windows)
		for _, g := range ps[i].segments {
			from, to := g.window()
			windows = append(windows, metering.MeterWindow{Subject: ps[i].row.SubscriptionID.String(), Meters: meters[g.version], From: from, To: to})
		}
	}
	return ps, windows, nil
}

// recordLate records, under the period's row lock, the late usage of p
// that totals (per segment) show beyond its snapshot and the late usage
// already recorded.
func (s *Service) recordLate(ctx context.Context, p latePeriod, totals []map[string]decimal.Decimal, now time.Time) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		if _, err := q.PeriodLockForLate(ctx, p.row.ID); err != nil {
			return fmt.Errorf("lock billing period: %w", err)
		}
		sums, err := q.LateUsageSums(ctx, &p.row.ID)
		if err != nil {
			return fmt.Errorf("read recorded late usage: %w", err)
		}
		recorded := map[int64]map[string]decimal.Decimal{}
		for _, r := range sums {
			k := r.SegmentStart.UnixMicro()
			if recorded[k] == nil {
				recorded[k] = map[string]decimal.Decimal{}
			}
			recorded[k][r.MeterSlug] = r.Quantity
		}
		for j, g := range p.segments {
			k := g.from.UnixMicro()
			for slug, total := range totals[j] {
				late := total.Sub(p.snap[k][slug]).Sub(recorded[k][slug])
				if !late.IsPositive() {
					continue
				}
				from, to := g.window()
				err := q.LateUsageInsert(ctx, db.LateUsageInsertParams{
					SubscriptionID: p.row.SubscriptionID, BillingPeriodID: &p.row.ID, MeterSlug: &slug, Quantity: &late,
					Reason: fmt.Sprintf("late usage of %s from %s to %s, counted after the period was invoiced",
						slug, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339)),
					Actor: identity.System.Subject, PlanVersionID: &g.version, SegmentStart: &g.from, CreatedAt: now,
				})
				if err != nil {
					return fmt.Errorf("record late usage: %w", err)
				}
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
