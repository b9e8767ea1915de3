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

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/promotions/internal/db"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// Resolve reads codes for a quote of plan at at, without redeeming them:
// each must be a promotion of the plan's provider, enabled, inside its
// window and eligible for the plan; at most MaxCodes, none twice. A code
// that is not is a validation error of promotion_codes[i] naming it. The
// caller has checked that actor may see the plan; limits are not checked
// (a quote reserves nothing), the currency is the quote's to check.
func (s *Service) Resolve(ctx context.Context, actor identity.Actor, planID uuid.UUID, codes []string, at time.Time) ([]metering.Promotion, error) {
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
		p, err := s.usable(ctx, q, org, planID, code, "promotion_codes["+strconv.Itoa(i)+"]", at.UTC())
		if err != nil {
			return nil, err
		}
		out = append(out, p.Metering())
	}
	return out, nil
}

// QuoteWithCodes prices a quote of terms, plan planID's, for usage with
// the promotion codes given (httpapi.PromotionQuoter): Resolve, then
// terms.QuoteWithPromotions. An amount_off code in another currency than
// the plan's is a validation error naming it.
func (s *Service) QuoteWithCodes(ctx context.Context, actor identity.Actor, planID uuid.UUID, terms metering.PlanTerms,
	usage map[string]decimal.Decimal, codes []string) (metering.Quote, error) {
	promos, err := s.Resolve(ctx, actor, planID, codes, s.now())
	if err != nil {
		return metering.Quote{}, err
	}
	var v validation.Error
	for i, p := range promos {
		if p.Kind == metering.PromotionAmountOff && p.Currency != terms.Currency.Code {
			v.Add("promotion_codes["+strconv.Itoa(i)+"]", "promotion code %q is in %s, the plan in %s", p.Code, p.Currency, terms.Currency.Code)
		}
	}
	if err := v.Err(); err != nil {
		return metering.Quote{}, err
	}
	return terms.QuoteWithPromotions(usage, promos)
}
