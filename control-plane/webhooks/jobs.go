package webhooks

import "github.com/riverqueue/river"

// JobSchedule is empty: webhooks have no periodic jobs, deliveries are
// queued as events are published. It keeps RegisterJobs in the shape
// every service package shares.
type JobSchedule struct{}

// RegisterJobs adds the delivery worker to w; it returns no periodic jobs.
func (s *Service) RegisterJobs(w *river.Workers, _ JobSchedule) []*river.PeriodicJob {
	river.AddWorker(w, s.Worker())
	return nil
}
