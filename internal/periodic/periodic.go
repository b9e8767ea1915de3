// Package periodic holds the shape every service gives its scheduled River
// jobs: a job inserted at an interval and once when the job client starts,
// and a worker that runs one call per job.
package periodic

import (
	"context"
	"time"

	"github.com/riverqueue/river"
)

// Job is a periodic job that inserts args with opts (nil: River's
// defaults) every interval, and once when the job client starts, so that a
// restarted control plane does not wait a whole interval.
func Job(every time.Duration, args river.JobArgs, opts *river.InsertOpts) *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(every), func() (river.JobArgs, *river.InsertOpts) {
		if opts == nil {
			return args, nil
		}
		each := *opts // each insert gets options of its own, as from a literal
		return args, &each
	}, &river.PeriodicJobOpts{RunOnStart: true})
}

// Worker works the jobs of kind A by calling run, whose own report (logs,
// metrics) says what a run did.
type Worker[A river.JobArgs] struct {
	river.WorkerDefaults[A]
	run     func(ctx context.Context) error
	timeout time.Duration
}

// NewWorker returns a Worker that calls run for each job.
func NewWorker[A river.JobArgs](run func(ctx context.Context) error) *Worker[A] {
	return &Worker[A]{run: run}
}

// WithTimeout bounds each run to d and returns w. Without it a run has the
// job client's JobTimeout. A job whose run may be long sets one, below the
// client's RescueStuckJobsAfter, or River would take a slow run for a dead
// one and start it again beside it.
func (w *Worker[A]) WithTimeout(d time.Duration) *Worker[A] {
	w.timeout = d
	return w
}

// Timeout implements river.Worker: the bound set by WithTimeout, or 0 for
// the job client's.
func (w *Worker[A]) Timeout(*river.Job[A]) time.Duration { return w.timeout }

// Work implements river.Worker.
func (w *Worker[A]) Work(ctx context.Context, _ *river.Job[A]) error { return w.run(ctx) }
