package budgets

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/internal/periodic"
)

// JobSchedule says how often budgets are evaluated (default 1m, the
// outlook refresh's default: evaluating more often finds nothing new).
type JobSchedule struct {
	Evaluate time.Duration
}

// EvaluateArgs is one evaluation of every budget.
type EvaluateArgs struct{}

// Kind implements river.JobArgs.
func (EvaluateArgs) Kind() string { return "budgets_evaluate" }

// evaluateTimeout bounds a run below the control plane's rescue of stuck
// jobs. Each budget's notices commit on their own, so a run cut short
// loses nothing: the next one carries on, and sends nothing twice.
const evaluateTimeout = 50 * time.Second

// RegisterJobs adds the evaluation's and the emails' workers to w and
// returns the evaluation's periodic job.
func (s *Service) RegisterJobs(w *river.Workers, every JobSchedule) []*river.PeriodicJob {
	if every.Evaluate <= 0 {
		every.Evaluate = time.Minute
	}
	river.AddWorker(w, periodic.NewWorker[EvaluateArgs](func(ctx context.Context) error {
		rep, err := s.Evaluate(ctx)
		if rep.Notices > 0 {
			s.log.InfoContext(ctx, "budgets evaluated", "budgets", rep.Budgets, "notices", rep.Notices)
		}
		return err
	}).WithTimeout(evaluateTimeout))
	river.AddWorker(w, s.EmailWorker())
	return []*river.PeriodicJob{periodic.Job(every.Evaluate, EvaluateArgs{}, &river.InsertOpts{MaxAttempts: 1})}
}
