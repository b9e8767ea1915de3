package subscriptions

import (
	"context"
	"log/slog"
	"time"

	"github.com/veil-platform/veil/internal/periodic"
)

// MaintenanceArgs is the scheduled maintenance run.
type MaintenanceArgs struct{}

// Kind implements river.JobArgs.
func (MaintenanceArgs) Kind() string { return "key_maintenance" }

// runTimeout bounds one periodic run below the control plane's rescue of
// stuck jobs (a longer run would be taken for a dead one and run twice).
// Every item is its own transaction, so a run that is cut short loses
// nothing: the next one carries on.
const runTimeout = 50 * time.Second

// MaintenanceWorker returns the worker of scheduled maintenance, which runs
// maintenance and logs the report.
func (s *Service) MaintenanceWorker() *periodic.Worker[MaintenanceArgs] {
	return periodic.NewWorker[MaintenanceArgs](func(ctx context.Context) error {
		rep, err := s.RunMaintenance(ctx)
		if err != nil {
			return err
		}
		s.log.Log(ctx, slogLevel(len(rep.Errors) > 0), "key maintenance", "periods_rolled", rep.PeriodsRolled,
			"trials_ended", rep.TrialsEnded, "canceled", rep.Canceled, "grace_ended", rep.GraceEnded, "expired", rep.Expired,
			"renewed", rep.Renewed, "rotated", rep.Rotated, "notices", rep.Notices, "errors", len(rep.Errors))
		return nil
	}).WithTimeout(runTimeout)
}

// PeriodRollArgs rolls the billing periods that have ended, more often
// than the rest of maintenance: until a period is rolled, the gateway's
// record still names the old one, so the new period is counted but its
// quota is not enforced.
type PeriodRollArgs struct{}

// Kind implements river.JobArgs.
func (PeriodRollArgs) Kind() string { return "subscription_period_roll" }

// PeriodRollWorker returns the worker of period rolls, which rolls the
// ended periods (and ends due trials, and cancels at period end), as
// maintenance does.
func (s *Service) PeriodRollWorker() *periodic.Worker[PeriodRollArgs] {
	return periodic.NewWorker[PeriodRollArgs](func(ctx context.Context) error {
		rep := MaintenanceReport{Errors: []string{}}
		if err := s.rollPeriods(ctx, &rep); err != nil {
			return err
		}
		if rep.PeriodsRolled+rep.TrialsEnded+rep.Canceled > 0 {
			s.log.InfoContext(ctx, "billing periods rolled", "periods_rolled", rep.PeriodsRolled,
				"trials_ended", rep.TrialsEnded, "canceled", rep.Canceled)
		}
		return nil
	}).WithTimeout(runTimeout)
}

func slogLevel(warn bool) slog.Level {
	if warn {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
