package keys

import "github.com/riverqueue/river"

// JobSchedule is empty: the keys have no periodic jobs of their own, their
// jobs are queued as keys change. The periodic runs that reach keys
// (maintenance, reconciliation) are the subscriptions', whose service
// builds this one and registers its jobs. It keeps RegisterJobs in the
// shape every service package shares.
type JobSchedule struct{}

// RegisterJobs adds the keys' workers (record syncs and deletes, notice
// emails) to w, to run in the River client whose Inserter is Config.Jobs;
// it returns no periodic jobs.
func (s *Service) RegisterJobs(w *river.Workers, _ JobSchedule) []*river.PeriodicJob {
	river.AddWorker(w, s.SyncKeyWorker())
	river.AddWorker(w, s.DeleteRecordWorker())
	river.AddWorker(w, s.KeyNoticeEmailWorker())
	return nil
}
