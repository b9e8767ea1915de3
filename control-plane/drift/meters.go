package drift

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/drift/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// The meters' part of a run. A subscription's meters are those of its
// record in Redis (the processors count by them); each meter counter of
// the current period is compared with what ClickHouse computes for the
// same meter over the same rows (metering.MeterTotalsUpTo, up to the
// watermarks read with the counters), from when the plan versions in force
// began to charge that meter without a break, if that is after the
// period's start (meterSince): a plan change keeps the period, the
// processors count a meter for as long as the record names it, so a meter
// both versions charge counts the whole period, while one the new version
// added counts only from the change: the calls before it are not the meter's
// (they would heal it upward, block the subscription and announce
// thresholds it never reached). The change's moment in Postgres and the
// record's rewrite in Redis are not the same instant: events dated in
// between, or dated before the change and counted after it, are the
// drift this leaves at the boundary, and a heal settles it on ClickHouse's
// side of the change.
//
// Only subscriptions whose request counter agrees with ClickHouse, with no
// watermark ahead of it, are compared: then ClickHouse holds every row
// the counters applied, and a difference is drift, not lag. The others
// are compared on a later run, once their request counter is healed or
// ClickHouse caught up; so are subscriptions whose watermarks moved
// between the two reads.

// meterCase is a subscription whose meters are compared.
type meterCase struct {
	sub    subscription
	meters []metering.Meter
	specs  []enforcement.MeterSpec
	read   enforcement.MeterState
	// since is, per meter slug the current plan version charges, when its
	// counter began to count in this period (see meterSince).
	since map[string]time.Time
}

// checkMeters compares, and heals where it can, the meter counters of
// the cases whose request counter is in sync. Only a failure of Redis is
// returned; ClickHouse's for one subscription is reported unhealed.
func (s *Checker) checkMeters(ctx context.Context, cases []assessment, rep *Report) error {
	metered, err := s.meteredCases(ctx, cases)
	if err != nil || len(metered) == 0 {
		return err
	}
	var (
		heals  []enforcement.MeterHeal
		healed [][]MeterDrifted // per heal, the drift it repairs
		owners []subscription   // per heal, its subscription
	)
	for _, mc := range metered {
		for _, m := range mc.meters {
			// A set at its bound no longer grows: its meter undercounts.
			if v, err := mc.read.Value(m.Slug); err == nil && m.Aggregation == metering.AggUniqueCount && v >= enforcement.MaxMeterSetMembers {
				rep.setsFull++
			}
		}
		drift, heal, err := s.compareMeters(ctx, mc)
		if err != nil {
			s.meterUnhealed(ctx, rep, mc.sub, err)
			continue
		}
		var fixable []MeterDrifted
		for _, d := range drift {
			if _, ok := heal.Values[d.Meter]; ok {
				fixable = append(fixable, d)
				continue
			}
			rep.MeterDrift = append(rep.MeterDrift, d)
			s.meterUnhealed(ctx, rep, mc.sub, fmt.Errorf("meter %s: redis %s, clickhouse %s: a unique_count set is not rebuilt from ClickHouse", d.Meter, d.Redis, d.ClickHouse))
		}
		if len(fixable) > 0 {
			heals = append(heals, heal)
			healed = append(healed, fixable)
			owners = append(owners, mc.sub)
		}
	}
	for i, r := range enforcement.HealMeters(ctx, s.cfg.Redis, heals) {
		for _, d := range healed[i] {
			d.Healed = r.Err == nil && r.Outcome == enforcement.Healed
			rep.MeterDrift = append(rep.MeterDrift, d)
			attrs := []any{"subscription_id", d.SubscriptionID, "period_start", d.PeriodStart, "meter", d.Meter,
				"redis", d.Redis, "clickhouse", d.ClickHouse}
			switch {
			case d.Healed:
				s.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_reconcile_healed_total{kind="meter"}`).Inc()
				s.log.WarnContext(ctx, "meter drift healed", attrs...)
			case r.Err != nil:
				s.meterUnhealed(ctx, rep, owners[i], r.Err)
			default:
				// The processors moved, or the period rolled: the next
				// run looks again.
				s.log.InfoContext(ctx, "meter drift left for the next run: the counter moved", attrs...)
			}
		}
	}
	return nil
}

// meterUnhealed reports drift of sub's meters the run could not heal.
func (s *Checker) meterUnhealed(ctx context.Context, rep *Report, sub subscription, err error) {
	rep.Unhealed = append(rep.Unhealed, Unhealed{SubscriptionID: sub.id, Reason: err.Error()})
	s.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_reconcile_unhealed_total{kind="meter"}`).Inc()
	s.log.ErrorContext(ctx, "meter drift not healed", "subscription_id", sub.id, "period_start", sub.start, "err", err)
}

// meteredCases returns the cases in sync whose record names meters, with
// their meter counters read, in one round trip each for the records and
// the counters. A record whose meters do not decode is the record
// reconciliation's to repair, and is skipped here.
func (s *Checker) meteredCases(ctx context.Context, cases []assessment) ([]meterCase, error) {
	var (
		cmds []rueidis.Completed
		subs []assessment
	)
	for _, c := range cases {
		if c.f.verdict != verdictInSync || c.f.ahead {
			continue
		}
		cmds = append(cmds, s.cfg.Redis.B().Hget().Key(enforcement.SubscriptionName(c.sub.id.String())).Field("meters").Build())
		subs = append(subs, c)
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	var (
		out []meterCase
		of  []enforcement.MetersOf
	)
	for i, r := range s.cfg.Redis.DoMulti(ctx, cmds...) {
		raw, err := r.ToString()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read subscription meters: %w", err)
		}
		specs, err := enforcement.DecodeMeters(raw)
		if err != nil || len(specs) == 0 {
			continue
		}
		mc := meterCase{sub: subs[i].sub, specs: specs, meters: make([]metering.Meter, len(specs))}
		for j, m := range specs {
			mc.meters[j] = metering.MeterOfSpec(m)
		}
		out = append(out, mc)
		of = append(of, enforcement.MetersOf{ID: mc.sub.id.String(), Start: mc.sub.start, Meters: specs})
	}
	if len(of) == 0 {
		return nil, nil
	}
	states, err := enforcement.ReadMeterCounters(ctx, s.cfg.Redis, of)
	if err != nil {
		return nil, err
	}
	kept := out[:0]
	for i, st := range states {
		out[i].read = st
		// Watermarks that moved since the request counter was compared
		// mean a batch in flight: compared on a later run.
		if maps.Equal(st.Watermarks, subsWatermarks(subs, out[i].sub)) {
			kept = append(kept, out[i])
		}
	}
	if err := s.loadMeterSince(ctx, kept); err != nil {
		return nil, err
	}
	return kept, nil
}

// loadMeterSince fills each case's since from the pricing history, in one
// query for all of them.
func (s *Checker) loadMeterSince(ctx context.Context, cases []meterCase) error {
	if len(cases) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(cases))
	at := make(map[uuid.UUID]int, len(cases))
	for i, c := range cases {
		ids[i] = c.sub.id
		at[c.sub.id] = i
		cases[i].since = map[string]time.Time{}
	}
	rows, err := db.New(s.pool).MeterSinceList(ctx, ids)
	if err != nil {
		return fmt.Errorf("load meter history: %w", err)
	}
	for _, r := range rows {
		cases[at[r.SubscriptionID]].since[r.Slug] = r.Since
	}
	return nil
}

// meterSince is when meter m's counter began to count in mc's period: the
// period's start, or later when the plan version that began to charge it
// took effect within the period. A meter Postgres does not show charged
// (the record is older than a change) counts from the current version's
// start. Times are whole seconds, as the processors keep periods.
func (mc meterCase) meterSince(m metering.Meter) time.Time {
	since, ok := mc.since[m.Slug]
	if !ok {
		since = mc.sub.metersSince
	}
	since = time.Unix(since.Unix(), 0).UTC()
	if since.Before(mc.sub.start) {
		return mc.sub.start
	}
	return since
}

// meterTotals asks ClickHouse for each meter's value from its own start
// (meterSince), one query per distinct start: usually one.
func (s *Checker) meterTotals(ctx context.Context, mc meterCase, wm map[int32]int64) (map[string]decimal.Decimal, error) {
	groups := map[time.Time][]metering.Meter{}
	for _, m := range mc.meters {
		since := mc.meterSince(m)
		groups[since] = append(groups[since], m)
	}
	totals := map[string]decimal.Decimal{}
	for since, meters := range groups {
		got, err := metering.MeterTotalsUpTo(ctx, s.cfg.ClickHouse, mc.sub.id.String(), meters, since, mc.sub.end, wm)
		if err != nil {
			return nil, err
		}
		maps.Copy(totals, got)
	}
	return totals, nil
}

// subsWatermarks is the watermark hash the request comparison read for sub.
func subsWatermarks(cases []assessment, sub subscription) map[string]string {
	for _, c := range cases {
		if c.sub.id == sub.id {
			return c.red.Watermarks
		}
	}
	return nil
}

// compareMeters compares one subscription's meter counters with
// ClickHouse's totals up to the same watermarks. It returns the meters
// that disagree and the heal that rewrites those that can be (count, sum
// and max, whose ClickHouse value fits a counter).
func (s *Checker) compareMeters(ctx context.Context, mc meterCase) ([]MeterDrifted, enforcement.MeterHeal, error) {
	heal := enforcement.MeterHeal{ID: mc.sub.id.String(), Period: enforcement.Period{Start: mc.sub.start, End: mc.sub.end},
		Read: mc.read, Values: map[string]int64{}}
	wm, _ := mc.read.Readable()
	totals, err := s.meterTotals(ctx, mc, wm)
	if err != nil {
		return nil, heal, fmt.Errorf("compare meters: %w", err)
	}
	var drift []MeterDrifted
	for _, m := range mc.meters {
		got, err := mc.read.Value(m.Slug)
		redis := m.Quantity(got).String()
		if err != nil {
			redis = mc.read.Raw[m.Slug]
		}
		want := totals[m.Slug]
		if err == nil && m.Quantity(got).Equal(want) {
			continue
		}
		drift = append(drift, MeterDrifted{SubscriptionID: mc.sub.id, PeriodStart: mc.sub.start, Meter: m.Slug,
			Redis: redis, ClickHouse: want.String()})
		// Healed only when the counter holds ClickHouse's value exactly.
		if v, err := m.Counter(want); err == nil && m.Aggregation != metering.AggUniqueCount && m.Quantity(v).Equal(want) {
			heal.Values[m.Slug] = v
		}
	}
	return drift, heal, nil
}
