package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/validation"
)

// MaxPlanChangesPerPeriod is how many times a subscription may change
// plans in one billing period. Billing prices usage across the changes as
// one period's, so changing back and forth gains nothing; the cap bounds
// what one period's invoice holds (two proration lines and a segment of
// usage lines per change) and the churn of the gateway's record.
const MaxPlanChangesPerPeriod = 3

// ChangePlanInput moves a subscription to another plan of the same API.
type ChangePlanInput struct {
	PlanID uuid.UUID `json:"plan_id"`
}

// ChangePlan moves a live subscription to the latest version of an active
// plan of the same API (the same plan moves it to that plan's latest
// version), from now on: the billing period stays, the new terms (quota,
// hardness, rate limits) apply at once and the gateway's record and block
// follow through the outbox. Proration of the base fee belongs to
// billing, which prices each event by the version in force at its time
// (subscription_history). The subscription's active promotions that
// would not apply on the new plan (limited to other plans, or an amount
// in another currency) end with the change, in its transaction: the
// customer cannot give a redemption back, so refusing the change would
// hold the subscription on its plan for as long as the promotion runs.
// At most MaxPlanChangesPerPeriod changes per billing period
// (ErrPlanChangeLimit).
func (s *Service) ChangePlan(ctx context.Context, actor identity.Actor, id uuid.UUID, in ChangePlanInput) (Subscription, error) {
	if in.PlanID == uuid.Nil {
		return Subscription{}, validation.One("plan_id", "is required")
	}
	var out Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.changeSub(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if !before.Status.live() {
			return fmt.Errorf("%w: subscription is canceled", ErrSubscriptionInactive)
		}
		p, err := s.loadPlan(ctx, tx, actor, in.PlanID, false, false)
		if errors.Is(err, ErrPlanNotFound) {
			return fmt.Errorf("%w: plan_id: no plan %s you can see", ErrPlanNotFound, in.PlanID)
		}
		if err != nil {
			return err
		}
		if p.APIID != before.APIID {
			return validation.One("plan_id", "the plan belongs to another api")
		}
		if p.Status != PlanActive {
			return fmt.Errorf("%w: plan is %s", ErrPlanUnavailable, p.Status)
		}
		if p.Current.ID == before.PlanVersionID {
			return ErrSamePlan
		}
		// The subscription's row is locked: the count cannot change under us.
		n, err := db.New(tx).SubscriptionPlanChangesSince(ctx, db.SubscriptionPlanChangesSinceParams{SubscriptionID: id, Since: before.CurrentPeriodStart})
		if err != nil {
			return fmt.Errorf("count plan changes: %w", err)
		}
		if n >= MaxPlanChangesPerPeriod {
			return fmt.Errorf("%w: %d changes since %s", ErrPlanChangeLimit, n, before.CurrentPeriodStart.UTC().Format(time.RFC3339))
		}
		// A redemption granted on this plan may not apply on the next: the
		// change ends it, audited and announced (promotion.ended).
		if s.promotions != nil {
			if err := s.promotions.EndForPlanChange(ctx, tx, actor, before, p.ID, p.Current.Terms.Currency); err != nil {
				return err
			}
		}
		now := s.now().UTC()
		if err := db.New(tx).SubscriptionChangePlan(ctx, db.SubscriptionChangePlanParams{ID: id, PlanVersionID: p.Current.ID}); err != nil {
			return fmt.Errorf("change plan: %w", err)
		}
		if err := s.history(ctx, tx, id, p.Current.ID, before.Status, now, actor, "plan changed"); err != nil {
			return err
		}
		if err := s.enqueueSubSync(ctx, tx, id); err != nil {
			return err
		}
		if out, err = s.lockSub(ctx, tx, id); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, out.OrganizationID, "subscription.plan_change", "subscription", id,
			map[string]any{"plan_id": before.PlanID, "plan_version_id": before.PlanVersionID},
			map[string]any{"plan_id": out.PlanID, "plan_version_id": out.PlanVersionID},
			"subscription.plan_changed", map[string]any{"subscription": out, "from_plan_version_id": before.PlanVersionID})
	})
	return out, err
}
