package catalog

import (
	"time"

	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/internal/periodic"
)

// JobSchedule says how often the catalog's periodic jobs run; both run
// once when the job client starts, too.
type JobSchedule struct {
	// Reconcile is the interval of the reconciliation of APIs with the
	// gateway's routes.
	Reconcile time.Duration
	// Sweep is the interval of the sweep that escalates or expires overdue
	// approval requests.
	Sweep time.Duration
}

// RegisterJobs adds the catalog's workers (registration, deregistration,
// reconciliation, approval sweep) to w, and returns its periodic jobs for
// the River client whose Inserter is Config.Jobs.
func (s *Service) RegisterJobs(w *river.Workers, every JobSchedule) []*river.PeriodicJob {
	river.AddWorker(w, s.RegisterWorker())
	river.AddWorker(w, s.DeregisterWorker())
	river.AddWorker(w, s.ReconcileWorker())
	river.AddWorker(w, s.SweepWorker())
	return []*river.PeriodicJob{
		periodic.Job(every.Reconcile, ReconcileArgs{}, nil),
		periodic.Job(every.Sweep, SweepArgs{}, nil),
	}
}
