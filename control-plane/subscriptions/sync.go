package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// SyncSubscriptionArgs writes a subscription's gateway record.
type SyncSubscriptionArgs struct {
	SubscriptionID uuid.UUID `json:"subscription_id"`
}

// Kind implements river.JobArgs.
func (SyncSubscriptionArgs) Kind() string { return "subscription_sync" }

// subscriptionRecord is what the gateway and processors are told of sub,
// whose plan version prices meters.
func subscriptionRecord(sub Subscription, meters []enforcement.MeterSpec) enforcement.SubscriptionRecord {
	r := enforcement.SubscriptionRecord{
		ID: sub.ID.String(), APIID: sub.APIID.String(), PlanID: sub.PlanID.String(), Status: string(sub.Status),
		PeriodStart: sub.CurrentPeriodStart.UTC(), PeriodEnd: sub.CurrentPeriodEnd.UTC(), PeriodAnchor: sub.anchor.UTC(), QuotaRequests: sub.QuotaLimit(),
		QuotaHard: sub.terms.QuotaHard, Meters: meters, Version: sub.syncVersion,
	}
	if v := sub.terms.RatePerSecond; v != nil {
		r.RatePerSecond = *v
	}
	if v := sub.terms.RatePerMinute; v != nil {
		r.RatePerMinute = *v
	}
	return r
}

// SyncSubscription writes the subscription's current record.
func (s *Service) SyncSubscription(ctx context.Context, id uuid.UUID) error {
	q := db.New(s.pool)
	sub, err := toSub(q.SubscriptionGetByID(ctx, id))
	if errors.Is(err, ErrSubscriptionNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	meters, err := versionMeters(ctx, q, sub.PlanVersionID)
	if err != nil {
		return err
	}
	rec := subscriptionRecord(sub, meters[sub.PlanVersionID])
	if err := dunningRecord(ctx, q, sub, &rec); err != nil {
		return err
	}
	if skipped, err := budgetRecord(ctx, s.pool, sub, &rec); err != nil {
		return err
	} else if skipped != "" {
		s.budgetNotEnforced(ctx, sub.ID, skipped)
	}
	if err := s.markTrialEnd(ctx, sub, rec); err != nil {
		s.metrics.syncErrors.Inc()
		return err
	}
	if _, err := s.cfg.Records.PutSubscription(ctx, rec); err != nil {
		s.metrics.syncErrors.Inc()
		return err
	}
	if err := s.enforceBudget(ctx, rec); err != nil {
		s.metrics.syncErrors.Inc()
		return err
	}
	if err := q.SubscriptionMarkSynced(ctx, db.SubscriptionMarkSyncedParams{ID: id, SyncedVersion: sub.syncVersion}); err != nil {
		return fmt.Errorf("record subscription sync: %w", err)
	}
	return nil
}

// versionMeters reads the meters the plan versions price, for their
// subscriptions' records: each metered charge's meter, with the charge's
// quota as an integer at the meter's scale (metering.Meter.Counter: a
// quota with more decimals than the scale is rounded down, so the quota
// never allows more than the plan says). A quota past
// enforcement.MaxMeterQuota, which pricing refuses but an older version
// may hold, is held at it: the counting script compares quotas as Lua
// numbers, exact only up to there, and so large a quota is unlimited in
// practice.
func versionMeters(ctx context.Context, q *db.Queries, versions ...uuid.UUID) (map[uuid.UUID][]enforcement.MeterSpec, error) {
	rows, err := q.PlanVersionMeters(ctx, versions)
	if err != nil {
		return nil, fmt.Errorf("load plan version meters: %w", err)
	}
	out := make(map[uuid.UUID][]enforcement.MeterSpec, len(versions))
	for _, r := range rows {
		m := enforcement.MeterSpec{
			Slug: r.Slug, Aggregation: r.Aggregation, Field: r.Field, QuotaHard: r.QuotaHard,
			Filter: enforcement.MeterFilter{Methods: nilIfEmpty(r.FilterMethods), Routes: nilIfEmpty(r.FilterRoutes),
				StatusClasses: nilIfEmpty(r.FilterStatusClasses)},
		}
		if r.Quota != nil {
			limit, err := metering.Meter{Slug: r.Slug, Field: r.Field}.Counter(*r.Quota)
			if err != nil || limit > enforcement.MaxMeterQuota {
				// Only a quota past an int64 fails to convert: the
				// column refuses a negative one.
				limit = enforcement.MaxMeterQuota
			}
			m.Quota = &limit
		}
		out[r.PlanVersionID] = append(out[r.PlanVersionID], m)
	}
	return out, nil
}

// nilIfEmpty is l, nil when empty: a record decodes an empty list as nil.
func nilIfEmpty(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	return l
}

// SyncSubscriptionWorker runs SyncSubscriptionArgs jobs.
type SyncSubscriptionWorker struct {
	river.WorkerDefaults[SyncSubscriptionArgs]
	s *Service
}

// SyncSubscriptionWorker returns the worker of subscription syncs.
func (s *Service) SyncSubscriptionWorker() *SyncSubscriptionWorker {
	return &SyncSubscriptionWorker{s: s}
}

// NextRetry implements the backoff.
func (w *SyncSubscriptionWorker) NextRetry(job *river.Job[SyncSubscriptionArgs]) time.Time {
	return time.Now().Add(w.s.keys.Backoff(job.Attempt))
}

// Timeout bounds one attempt.
func (w *SyncSubscriptionWorker) Timeout(*river.Job[SyncSubscriptionArgs]) time.Duration {
	return 15 * time.Second
}

// Work syncs the subscription.
func (w *SyncSubscriptionWorker) Work(ctx context.Context, job *river.Job[SyncSubscriptionArgs]) error {
	return w.s.SyncSubscription(ctx, job.Args.SubscriptionID)
}
