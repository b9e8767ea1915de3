package enforcement

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// The quota rule, in one place: a plan's quota and the period's
// adjustments make the limit; the Thresholds (80, 90 and 100%) of the
// limit are announced; a hard limit used up blocks the subscription
// until its period ends. Go answers questions about it (the control
// plane's quota status); Redis applies it, in the scripts that change a
// counter or a quota, through the Lua functions below (quotaLua).

// Thresholds are the shares of a quota, in percent, that are announced.
var Thresholds = []int{80, 90, 100}

// Limit is the request quota the gateway enforces in a period: the plan
// version's quota plus the period's adjustments, -1 when the plan is
// unlimited (planQuota nil). It is never below 0: a carried adjustment
// (what a canceled predecessor used) followed by a move to a smaller plan
// must leave the quota used up, not turn it into -1, "unlimited", or
// below.
func Limit(planQuota *int64, adjustments int64) int64 {
	if planQuota == nil {
		return -1
	}
	return max(0, *planQuota+adjustments)
}

// ThresholdAt is the counter value at which pct percent of limit is
// crossed, ceil(limit*pct/100), computed without overflowing. quotaLua's
// threshold_at is its twin.
func ThresholdAt(limit int64, pct int) int64 {
	p := int64(pct)
	return limit/100*p + (limit%100*p+99)/100
}

// Crossed returns the thresholds (of [Thresholds], ascending) that used
// has reached of limit; none when limit is negative (unlimited).
func Crossed(limit, used int64) []int {
	out := []int{}
	if limit < 0 {
		return out
	}
	for _, pct := range Thresholds {
		if used >= ThresholdAt(limit, pct) {
			out = append(out, pct)
		}
	}
	return out
}

// ParseBlock reads the value of a BlockName key: the Unix seconds until
// which the subscription is blocked. Anything else is an
// [ErrCorruptRecord], and blocks nothing.
func ParseBlock(v string) (time.Time, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, fmt.Errorf("%w: block %q", ErrCorruptRecord, v)
	}
	return time.Unix(n, 0).UTC(), nil
}

// quotaLua defines the Lua functions of the quota rule for the scripts
// that change a period counter or its quota (the processors' count, the
// subscription record's write, the drift heal), so that a threshold is
// recorded, its outbox line written and the block set one way.
//
//	THRESHOLDS, threshold_at(quota, pct)
//
// are [Thresholds] and the twin of [ThresholdAt] (in doubles: exact below
// 2^53).
//
//	announce(counter, outbox, pstart, pend, quota, used, hard, from, meter)
//
// records every threshold with from < at <= used (at = threshold_at(quota,
// pct)) not yet recorded for this quota (crossed_<pct> = quota on the
// counter, crossed_<pct>:<meter> for a meter's quota) and pushes its
// [OutboxLine]; from = -1 takes every threshold reached. pstart and pend
// are the period's Unix seconds as strings, quota and used numbers, hard a
// boolean, meter the meter's slug or nil for the request quota. It returns
// how many lines it pushed.
//
//	reblock(block, pend, quota, hard, used, meter_blocked)
//
// sets the block until pend when a hard quota is used up, the request
// quota's or (meter_blocked) a meter's, rewriting it only when it changes
// (so the gateway's cached copy is invalidated only then), and removes it
// otherwise; it returns 1 when blocked.
//
//	meter_quotas(raw)
//
// reads a subscription record's meters field (JSON, see [MeterSpec]) into
// slug → {quota, hard, agg} for the meters that have a quota; a field that
// does not decode holds no quota (the record's writer validated it).
//
//	meter_value(counter, slug, agg), meters_used_up(counter, quotas)
//
// are a meter's value in a period counter (the m:<slug> field, or the
// SCARD of its set for unique_count) and whether any hard meter quota of
// quotas is used up in it.
var quotaLua = `
local THRESHOLDS = {` + thresholdList() + `}
local function threshold_at(quota, pct)
  return math.ceil(quota * pct / 100)
end
local function announce(counter, outbox, pstart, pend, quota, used, hard, from, meter)
  local q, u, pushed = string.format('%d', quota), string.format('%d', used), 0
  for _, pct in ipairs(THRESHOLDS) do
    local at = threshold_at(quota, pct)
    local field = 'crossed_' .. pct
    if meter then field = field .. ':' .. meter end
    if from < at and at <= used and redis.call('HGET', counter, field) ~= q then
      redis.call('HSET', counter, field, q)
      local line = {'` + outboxVersion + `', pstart, pend, pct, q, u, hard and '1' or '0'}
      if meter then line[8] = meter end
      redis.call('RPUSH', outbox, table.concat(line, '|'))
      pushed = pushed + 1
    end
  end
  return pushed
end
local function reblock(block, pend, quota, hard, used, meter_blocked)
  if meter_blocked or (quota >= 0 and hard and used >= quota) then
    if redis.call('GET', block) ~= pend then redis.call('SET', block, pend, 'EXAT', pend) end
    return 1
  end
  redis.call('DEL', block)
  return 0
end
local function meter_quotas(raw)
  local out = {}
  if type(raw) ~= 'string' or raw == '' then return out end
  local ok, ms = pcall(cjson.decode, raw)
  if not ok or type(ms) ~= 'table' then return out end
  for _, m in ipairs(ms) do
    if type(m) == 'table' and type(m.slug) == 'string' and type(m.quota) == 'string' and tonumber(m.quota) then
      out[m.slug] = {quota = tonumber(m.quota), hard = m.quota_hard == true, agg = m.aggregation}
    end
  end
  return out
end
local function meter_value(counter, slug, agg)
  if agg == '` + MeterUniqueCount + `' then return redis.call('SCARD', counter .. '` + meterSetInfix + `' .. slug) end
  return tonumber(redis.call('HGET', counter, 'm:' .. slug) or '0') or 0
end
local function meters_used_up(counter, quotas)
  for slug, m in pairs(quotas) do
    if m.hard and meter_value(counter, slug, m.agg) >= m.quota then return true end
  end
  return false
end
`

func thresholdList() string {
	s := make([]string, len(Thresholds))
	for i, pct := range Thresholds {
		s[i] = strconv.Itoa(pct)
	}
	return strings.Join(s, ", ")
}

// PutBlock blocks a subscription at the gateway until until (the end of
// the period whose hard quota it used up). The record expires then by
// itself, so a new period unblocks without a write.
func (s *Store) PutBlock(ctx context.Context, id string, until time.Time) error {
	if until.Unix() <= 0 {
		return fmt.Errorf("put block %s: %w: until %s", id, ErrInvalidRecord, until)
	}
	cmd := s.client.B().Set().Key(BlockName(id)).Value(strconv.FormatInt(until.Unix(), 10)).Exat(until).Build()
	if err := s.client.Do(ctx, cmd).Error(); err != nil {
		return fmt.Errorf("put block %s: %w", id, err)
	}
	return nil
}

// DeleteBlock lifts a subscription's block (a plan change, a reset, a credit).
func (s *Store) DeleteBlock(ctx context.Context, id string) error {
	if err := s.client.Do(ctx, s.client.B().Del().Key(BlockName(id)).Build()).Error(); err != nil {
		return fmt.Errorf("delete block %s: %w", id, err)
	}
	return nil
}

// BlockedUntilCached returns until when the subscription is blocked, the
// zero time when it is not, through client-side caching (the absence of a
// block is cached too, so an unblocked subscription costs no round trip;
// a new block reaches the gateway by Redis's invalidation). A garbled
// record blocks nothing and is an ErrCorruptRecord.
func (s *Store) BlockedUntilCached(ctx context.Context, id string, ttl time.Duration) (time.Time, error) {
	v, err := s.client.DoCache(ctx, s.client.B().Get().Key(BlockName(id)).Cache(), ttl).ToString()
	if rueidis.IsRedisNil(err) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("get block %s: %w", id, err)
	}
	until, err := ParseBlock(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("get block %s: %w", id, err)
	}
	return until, nil
}

// QuotaUsage is what Redis holds of a subscription's quota in one period.
type QuotaUsage struct {
	// Used is the period counter's requests, 0 before the first.
	Used int64
	// BlockedUntil is when the block ends; zero when there is none.
	BlockedUntil time.Time
	// CorruptBlock is the value of a block that [ParseBlock] refuses
	// (which blocks nothing at the gateway); "" when there is none.
	CorruptBlock string
}

// QuotaUsage reads the subscription's counter of the period starting at
// periodStart and its block, in one round trip, directly (never through
// the client-side cache), so the answer is current.
func (s *Store) QuotaUsage(ctx context.Context, id string, periodStart time.Time) (QuotaUsage, error) {
	res := s.client.DoMulti(ctx,
		s.client.B().Hget().Key(PeriodCounterName(id, periodStart)).Field("requests").Build(),
		s.client.B().Get().Key(BlockName(id)).Build())
	var (
		u   QuotaUsage
		err error
	)
	if u.Used, err = res[0].AsInt64(); rueidis.IsRedisNil(err) {
		u.Used = 0
	} else if err != nil {
		return QuotaUsage{}, fmt.Errorf("read period counter: %w", err)
	}
	block, err := res[1].ToString()
	switch {
	case rueidis.IsRedisNil(err):
	case err != nil:
		return QuotaUsage{}, fmt.Errorf("read block: %w", err)
	default:
		if until, perr := ParseBlock(block); perr == nil {
			u.BlockedUntil = until
		} else {
			u.CorruptBlock = block
		}
	}
	return u, nil
}
