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
)

// SyncSubscriptionArgs writes a subscription's gateway record.
type SyncSubscriptionArgs struct {
	SubscriptionID uuid.UUID `json:"subscription_id"`
}

// Kind implements river.JobArgs.
func (SyncSubscriptionArgs) Kind() string { return "subscription_sync" }

// subscriptionRecord is what the gateway and processors are told of sub.
func subscriptionRecord(sub Subscription) enforcement.SubscriptionRecord {
	r := enforcement.SubscriptionRecord{
		ID: sub.ID.String(), APIID: sub.APIID.String(), PlanID: sub.PlanID.String(), Status: string(sub.Status),
		PeriodStart: sub.CurrentPeriodStart.UTC(), PeriodEnd: sub.CurrentPeriodEnd.UTC(), QuotaRequests: sub.QuotaLimit(),
		QuotaHard: sub.terms.QuotaHard, Version: sub.syncVersion,
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
	if _, err := s.cfg.Records.PutSubscription(ctx, subscriptionRecord(sub)); err != nil {
		s.metrics.syncErrors.Inc()
		return err
	}
	if err := q.SubscriptionMarkSynced(ctx, db.SubscriptionMarkSyncedParams{ID: id, SyncedVersion: sub.syncVersion}); err != nil {
		return fmt.Errorf("record subscription sync: %w", err)
	}
	return nil
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
