package promotions

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/promotions/internal/db"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// Resolve reads codes for a quote of plan at at, without redeeming them:
// each must be a promotion of the plan's provider, enabled, inside its
// window, eligible for the plan and not used up; at most MaxCodes, none
// twice. A code that is not is a validation error of promotion_codes[i]
// saying only that it cannot be applied to this plan: anyone who may see
// the plan may quote it, and a reason per refusal would tell them which
// codes exist (Redeem, by the subscriber, says why). The caller has checked
// that its actor may see the plan; a quote reserves nothing, the currency
// is the quote's to check.
func (s *Service) Resolve(ctx context.Context, planID uuid.UUID, codes []string, at time.Time) ([]metering.Promotion, error) {
	if len(codes) == 0 {
		return nil, nil
	}
	if err := checkCodes("promotion_codes", codes); err != nil {
		return nil, err
	}
	q := db.New(s.pool)
	org, err := q.PlanProvider(ctx, planID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, subscriptions.ErrPlanNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read plan provider: %w", err)
	}
	out := make([]metering.Promotion, 0, len(codes))
	for i, code := range codes {
		field := "promotion_codes[" + strconv.Itoa(i) + "]"
		p, err := s.usable(ctx, q, org, planID, code, field, at.UTC())
		var v *validation.Error
		if errors.As(err, &v) {
			return nil, cannotApply(field, code)
		}
		if err != nil {
			return nil, err
		}
		if p.MaxRedemptions != nil && p.Redemptions >= *p.MaxRedemptions {
			// Used up: Redeem would refuse it, so a quote must not
			// promise its discount.
			return nil, cannotApply(field, code)
		}
		out = append(out, p.Metering())
	}
	return out, nil
}

// QuoteWithCodes prices a quote of terms, plan planID's, for usage with
// the promotion codes given (httpapi.PromotionQuoter): Resolve, then
// terms.QuoteWithPromotions. An amount_off code in another currency than
// the plan's cannot be applied either, said as Resolve says it.
func (s *Service) QuoteWithCodes(ctx context.Context, planID uuid.UUID, terms metering.PlanTerms,
	usage map[string]decimal.Decimal, codes []string) (metering.Quote, error) {
	promos, err := s.Resolve(ctx, planID, codes, s.now())
	if err != nil {
		return metering.Quote{}, err
	}
	for i, p := range promos {
		if p.Kind == metering.PromotionAmountOff && p.Currency != terms.Currency.Code {
			return metering.Quote{}, cannotApply("promotion_codes["+strconv.Itoa(i)+"]", codes[i])
		}
	}
	return terms.QuoteWithPromotions(usage, promos)
}

// cannotApply is a quote's one refusal of a code, whatever the reason.
func cannotApply(field, code string) error {
	return validation.One(field, fmt.Sprintf("promotion code %q cannot be applied to this plan", code))
}
