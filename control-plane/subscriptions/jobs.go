package subscriptions

import (
	"time"

	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/internal/periodic"
)

// JobSchedule says how often the subscriptions' periodic jobs run; each
// runs once when the job client starts, too.
type JobSchedule struct {
	// ReconcileKeys is the interval of the reconciliation of keys and
	// subscriptions with the gateway's Redis records.
	ReconcileKeys time.Duration
	// Maintenance is the interval of key expiry, notices, rotation grace,
	// automatic rotation and billing periods.
	Maintenance time.Duration
	// PeriodRoll is the interval of the roll of ended billing periods, more
	// frequent than maintenance: a new period's quota is enforced from its
	// roll.
	PeriodRoll time.Duration
}

// RegisterJobs adds the subscriptions' workers (subscription syncs,
// reconciliation, maintenance, period rolls) and the keys' to w,
// and returns its periodic jobs for the River client whose Inserter is
// Config.Jobs. A periodic run is attempted once: the next run takes up
// what it left.
func (s *Service) RegisterJobs(w *river.Workers, every JobSchedule) []*river.PeriodicJob {
	keyJobs := s.keys.RegisterJobs(w, keys.JobSchedule{})
	river.AddWorker(w, s.SyncSubscriptionWorker())
	river.AddWorker(w, s.ReconcileKeysWorker())
	river.AddWorker(w, s.MaintenanceWorker())
	river.AddWorker(w, s.PeriodRollWorker())
	return append(keyJobs,
		periodic.Job(every.ReconcileKeys, ReconcileKeysArgs{}, &river.InsertOpts{MaxAttempts: 1}),
		periodic.Job(every.Maintenance, MaintenanceArgs{}, &river.InsertOpts{MaxAttempts: 1}),
		periodic.Job(every.PeriodRoll, PeriodRollArgs{}, &river.InsertOpts{MaxAttempts: 1}),
	)
}
