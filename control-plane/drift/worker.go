package drift

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/internal/periodic"
)

// Args is the scheduled usage drift check.
type Args struct{}

// Kind implements river.JobArgs.
func (Args) Kind() string { return "usage_reconcile" }

// Worker runs Args jobs. A run cut short by
// its deadline stores what it checked, and the worker remembers the last
// subscription it checked: the next run in this process starts after it,
// goes on to the last, and wraps around to it, so that the check covers
// every subscription however many there are. The place is kept in memory:
// a restart, or a run in another process, starts from the first
// subscription, which costs a repeat, never a miss.
type Worker struct {
	river.WorkerDefaults[Args]
	s *Checker
	// chunk is chunkSize; tests make it small.
	chunk int

	mu sync.Mutex
	// after is the subscription the next run starts after (uuid.Nil:
	// from the first).
	after uuid.UUID
}

// Worker returns the worker of scheduled drift checks.
func (s *Checker) Worker() *Worker {
	return &Worker{s: s, chunk: chunkSize}
}

// workerTimeout bounds one scheduled run. River rescues a job
// still running after the control plane's --job-rescue-after (1 minute by
// default) and runs it again, so a longer run would be checked, and
// healed, twice at once. A run cut short loses nothing: it stops checking
// deadlineMargin before the timeout, its heals are compare-and-set,
// and the next run resumes after the last subscription it checked.
const workerTimeout = 50 * time.Second

// Timeout bounds one run (see workerTimeout).
func (w *Worker) Timeout(*river.Job[Args]) time.Duration {
	return workerTimeout
}

// Work checks, resuming where the previous run stopped, and logs the
// report.
func (w *Worker) Work(ctx context.Context, _ *river.Job[Args]) error {
	w.mu.Lock()
	after := w.after
	w.mu.Unlock()
	rep, next, err := w.s.check(ctx, pass{after: after, chunk: w.chunk, settle: w.s.settle})
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.after = next
	w.mu.Unlock()
	lvl := slog.LevelInfo
	if rep.Drifted > 0 || len(rep.Unhealed) > 0 {
		lvl = slog.LevelWarn
	}
	w.s.log.Log(ctx, lvl, "usage reconciliation", "checked", rep.Checked, "in_flight", rep.InFlight,
		"drifted", rep.Drifted, "healed", rep.Healed, "unhealed", len(rep.Unhealed), "complete", next == uuid.Nil)
	return nil
}

// JobSchedule says how often the scheduled check runs; it runs once when
// the job client starts, too.
type JobSchedule struct {
	// Check is the interval of the usage drift check.
	Check time.Duration
}

// RegisterJobs adds the worker of the scheduled check to w and returns its
// periodic job. Each run is attempted once: the next one comes soon
// enough, and a retry of a run cut short would repeat what it healed.
func (s *Checker) RegisterJobs(w *river.Workers, every JobSchedule) []*river.PeriodicJob {
	river.AddWorker(w, s.Worker())
	return []*river.PeriodicJob{
		periodic.Job(every.Check, Args{}, &river.InsertOpts{MaxAttempts: 1}),
	}
}
