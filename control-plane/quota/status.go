package quota

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/control-plane/quota/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// ErrNotFound: no subscription with that id.
var ErrNotFound = errors.New("subscription not found")

// Status is what a subscription has used of its request quota in the
// current period, as the gateway enforces it.
type Status struct {
	SubscriptionID uuid.UUID `json:"subscription_id"`
	PeriodStart    time.Time `json:"period_start"`
	PeriodEnd      time.Time `json:"period_end"`
	// ResetsAt is when the counter starts over: PeriodEnd.
	ResetsAt  time.Time `json:"resets_at"`
	Unlimited bool      `json:"unlimited"`
	// Limit is the plan's quota plus this period's adjustments; nil when
	// unlimited.
	Limit *int64 `json:"limit"`
	// PlanQuota is the plan version's quota; nil when unlimited.
	PlanQuota *int64 `json:"plan_quota"`
	// Adjustments is the sum of this period's credits and resets.
	Adjustments int64 `json:"adjustments"`
	// Used is the period counter's requests, 0 before the first.
	Used int64 `json:"used"`
	// Remaining is max(0, Limit-Used); nil when unlimited.
	Remaining *int64 `json:"remaining"`
	// Hard reports whether the gateway refuses requests over the limit;
	// otherwise overage is billed.
	Hard bool `json:"hard"`
	// ThresholdsCrossed are the shares of Limit (of 80, 90, 100) that Used
	// has reached, ascending; empty when unlimited.
	ThresholdsCrossed []int `json:"thresholds_crossed"`
	// Blocked reports whether the gateway refuses the subscription's
	// requests now, until BlockedUntil: a hard request quota or a hard
	// meter quota used up.
	Blocked      bool       `json:"blocked"`
	BlockedUntil *time.Time `json:"blocked_until"`
	// Meters are the meters the gateway's record of the subscription
	// counts, with their quotas; empty when its plan version prices none.
	Meters []MeterStatus `json:"meters"`
}

// MeterStatus is what a subscription has used of one meter in the current
// period. Quantities are decimal strings at the meter's precision.
type MeterStatus struct {
	Meter string `json:"meter"`
	Used  string `json:"used"`
	// Quota is nil when the meter has none.
	Quota *string `json:"quota"`
	Hard  bool    `json:"hard"`
	// ThresholdsCrossed are the shares of Quota (of 80, 90, 100) that Used
	// has reached, ascending; empty without a quota.
	ThresholdsCrossed []int `json:"thresholds_crossed"`
}

// Status reads the subscription's period and plan terms from Postgres and
// its counter and block from Redis. An unknown id is ErrNotFound. Redis is
// read directly, never through the client-side cache, so the answer is
// current.
func (s *Service) Status(ctx context.Context, subscriptionID uuid.UUID) (Status, error) {
	st := Status{SubscriptionID: subscriptionID, ThresholdsCrossed: []int{}, Meters: []MeterStatus{}}
	row, err := db.New(s.pool).SubscriptionQuotaStatus(ctx, subscriptionID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Status{}, fmt.Errorf("quota status of %s: %w", subscriptionID, ErrNotFound)
	}
	if err != nil {
		return Status{}, fmt.Errorf("quota status of %s: read subscription: %w", subscriptionID, err)
	}
	st.PeriodStart, st.PeriodEnd = row.CurrentPeriodStart.UTC(), row.CurrentPeriodEnd.UTC()
	st.PlanQuota, st.Hard, st.Adjustments = row.QuotaRequests, row.QuotaHard, row.Adjustments
	st.ResetsAt = st.PeriodEnd

	id := subscriptionID.String()
	u, err := enforcement.New(s.cfg.Redis).QuotaUsage(ctx, id, st.PeriodStart)
	if err != nil {
		return Status{}, fmt.Errorf("quota status of %s: %w", subscriptionID, err)
	}
	st.Used = u.Used
	if !u.BlockedUntil.IsZero() {
		st.Blocked, st.BlockedUntil = true, &u.BlockedUntil
	}
	if u.CorruptBlock != "" {
		// A garbled block blocks nothing at the gateway (it fails open on
		// it), so it is reported as no block.
		s.log.WarnContext(ctx, "garbled quota block in Redis", "subscription_id", id, "value", u.CorruptBlock)
	}
	if st.Meters, err = s.meterStatus(ctx, id, st.PeriodStart); err != nil {
		return Status{}, fmt.Errorf("quota status of %s: %w", subscriptionID, err)
	}

	limit := enforcement.Limit(st.PlanQuota, st.Adjustments)
	if limit < 0 {
		st.Unlimited = true
		return st, nil
	}
	remaining := max(0, limit-st.Used)
	st.Limit, st.Remaining = &limit, &remaining
	st.ThresholdsCrossed = enforcement.Crossed(limit, st.Used)
	return st, nil
}

// meterStatus reads the meters of the subscription's record in Redis (the
// ones the processors count and the gateway's block follows) and their
// counters of the period starting at start. A record without meters, or
// with meters that do not decode (the record reconciliation rewrites
// those), has none to report.
func (s *Service) meterStatus(ctx context.Context, id string, start time.Time) ([]MeterStatus, error) {
	out := []MeterStatus{}
	raw, err := s.cfg.Redis.Do(ctx, s.cfg.Redis.B().Hget().Key(enforcement.SubscriptionName(id)).Field("meters").Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read meters: %w", err)
	}
	specs, err := enforcement.DecodeMeters(raw)
	if err != nil {
		s.log.WarnContext(ctx, "garbled meters in the subscription record", "subscription_id", id, "error", err)
		return out, nil
	}
	if len(specs) == 0 {
		return out, nil
	}
	states, err := enforcement.ReadMeterCounters(ctx, s.cfg.Redis, []enforcement.MetersOf{{ID: id, Start: start, Meters: specs}})
	if err != nil {
		return nil, err
	}
	for _, m := range specs {
		used, err := states[0].Value(m.Slug)
		if err != nil {
			return nil, fmt.Errorf("read meters: %w", err)
		}
		meter := metering.Meter{Field: m.Field}
		ms := MeterStatus{Meter: m.Slug, Used: meter.Quantity(used).String(), Hard: m.QuotaHard, ThresholdsCrossed: []int{}}
		if m.Quota != nil {
			q := meter.Quantity(*m.Quota).String()
			ms.Quota = &q
			ms.ThresholdsCrossed = enforcement.Crossed(*m.Quota, used)
		}
		out = append(out, ms)
	}
	return out, nil
}
