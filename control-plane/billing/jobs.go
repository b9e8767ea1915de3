package billing

import (
	"context"
	"errors"
	"time"

	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/internal/periodic"
)

// JobSchedule says how often billing's periodic job runs (default 1m);
// it runs once when the job client starts, too.
type JobSchedule struct {
	Cycle time.Duration
}

// CycleArgs is one run of the billing cycle.
type CycleArgs struct{}

// Kind implements river.JobArgs.
func (CycleArgs) Kind() string { return "billing_cycle" }

// cycleTimeout bounds a run below the control plane's rescue of stuck
// jobs. Every step works in transactions of an item or of a set of
// items (an issuer's invoices of a batch, batch.go), and the constraints
// make a repeated item a no-op (one period per
// subscription and start, one snapshot and one invoice per period, one
// number per finalization), so a run cut short, killed or run twice loses
// and doubles nothing: the next run carries on.
const cycleTimeout = 50 * time.Second

// batch is how many items a step takes per query.
const batch = 500

// RegisterJobs adds billing's worker to w and returns its periodic job.
// A run records the periods that ended, closes those past the grace with
// their usage snapshot, recounts invoiced periods for late usage, builds
// a draft per closed period, recomputes the drafts, finalizes those whose
// review time (Config.Review) has passed, and marks open invoices past
// their due date overdue.
func (s *Service) RegisterJobs(w *river.Workers, every JobSchedule) []*river.PeriodicJob {
	if every.Cycle <= 0 {
		every.Cycle = time.Minute
	}
	river.AddWorker(w, periodic.NewWorker[CycleArgs](func(ctx context.Context) error {
		rep, err := s.RunCycle(ctx)
		if rep != (CycleReport{}) {
			s.log.InfoContext(ctx, "billing cycle", "periods", rep.Periods, "closed", rep.Closed, "late", rep.Late,
				"invoices", rep.Drafts, "finalized", rep.Finalized, "overdue", rep.Overdue)
		}
		return err
	}).WithTimeout(cycleTimeout))
	return []*river.PeriodicJob{periodic.Job(every.Cycle, CycleArgs{}, &river.InsertOpts{MaxAttempts: 1})}
}

// CycleReport counts what a billing cycle did: periods recorded and
// closed, late usage adjustments, invoices built (finalized at once
// without a review), drafts finalized after their review, invoices
// marked overdue.
type CycleReport struct {
	Periods, Closed, Late, Drafts, Finalized, Overdue int
}

// RunCycle runs every billing step once, in order. A step that fails
// does not stop the others (what one period or invoice lacks does not
// hold up the rest), and the next run tries again; the errors are
// returned together.
func (s *Service) RunCycle(ctx context.Context) (CycleReport, error) {
	var rep CycleReport
	var errs [5]error
	now := s.now()
	ctx = withMemo(ctx)
	rep.Periods, errs[0] = s.EnsurePeriods(ctx, now)
	rep.Closed, errs[1] = s.ClosePeriods(ctx, now)
	rep.Late, errs[2] = s.LateUsage(ctx, now)
	rep.Drafts, errs[3] = s.buildAll(ctx)
	// Drafts waiting for review follow what changes meanwhile; without a
	// review the finalization below recomputes each one anyway.
	if s.cfg.Review > 0 {
		if _, err := s.RecomputeDrafts(ctx, batch); err != nil {
			errs[3] = errors.Join(errs[3], err)
		}
	}
	rep.Finalized, errs[4] = s.FinalizeDue(ctx)
	var err error
	rep.Overdue, err = s.MarkOverdue(ctx, batch)
	return rep, errors.Join(append(errs[:], err)...)
}

// buildAll builds drafts batch by batch until no closed period lacks one;
// without a review (Config.Review 0) each is finalized as it is built
// (buildAllSets).
func (s *Service) buildAll(ctx context.Context) (int, error) {
	return s.buildAllSets(ctx, s.cfg.Review == 0)
}

// FinalizeDue finalizes, as the system, the drafts built at least
// Config.Review ago, oldest period first, batch after batch
// (finalizeAllSets). A draft behind an earlier period of its
// subscription waits for the next run; one that cannot be finalized does
// not hold up the others, and its error is returned with the rest.
func (s *Service) FinalizeDue(ctx context.Context) (int, error) {
	return s.finalizeAllSets(ctx)
}
