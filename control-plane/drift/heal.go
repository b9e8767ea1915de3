package drift

import (
	"context"
	"fmt"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
)

// readRedis reads the watermarks and period counters of the
// subscriptions in one round trip (enforcement.ReadUsage).
func (s *Checker) readRedis(ctx context.Context, subs []subscription) ([]enforcement.UsageState, error) {
	of := make([]enforcement.UsageOf, len(subs))
	for i, sub := range subs {
		of[i] = enforcement.UsageOf{ID: sub.id.String(), Start: sub.start}
	}
	return enforcement.ReadUsage(ctx, s.cfg.Redis, of)
}

// healAndReport heals the cases, in one round trip, and reports each;
// it returns those whose Redis state moved since it was read.
func (s *Checker) healAndReport(ctx context.Context, cases []assessment, rep *Report) []assessment {
	var moved []assessment
	for i, res := range s.heal(ctx, cases) {
		c := cases[i]
		switch {
		case res.err == nil && res.outcome == enforcement.Moved:
			moved = append(moved, c)
			continue
		case res.err == nil && res.outcome == enforcement.StalePeriod:
			// The record names a later period than Postgres said: the
			// check read Postgres before a renewal.
			rep.InFlight++
			continue
		}
		rep.Drifted++
		f := c.f
		d := Drifted{
			SubscriptionID: c.sub.id, PeriodStart: c.sub.start,
			RedisRequests: f.gotRequests, ClickHouseRequests: f.wantRequests,
			RedisUnits: decimal.New(f.gotUnits, -6).String(), ClickHouseUnits: f.chUnits.String(),
			WatermarksBehind: f.behind, Blocked: res.blocked, Healed: res.err == nil,
		}
		rep.Drift = append(rep.Drift, d)
		attrs := []any{"subscription_id", c.sub.id, "period_start", c.sub.start, "redis_requests", d.RedisRequests,
			"clickhouse_requests", d.ClickHouseRequests, "redis_units", d.RedisUnits, "clickhouse_units", d.ClickHouseUnits,
			"watermarks_behind", f.behind, "blocked", res.blocked}
		if res.err != nil {
			rep.Unhealed = append(rep.Unhealed, Unhealed{SubscriptionID: c.sub.id, Reason: res.err.Error()})
			s.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_reconcile_unhealed_total{kind="usage"}`).Inc()
			s.log.ErrorContext(ctx, "usage drift not healed", append(attrs, "err", res.err)...)
			continue
		}
		rep.Healed++
		s.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_reconcile_healed_total{kind="usage"}`).Inc()
		s.log.WarnContext(ctx, "usage drift healed", attrs...)
	}
	return moved
}

// healResult is what heal did for one case.
type healResult struct {
	outcome enforcement.HealOutcome
	blocked bool
	err     error
}

// heal rewrites each case's counter and watermarks from its finding's
// target watermarks and figures, compare-and-set against the Redis state
// it read, in one round trip (enforcement.HealUsage). Figures past what a
// counter holds are never written.
func (s *Checker) heal(ctx context.Context, cases []assessment) []healResult {
	out := make([]healResult, len(cases))
	var (
		heals []enforcement.UsageHeal
		sent  []int
	)
	for i, c := range cases {
		if c.f.unitsTooLarge {
			out[i].err = fmt.Errorf("heal usage counter: ClickHouse holds %s units, more than a counter of micro-units takes: %w",
				c.f.chUnits, ErrUnitsPastCounter)
			continue
		}
		sent = append(sent, i)
		heals = append(heals, enforcement.UsageHeal{
			ID: c.sub.id.String(), Period: enforcement.Period{Start: c.sub.start, End: c.sub.end}, Read: c.red,
			Requests: c.f.wantRequests, UnitsMicro: c.f.wantUnits, Watermarks: c.f.target,
			Quota: c.sub.quota, Hard: c.sub.hard,
		})
	}
	for j, r := range enforcement.HealUsage(ctx, s.cfg.Redis, heals) {
		out[sent[j]] = healResult{outcome: r.Outcome, blocked: r.Blocked, err: r.Err}
	}
	return out
}
