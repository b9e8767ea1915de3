package promotions

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/promotions/internal/db"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/metering"
)

// Ending a redemption. A customer cannot give a redemption back, so one
// that does not apply to a plan must not hold the subscription on its
// plan: a plan change ends the redemptions that would not apply on the
// new plan (EndForPlanChange), and the subscriber may end one itself
// (End). An ended redemption is no longer active: it discounts no quote
// and no period that ends after it ended (billing selects the
// redemptions of a period by the same rule). Its use of the promotion's
// limits is not given back, as a used-up one's is not.

// EndForPlanChange ends, in tx, the active redemptions of sub (locked in
// tx) that would not apply on the plan planID priced in currency: a
// promotion limited to other plans, or an amount_off in another currency
// (subscriptions.Promotions, called in the plan change's transaction).
// Each is audited (promotion.end, reason plan_change) and announced as
// promotion.ended to both organizations. Used up redemptions and trial
// extensions discount nothing and stay as they are.
func (s *Service) EndForPlanChange(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub subscriptions.Subscription,
	planID uuid.UUID, currency string) error {
	q := db.New(tx)
	rows, err := q.RedemptionListBySubscription(ctx, sub.ID)
	if err != nil {
		return fmt.Errorf("read redemptions: %w", err)
	}
	for _, row := range rows {
		r := toRedemption(row)
		if !r.Active {
			continue
		}
		p, err := toPromotion(q.PromotionGetByID(ctx, r.PromotionID))
		if err != nil {
			return err
		}
		otherCurrency := r.Kind == metering.PromotionAmountOff && deref(r.Currency) != currency
		if !otherCurrency && p.eligible(planID) {
			continue
		}
		if _, err := s.end(ctx, tx, actor, sub, p, r, "plan_change"); err != nil {
			return err
		}
	}
	return nil
}

// End ends the redemption of the promotion promotionID on the
// subscription subID, for the subscriber's organization or an admin (the
// API's provider is forbidden, as for Redeem): the redemption discounts
// no period that ends after now. Ending one already ended changes
// nothing and returns it; ending a trial extension does not shorten the
// trial it gave. Audited (promotion.end, reason subscriber) and announced
// as promotion.ended to both organizations.
func (s *Service) End(ctx context.Context, actor identity.Actor, subID, promotionID uuid.UUID) (Redemption, error) {
	var out Redemption
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		sub, err := s.cfg.Subscriptions.LockVisible(ctx, tx, actor, subID)
		if err != nil {
			return err
		}
		if !actor.IsAdmin() && actor.OrgID != sub.OrganizationID {
			return identity.ErrForbidden
		}
		q := db.New(tx)
		rows, err := q.RedemptionListBySubscription(ctx, sub.ID)
		if err != nil {
			return fmt.Errorf("read redemptions: %w", err)
		}
		i := slices.IndexFunc(rows, func(r db.RedemptionListBySubscriptionRow) bool { return r.PromotionID == promotionID })
		if i < 0 {
			return fmt.Errorf("%w: the subscription has no redemption of promotion %s", ErrNotFound, promotionID)
		}
		out = toRedemption(rows[i])
		if out.EndedAt != nil {
			return nil
		}
		p, err := toPromotion(q.PromotionGetByID(ctx, promotionID))
		if err != nil {
			return err
		}
		out, err = s.end(ctx, tx, actor, sub, p, out, "subscriber")
		return err
	})
	return out, err
}

// end ends r, a running redemption of p on sub, in tx, and records it:
// reason says who ended it, plan_change or subscriber.
func (s *Service) end(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub subscriptions.Subscription, p Promotion,
	r Redemption, reason string) (Redemption, error) {
	now := s.now().UTC()
	_, err := db.New(tx).RedemptionEnd(ctx, db.RedemptionEndParams{ID: r.ID, EndedAt: now})
	if errors.Is(err, pgx.ErrNoRows) {
		// The subscription is locked in tx: nothing else ends its
		// redemptions meanwhile.
		return Redemption{}, fmt.Errorf("end redemption %s: ended concurrently", r.ID)
	}
	if err != nil {
		return Redemption{}, fmt.Errorf("end redemption: %w", err)
	}
	before := r
	r.EndedAt, r.Active = &now, false
	data := map[string]any{"redemption": r, "promotion_id": p.ID, "subscription_id": sub.ID, "reason": reason}
	return r, s.record(ctx, tx, actor, sub.OrganizationID, "promotion.end", "promotion_redemption", r.ID, before, data,
		EventEnded, data, p.OrganizationID, sub.OrganizationID)
}
