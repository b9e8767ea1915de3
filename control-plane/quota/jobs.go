package quota

import "github.com/riverqueue/river"

// JobSchedule is empty: the quota notices have no periodic job (the usage
// check against ClickHouse is wired on its own). It keeps RegisterJobs in
// the shape every service package shares.
type JobSchedule struct{}

// RegisterJobs adds the worker of the quota notice emails to w; it returns
// no periodic jobs.
func (s *Service) RegisterJobs(w *river.Workers, _ JobSchedule) []*river.PeriodicJob {
	river.AddWorker(w, s.QuotaEmailWorker())
	return nil
}
