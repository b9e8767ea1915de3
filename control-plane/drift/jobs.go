package drift

import (
	"time"

	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/internal/periodic"
)

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
