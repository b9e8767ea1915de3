package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

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

// HardBudgetUnenforceable is the rule of which hard budgets the gateway
// can enforce: it says why it cannot enforce a hard budget in
// budgetCurrency on a subscription whose current plan version is priced
// in versionCurrency, or "" when it can. A budget in another currency than
// the version's (the plan changed currency since) cannot be compared with
// the cost, and a version in a currency Veil no longer prices in cannot
// be rated. budgetRecord leaves such a budget out of the record; package
// budgets refuses to create one, answers it "enforced": false and counts
// it. The reason is short and fit for an API answer.
func HardBudgetUnenforceable(budgetCurrency, versionCurrency string) string {
	if _, err := metering.CurrencyOf(versionCurrency); err != nil {
		return fmt.Sprintf("the plan version's currency, %s, is no longer priced", versionCurrency)
	}
	if budgetCurrency != versionCurrency {
		return fmt.Sprintf("the budget is in %s, the plan version in %s", budgetCurrency, versionCurrency)
	}
	return ""
}

// budgetRecord adds sub's hard budget to its record, with the terms of
// its plan version and of the other versions in force in the period's
// billable time (metering.BudgetFor). A trialing subscription's record
// carries none: the trial is not billed. A budget the gateway cannot
// enforce (HardBudgetUnenforceable) is left out, rather than failing,
// which would hold up every other change of the record: skipped says why,
// for the caller to log.
func budgetRecord(ctx context.Context, q pricing.DB, sub Subscription, r *enforcement.SubscriptionRecord) (skipped string, err error) {
	var (
		amount                    decimal.Decimal
		currency, versionCurrency string
	)
	err = q.QueryRow(ctx, `SELECT b.amount, b.currency, v.currency FROM budgets b, plan_versions v
		WHERE b.subscription_id = $1 AND b.hard AND v.id = $2`, sub.ID, sub.PlanVersionID).Scan(&amount, &currency, &versionCurrency)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && sub.Status == StatusTrialing) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read hard budget: %w", err)
	}
	if why := HardBudgetUnenforceable(currency, versionCurrency); why != "" {
		return why, nil
	}
	terms, err := pricing.TermsForVersion(ctx, q, sub.PlanVersionID)
	if err != nil {
		return "", fmt.Errorf("read hard budget terms: %w", err)
	}
	from := sub.CurrentPeriodStart
	if t := sub.TrialEndsAt; t != nil && t.After(from) {
		from = *t
	}
	if !from.Before(sub.CurrentPeriodEnd) {
		return "", nil // the period lies wholly in the trial
	}
	earlier, err := earlierBudgetTerms(ctx, q, sub, from, currency)
	if err != nil {
		return "", err
	}
	r.Budget = metering.BudgetFor(amount, terms, earlier, sub.CurrentPeriodStart, from, sub.CurrentPeriodEnd)
	return "", nil
}

// earlierBudgetTerms are the terms, in currency, of the plan versions
// other than sub's current one in force in its current period from from
// (where the billable time begins): the version in force at from (the
// first one recorded when none is earlier, as billing reads the history)
// and those it changed to since. Versions in another currency cannot be
// compared with the budget and are left out.
func earlierBudgetTerms(ctx context.Context, q pricing.DB, sub Subscription, from time.Time, currency string) ([]metering.PlanTerms, error) {
	rows, err := q.Query(ctx, `SELECT plan_version_id, effective_at FROM subscription_history
		WHERE subscription_id = $1 AND effective_at < $2 ORDER BY effective_at, id`, sub.ID, sub.CurrentPeriodEnd)
	if err != nil {
		return nil, fmt.Errorf("read plan versions of the period: %w", err)
	}
	var ids []uuid.UUID
	var v uuid.UUID
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&v, &at}, func() error {
		switch {
		case len(ids) == 0 || !at.After(from):
			ids = append(ids[:0], v) // the version in force at from so far
		case !slices.Contains(ids, v):
			ids = append(ids, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read plan versions of the period: %w", err)
	}
	var out []metering.PlanTerms
	for _, id := range ids {
		if id == sub.PlanVersionID || len(out) == enforcement.MaxBudgetVersions {
			continue
		}
		t, err := pricing.TermsForVersion(ctx, q, id)
		if errors.Is(err, metering.ErrUnknownCurrency) || (err == nil && t.Currency.Code != currency) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read earlier plan version terms: %w", err)
		}
		out = append(out, t)
	}
	return out, nil
}

// budgetNotEnforced logs a hard budget the gateway cannot enforce: the
// consumer relies on it as a cap, so an operator must see that it is off
// (a plan change to another currency needs the budget recreated in the
// new one).
func (s *Service) budgetNotEnforced(ctx context.Context, subID uuid.UUID, why string) {
	s.log.WarnContext(ctx, "hard budget not enforced at the gateway", "subscription_id", subID, "reason", why)
}

// trialMarker is the part of *enforcement.Store that records a trial's
// usage in the period counter; Records that lack it (test doubles) skip it.
type trialMarker interface {
	MarkTrialEnd(ctx context.Context, id string, periodStart time.Time, meters []enforcement.MeterSpec) error
}

// markTrialEnd records, once the trial of sub has ended inside its current
// period, the period's counters as they are as the trial's usage, which a
// hard budget leaves out. It runs before the record is written, so a
// record with a budget never rates the trial; the first sync after the
// trial's end (maintenance ends trials) records it, later ones keep it.
func (s *Service) markTrialEnd(ctx context.Context, sub Subscription, rec enforcement.SubscriptionRecord) error {
	m, ok := s.cfg.Records.(trialMarker)
	t := sub.TrialEndsAt
	if !ok || t == nil || sub.Status == StatusTrialing || !t.After(sub.CurrentPeriodStart) || !t.Before(sub.CurrentPeriodEnd) || s.now().Before(*t) {
		return nil
	}
	return m.MarkTrialEnd(ctx, rec.ID, sub.CurrentPeriodStart, rec.Meters)
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
