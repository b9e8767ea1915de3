package budgets

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/budgets/internal/db"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/subscriptions"
)

// Bases of a notice: what crossed the threshold.
const (
	// BasisActual: the cost so far.
	BasisActual = "actual"
	// BasisProjected: the projection of the period's cost at its end.
	BasisProjected = "projected"
)

// Notice channels (budget_notices.channel).
const (
	channelWebhook = "webhook"
	channelEmail   = "email"
)

// evaluateBatch is how many budgets one query of an evaluation reads.
const evaluateBatch = 500

// MaxSends bounds how many times one notice (budget, period, threshold,
// basis, channel) goes out in a period: once, and again only after a
// raise of the amount put the threshold's level above the cost it last
// reported and the cost reached it, at most MaxSends-1 times. A member
// who keeps raising the amount as the cost catches up cannot make the
// platform mail the organization without end.
const MaxSends = 4

// standing is a budget as it stands in a period: what its notices say.
type standing struct {
	BudgetID       uuid.UUID
	OrganizationID uuid.UUID
	SubscriptionID *uuid.UUID
	Currency       string
	Amount         decimal.Decimal
	Thresholds     []int16
	PeriodStart    time.Time
	PeriodEnd      time.Time
	Cost           decimal.Decimal
	Projected      decimal.Decimal
}

// crossing is one threshold a standing has reached on one basis.
type crossing struct {
	threshold int
	basis     string
	cost      decimal.Decimal
}

// crossings lists the thresholds st reached: by the cost so far, or, for
// one the cost has not reached yet, by the projection. A threshold the
// cost reached gets no projected notice besides: it would only say the
// same, later.
func (st standing) crossings() []crossing {
	var out []crossing
	for _, t := range st.Thresholds {
		level := st.Amount.Mul(decimal.NewFromInt(int64(t))).Div(decimal.NewFromInt(100))
		switch {
		case st.Cost.GreaterThanOrEqual(level):
			out = append(out, crossing{threshold: int(t), basis: BasisActual, cost: st.Cost})
		case st.Projected.GreaterThanOrEqual(level):
			out = append(out, crossing{threshold: int(t), basis: BasisProjected, cost: st.Projected})
		}
	}
	return out
}

// Report counts what an evaluation did: the budgets it read, the notices
// it claimed (webhooks published and emails queued) and the hard budgets
// of live subscriptions the gateway cannot enforce.
type Report struct {
	Budgets, Notices, Unenforced int
}

// Evaluate compares every budget with its cost so far and projection as
// subscription_outlooks holds them and sends the notices of the
// thresholds crossed that were not sent before. A budget that fails does
// not stop the others; the errors are returned together, and the next run
// tries again. Running it twice, or in two processes at once, sends
// nothing twice. It also counts the hard budgets the gateway cannot
// enforce (countUnenforced).
func (s *Service) Evaluate(ctx context.Context) (Report, error) {
	if s.cfg.Publisher == nil {
		return Report{}, errors.New("evaluate budgets: no publisher")
	}
	var rep Report
	var errs []error
	q := db.New(s.pool)
	for after := uuid.Nil; ; {
		rows, err := q.SubscriptionBudgetsToEvaluate(ctx, db.SubscriptionBudgetsToEvaluateParams{AfterID: after, RowLimit: evaluateBatch})
		if err != nil {
			return rep, errors.Join(append(errs, fmt.Errorf("read subscription budgets: %w", err))...)
		}
		for _, r := range rows {
			after = r.ID
			if r.OutlookCurrency != r.Currency {
				// The plan changed currency: the budget is in the old one
				// until its owner changes it.
				continue
			}
			rep.Budgets++
			n, err := s.notify(ctx, standing{
				BudgetID: r.ID, OrganizationID: r.OrganizationID, SubscriptionID: r.SubscriptionID, Currency: r.Currency,
				Amount: r.Amount, Thresholds: r.Thresholds, PeriodStart: r.PeriodStart, PeriodEnd: r.PeriodEnd,
				Cost: r.CostSoFar, Projected: r.Projected,
			})
			rep.Notices += n
			errs = append(errs, err)
		}
		if len(rows) < evaluateBatch {
			break
		}
	}
	n, err := s.evaluateOrganizations(ctx)
	rep.Budgets += n.Budgets
	rep.Notices += n.Notices
	errs = append(errs, err)
	rep.Unenforced, err = s.countUnenforced(ctx)
	return rep, errors.Join(append(errs, err)...)
}

// countUnenforced finds the hard budgets of live subscriptions that the
// gateway cannot enforce (subscriptions.HardBudgetUnenforceable: the plan
// moved to another currency, or to one Veil no longer prices in), logs
// each at warn and sets veil_controlplane_budgets_unenforced to their
// number. The consumer takes such a budget for a cap while nothing
// blocks: an operator alerts on the gauge. A failed read leaves the gauge
// as the last run set it.
func (s *Service) countUnenforced(ctx context.Context) (int, error) {
	q := db.New(s.pool)
	var n int
	for after := uuid.Nil; ; {
		rows, err := q.HardBudgetsOfLiveSubscriptions(ctx, db.HardBudgetsOfLiveSubscriptionsParams{AfterID: after, RowLimit: evaluateBatch})
		if err != nil {
			return n, fmt.Errorf("read hard budgets: %w", err)
		}
		for _, r := range rows {
			after = r.ID
			if why := subscriptions.HardBudgetUnenforceable(r.Currency, r.VersionCurrency); why != "" {
				n++
				s.log.WarnContext(ctx, "hard budget not enforced at the gateway", "budget_id", r.ID,
					"organization_id", r.OrganizationID, "subscription_id", r.SubscriptionID, "reason", why)
			}
		}
		if len(rows) < evaluateBatch {
			s.unenforced.Set(float64(n))
			return n, nil
		}
	}
}

// evaluateOrganizations evaluates the organization-wide budgets for the
// current month, their cost being monthSpend's.
func (s *Service) evaluateOrganizations(ctx context.Context) (Report, error) {
	var rep Report
	var errs []error
	start, end := MonthOf(s.now())
	q := db.New(s.pool)
	for after := uuid.Nil; ; {
		rows, err := q.OrganizationBudgetsToEvaluate(ctx, db.OrganizationBudgetsToEvaluateParams{AfterID: after, RowLimit: evaluateBatch})
		if err != nil {
			return rep, errors.Join(append(errs, fmt.Errorf("read organization budgets: %w", err))...)
		}
		ids := make([]uuid.UUID, len(rows))
		cur := make(map[uuid.UUID]string, len(rows))
		for i, r := range rows {
			ids[i], cur[r.ID] = r.ID, r.Currency
		}
		spends, err := monthSpends(ctx, q, ids, cur, start, end)
		if err != nil {
			return rep, errors.Join(append(errs, fmt.Errorf("organization budgets: %w", err))...)
		}
		for _, r := range rows {
			after = r.ID
			rep.Budgets++
			m := spends[r.ID]
			n, err := s.notify(ctx, standing{
				BudgetID: r.ID, OrganizationID: r.OrganizationID, Currency: r.Currency, Amount: r.Amount,
				Thresholds: r.Thresholds, PeriodStart: start, PeriodEnd: end, Cost: m.cost, Projected: m.projected,
			})
			rep.Notices += n
			errs = append(errs, err)
		}
		if len(rows) < evaluateBatch {
			return rep, errors.Join(errs...)
		}
	}
}

// notify sends the notices of st's crossings not sent before, in one
// transaction: each notice's claim (its budget_notices row) commits with
// its webhook's outbox delivery or its email's job, or neither does. A
// second evaluator claiming the same rows waits for this one's
// transaction and then finds them taken. It returns the notices claimed.
func (s *Service) notify(ctx context.Context, st standing) (int, error) {
	cs := st.crossings()
	if len(cs) == 0 {
		return 0, nil
	}
	mail := s.cfg.Mailer != nil
	var sent, hooks, emails, dups int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		sent, hooks, emails, dups = 0, 0, 0, 0
		for _, c := range cs {
			ok, err := claim(ctx, tx, st, c, channelWebhook)
			if err != nil {
				return err
			}
			if ok {
				if err := s.cfg.Publisher.Publish(ctx, tx, st.OrganizationID, EventThresholdCrossed, noticeOf(st, c)); err != nil {
					return fmt.Errorf("publish budget notice: %w", err)
				}
				hooks++
			} else {
				dups++
			}
			if !mail {
				continue
			}
			if ok, err = claim(ctx, tx, st, c, channelEmail); err != nil {
				return err
			}
			if ok {
				if _, err := s.cfg.Jobs.InsertTx(ctx, tx, emailArgs(st, c), &river.InsertOpts{MaxAttempts: emailMaxAttempts}); err != nil {
					return fmt.Errorf("enqueue budget email: %w", err)
				}
				emails++
			}
		}
		sent = hooks + emails
		return nil
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "23503":
		// The budget was deleted since it was read.
		return 0, nil
	case err != nil:
		s.noticeCounter(channelWebhook, notify.ResultFailed).Add(len(cs))
		return 0, fmt.Errorf("notify budget %s: %w", st.BudgetID, err)
	}
	s.noticeCounter(channelWebhook, notify.ResultSent).Add(hooks)
	s.noticeCounter(channelWebhook, notify.ResultDuplicate).Add(dups)
	s.noticeCounter(channelEmail, notify.ResultQueued).Add(emails)
	if sent > 0 {
		s.log.InfoContext(ctx, "budget notices", "budget_id", st.BudgetID, "period_start", st.PeriodStart,
			"webhooks", hooks, "emails", emails)
	}
	return sent, nil
}

// claim inserts the budget_notices row of crossing c on channel, or
// takes it again when c is new in money terms (see NoticeClaim); it
// reports false when c was told before.
func claim(ctx context.Context, tx pgx.Tx, st standing, c crossing, channel string) (bool, error) {
	n, err := db.New(tx).NoticeClaim(ctx, db.NoticeClaimParams{
		BudgetID: st.BudgetID, PeriodStart: st.PeriodStart, Threshold: int16(c.threshold), Basis: c.basis,
		Channel: channel, Amount: st.Amount, Cost: c.cost, MaxSends: MaxSends,
	})
	if err != nil {
		return false, fmt.Errorf("claim %s budget notice: %w", channel, err)
	}
	return n == 1, nil
}
