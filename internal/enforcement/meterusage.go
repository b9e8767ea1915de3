package enforcement

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// The drift check's view of the meters: it reads a subscription's
// watermarks and the meter values of its period counter together,
// compares them with ClickHouse, and heals the ones that add or keep a
// maximum, compare-and-set, when they drifted.

// MetersOf names the meters of a subscription's counter of the period
// starting at Start.
type MetersOf struct {
	ID     string
	Start  time.Time
	Meters []MeterSpec
}

// MeterState is what Redis held of a subscription's meters when it was
// read, raw, so that a heal can check nothing moved since.
type MeterState struct {
	// Watermarks is the watermark hash: partition → offset, as stored.
	Watermarks map[string]string
	// Raw is each meter's m:<slug> field as stored ("" when absent), or
	// the SCARD of a unique_count meter's set, by slug.
	Raw map[string]string
}

// Value is the meter's value: 0 when absent, an error when the field
// holds something else than an integer.
func (s MeterState) Value(slug string) (int64, error) {
	v := s.Raw[slug]
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("meter %s: counter %q is not an integer", slug, v)
	}
	return n, nil
}

// Readable returns the watermarks that parse as a partition and an
// offset, and whether any did not (as [UsageState.Readable]).
func (s MeterState) Readable() (map[int32]int64, bool) {
	return UsageState{Watermarks: s.Watermarks}.Readable()
}

// Equal reports whether s and o hold the same.
func (s MeterState) Equal(o MeterState) bool {
	return maps.Equal(s.Raw, o.Raw) && maps.Equal(s.Watermarks, o.Watermarks)
}

// meterReadScript reads a subscription's watermark hash and its meters'
// values at once, so the two always come from the same processor batch.
// KEYS[1] watermark hash, KEYS[2] period counter (same hash tag); ARGV
// slug, aggregation pairs. The sets are named from the counter
// (MeterSetName).
var meterReadScript = rueidis.NewLuaScript(`
local vals = {}
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '` + MeterUniqueCount + `' then
    vals[#vals + 1] = tostring(redis.call('SCARD', KEYS[2] .. '` + meterSetInfix + `' .. ARGV[i]))
  else
    vals[#vals + 1] = redis.call('HGET', KEYS[2], 'm:' .. ARGV[i]) or ''
  end
end
return {redis.call('HGETALL', KEYS[1]), vals}
`)

// ReadMeterCounters reads the watermarks and meter values of the
// subscriptions in one round trip, in the order asked.
func ReadMeterCounters(ctx context.Context, client rueidis.Client, of []MetersOf) ([]MeterState, error) {
	execs := make([]rueidis.LuaExec, len(of))
	for i, u := range of {
		args := make([]string, 0, 2*len(u.Meters))
		for _, m := range u.Meters {
			args = append(args, m.Slug, m.Aggregation)
		}
		execs[i] = rueidis.LuaExec{Keys: []string{WatermarkName(u.ID), PeriodCounterName(u.ID, u.Start)}, Args: args}
	}
	out := make([]MeterState, len(of))
	for i, r := range meterReadScript.ExecMulti(ctx, client, execs...) {
		reply, err := r.ToArray()
		if err == nil && len(reply) != 2 {
			err = fmt.Errorf("%d replies, want 2", len(reply))
		}
		if err != nil {
			return nil, fmt.Errorf("read meter counters of %s: %w", of[i].ID, err)
		}
		wm, err := reply[0].AsStrMap()
		if err != nil {
			return nil, fmt.Errorf("read meter counters of %s: watermarks: %w", of[i].ID, err)
		}
		vals, err := reply[1].AsStrSlice()
		if err != nil || len(vals) != len(of[i].Meters) {
			return nil, fmt.Errorf("read meter counters of %s: %d values, %w", of[i].ID, len(vals), err)
		}
		st := MeterState{Watermarks: wm, Raw: make(map[string]string, len(vals))}
		for j, m := range of[i].Meters {
			st.Raw[m.Slug] = vals[j]
		}
		out[i] = st
	}
	return out, nil
}

// meterHealScript rewrites meter fields of one subscription's period
// counter, if the watermark hash and those fields still hold what the
// check read (compare-and-set: when the processors moved in between, it
// gives up). It writes nothing when the subscription record names another
// period. Then, as the request counter's heal does, it forgets the
// thresholds of a meter quota no longer reached, announces every one
// reached and not yet recorded for it, and sets the block when a hard
// quota, the request quota's or a meter's, is used up, lifting it
// otherwise.
//
// KEYS[1] watermark hash, KEYS[2] period counter, KEYS[3] block, KEYS[4]
// the subscription record, KEYS[5] quota outbox. ARGV[1] period start,
// ARGV[2] period end, ARGV[3] n, then n partition, offset pairs as read,
// then slug, value as read ("" absent), new value triples.
// Returns 0 when something moved, 2 when the record names another period,
// 1 once healed.
var meterHealScript = rueidis.NewLuaScript(lua + `
local n = tonumber(ARGV[3])
local cur = redis.call('HGETALL', KEYS[1])
if #cur ~= 2 * n then return 0 end
local read = {}
for i = 4, 3 + 2 * n, 2 do read[ARGV[i]] = ARGV[i + 1] end
for i = 1, #cur, 2 do
  if read[cur[i]] ~= cur[i + 1] then return 0 end
end
for i = 4 + 2 * n, #ARGV, 3 do
  if (redis.call('HGET', KEYS[2], 'm:' .. ARGV[i]) or '') ~= ARGV[i + 1] then return 0 end
end
if redis.call('TYPE', KEYS[4])['ok'] ~= 'hash' then return 2 end
local rec = redis.call('HMGET', KEYS[4], 'period_start', 'period_end', 'quota_requests', 'quota_hard', 'meters')
if rec[1] ~= ARGV[1] then return 2 end
for i = 4 + 2 * n, #ARGV, 3 do
  redis.call('HSET', KEYS[2], 'm:' .. ARGV[i], ARGV[i + 2])
end
local mq = meter_quotas(rec[5])
for slug, m in pairs(mq) do
  if m.quota > 0 then
    local used = meter_value(KEYS[2], slug, m.agg)
    -- A threshold the true value has not reached is forgotten, so that
    -- the count crossing it later is announced.
    for _, pct in ipairs(THRESHOLDS) do
      if used < threshold_at(m.quota, pct) then redis.call('HDEL', KEYS[2], 'crossed_' .. pct .. ':' .. slug) end
    end
    announce(KEYS[2], KEYS[5], ARGV[1], ARGV[2], m.quota, used, m.hard, -1, slug)
  end
end
local used = tonumber(redis.call('HGET', KEYS[2], 'requests') or '0') or 0
reblock(KEYS[3], ARGV[2], math.floor(tonumber(rec[3]) or -1), rec[4] == '1', used, meters_used_up(KEYS[2], mq) or budget_over(KEYS[4], KEYS[2]))
return 1
`)

// MeterHeal rewrites meter fields of one subscription's period counter.
type MeterHeal struct {
	ID     string
	Period Period
	// Read is the state the figures were computed against: the heal
	// writes nothing when Redis no longer holds it.
	Read MeterState
	// Values are the meters' new values, by slug; only meters that add or
	// keep a maximum can be healed (a unique_count's set cannot be rebuilt
	// from a number).
	Values map[string]int64
}

// HealMeters runs the heals, in one round trip, in the order given.
func HealMeters(ctx context.Context, client rueidis.Client, heals []MeterHeal) []HealResult {
	out := make([]HealResult, len(heals))
	if len(heals) == 0 {
		return out
	}
	execs := make([]rueidis.LuaExec, len(heals))
	for i, h := range heals {
		args := []string{strconv.FormatInt(h.Period.Start.Unix(), 10), strconv.FormatInt(h.Period.End.Unix(), 10),
			strconv.Itoa(len(h.Read.Watermarks))}
		for field, v := range h.Read.Watermarks {
			args = append(args, field, v)
		}
		for slug, v := range h.Values {
			args = append(args, slug, h.Read.Raw[slug], strconv.FormatInt(v, 10))
		}
		execs[i] = rueidis.LuaExec{Keys: []string{
			WatermarkName(h.ID), PeriodCounterName(h.ID, h.Period.Start), BlockName(h.ID),
			SubscriptionName(h.ID), QuotaOutboxName(h.ID),
		}, Args: args}
	}
	for i, r := range meterHealScript.ExecMulti(ctx, client, execs...) {
		n, err := r.AsInt64()
		switch {
		case err != nil:
			out[i].Err = fmt.Errorf("heal meter counters: %w", err)
		case n == 0:
			out[i].Outcome = Moved
		case n == 2:
			out[i].Outcome = StalePeriod
		default:
			out[i].Outcome = Healed
		}
	}
	return out
}
