package budgets

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/budgets/internal/db"
	"github.com/veil-platform/veil/metering"
)

// MonthOf is the period of an organization-wide budget at t: the calendar
// month in UTC.
func MonthOf(t time.Time) (start, end time.Time) {
	t = t.UTC()
	start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}

// monthSpend is an organization-wide budget's cost in its month so far
// and the projection of it at the month's end.
//
// Billing periods need not be calendar months, so each period's cost is
// spread evenly over the time it covers and the month takes the part
// that falls in it: an invoiced period (a draft or a finalized invoice,
// not a void one) its total times the share of the period inside the
// month; the current period, not invoiced yet, its cost so far times the
// share inside the month of the time from the period's start to when the
// outlook was computed. The projection adds to the invoiced parts the
// current period's projected total at its own pace over the part of the
// month from the period's start (or the month's) to the month's end: past
// the period's end too when the subscription renews, as if the next
// period ran at the same pace.
//
// So the cost neither holds the previous month's spend at a month's start
// nor drops when a period rolls mid-month: the ended period moves from
// its outlook to its invoice. The exception is the time between a
// period's end and its draft invoice (billing's grace, an hour by
// default) when the ended period is in neither; the notices already sent
// stay sent, and the next evaluation after the draft counts it again.
type monthSpend struct {
	cost, projected decimal.Decimal
}

// monthSpends computes the monthSpend in [start, end) of each of the
// organization-wide budgets ids, rounded to the currency of each budget
// (cur). A budget with no invoice or outlook in the month spends zero.
func monthSpends(ctx context.Context, q *db.Queries, ids []uuid.UUID, cur map[uuid.UUID]string, start, end time.Time) (map[uuid.UUID]monthSpend, error) {
	out := make(map[uuid.UUID]monthSpend, len(ids))
	invoices, err := q.OrganizationMonthInvoices(ctx, db.OrganizationMonthInvoicesParams{BudgetIds: ids, MonthStart: start, MonthEnd: end})
	if err != nil {
		return nil, fmt.Errorf("read invoices of the month: %w", err)
	}
	for _, r := range invoices {
		part := share(r.Total, r.PeriodStart, r.PeriodEnd, start, end)
		m := out[r.BudgetID]
		m.cost, m.projected = m.cost.Add(part), m.projected.Add(part)
		out[r.BudgetID] = m
	}
	outlooks, err := q.OrganizationMonthOutlooks(ctx, db.OrganizationMonthOutlooksParams{BudgetIds: ids, MonthStart: start, MonthEnd: end})
	if err != nil {
		return nil, fmt.Errorf("read outlooks of the month: %w", err)
	}
	for _, r := range outlooks {
		m := out[r.BudgetID]
		c, p := outlookInMonth(r, start, end)
		m.cost, m.projected = m.cost.Add(c), m.projected.Add(p)
		out[r.BudgetID] = m
	}
	for id, m := range out {
		c, err := metering.CurrencyOf(cur[id])
		if err != nil {
			return nil, fmt.Errorf("round budget %s: %w", id, err)
		}
		out[id] = monthSpend{cost: c.Round(m.cost), projected: c.Round(m.projected)}
	}
	return out, nil
}

// outlookInMonth is the part in [start, end) of a current period's cost so
// far and of its projection (see monthSpend).
func outlookInMonth(r db.OrganizationMonthOutlooksRow, start, end time.Time) (cost, projected decimal.Decimal) {
	asOf := r.ComputedAt
	if asOf.After(r.PeriodEnd) {
		asOf = r.PeriodEnd
	}
	cost = share(r.CostSoFar, r.PeriodStart, asOf, start, end)
	until := r.PeriodEnd
	if r.Renews && until.Before(end) {
		until = end
	}
	if span := r.PeriodEnd.Sub(r.PeriodStart); span > 0 {
		projected = r.Projected.Mul(overlap(r.PeriodStart, until, start, end)).Div(decimal.NewFromInt(int64(span)))
	}
	return cost, projected
}

// share is the part in [start, end) of amount spread evenly over [from,
// to).
func share(amount decimal.Decimal, from, to, start, end time.Time) decimal.Decimal {
	span := to.Sub(from)
	if span <= 0 {
		return decimal.Zero
	}
	return amount.Mul(overlap(from, to, start, end)).Div(decimal.NewFromInt(int64(span)))
}

// overlap is how long [from, to) and [start, end) share, in nanoseconds.
func overlap(from, to, start, end time.Time) decimal.Decimal {
	lo, hi := max(from.UnixNano(), start.UnixNano()), min(to.UnixNano(), end.UnixNano())
	if hi <= lo {
		return decimal.Zero
	}
	return decimal.NewFromInt(hi - lo)
}
