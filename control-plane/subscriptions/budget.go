package subscriptions

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// Hard budgets at the gateway: a subscription's record carries its hard
// budget (package budgets owns the budgets table) with the plan version's
// terms, from which the processors rate the period's cost so far and
// block the subscription once it reaches the amount (see
// enforcement.Store.EnforceBudget). A soft budget never reaches the record.

// BudgetChanged bumps the subscription's record version and queues its
// gateway record sync in tx; call it whenever a subscription's hard budget
// is created, changed or removed (a soft one changed to hard and back
// included), so that the record is written once tx commits.
func (s *Service) BudgetChanged(ctx context.Context, tx pgx.Tx, subID uuid.UUID) error {
	if err := db.New(tx).SubscriptionBumpSyncVersion(ctx, subID); err != nil {
		return fmt.Errorf("bump subscription sync version: %w", err)
	}
	return s.enqueueSubSync(ctx, tx, subID)
}

// budgetRecord adds sub's hard budget to its record, with the terms of
// its plan version. A budget in another currency than the plan version's
// (the plan changed currency since), or under a version in a currency Veil
// no longer prices in, cannot be compared with its cost and is left out.
func budgetRecord(ctx context.Context, q pricing.DB, sub Subscription, r *enforcement.SubscriptionRecord) error {
	var (
		amount   decimal.Decimal
		currency string
	)
	err := q.QueryRow(ctx, `SELECT amount, currency FROM budgets WHERE subscription_id = $1 AND hard`, sub.ID).Scan(&amount, &currency)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read hard budget: %w", err)
	}
	terms, err := pricing.TermsForVersion(ctx, q, sub.PlanVersionID)
	if errors.Is(err, metering.ErrUnknownCurrency) {
		// A version in a currency Veil no longer prices in cannot be
		// rated: failing would hold up every other change of the record.
		return nil
	}
	if err != nil {
		return fmt.Errorf("read hard budget terms: %w", err)
	}
	if terms.Currency.Code != currency {
		return nil
	}
	r.Budget = metering.BudgetOf(amount, terms)
	return nil
}

// budgetEnforcer is the part of *enforcement.Store that rates a hard
// budget; Records that lack it (test doubles) skip the rating.
type budgetEnforcer interface {
	EnforceBudget(ctx context.Context, id string, rate enforcement.BudgetRater) (enforcement.BudgetState, error)
}

// enforceBudget rates the subscription's period under the budget just
// written: a record write lifts a budget block whenever the budget
// changed, and one still exceeded (raised too little, or a new plan
// version's terms) blocks again here rather than at the next counted call.
// A budget the engine cannot rate blocks nothing and is logged.
func (s *Service) enforceBudget(ctx context.Context, rec enforcement.SubscriptionRecord) error {
	e, ok := s.cfg.Records.(budgetEnforcer)
	if !ok || rec.Budget == nil {
		return nil
	}
	_, err := e.EnforceBudget(ctx, rec.ID, metering.BudgetCost)
	if errors.Is(err, enforcement.ErrBudgetUnrated) {
		s.log.WarnContext(ctx, "hard budget not rated; not enforced", "subscription_id", rec.ID, "error", err)
		return nil
	}
	return err
}
