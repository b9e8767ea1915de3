package budgets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/budgets/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// Budget is an amount an organization means to spend in a period.
type Budget struct {
	ID             uuid.UUID `json:"id"`
	OrganizationID uuid.UUID `json:"organization_id"`
	// SubscriptionID is nil for an organization-wide budget.
	SubscriptionID *uuid.UUID      `json:"subscription_id"`
	Currency       string          `json:"currency"`
	Amount         decimal.Decimal `json:"amount"`
	// Thresholds are percents of Amount, ascending.
	Thresholds []int `json:"thresholds"`
	Hard       bool  `json:"hard"`
	// Enforced, on a hard budget only (a soft one blocks nothing, so it
	// has none), is whether the gateway can enforce it: false once the
	// subscription's plan moved to another currency than the budget's, or
	// to one Veil no longer prices in (subscriptions.HardBudgetUnenforceable);
	// the gateway then leaves it out of the record and blocks nothing.
	Enforced *bool `json:"enforced,omitempty"`
	// NotEnforcedReason says why, when Enforced is false.
	NotEnforcedReason string    `json:"not_enforced_reason,omitempty"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

func toBudget(r db.Budget) Budget {
	th := make([]int, len(r.Thresholds))
	for i, t := range r.Thresholds {
		th[i] = int(t)
	}
	return Budget{
		ID: r.ID, OrganizationID: r.OrganizationID, SubscriptionID: r.SubscriptionID, Currency: r.Currency,
		Amount: r.Amount, Thresholds: th, Hard: r.Hard, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// Input creates a budget.
type Input struct {
	// SubscriptionID names the subscription; nil makes an
	// organization-wide budget.
	SubscriptionID *uuid.UUID `json:"subscription_id"`
	// OrganizationID names the organization of an organization-wide
	// budget, for admins; members may leave it out or name their own.
	OrganizationID *uuid.UUID `json:"organization_id"`
	// Currency is required for an organization-wide budget; for a
	// subscription's it may be left out and must otherwise be its plan's.
	Currency string           `json:"currency"`
	Amount   *decimal.Decimal `json:"amount"`
	// Thresholds default to DefaultThresholds.
	Thresholds []int `json:"thresholds"`
	Hard       bool  `json:"hard"`
}

// Update changes a budget: Amount replaces its amount; Thresholds and
// Hard, left out (nil), keep their values, so that a change of the amount
// that forgets the flag cannot lift a hard budget's block. Its
// subscription, organization and currency stay.
type Update struct {
	Amount     *decimal.Decimal `json:"amount"`
	Thresholds []int            `json:"thresholds"`
	Hard       *bool            `json:"hard"`
	// Currency may restate the budget's; another one is
	// ErrCurrencyMismatch (a budget's notices and its gateway record are
	// in its currency: one in another is a new budget).
	Currency string `json:"currency"`
}

// Bounds of a budget.
const (
	// MaxThresholds bounds the thresholds of one budget.
	MaxThresholds = 10
	// MaxThreshold is the highest percent: ten times the amount.
	MaxThreshold = 1000
)

// DefaultThresholds are a budget's thresholds when none are given.
var DefaultThresholds = []int{50, 80, 100}

// maxAmount bounds an amount: numeric(20, 6) holds below 10^14, and
// nobody budgets above a trillion.
var maxAmount = decimal.New(1, 12)

// checkAmount adds amount's errors to v.
func checkAmount(v *validation.Error, amount *decimal.Decimal) {
	switch {
	case amount == nil:
		v.Add("amount", "is required")
	case !validation.Sane(*amount) || !amount.IsPositive() || !amount.LessThan(maxAmount) || amount.Exponent() < -6:
		v.Add("amount", "must be above 0 and below 10^12, with at most 6 decimals")
	}
}

// checkThresholds adds the thresholds' errors to v and returns them
// ascending, DefaultThresholds when none are given.
func checkThresholds(v *validation.Error, th []int) []int16 {
	if th == nil {
		th = DefaultThresholds
	}
	if len(th) == 0 || len(th) > MaxThresholds {
		v.Add("thresholds", "must hold 1 to %d percents", MaxThresholds)
		return nil
	}
	out := make([]int16, 0, len(th))
	for _, t := range th {
		if t < 1 || t > MaxThreshold {
			v.Add("thresholds", "each must be a percent from 1 to %d", MaxThreshold)
			return nil
		}
		out = append(out, int16(t))
	}
	slices.Sort(out)
	if len(slices.Compact(slices.Clone(out))) != len(out) {
		v.Add("thresholds", "must be distinct")
		return nil
	}
	return out
}

// canManage reports whether actor manages organization org's budgets: its
// members, whatever their role, and admins. Anyone else is answered not
// found, as if the budget did not exist.
func canManage(actor identity.Actor, org uuid.UUID) bool {
	return actor.IsAdmin() || (actor.OrgID == org && actor.OrgID != uuid.Nil)
}

// List pages through an organization's budgets: the caller's own, or for
// admins the one org names (uuid.Nil: their own). Another organization's
// is not found.
func (s *Service) List(ctx context.Context, actor identity.Actor, org uuid.UUID, cursor string, limit int) ([]Budget, string, error) {
	if org == uuid.Nil {
		org = actor.OrgID
	}
	if !canManage(actor, org) {
		return nil, "", ErrNotFound
	}
	c, err := pagination.Decode(cursor)
	if err != nil {
		return nil, "", err
	}
	limit = pagination.Limit(limit)
	rows, err := db.New(s.pool).BudgetsOfOrganization(ctx, db.BudgetsOfOrganizationParams{
		OrganizationID: org, AfterAt: c.Time(), AfterID: c.ID, RowLimit: int32(limit + 1),
	})
	if err != nil {
		return nil, "", fmt.Errorf("list budgets: %w", err)
	}
	out := make([]Budget, len(rows))
	for i, r := range rows {
		out[i] = toBudget(r)
	}
	page, next := pagination.Page(out, limit, func(b Budget) pagination.Cursor { return pagination.Cursor{At: b.CreatedAt, ID: b.ID} })
	if err := s.markEnforced(ctx, page); err != nil {
		return nil, "", err
	}
	return page, next, nil
}

// markEnforced sets Enforced and NotEnforcedReason on the hard
// subscription budgets of bs, in one read of their subscriptions' plan
// currencies.
func (s *Service) markEnforced(ctx context.Context, bs []Budget) error {
	var ids []uuid.UUID
	for _, b := range bs {
		if b.Hard && b.SubscriptionID != nil {
			ids = append(ids, *b.SubscriptionID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := db.New(s.pool).PlanCurrenciesOfSubscriptions(ctx, ids)
	if err != nil {
		return fmt.Errorf("read plan currencies: %w", err)
	}
	cur := make(map[uuid.UUID]string, len(rows))
	for _, r := range rows {
		cur[r.ID] = r.Currency
	}
	for i, b := range bs {
		if b.Hard && b.SubscriptionID != nil {
			why := subscriptions.HardBudgetUnenforceable(b.Currency, cur[*b.SubscriptionID])
			bs[i].Enforced, bs[i].NotEnforcedReason = new(why == ""), why
		}
	}
	return nil
}

// Get reads one budget of the caller's organization (admins: any).
func (s *Service) Get(ctx context.Context, actor identity.Actor, id uuid.UUID) (Budget, error) {
	r, err := db.New(s.pool).BudgetGet(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !canManage(actor, r.OrganizationID)) {
		return Budget{}, ErrNotFound
	}
	if err != nil {
		return Budget{}, fmt.Errorf("read budget: %w", err)
	}
	out := []Budget{toBudget(r)}
	if err := s.markEnforced(ctx, out); err != nil {
		return Budget{}, err
	}
	return out[0], nil
}

// Create sets a budget, audited. A subscription of another organization
// is not found, and so is another organization for a member.
func (s *Service) Create(ctx context.Context, actor identity.Actor, in Input) (Budget, error) {
	var v validation.Error
	checkAmount(&v, in.Amount)
	th := checkThresholds(&v, in.Thresholds)
	if in.SubscriptionID == nil {
		if in.Hard {
			v.Add("hard", "only a subscription's budget can be hard: the gateway blocks one subscription")
		}
		if _, err := metering.CurrencyOf(in.Currency); err != nil {
			v.Add("currency", "is required: a currency Veil prices in (ISO 4217, upper case)")
		}
	} else if in.OrganizationID != nil {
		v.Add("organization_id", "goes with an organization-wide budget; a subscription's budget is its organization's")
	}
	if err := v.Err(); err != nil {
		return Budget{}, err
	}
	var out Budget
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := s.createParams(ctx, q, actor, in)
		if err != nil {
			return err
		}
		p.Amount, p.Thresholds, p.Hard = *in.Amount, th, in.Hard
		row, err := q.BudgetInsert(ctx, p)
		if err != nil {
			return insertError(err)
		}
		out = toBudget(row)
		if out.Hard {
			if err := s.recordChanged(ctx, tx, out.SubscriptionID); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: out.OrganizationID,
			Action: "budget.create", TargetType: "budget", TargetID: out.ID.String(), After: out,
		})
	})
	if err != nil {
		return Budget{}, err
	}
	bs := []Budget{out}
	err = s.markEnforced(ctx, bs)
	return bs[0], err
}

// createParams resolves a new budget's organization and currency.
func (s *Service) createParams(ctx context.Context, q *db.Queries, actor identity.Actor, in Input) (db.BudgetInsertParams, error) {
	if in.SubscriptionID == nil {
		org := actor.OrgID
		if in.OrganizationID != nil {
			org = *in.OrganizationID
		}
		if !canManage(actor, org) {
			return db.BudgetInsertParams{}, ErrNotFound
		}
		return db.BudgetInsertParams{OrganizationID: org, Currency: in.Currency}, nil
	}
	sub, err := q.SubscriptionForBudget(ctx, *in.SubscriptionID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !canManage(actor, sub.OrganizationID)) {
		return db.BudgetInsertParams{}, ErrSubscriptionNotFound
	}
	if err != nil {
		return db.BudgetInsertParams{}, fmt.Errorf("read subscription: %w", err)
	}
	if in.Currency != "" && in.Currency != sub.Currency {
		return db.BudgetInsertParams{}, fmt.Errorf("%w: the subscription's plan is priced in %s, not %s; leave currency out or give %[2]s",
			ErrCurrencyMismatch, sub.Currency, in.Currency)
	}
	if in.Hard { // in the plan's currency, which Veil may no longer price in
		if err := enforceable(sub.Currency, sub.Currency); err != nil {
			return db.BudgetInsertParams{}, err
		}
	}
	return db.BudgetInsertParams{OrganizationID: sub.OrganizationID, SubscriptionID: in.SubscriptionID, Currency: sub.Currency}, nil
}

// insertError maps the budget insert's constraint errors.
func insertError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505":
			return ErrExists
		case "23503":
			// An admin naming an organization that does not exist, or a
			// subscription deleted meanwhile.
			return ErrNotFound
		}
	}
	return fmt.Errorf("insert budget: %w", err)
}

// Change sets a budget's amount, and its thresholds and hard flag where
// in has them (see Update), audited. It leaves the notices sent alone:
// whether a threshold tells again at the new amount is the evaluation's
// to decide (see NoticeClaim), so that no sequence of changes can send a
// notice again by itself.
func (s *Service) Change(ctx context.Context, actor identity.Actor, id uuid.UUID, in Update) (Budget, error) {
	var v validation.Error
	checkAmount(&v, in.Amount)
	var th []int16
	if in.Thresholds != nil {
		th = checkThresholds(&v, in.Thresholds)
	}
	if err := v.Err(); err != nil {
		return Budget{}, err
	}
	var out Budget
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		before, err := s.lock(ctx, q, actor, id)
		if err != nil {
			return err
		}
		hard := before.Hard
		if in.Hard != nil {
			hard = *in.Hard
		}
		if hard && before.SubscriptionID == nil {
			return validation.One("hard", "only a subscription's budget can be hard: the gateway blocks one subscription")
		}
		if in.Currency != "" && in.Currency != before.Currency {
			return fmt.Errorf("%w: a budget's currency stays, %s; to budget in %s, delete it and create one", ErrCurrencyMismatch, before.Currency, in.Currency)
		}
		if hard {
			sub, err := q.SubscriptionForBudget(ctx, *before.SubscriptionID)
			if err != nil {
				return fmt.Errorf("read subscription: %w", err)
			}
			if err := enforceable(before.Currency, sub.Currency); err != nil {
				return err
			}
		}
		if th == nil {
			for _, t := range before.Thresholds {
				th = append(th, int16(t))
			}
		}
		row, err := q.BudgetUpdate(ctx, db.BudgetUpdateParams{ID: id, Amount: *in.Amount, Thresholds: th, Hard: hard})
		if err != nil {
			return fmt.Errorf("update budget: %w", err)
		}
		out = toBudget(row)
		if before.Hard != out.Hard || (out.Hard && !before.Amount.Equal(out.Amount)) {
			if err := s.recordChanged(ctx, tx, out.SubscriptionID); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: out.OrganizationID,
			Action: "budget.update", TargetType: "budget", TargetID: id.String(), Before: before, After: out,
		})
	})
	if err != nil {
		return Budget{}, err
	}
	bs := []Budget{out}
	err = s.markEnforced(ctx, bs)
	return bs[0], err
}

// enforceable refuses a hard budget in currency on a subscription whose
// plan version is in versionCurrency when the gateway could not enforce
// it: the consumer would rely on a cap that blocks nothing.
func enforceable(currency, versionCurrency string) error {
	if why := subscriptions.HardBudgetUnenforceable(currency, versionCurrency); why != "" {
		return fmt.Errorf("%w: the gateway could not enforce this hard budget: %s; a soft one (\"hard\": false) still notifies", ErrCurrencyMismatch, why)
	}
	return nil
}

// Delete removes a budget and its notices, audited.
func (s *Service) Delete(ctx context.Context, actor identity.Actor, id uuid.UUID) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		before, err := s.lock(ctx, q, actor, id)
		if err != nil {
			return err
		}
		if err := q.BudgetDelete(ctx, id); err != nil {
			return fmt.Errorf("delete budget: %w", err)
		}
		if before.Hard {
			if err := s.recordChanged(ctx, tx, before.SubscriptionID); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: before.OrganizationID,
			Action: "budget.delete", TargetType: "budget", TargetID: id.String(), Before: before,
		})
	})
}

// lock reads a budget the actor manages, holding its row.
func (s *Service) lock(ctx context.Context, q *db.Queries, actor identity.Actor, id uuid.UUID) (Budget, error) {
	r, err := q.BudgetLock(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !canManage(actor, r.OrganizationID)) {
		return Budget{}, ErrNotFound
	}
	if err != nil {
		return Budget{}, fmt.Errorf("read budget: %w", err)
	}
	return toBudget(r), nil
}

// recordChanged has the subscription's gateway record rewritten with its
// hard budget, in tx.
func (s *Service) recordChanged(ctx context.Context, tx pgx.Tx, sub *uuid.UUID) error {
	if s.cfg.Records == nil || sub == nil {
		return nil
	}
	if err := s.cfg.Records.BudgetChanged(ctx, tx, *sub); err != nil {
		return fmt.Errorf("sync hard budget: %w", err)
	}
	return nil
}
