package billing

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/internal/periodic"
)

// OutlookSchedule configures the outlooks job.
type OutlookSchedule struct {
	// Every is how often it runs (VEIL_OUTLOOK_INTERVAL, default 1m): an
	// outlook is refreshed once it is older than half of it.
	Every time.Duration
	// PerRun bounds the subscriptions a run refreshes (default 2000); the
	// oldest outlooks go first, so every one is refreshed in turn.
	PerRun int
	// Metrics counts the outlooks refreshed and failed; nil counts in a
	// set of its own.
	Metrics *metrics.Set
}

// OutlookArgs is one run of the outlooks job.
type OutlookArgs struct{}

// Kind implements river.JobArgs.
func (OutlookArgs) Kind() string { return "billing_outlooks" }

// outlookBatch is how many subscriptions a query of a run lists.
const outlookBatch = 200

// RegisterOutlookJobs adds the outlooks' worker to w and returns its
// periodic job, run every sched.Every and when the job client starts.
// It does nothing without ClickHouse (no usage to project).
func (s *Service) RegisterOutlookJobs(w *river.Workers, sched OutlookSchedule) []*river.PeriodicJob {
	sched.Every = cmp.Or(sched.Every, time.Minute)
	sched.PerRun = cmp.Or(sched.PerRun, 2000)
	if sched.Metrics == nil {
		sched.Metrics = metrics.NewSet()
	}
	river.AddWorker(w, periodic.NewWorker[OutlookArgs](func(ctx context.Context) error {
		if s.cfg.ClickHouse == nil {
			return nil
		}
		rep, err := s.RefreshOutlooks(ctx, sched)
		if rep != (OutlookReport{}) {
			s.log.InfoContext(ctx, "billing outlooks", "refreshed", rep.Refreshed, "failed", rep.Failed, "removed", rep.Removed)
		}
		return err
	}).WithTimeout(cycleTimeout))
	return []*river.PeriodicJob{periodic.Job(sched.Every, OutlookArgs{}, &river.InsertOpts{MaxAttempts: 1})}
}

// OutlookReport counts what a run of the outlooks job did.
type OutlookReport struct {
	Refreshed, Failed, Removed int
}

// RefreshOutlooks writes the outlook of up to sched.PerRun live
// subscriptions whose outlook is missing, of an earlier period or older
// than half of sched.Every, oldest first, and removes those of ended
// subscriptions. A subscription whose outlook fails is logged and
// counted (veil_controlplane_billing_outlooks_total{result="failed"}) and
// the others go on; its row stays as it was and is tried again next run.
// The error is the listing's or the writing's, not one subscription's.
func (s *Service) RefreshOutlooks(ctx context.Context, sched OutlookSchedule) (OutlookReport, error) {
	var rep OutlookReport
	if sched.Metrics == nil {
		sched.Metrics = metrics.NewSet()
	}
	q := db.New(s.pool)
	removed, err := q.OutlookDeleteEnded(ctx)
	if err != nil {
		return rep, fmt.Errorf("remove ended outlooks: %w", err)
	}
	rep.Removed = int(removed)
	staleBefore := s.now().Add(-cmp.Or(sched.Every, time.Minute) / 2)
	tried := []uuid.UUID{}
	for perRun := cmp.Or(sched.PerRun, 2000); len(tried) < perRun; {
		ids, err := q.OutlookDue(ctx, db.OutlookDueParams{StaleBefore: staleBefore, Tried: tried, MaxRows: int32(min(outlookBatch, perRun-len(tried)))})
		if err != nil {
			return rep, fmt.Errorf("list subscriptions to project: %w", err)
		}
		if len(ids) == 0 {
			return rep, nil
		}
		tried = append(tried, ids...)
		ok, failed, err := s.refreshSome(ctx, ids, sched.Metrics)
		rep.Refreshed, rep.Failed = rep.Refreshed+ok, rep.Failed+failed
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// refreshSome computes and stores the outlooks of ids, Config.Workers at
// once.
func (s *Service) refreshSome(ctx context.Context, ids []uuid.UUID, set *metrics.Set) (ok, failed int, err error) {
	results := make([]error, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Workers)
	for i, id := range ids {
		g.Go(func() error {
			results[i] = s.refreshOne(gctx, id)
			// A write the context cut short stops the run; anything else
			// is this subscription's alone.
			if results[i] != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, fmt.Errorf("refresh outlooks: %w", err)
	}
	for i, e := range results {
		if e == nil {
			ok++
			set.GetOrCreateCounter(`veil_controlplane_billing_outlooks_total{result="refreshed"}`).Inc()
			continue
		}
		failed++
		set.GetOrCreateCounter(`veil_controlplane_billing_outlooks_total{result="failed"}`).Inc()
		s.log.WarnContext(ctx, "billing outlook", "subscription_id", ids[i], "error", e)
	}
	return ok, failed, nil
}

// refreshOne computes and stores one subscription's outlook.
func (s *Service) refreshOne(ctx context.Context, id uuid.UUID) error {
	o, err := s.Outlook(ctx, id)
	if errors.Is(err, ErrSubscriptionNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.storeOutlook(ctx, o)
}

// storeOutlook writes o into subscription_outlooks, unless a later one
// is there already.
func (s *Service) storeOutlook(ctx context.Context, o Outlook) error {
	meters := o.Meters
	if meters == nil {
		meters = []MeterOutlook{}
	}
	js, err := json.Marshal(meters)
	if err != nil {
		return fmt.Errorf("encode outlook meters: %w", err)
	}
	err = db.New(s.pool).OutlookUpsert(ctx, db.OutlookUpsertParams{
		SubscriptionID: o.SubscriptionID, PeriodStart: o.PeriodStart, PeriodEnd: o.PeriodEnd, Currency: o.Currency,
		CostSoFar: o.CostSoFar, Projected: o.Projected, ProjectedLow: o.ProjectedLow, ProjectedHigh: o.ProjectedHigh,
		Meters: js, ComputedAt: o.AsOf,
	})
	if err != nil {
		return fmt.Errorf("store outlook: %w", err)
	}
	return nil
}
