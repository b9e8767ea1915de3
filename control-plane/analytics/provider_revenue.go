package analytics

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

// Live subscription states: the ones whose outlook is kept.
const liveStatuses = `('active', 'trialing', 'past_due')`

// revenueSQL: the invoices of the APIs' subscriptions finalized in the
// window (void ones and drafts left out) by day of finalization in the zone
// and plan (the plan the subscription is on), plus the cost so far of
// their current periods by day of its computation. $4 is the zone's name
// (Postgres knows the IANA names Go does).
const revenueSQL = `SELECT i.currency, to_char(i.finalized_at AT TIME ZONE $4, 'YYYY-MM-DD'), p.id, p.name, sum(i.total), 0::numeric
FROM invoices i
JOIN subscriptions s ON s.id = i.subscription_id
JOIN plan_versions pv ON pv.id = s.plan_version_id
JOIN plans p ON p.id = pv.plan_id
WHERE s.api_id = ANY($1) AND i.status IN ('open', 'paid', 'uncollectible')
  AND i.finalized_at >= $2 AND i.finalized_at < $3
GROUP BY 1, 2, 3, 4
UNION ALL
SELECT o.currency, to_char(o.computed_at AT TIME ZONE $4, 'YYYY-MM-DD'), p.id, p.name, 0::numeric, sum(o.cost_so_far)
FROM subscription_outlooks o
JOIN subscriptions s ON s.id = o.subscription_id
JOIN plan_versions pv ON pv.id = s.plan_version_id
JOIN plans p ON p.id = pv.plan_id
WHERE s.api_id = ANY($1) AND s.status IN ` + liveStatuses + `
  AND o.period_start = s.current_period_start
  AND o.computed_at >= $2 AND o.computed_at < $3
GROUP BY 1, 2, 3, 4`

// revenue answers the view's revenue: per currency, days in order, then
// plans by name.
func (s *Service) revenue(ctx context.Context, apis []uuid.UUID, from, to time.Time, zone *time.Location) (map[string][]RevenueDay, error) {
	rows, err := s.pool.Query(ctx, revenueSQL, apis, from, to, zone.String())
	if err != nil {
		return nil, fmt.Errorf("read revenue: %w", err)
	}
	defer rows.Close()
	type key struct {
		currency, day string
		plan          uuid.UUID
	}
	sums := map[key]*RevenueDay{}
	for rows.Next() {
		var (
			k                 key
			name              string
			invoiced, accrued decimal.Decimal
		)
		if err := rows.Scan(&k.currency, &k.day, &k.plan, &name, &invoiced, &accrued); err != nil {
			return nil, fmt.Errorf("read revenue: %w", err)
		}
		r, ok := sums[k]
		if !ok {
			r = &RevenueDay{Day: k.day, PlanID: k.plan, PlanName: name, Invoiced: decimal.Zero, Accrued: decimal.Zero}
			sums[k] = r
		}
		r.Invoiced, r.Accrued = r.Invoiced.Add(invoiced), r.Accrued.Add(accrued)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read revenue: %w", err)
	}
	out := map[string][]RevenueDay{}
	for k, r := range sums {
		out[k.currency] = append(out[k.currency], *r)
	}
	for _, days := range out {
		slices.SortFunc(days, func(a, b RevenueDay) int {
			if c := strings.Compare(a.Day, b.Day); c != 0 {
				return c
			}
			if c := strings.Compare(a.PlanName, b.PlanName); c != 0 {
				return c
			}
			return strings.Compare(a.PlanID.String(), b.PlanID.String())
		})
	}
	return out, nil
}

// quotaHealthSQL lists the meters with a quota of the APIs' live
// subscriptions, from their current outlook, the fullest first.
const quotaHealthSQL = `SELECT o.subscription_id, org.name, m->>'meter', m->>'used', m->>'quota', m->>'runs_out_at'
FROM subscription_outlooks o
JOIN subscriptions s ON s.id = o.subscription_id
JOIN organizations org ON org.id = s.organization_id
CROSS JOIN LATERAL jsonb_array_elements(o.meters) m
WHERE s.api_id = ANY($1) AND s.status IN ` + liveStatuses + `
  AND o.period_start = s.current_period_start
  AND m->>'quota' IS NOT NULL AND (m->>'quota')::numeric > 0
ORDER BY (m->>'used')::numeric / (m->>'quota')::numeric DESC, o.subscription_id, m->>'meter'
LIMIT $2`

// Quota states: near from 80% of the quota, over from 100%.
var (
	nearPercent = decimal.NewFromInt(80)
	overPercent = decimal.NewFromInt(100)
)

func (s *Service) quotaHealth(ctx context.Context, apis []uuid.UUID) ([]QuotaHealth, error) {
	rows, err := s.pool.Query(ctx, quotaHealthSQL, apis, MaxQuotaHealth)
	if err != nil {
		return nil, fmt.Errorf("read quota health: %w", err)
	}
	defer rows.Close()
	out := []QuotaHealth{}
	for rows.Next() {
		var (
			h           QuotaHealth
			used, quota string
			runsOut     *string
		)
		if err := rows.Scan(&h.SubscriptionID, &h.OrganizationName, &h.Meter, &used, &quota, &runsOut); err != nil {
			return nil, fmt.Errorf("read quota health: %w", err)
		}
		if h.Used, err = decimal.NewFromString(used); err != nil {
			return nil, fmt.Errorf("read quota health: used of %s: %w", h.SubscriptionID, err)
		}
		if h.Quota, err = decimal.NewFromString(quota); err != nil {
			return nil, fmt.Errorf("read quota health: quota of %s: %w", h.SubscriptionID, err)
		}
		if runsOut != nil {
			at, err := time.Parse(time.RFC3339Nano, *runsOut)
			if err != nil {
				return nil, fmt.Errorf("read quota health: runs_out_at of %s: %w", h.SubscriptionID, err)
			}
			at = at.UTC()
			h.RunsOutAt = &at
		}
		// The state from the exact share: 79.996% shows as 80.00 but is ok.
		h.Percent = h.Used.Mul(overPercent).DivRound(h.Quota, 2)
		share := h.Used.Mul(overPercent)
		h.State = "ok"
		switch {
		case share.GreaterThanOrEqual(h.Quota.Mul(overPercent)):
			h.State = "over"
		case share.GreaterThanOrEqual(h.Quota.Mul(nearPercent)):
			h.State = "near"
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read quota health: %w", err)
	}
	return out, nil
}
