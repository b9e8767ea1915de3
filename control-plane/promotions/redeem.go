package promotions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/promotions/internal/db"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// Redemption is a promotion applied to a subscription.
type Redemption struct {
	ID             uuid.UUID `json:"id"`
	PromotionID    uuid.UUID `json:"promotion_id"`
	SubscriptionID uuid.UUID `json:"subscription_id"`
	// OrganizationID is the customer's.
	OrganizationID  uuid.UUID       `json:"organization_id"`
	Code            string          `json:"code"`
	Kind            string          `json:"kind"`
	Value           decimal.Decimal `json:"value"`
	Currency        *string         `json:"currency"`
	Meter           *string         `json:"meter"`
	Duration        string          `json:"duration"`
	DurationPeriods *int            `json:"duration_periods"`
	// PeriodsApplied counts the billing periods it discounted.
	PeriodsApplied int `json:"periods_applied"`
	// Active: it still discounts coming periods (once: none applied yet;
	// repeating: fewer than its periods; forever: always) and has not
	// ended. A trial extension is never active: it took effect when
	// redeemed.
	Active     bool      `json:"active"`
	Stackable  bool      `json:"stackable"`
	RedeemedBy string    `json:"redeemed_by"`
	RedeemedAt time.Time `json:"redeemed_at"`
	// EndedAt is when it was ended (a plan change it does not apply to,
	// or the subscriber ended it); null while it runs. An ended
	// redemption discounts no period that ends after it ended.
	EndedAt *time.Time `json:"ended_at"`
}

func toRedemption(r db.RedemptionListBySubscriptionRow) Redemption {
	out := Redemption{
		ID: r.ID, PromotionID: r.PromotionID, SubscriptionID: r.SubscriptionID, OrganizationID: r.OrganizationID, Code: r.Code,
		Kind: string(r.Kind), Value: r.Value, Currency: r.Currency, Meter: r.Meter, Duration: string(r.Duration),
		DurationPeriods: r.DurationPeriods, PeriodsApplied: r.PeriodsApplied, Stackable: r.Stackable, RedeemedBy: r.RedeemedBy, RedeemedAt: r.RedeemedAt,
		EndedAt: r.EndedAt,
	}
	switch {
	case out.EndedAt != nil:
	case out.Kind == metering.PromotionTrialExtension:
	case out.Duration == DurationOnce:
		out.Active = out.PeriodsApplied < 1
	case out.Duration == DurationRepeating:
		out.Active = out.DurationPeriods != nil && out.PeriodsApplied < *out.DurationPeriods
	case out.Duration == DurationForever:
		out.Active = true
	}
	return out
}

// RedeemInput redeems a code on a subscription.
type RedeemInput struct {
	Code string `json:"code"`
}

// Redeem redeems a code of the API's provider on a subscription of the
// actor's organization.
func (s *Service) Redeem(ctx context.Context, actor identity.Actor, subID uuid.UUID, in RedeemInput) (Redemption, error) {
	var out Redemption
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		sub, err := s.cfg.Subscriptions.LockVisible(ctx, tx, actor, subID)
		if err != nil {
			return err
		}
		if !actor.IsAdmin() && actor.OrgID != sub.OrganizationID {
			return identity.ErrForbidden
		}
		if !sub.Live() {
			return fmt.Errorf("%w: subscription %s is %s", subscriptions.ErrSubscriptionInactive, sub.ID, sub.Status)
		}
		out, err = s.redeem(ctx, tx, actor, sub, in.Code, "code", false)
		return err
	})
	return out, err
}

// RedeemAtSubscribe redeems codes on sub, created in tx
// (subscriptions.Promotions). The codes are taken in a fixed order, so
// that two subscriptions redeeming the same codes lock their promotions
// in the same order.
func (s *Service) RedeemAtSubscribe(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub subscriptions.Subscription, codes []string) error {
	if err := checkCodes("promotion_codes", codes); err != nil {
		return err
	}
	order := make([]int, len(codes))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		switch ka, kb := codeKey(codes[a]), codeKey(codes[b]); {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
	for _, i := range order {
		if _, err := s.redeem(ctx, tx, actor, sub, codes[i], "promotion_codes["+strconv.Itoa(i)+"]", true); err != nil {
			return err
		}
	}
	return nil
}

// checkCodes bounds a list of codes: at most MaxCodes, none twice.
func checkCodes(field string, codes []string) error {
	if len(codes) > MaxCodes {
		return validation.One(field, fmt.Sprintf("must list at most %d codes", MaxCodes))
	}
	seen := make(map[string]bool, len(codes))
	var v validation.Error
	for i, c := range codes {
		if seen[codeKey(c)] {
			v.Add(field+"["+strconv.Itoa(i)+"]", "code given twice")
		}
		seen[codeKey(c)] = true
	}
	return v.Err()
}

// redeem redeems code on sub, locked in tx; field names the code in a
// validation error. starting: sub was created in tx.
func (s *Service) redeem(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub subscriptions.Subscription, code, field string, starting bool) (Redemption, error) {
	q := db.New(tx)
	now := s.now().UTC()
	p, err := s.usable(ctx, q, sub.ProviderOrg(), sub.PlanID, code, field, now)
	if err != nil {
		return Redemption{}, err
	}
	if p.Kind == metering.PromotionAmountOff && deref(p.Currency) != sub.Currency() {
		return Redemption{}, validation.One(field, fmt.Sprintf("promotion code %q is in %s, the plan in %s", code, deref(p.Currency), sub.Currency()))
	}
	if err := stacks(ctx, q, sub.ID, p); err != nil {
		return Redemption{}, err
	}
	if err := s.claim(ctx, q, p, sub.OrganizationID, field, now); err != nil {
		return Redemption{}, err
	}
	id, err := q.RedemptionInsert(ctx, db.RedemptionInsertParams{
		PromotionID: p.ID, SubscriptionID: sub.ID, OrganizationID: sub.OrganizationID, RedeemedBy: actor.Subject, RedeemedAt: now,
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return Redemption{}, fmt.Errorf("%w: %q", ErrAlreadyRedeemed, p.Code)
	}
	if err != nil {
		return Redemption{}, fmt.Errorf("insert redemption: %w", err)
	}
	var trialEnds *time.Time
	if p.Kind == metering.PromotionTrialExtension {
		end, err := s.cfg.Subscriptions.ExtendTrial(ctx, tx, sub, int(p.Value.IntPart()), starting)
		if errors.Is(err, subscriptions.ErrNotTrialing) {
			return Redemption{}, validation.One(field, fmt.Sprintf("promotion code %q extends a trial, and the subscription is %s", code, sub.Status))
		}
		if err != nil {
			return Redemption{}, err
		}
		trialEnds = &end
	}
	rows, err := q.RedemptionListBySubscription(ctx, sub.ID)
	if err != nil {
		return Redemption{}, fmt.Errorf("read redemptions: %w", err)
	}
	i := slices.IndexFunc(rows, func(r db.RedemptionListBySubscriptionRow) bool { return r.ID == id })
	if i < 0 {
		return Redemption{}, fmt.Errorf("read redemption %s: not found after insert", id)
	}
	out := toRedemption(rows[i])
	data := map[string]any{"redemption": out, "promotion_id": p.ID, "subscription_id": sub.ID, "trial_ends_at": trialEnds}
	return out, s.record(ctx, tx, actor, sub.OrganizationID, "promotion.redeem", "promotion_redemption", id, nil, data,
		EventRedeemed, data, p.OrganizationID, sub.OrganizationID)
}

// usable finds code among org's promotions and checks that it applies to
// plan at now; every refusal is a validation error of field naming the
// code.
func (s *Service) usable(ctx context.Context, q *db.Queries, org, plan uuid.UUID, code, field string, now time.Time) (Promotion, error) {
	refuse := func(why string) (Promotion, error) {
		return Promotion{}, validation.One(field, fmt.Sprintf("promotion code %q %s", code, why))
	}
	if !codeRe.MatchString(code) {
		return refuse("is unknown")
	}
	p, err := toPromotion(q.PromotionGetByCode(ctx, db.PromotionGetByCodeParams{OrganizationID: org, Code: code}))
	if errors.Is(err, ErrNotFound) {
		return refuse("is unknown")
	}
	if err != nil {
		return Promotion{}, err
	}
	switch {
	case !p.Enabled:
		return refuse("is disabled")
	case now.Before(p.ValidFrom):
		return refuse("is not valid yet")
	case p.ValidUntil != nil && !now.Before(*p.ValidUntil):
		return refuse("has expired")
	case !p.eligible(plan):
		return refuse("does not apply to this plan")
	}
	return p, nil
}

// stacks refuses p next to the subscription's active redemptions when
// either side is exclusive, and p a second time.
func stacks(ctx context.Context, q *db.Queries, sub uuid.UUID, p Promotion) error {
	rows, err := q.RedemptionListBySubscription(ctx, sub)
	if err != nil {
		return fmt.Errorf("read redemptions: %w", err)
	}
	for _, row := range rows {
		r := toRedemption(row)
		if r.PromotionID == p.ID {
			return fmt.Errorf("%w: %q", ErrAlreadyRedeemed, p.Code)
		}
		if !r.Active {
			continue
		}
		if !p.Stackable {
			return fmt.Errorf("%w: %q is exclusive and the subscription has the active promotion %q", ErrNotStackable, p.Code, r.Code)
		}
		if !r.Stackable {
			return fmt.Errorf("%w: the subscription's active promotion %q is exclusive", ErrNotStackable, r.Code)
		}
	}
	return nil
}

// claim takes one use of p for customer: the conditional UPDATE refuses
// one over the total limit, and the row lock it holds makes the count of
// the customer's redemptions that follows exact.
func (s *Service) claim(ctx context.Context, q *db.Queries, p Promotion, customer uuid.UUID, field string, now time.Time) error {
	_, err := q.PromotionClaim(ctx, db.PromotionClaimParams{ID: p.ID, Now: now})
	if errors.Is(err, pgx.ErrNoRows) {
		// Used up, or disabled or expired since usable read it: the
		// statement's snapshot is gone, so read it again to say which.
		cur, err := toPromotion(q.PromotionGetByID(ctx, p.ID))
		if err != nil {
			return err
		}
		if cur.MaxRedemptions != nil && cur.Redemptions >= *cur.MaxRedemptions {
			return fmt.Errorf("%w: %q allows %d", ErrLimitReached, p.Code, *cur.MaxRedemptions)
		}
		return validation.One(field, fmt.Sprintf("promotion code %q is no longer redeemable", p.Code))
	}
	if err != nil {
		return fmt.Errorf("claim promotion: %w", err)
	}
	if p.MaxPerCustomer == nil {
		return nil
	}
	n, err := q.RedemptionCountByCustomer(ctx, db.RedemptionCountByCustomerParams{PromotionID: p.ID, OrganizationID: customer})
	if err != nil {
		return fmt.Errorf("count customer redemptions: %w", err)
	}
	if n >= int64(*p.MaxPerCustomer) {
		return fmt.Errorf("%w: %q allows %d per customer", ErrCustomerLimit, p.Code, *p.MaxPerCustomer)
	}
	return nil
}

// Redemptions lists a subscription's redemptions, for whoever may see
// the subscription (its organization, the API's provider, admins).
func (s *Service) Redemptions(ctx context.Context, actor identity.Actor, subID uuid.UUID) ([]Redemption, error) {
	if _, err := s.cfg.Subscriptions.GetSubscription(ctx, actor, subID); err != nil {
		return nil, err
	}
	rows, err := db.New(s.pool).RedemptionListBySubscription(ctx, subID)
	if err != nil {
		return nil, fmt.Errorf("list redemptions: %w", err)
	}
	out := make([]Redemption, 0, len(rows))
	for _, r := range rows {
		out = append(out, toRedemption(r))
	}
	return out, nil
}
