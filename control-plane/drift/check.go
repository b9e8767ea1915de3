package drift

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
)

// Check checks, for every live subscription (trialing, active,
// past_due, suspended), that its Redis counter for the current period
// holds exactly what ClickHouse says the processors applied, and heals the
// counter, the offset watermarks, the threshold crossings and the quota
// block when not. The run is stored (see Last).
//
// What is compared: the counter's requests and units against ClickHouse's
// admitted rows (no refusal) of the period [start, end) from each
// partition up to the offset Redis's watermark for that partition says
// was applied. The watermark hash and the counter are read together, by
// one script, so they always belong to the same batch. Rows beyond a
// watermark are a batch Redis has not applied yet (processors before the
// units cap wrote both sinks at once; today's write Redis first): they
// are ignored, and the watermark is never moved forward over them. A watermark beyond what ClickHouse
// holds means ClickHouse is behind: when the figures then disagree the
// subscription is in flight and left for the next run. A watermark for a
// partition ClickHouse has no rows of since lookback is beyond it
// only when ClickHouse's whole history of that partition stops short of
// it: an idle partition is not in flight.
//
// A partition ClickHouse holds rows of and Redis has no readable
// watermark for means Redis lost it (a flush): it counts up to
// ClickHouse's highest offset there, and the heal writes that watermark,
// unless ClickHouse ingested the partition's newest row within the last
// minute (freshness), in which case it is a first batch Redis is still
// applying and the subscription is in flight. Such a subscription is
// healed only after a settle (Config.Settle), once its Redis state
// is read again and found unmoved and the figures, recomputed, still
// differ. Any other drift is healed at once by a compare-and-set against
// the state read: when the processors moved in between (a busy
// subscription), the state and ClickHouse's figures up to the new
// watermarks are read again and the heal retried, up to three attempts,
// after which the subscription is in flight.
//
// Period bounds and quotas come from Postgres, so a flushed Redis, the
// subscription record included, is healed too; where the record is there
// and names the same period, its quota wins, and where it names a later
// one, Postgres is stale and the subscription is in flight (see
// enforcement.HealUsage).
//
// When ctx has a deadline, the run checks no further chunk of
// subscriptions once fewer than 5 s are left and stores what it checked
// so far; a run always checks its first chunk. Check starts from
// the first subscription; Worker resumes where the previous
// run of its process stopped.
func (s *Checker) Check(ctx context.Context) (Report, error) {
	rep, _, err := s.check(ctx, pass{chunk: chunkSize, settle: s.settle})
	return rep, err
}

// CheckRequested is Check run because actor asked for it, audited as
// "usage.reconcile" with the run's report. The counters a run heals are in
// Redis, which no transaction of ours can hold; what it changes in
// Postgres is its stored report (usage_reconcile_runs, which Last reads),
// so the entry is written in the transaction that stores it: a requested
// run is in the audit log exactly when it is stored. Recording after that
// commit, as the HTTP layer did, could leave a stored run with no entry.
func (s *Checker) CheckRequested(ctx context.Context, actor identity.Actor) (Report, error) {
	rep, _, err := s.check(ctx, pass{chunk: chunkSize, settle: s.settle, requestedBy: &actor})
	return rep, err
}

// pass is how one run goes.
type pass struct {
	// after: the run checks the subscriptions after this id, then wraps
	// around to the first and stops at it. uuid.Nil runs from the first
	// to the last.
	after uuid.UUID
	// chunk is how many subscriptions are checked at a time (chunkSize).
	chunk int
	// settle waits between finding a lost watermark and healing
	// (Checker.settle); tests act during it.
	settle func(context.Context) error
	// beforeHeal, when set, runs before each round of compare-and-set
	// heals; tests move Redis there as the processors would.
	beforeHeal func()
	// requestedBy, when set, is who asked for the run: its audit entry is
	// stored with the report.
	requestedBy *identity.Actor
}

// check is one run. It returns, besides the report, the id to
// resume after: the last subscription checked when the deadline cut the
// run short, uuid.Nil when the run went all the way round.
func (s *Checker) check(ctx context.Context, run pass) (Report, uuid.UUID, error) {
	rep := Report{StartedAt: s.now().UTC(), Unhealed: []Unhealed{}, Drift: []Drifted{}, MeterDrift: []MeterDrifted{}}
	if s.cfg.ClickHouse == nil {
		return rep, run.after, fmt.Errorf("reconcile usage: %w", ErrNoClickHouse)
	}
	// First the ids after run.after, then, wrapped, those up to it.
	cursor, upTo, wrapped := run.after, uuid.Max, run.after == uuid.Nil
	resume, checked := uuid.Nil, false
	for {
		if checked && s.nearDeadline(ctx) {
			break
		}
		subs, err := s.loadSubscriptions(ctx, cursor, upTo, run.chunk)
		if err != nil {
			return rep, run.after, err
		}
		if len(subs) > 0 {
			if err := s.checkChunk(ctx, subs, run, &rep); err != nil {
				return rep, run.after, err
			}
			cursor, checked = subs[len(subs)-1].id, true
			resume = cursor
		}
		if len(subs) < run.chunk {
			if wrapped {
				resume = uuid.Nil // all the way round
				break
			}
			cursor, upTo, wrapped = uuid.Nil, run.after, true
		}
	}
	rep.FinishedAt = s.now().UTC()
	s.cfg.Metrics.GetOrCreateGauge(`veil_controlplane_usage_drift_subscriptions`, nil).Set(float64(rep.Drifted))
	s.cfg.Metrics.GetOrCreateGauge(`veil_controlplane_usage_in_flight_subscriptions`, nil).Set(float64(rep.InFlight))
	s.cfg.Metrics.GetOrCreateGauge(`veil_controlplane_usage_meter_drift_meters`, nil).Set(float64(len(rep.MeterDrift)))
	s.cfg.Metrics.GetOrCreateGauge(`veil_controlplane_usage_meter_sets_full`, nil).Set(float64(rep.setsFull))
	if err := s.storeReport(ctx, rep, run.requestedBy); err != nil {
		return rep, run.after, err
	}
	return rep, resume, nil
}

// nearDeadline reports whether ctx ends within deadlineMargin.
func (s *Checker) nearDeadline(ctx context.Context) bool {
	deadline, ok := ctx.Deadline()
	return ok && deadline.Sub(s.now()) < deadlineMargin
}

// settle waits Config.Settle (DefaultSettle when zero).
func (s *Checker) settle(ctx context.Context) error {
	d := s.cfg.Settle
	if d <= 0 {
		d = DefaultSettle
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("settle usage drift: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

// checkChunk compares a chunk of subscriptions with ClickHouse and
// heals the drifted ones. Only a failure that concerns the whole run is
// returned; a failed heal is reported.
func (s *Checker) checkChunk(ctx context.Context, subs []subscription, run pass, rep *Report) error {
	cases, err := s.assess(ctx, subs)
	if err != nil {
		return err
	}
	var direct, lost []assessment
	for _, c := range cases {
		rep.Checked++
		switch c.f.verdict {
		case verdictInFlight:
			rep.InFlight++
		case verdictDiffers:
			direct = append(direct, c)
		case verdictLost:
			lost = append(lost, c)
		}
	}
	if err := s.checkMeters(ctx, cases, rep); err != nil {
		return err
	}
	if err := s.healDirect(ctx, direct, run.beforeHeal, rep); err != nil {
		return err
	}
	return s.healLost(ctx, lost, run.settle, rep)
}

// assess reads the subscriptions' Redis state and compares it with
// ClickHouse: one Redis round trip and one ClickHouse query for them all,
// and one more query when idle partitions need looking up.
func (s *Checker) assess(ctx context.Context, subs []subscription) ([]assessment, error) {
	states, err := s.readRedis(ctx, subs)
	if err != nil {
		return nil, err
	}
	bounds := make([]map[int32]int64, len(subs))
	for i, st := range states {
		bounds[i], _ = st.Readable()
	}
	parts, err := s.clickhouseFigures(ctx, subs, bounds)
	if err != nil {
		return nil, err
	}
	now := s.now()
	cases := make([]assessment, len(subs))
	for i, sub := range subs {
		cases[i] = assessment{sub: sub, red: states[i], f: compare(states[i], parts[sub.id.String()], now)}
	}
	if err := s.resolveIdle(ctx, cases); err != nil {
		return nil, err
	}
	return cases, nil
}

// reassess reads and compares again the subscriptions of cases.
func (s *Checker) reassess(ctx context.Context, cases []assessment) ([]assessment, error) {
	subs := make([]subscription, len(cases))
	for i, c := range cases {
		subs[i] = c.sub
	}
	return s.assess(ctx, subs)
}

// healDirect heals drift found with every watermark readable, by
// compare-and-set; those whose Redis state moved meanwhile are read and
// compared again and retried, up to healAttempts in all.
func (s *Checker) healDirect(ctx context.Context, cases []assessment, beforeHeal func(), rep *Report) error {
	for attempt := 1; len(cases) > 0; attempt++ {
		if beforeHeal != nil {
			beforeHeal()
		}
		moved := s.healAndReport(ctx, cases, rep)
		if len(moved) == 0 {
			return nil
		}
		if attempt == healAttempts {
			rep.InFlight += len(moved)
			return nil
		}
		again, err := s.reassess(ctx, moved)
		if err != nil {
			return err
		}
		cases = cases[:0]
		for _, c := range again {
			switch c.f.verdict {
			case verdictInFlight, verdictLost:
				// A lost watermark now: the next run settles it.
				rep.InFlight++
			case verdictDiffers:
				cases = append(cases, c)
			}
		}
	}
	return nil
}

// healLost heals drift found with a watermark lost or unreadable,
// after the settle, and only if nothing moved during it.
func (s *Checker) healLost(ctx context.Context, cases []assessment, settle func(context.Context) error, rep *Report) error {
	if len(cases) == 0 {
		return nil
	}
	// Give a batch Redis is applying time to land, then look again: the
	// first look may have caught ClickHouse holding a batch whose Redis
	// script had not run yet.
	if err := settle(ctx); err != nil {
		return err
	}
	again, err := s.reassess(ctx, cases)
	if err != nil {
		return err
	}
	var heal []assessment
	for i, c := range again {
		switch {
		case !c.red.Equal(cases[i].red):
			rep.InFlight++ // the processors moved: what was compared is stale
		case c.f.verdict == verdictInSync:
		case c.f.verdict == verdictInFlight, !maps.Equal(c.f.target, cases[i].f.target):
			// ClickHouse moved on a partition Redis has no watermark for:
			// a batch Redis has yet to apply.
			rep.InFlight++
		default:
			heal = append(heal, c)
		}
	}
	rep.InFlight += len(s.healAndReport(ctx, heal, rep))
	return nil
}
