package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
)

// Billing periods. A subscription's periods are the ones the gateway
// counts into: starting at its start (its first pricing-history row, the
// current_period_start it was created with) and stepped by
// enforcement.PeriodEndAnchored from its billing anchor, the rule the
// period roll of the subscriptions service uses (a Jan 31 subscription's
// periods end on Feb 28, Mar 31, Apr 30, ...), with the interval of the
// plan version in force at each period's start (a monthly plan changed
// to a yearly one renews yearly from its next period on, on the same
// anchor). Periods that start before the anchor are stepped by
// enforcement.PeriodEndUnanchored, the rule the roll used before anchors:
// a subscription that existed then is anchored at the start of the
// period it was in (migration 00018), and its earlier periods, counted by
// the gateway as they were rolled, are recorded the same. The
// subscription's current period is authoritative: a step that would run
// past its start stops there, so the recorded periods always meet the
// period the gateway counts.
//
// A period is recorded once it has ended (EnsurePeriods), closed with its
// usage snapshot once its end plus the grace has passed (ClosePeriods),
// and marked invoiced by the invoice that bills it.
//
// A canceled subscription's last period is the one it was canceled in;
// nothing is recorded after it. A subscription that took over the period
// of a canceled one (carried_from) starts its periods at its own start and
// ends its first at the period it took over, whose anchor it keeps: the
// base fee of each is billed by its own invoice, as they are two
// subscriptions.

// periodBatch is how many subscriptions or periods one round of a job
// reads and writes.
const periodBatch = 5000

// maxPeriodsPerRun bounds the periods one subscription gets in one run,
// so a subscription whose periods were never recorded (or a bad clock)
// cannot make one run unbounded; the next run goes on.
const maxPeriodsPerRun = 120

// historyRow is one row of a subscription's pricing history.
type historyRow struct {
	version  uuid.UUID
	status   string
	at       time.Time
	interval string
}

// periodSub is what recording a subscription's periods reads of it.
type periodSub struct {
	id               uuid.UUID
	status           string
	curStart, curEnd time.Time
	trialEnds        *time.Time
	// lastEnd is the end of the last period recorded; zero when none.
	lastEnd time.Time
	// firstAt is the subscription's start: its first history row.
	firstAt time.Time
	// anchor is its billing anchor (subscriptions.billing_anchor).
	anchor  time.Time
	history []historyRow
}

// newPeriod is a period to record.
type newPeriod struct {
	enforcement.Period
	trial bool
}

// versionAt returns the history row in force at t: the last one at or
// before t, or the first when t precedes them all (a period taken over
// from a canceled subscription starts before the first row).
func versionAt(h []historyRow, t time.Time) historyRow {
	if len(h) == 0 {
		return historyRow{}
	}
	at := h[0]
	for _, r := range h[1:] {
		if r.at.After(t) {
			break
		}
		at = r
	}
	return at
}

// periodEnd is the end of sub's period that starts at start, by the
// rule it was or will be rolled with: unanchored before the anchor,
// anchored from it on.
func (sub periodSub) periodEnd(start time.Time) time.Time {
	interval := versionAt(sub.history, start).interval
	if start.Before(sub.anchor) {
		return enforcement.PeriodEndUnanchored(start, interval)
	}
	return enforcement.PeriodEndAnchored(start, interval, sub.anchor)
}

// endedPeriods returns sub's periods that ended at or before now and are
// not recorded yet, in order.
func endedPeriods(sub periodSub, now time.Time) []newPeriod {
	start := sub.lastEnd
	if start.IsZero() {
		start = sub.firstAt
	}
	var out []newPeriod
	for len(out) < maxPeriodsPerRun {
		var end time.Time
		switch {
		case start.Before(sub.curStart):
			end = sub.periodEnd(start)
			if end.After(sub.curStart) {
				end = sub.curStart
			}
		case start.Before(sub.curEnd):
			end = sub.curEnd
		case sub.status == "canceled":
			// Canceled subscriptions do not roll: the current period
			// was the last.
			return out
		default:
			// Ended, not rolled yet: the roll will step the same way.
			end = sub.periodEnd(start)
		}
		if end.After(now) {
			return out
		}
		out = append(out, newPeriod{
			Period: enforcement.Period{Start: start, End: end},
			// A period wholly inside the trial is priced at zero.
			trial: sub.trialEnds != nil && !sub.trialEnds.Before(end),
		})
		start = end
	}
	return out
}

// EnsurePeriods records every subscription period that has ended by now
// and is not recorded yet, and returns how many it recorded. Run twice,
// it records nothing the second time (one period per subscription and
// start).
func (s *Service) EnsurePeriods(ctx context.Context, now time.Time) (int, error) {
	now = now.UTC()
	q := db.New(s.pool)
	var (
		after    uuid.UUID
		recorded int
	)
	for {
		rows, err := q.PeriodCandidateList(ctx, db.PeriodCandidateListParams{After: after, Now: now, RowLimit: periodBatch})
		if err != nil {
			return recorded, fmt.Errorf("list subscriptions for periods: %w", err)
		}
		if len(rows) == 0 {
			return recorded, nil
		}
		after = rows[len(rows)-1].ID
		subs := make([]periodSub, len(rows))
		ids := make([]uuid.UUID, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
			subs[i] = periodSub{id: r.ID, status: r.Status, curStart: r.CurrentPeriodStart.UTC(), curEnd: r.CurrentPeriodEnd.UTC(),
				trialEnds: r.TrialEndsAt, lastEnd: r.LastEnd.UTC(), firstAt: r.FirstAt.UTC(), anchor: r.BillingAnchor.UTC()}
		}
		hist, err := s.histories(ctx, ids)
		if err != nil {
			return recorded, err
		}
		var p db.PeriodInsertBatchParams
		for _, sub := range subs {
			sub.history = hist[sub.id]
			for _, np := range endedPeriods(sub, now) {
				p.SubscriptionIds = append(p.SubscriptionIds, sub.id)
				p.Starts = append(p.Starts, np.Start)
				p.Ends = append(p.Ends, np.End)
				p.Trials = append(p.Trials, np.trial)
			}
		}
		if len(p.SubscriptionIds) > 0 {
			n, err := q.PeriodInsertBatch(ctx, p)
			if err != nil {
				return recorded, fmt.Errorf("record billing periods: %w", err)
			}
			recorded += int(n)
		}
		if len(rows) < periodBatch {
			return recorded, nil
		}
	}
}

// histories reads the pricing history of subscriptions, each in order.
func (s *Service) histories(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID][]historyRow, error) {
	rows, err := db.New(s.pool).HistoryListBySubscriptions(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("read pricing history: %w", err)
	}
	out := make(map[uuid.UUID][]historyRow, len(ids))
	for _, r := range rows {
		out[r.SubscriptionID] = append(out[r.SubscriptionID], historyRow{version: r.PlanVersionID, status: r.Status, at: r.EffectiveAt.UTC(), interval: r.Interval})
	}
	return out, nil
}
