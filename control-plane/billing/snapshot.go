package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/metering"
)

// Usage snapshots. Closing a period splits it into plan-version segments
// from the pricing history and counts each segment's meters (those its
// version charges) over the billable events of its window, from
// ClickHouse (metering.MeterTotalsRollupMany: the billing roll-up's whole
// hours, usage_events for the rest and for meters with a route filter;
// the same figures as usage_events alone), then stores the
// counts and how far they read (through_offsets) and closes the period in
// one transaction.
//
// Segments. A period starts with the version in force at its start; each
// history row inside it that names another version starts a new segment
// at the row's time (to the microsecond; ClickHouse keeps whole seconds,
// so an event of the change's second counts in the new segment). Status
// rows that keep the version do not split it: past_due and suspended
// time stays billable (the base fee is owed; a suspended subscription's
// calls are refused at the gateway, and refusals are never billed). Two
// statuses make time unbillable:
//   - trialing: the events before trial_ends_at are not counted (a period
//     wholly in trial is a trial period, priced at zero);
//   - canceled: the last segment ends at canceled_at, and the events after
//     it are not counted.
//
// The segments are derived from the history again whenever they are
// needed (SegmentsFor, LateUsage): history rows are never changed, so the
// derivation gives the same segments as at the close, and a segment whose
// version charges no meter (a base fee alone) still has its place.

// ErrNoSnapshot means the period has not been closed: it has no usage
// snapshot yet.
var ErrNoSnapshot = errors.New("billing period has no usage snapshot")

// segment is the part of a period one plan version was in force.
type segment struct {
	version  uuid.UUID
	from, to time.Time
	// countFrom is where the events it bills begin: from, or the trial's
	// end when later. Events of [countFrom, to) are counted; none when
	// countFrom is not before to.
	countFrom time.Time
}

// window is a segment's counting window.
func (g segment) window() (from, to time.Time) { return g.countFrom, g.to }

// metered is g as an invoice reads it: its version's terms and what it
// metered, billable from where its events are counted.
func (g segment) metered(terms metering.PlanTerms, usage map[string]decimal.Decimal) metering.Segment {
	return metering.Segment{PlanVersionID: g.version.String(), From: g.from, To: g.to, Terms: terms, Usage: usage, ChargedFrom: g.countFrom}
}

// segmentsOf splits the period [start, end) by the history (in order).
func segmentsOf(h []historyRow, start, end time.Time, trialEnds, canceledAt *time.Time) []segment {
	if canceledAt != nil && canceledAt.After(start) && canceledAt.Before(end) {
		end = *canceledAt
	}
	cur := segment{version: versionAt(h, start).version, from: start}
	var out []segment
	for _, r := range h {
		if !r.at.After(start) || !r.at.Before(end) || r.version == cur.version {
			continue
		}
		if r.at.After(cur.from) {
			cur.to = r.at
			out = append(out, cur)
		}
		cur = segment{version: r.version, from: r.at}
	}
	cur.to = end
	out = append(out, cur)
	for i := range out {
		out[i].countFrom = out[i].from
		if trialEnds != nil && trialEnds.After(out[i].from) {
			out[i].countFrom = *trialEnds
		}
	}
	return out
}

// closing is a period being closed: its segments, their meters and
// counts, and the offsets read.
type closing struct {
	row      db.PeriodListDueRow
	segments []segment
	counts   []map[string]decimal.Decimal
	offsets  map[int32]int64
}

// maxClosePerRun bounds the periods one ClosePeriods lists; the next run
// closes the rest.
const maxClosePerRun = 200000

// ClosePeriods closes the open periods whose end plus the grace has passed
// by now (at most maxClosePerRun): takes each one's usage snapshot and stores it with the period
// closed, in one transaction per batch. It returns how many it closed. A
// period closed by a concurrent run is left as that run closed it.
// Without ClickHouse nothing is closed (and that is no error).
//
// Counting a batch (ClickHouse) overlaps with storing the batch before
// (Postgres): the two take about as long, so a close of many periods
// takes about half the time.
func (s *Service) ClosePeriods(ctx context.Context, now time.Time) (int, error) {
	if s.cfg.ClickHouse == nil {
		// No usage to count: periods stay open (Config.ClickHouse), and
		// the steps of a billing cycle that do not need usage go on.
		return 0, nil
	}
	now = now.UTC()
	g, gctx := errgroup.WithContext(ctx)
	counted := make(chan []closing, 1)
	g.Go(func() error {
		defer close(counted)
		return s.countDue(gctx, now.Add(-s.cfg.Grace), counted)
	})
	closed := 0
	g.Go(func() error {
		for cs := range counted {
			n, err := s.storeSnapshots(gctx, cs, now)
			closed += n
			if err != nil {
				return err
			}
		}
		return nil
	})
	err := g.Wait()
	return closed, err
}

// countDue lists the open periods due by cutoff (at most maxClosePerRun:
// the next run goes on) and hands them to out in batches, each counted.
func (s *Service) countDue(ctx context.Context, cutoff time.Time, out chan<- []closing) error {
	due, err := db.New(s.pool).PeriodListDue(ctx, db.PeriodListDueParams{Cutoff: cutoff, RowLimit: maxClosePerRun})
	if err != nil {
		return fmt.Errorf("list due billing periods: %w", err)
	}
	for len(due) > 0 {
		n := min(len(due), periodBatch)
		cs, err := s.count(ctx, due[:n])
		if err != nil {
			return err
		}
		select {
		case out <- cs:
		case <-ctx.Done():
			return ctx.Err()
		}
		due = due[n:]
	}
	return nil
}

// count splits the due periods into segments and counts their meters and
// offsets in ClickHouse.
func (s *Service) count(ctx context.Context, due []db.PeriodListDueRow) ([]closing, error) {
	subIDs := make([]uuid.UUID, len(due))
	for i, d := range due {
		subIDs[i] = d.SubscriptionID
	}
	hist, err := s.histories(ctx, subIDs)
	if err != nil {
		return nil, err
	}
	cs := make([]closing, len(due))
	var versions []uuid.UUID
	for i, d := range due {
		cs[i] = closing{row: d, segments: segmentsOf(hist[d.SubscriptionID], d.PeriodStart.UTC(), d.PeriodEnd.UTC(), d.TrialEndsAt, d.CanceledAt)}
		for _, g := range cs[i].segments {
			versions = append(versions, g.version)
		}
	}
	meters, err := s.versionMeters(ctx, versions)
	if err != nil {
		return nil, err
	}
	var (
		windows []metering.MeterWindow
		offs    = make([]metering.OffsetWindow, len(cs))
	)
	for i, c := range cs {
		for _, g := range c.segments {
			from, to := g.window()
			windows = append(windows, metering.MeterWindow{Subject: c.row.SubscriptionID.String(), Meters: meters[g.version], From: from, To: to})
		}
		offs[i] = metering.OffsetWindow{Subject: c.row.SubscriptionID.String(), From: c.row.PeriodStart, To: c.row.PeriodEnd}
	}
	var (
		totals  []map[string]decimal.Decimal
		through []map[int32]int64
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		if s.cfg.SnapshotBaseTable {
			totals, err = metering.MeterTotalsMany(gctx, s.cfg.ClickHouse, windows)
		} else {
			totals, err = metering.MeterTotalsRollupMany(gctx, s.cfg.ClickHouse, windows)
		}
		return err
	})
	g.Go(func() (err error) {
		through, err = metering.ThroughOffsets(gctx, s.cfg.ClickHouse, offs)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("count period usage: %w", err)
	}
	k := 0
	for i := range cs {
		cs[i].counts = totals[k : k+len(cs[i].segments)]
		cs[i].offsets = through[i]
		k += len(cs[i].segments)
	}
	return cs, nil
}

// versionMeters reads the meters each version charges.
func (s *Service) versionMeters(ctx context.Context, versions []uuid.UUID) (map[uuid.UUID][]metering.Meter, error) {
	rows, err := db.New(s.pool).MeterListByVersions(ctx, versions)
	if err != nil {
		return nil, fmt.Errorf("read charged meters: %w", err)
	}
	out := make(map[uuid.UUID][]metering.Meter)
	for _, r := range rows {
		out[r.PlanVersionID] = append(out[r.PlanVersionID], metering.Meter{
			Slug: r.Slug, Name: r.Name, Aggregation: metering.Aggregation(r.Aggregation), Field: r.Field,
			Filter: metering.Filter{Methods: r.FilterMethods, Routes: r.FilterRoutes, StatusClasses: r.FilterStatusClasses},
		})
	}
	return out, nil
}

// storeSnapshots closes the periods still open among cs and stores their
// snapshots, in one transaction; it returns how many it closed.
func (s *Service) storeSnapshots(ctx context.Context, cs []closing, now time.Time) (int, error) {
	ids := make([]uuid.UUID, len(cs))
	byID := make(map[uuid.UUID]*closing, len(cs))
	for i := range cs {
		ids[i] = cs[i].row.ID
		byID[ids[i]] = &cs[i]
	}
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		closed, err := q.PeriodCloseBatch(ctx, db.PeriodCloseBatchParams{ClosedAt: now, Ids: ids})
		if err != nil {
			return fmt.Errorf("close billing periods: %w", err)
		}
		if len(closed) == 0 {
			return nil
		}
		sp := db.SnapshotInsertBatchParams{PeriodIds: closed}
		for _, id := range closed {
			raw, err := offsetsJSON(byID[id].offsets)
			if err != nil {
				return err
			}
			sp.TakenAts = append(sp.TakenAts, now)
			sp.Offsets = append(sp.Offsets, raw)
		}
		snaps, err := q.SnapshotInsertBatch(ctx, sp)
		if err != nil {
			return fmt.Errorf("store usage snapshots: %w", err)
		}
		var lp db.SnapshotLineInsertBatchParams
		for _, sn := range snaps {
			c := byID[sn.BillingPeriodID]
			for j, g := range c.segments {
				for _, slug := range slices.Sorted(maps.Keys(c.counts[j])) {
					lp.SnapshotIds = append(lp.SnapshotIds, sn.ID)
					lp.PlanVersionIds = append(lp.PlanVersionIds, g.version)
					lp.SegmentStarts = append(lp.SegmentStarts, g.from)
					lp.SegmentEnds = append(lp.SegmentEnds, g.to)
					lp.MeterSlugs = append(lp.MeterSlugs, slug)
					lp.Quantities = append(lp.Quantities, c.counts[j][slug])
				}
			}
		}
		if len(lp.SnapshotIds) > 0 {
			if err := q.SnapshotLineInsertBatch(ctx, lp); err != nil {
				return fmt.Errorf("store usage snapshot lines: %w", err)
			}
		}
		n = len(closed)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// offsetsJSON is through_offsets: {"<partition>": offset}.
func offsetsJSON(offsets map[int32]int64) ([]byte, error) {
	m := make(map[string]int64, len(offsets))
	for p, o := range offsets {
		m[strconv.Itoa(int(p))] = o
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode through offsets: %w", err)
	}
	return raw, nil
}

// SegmentsFor returns the plan-version segments of a closed period, in
// order, each with its version's terms and the usage its snapshot
// counted (every meter the version charges), and the snapshot's id: what
// an invoice of the period prices and cites. ErrNoSnapshot when the
// period is still open.
func (s *Service) SegmentsFor(ctx context.Context, periodID uuid.UUID) ([]metering.Segment, uuid.UUID, error) {
	read, err := s.segmentsMany(ctx, []uuid.UUID{periodID})
	if err != nil {
		return nil, uuid.Nil, err
	}
	pb, ok := read[periodID]
	if !ok {
		return nil, uuid.Nil, ErrPeriodNotFound
	}
	if pb.err != nil {
		return nil, uuid.Nil, pb.err
	}
	return pb.segs, pb.snapshot, nil
}
