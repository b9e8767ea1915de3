package subscriptions

import (
	"context"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
)

// MaintenanceArgs is the scheduled maintenance run.
type MaintenanceArgs struct{}

// Kind implements river.JobArgs.
func (MaintenanceArgs) Kind() string { return "key_maintenance" }

// MaintenanceWorker runs MaintenanceArgs jobs.
type MaintenanceWorker struct {
	river.WorkerDefaults[MaintenanceArgs]
	s *Service
}

// MaintenanceWorker returns the worker of scheduled maintenance.
func (s *Service) MaintenanceWorker() *MaintenanceWorker { return &MaintenanceWorker{s: s} }

// Timeout bounds one run below the control plane's rescue of stuck jobs
// (a longer run would be taken for a dead one and run twice). Every item
// is its own transaction, so a run that is cut short loses nothing: the
// next one carries on.
func (w *MaintenanceWorker) Timeout(*river.Job[MaintenanceArgs]) time.Duration {
	return 50 * time.Second
}

// Work runs maintenance and logs the report.
func (w *MaintenanceWorker) Work(ctx context.Context, _ *river.Job[MaintenanceArgs]) error {
	rep, err := w.s.RunMaintenance(ctx)
	if err != nil {
		return err
	}
	w.s.log.Log(ctx, slogLevel(len(rep.Errors) > 0), "key maintenance", "periods_rolled", rep.PeriodsRolled,
		"trials_ended", rep.TrialsEnded, "canceled", rep.Canceled, "grace_ended", rep.GraceEnded, "expired", rep.Expired,
		"renewed", rep.Renewed, "rotated", rep.Rotated, "notices", rep.Notices, "errors", len(rep.Errors))
	return nil
}

// PeriodRollArgs rolls the billing periods that have ended, more often
// than the rest of maintenance: until a period is rolled, the gateway's
// record still names the old one, so the new period is counted but its
// quota is not enforced.
type PeriodRollArgs struct{}

// Kind implements river.JobArgs.
func (PeriodRollArgs) Kind() string { return "subscription_period_roll" }

// PeriodRollWorker runs PeriodRollArgs jobs.
type PeriodRollWorker struct {
	river.WorkerDefaults[PeriodRollArgs]
	s *Service
}

// PeriodRollWorker returns the worker of period rolls.
func (s *Service) PeriodRollWorker() *PeriodRollWorker { return &PeriodRollWorker{s: s} }

// Timeout is MaintenanceWorker's.
func (w *PeriodRollWorker) Timeout(*river.Job[PeriodRollArgs]) time.Duration { return 50 * time.Second }

// Work rolls the ended periods (and ends due trials, and cancels at period
// end), as maintenance does.
func (w *PeriodRollWorker) Work(ctx context.Context, _ *river.Job[PeriodRollArgs]) error {
	rep := MaintenanceReport{Errors: []string{}}
	if err := w.s.rollPeriods(ctx, &rep); err != nil {
		return err
	}
	if rep.PeriodsRolled+rep.TrialsEnded+rep.Canceled > 0 {
		w.s.log.InfoContext(ctx, "billing periods rolled", "periods_rolled", rep.PeriodsRolled,
			"trials_ended", rep.TrialsEnded, "canceled", rep.Canceled)
	}
	return nil
}

func slogLevel(warn bool) slog.Level {
	if warn {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
