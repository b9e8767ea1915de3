package subscriptions

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
)

// What follows lets a package that decides a change to a subscription
// (quota adjustments, control-plane/quota) make it in one transaction with
// the subscription locked, the gateway's record rewritten and the change
// audited, without reading or writing the subscription's rows itself.

// ProviderOrg is the organization that publishes the subscription's API.
func (sub Subscription) ProviderOrg() uuid.UUID { return sub.apiOrg }

// PlanQuota is the plan's request quota per period; nil is unlimited.
func (sub Subscription) PlanQuota() *int64 { return sub.terms.QuotaRequests }

// Live reports whether the subscription still runs (is not canceled).
func (sub Subscription) Live() bool { return sub.Status.live() }

// LockVisible locks subscription id in tx for a change actor asks for. A
// subscription actor may not see is ErrSubscriptionNotFound; whether actor
// may make the change is the caller's decision.
func (s *Service) LockVisible(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID) (Subscription, error) {
	sub, err := s.lockSub(ctx, tx, id)
	if err != nil {
		return Subscription{}, err
	}
	if !sub.canSee(actor) {
		return Subscription{}, ErrSubscriptionNotFound
	}
	return sub, nil
}

// PeriodRequests is what the gateway's counters hold of sub's current
// period.
func (s *Service) PeriodRequests(ctx context.Context, sub Subscription) (int64, error) {
	return s.cfg.Records.PeriodRequests(ctx, sub.ID.String(), sub.CurrentPeriodStart)
}

// Changed follows a change to sub, locked in tx: the gateway's record is
// rewritten (a new version, its sync queued) and the change is audited
// and, when event is set, announced, all in tx.
func (s *Service) Changed(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub Subscription, action string,
	before, after any, event string, data any) error {
	if err := db.New(tx).SubscriptionMarkChanged(ctx, sub.ID); err != nil {
		return fmt.Errorf("bump subscription version: %w", err)
	}
	if err := s.enqueueSubSync(ctx, tx, sub.ID); err != nil {
		return err
	}
	return s.record(ctx, tx, actor, sub.OrganizationID, action, "subscription", sub.ID, before, after, event, data)
}
