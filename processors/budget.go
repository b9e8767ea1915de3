package processors

import (
	"context"
	"errors"
	"log/slog"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// Hard budgets: after a batch's counting calls, every subscription of the
// batch whose record carries a hard budget has its current period rated
// from its counters and is blocked once the cost reaches the amount
// (enforcement.Store.EnforceBudget, rated by metering.BudgetCost). It runs
// whether or not the batch changed a counter, so a batch replayed after a
// crash between its counting call and the rating blocks then: the counters
// are exactly once, and so is the cost rated from them.

// enforceBudgets rates the budgets of the subjects of order whose record
// (as periods read it) has one. A Redis failure is returned, for the
// caller to apply the batch again (its counts are settled and change
// nothing the second time); a budget that cannot be rated, or a record
// that no longer decodes, blocks nothing and is logged.
func (s *redisSink) enforceBudgets(ctx context.Context, order []subjectPartition, periods map[string]*enforcement.RecordedPeriod) error {
	done := map[string]bool{}
	for _, k := range order {
		rec := periods[k.subject]
		if rec == nil || rec.Budget == "" || done[k.subject] {
			continue
		}
		done[k.subject] = true
		_, err := s.store.EnforceBudget(ctx, k.subject, metering.BudgetCost)
		switch {
		case errors.Is(err, enforcement.ErrBudgetUnrated), errors.Is(err, enforcement.ErrCorruptRecord):
			s.logger().WarnContext(ctx, "hard budget not enforced", "subscription_id", k.subject, "err", err)
		case err != nil:
			return err
		}
	}
	return nil
}

func (s *redisSink) logger() *slog.Logger {
	if s.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.log
}
