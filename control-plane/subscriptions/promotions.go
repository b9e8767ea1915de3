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

// What a promotion needs of a subscription (control-plane/promotions
// decides redemptions; this package owns the subscription's rows): the
// codes given at subscribe time are redeemed in the subscription's own
// transaction, so a refused code refuses the subscription.

// Promotions redeems promotion codes for a subscription created in tx (a
// *promotions.Service). Its errors refuse the subscription.
type Promotions interface {
	RedeemAtSubscribe(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub Subscription, codes []string) error
	// EndForPlanChange ends, in tx, the active redemptions of sub
	// (locked in tx) that would not apply on the plan planID priced in
	// currency, recording each as actor's.
	EndForPlanChange(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub Subscription, planID uuid.UUID, currency string) error
}

// SetPromotions sets what redeems the codes given at subscribe time;
// without it they are refused. Call it once, while wiring, before the
// service serves: the promotions service is built on this one.
func (s *Service) SetPromotions(p Promotions) { s.promotions = p }

// Currency is the ISO 4217 code of the prices of sub's plan version.
func (sub Subscription) Currency() string { return sub.terms.Currency }

// ErrNotTrialing: a trial extension for a subscription that is not
// trialing, and was not created in the same transaction.
var ErrNotTrialing = errors.New("subscription is not trialing")

// ExtendTrial lengthens the trial of sub, locked in tx, by days and returns
// its new end. When starting (sub was created in tx) a subscription
// without a trial starts one of days from now.
func (s *Service) ExtendTrial(ctx context.Context, tx pgx.Tx, sub Subscription, days int, starting bool) (time.Time, error) {
	end, err := db.New(tx).SubscriptionExtendTrial(ctx, db.SubscriptionExtendTrialParams{
		ID: sub.ID, Now: s.now().UTC().Truncate(time.Second), Days: int32(days), Starting: starting,
	})
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && end == nil) {
		return time.Time{}, fmt.Errorf("%w: subscription %s is %s", ErrNotTrialing, sub.ID, sub.Status)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("extend trial: %w", err)
	}
	return *end, nil
}

// redeemAtSubscribe redeems codes for subscription id, created in tx, and
// returns its status after them (a trial extension may start a trial).
func (s *Service) redeemAtSubscribe(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID, codes []string, status Status) (Status, error) {
	if len(codes) == 0 {
		return status, nil
	}
	if s.promotions == nil {
		return "", validation.One("promotion_codes", "this control plane takes no promotion codes")
	}
	sub, err := s.lockSub(ctx, tx, id)
	if err != nil {
		return "", err
	}
	if err := s.promotions.RedeemAtSubscribe(ctx, tx, actor, sub, codes); err != nil {
		return "", err
	}
	if sub, err = s.lockSub(ctx, tx, id); err != nil {
		return "", err
	}
	return sub.Status, nil
}
