package promotions

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/promotions/internal/db"
	"github.com/veil-platform/veil/control-plane/subscriptions"
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
