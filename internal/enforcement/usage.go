package enforcement

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// The drift check's view of the counters: it reads a subscription's
// watermarks and period counter together, compares them with ClickHouse,
// and heals them, compare-and-set, when they drifted.

// UsageState is what Redis held of a subscription's counting when it was
// read, raw, so that a heal can check nothing moved since.
type UsageState struct {
	// Watermarks is the watermark hash: partition → offset, as stored.
	Watermarks map[string]string
	// Requests and UnitsMicro are the period counter's fields, "" when
	// absent.
	Requests, UnitsMicro string
}

// Equal reports whether s and o hold the same.
func (s UsageState) Equal(o UsageState) bool {
	return s.Requests == o.Requests && s.UnitsMicro == o.UnitsMicro && maps.Equal(s.Watermarks, o.Watermarks)
}

// Readable returns the watermarks that parse as a partition and an
// offset, and whether any did not.
func (s UsageState) Readable() (map[int32]int64, bool) {
	out := make(map[int32]int64, len(s.Watermarks))
	garbled := false
	for field, v := range s.Watermarks {
		p, err1 := strconv.ParseInt(field, 10, 32)
		off, err2 := strconv.ParseInt(v, 10, 64)
		if err1 != nil || err2 != nil || off < 0 || strconv.FormatInt(p, 10) != field || strconv.FormatInt(off, 10) != v {
			garbled = true
			continue
		}
		out[int32(p)] = off
	}
	return out, garbled
}

// usageReadScript reads a subscription's watermark hash and period
// counter at once, so the two always come from the same processor batch.
// KEYS[1] watermark hash, KEYS[2] period counter (same hash tag).
var usageReadScript = rueidis.NewLuaScript(`
return {redis.call('HGETALL', KEYS[1]), redis.call('HMGET', KEYS[2], 'requests', 'units_micro')}
`)

// UsageOf names a subscription's counter of the period starting at Start.
type UsageOf struct {
	ID    string
	Start time.Time
}

// ReadUsage reads the watermarks and period counters of the
// subscriptions in one round trip, in the order asked.
func ReadUsage(ctx context.Context, client rueidis.Client, of []UsageOf) ([]UsageState, error) {
	execs := make([]rueidis.LuaExec, len(of))
	for i, u := range of {
		execs[i] = rueidis.LuaExec{Keys: []string{WatermarkName(u.ID), PeriodCounterName(u.ID, u.Start)}}
	}
	results := usageReadScript.ExecMulti(ctx, client, execs...)
	states := make([]UsageState, len(of))
	for i, u := range of {
		st, err := usageState(results[i])
		if err != nil {
			return nil, fmt.Errorf("read usage state of %s: %w", u.ID, err)
		}
		states[i] = st
	}
	return states, nil
}

func usageState(r rueidis.RedisResult) (UsageState, error) {
	reply, err := r.ToArray()
	if err != nil {
		return UsageState{}, err
	}
	if len(reply) != 2 {
		return UsageState{}, fmt.Errorf("%d replies, want 2", len(reply))
	}
	wm, err := reply[0].AsStrMap()
	if err != nil {
		return UsageState{}, fmt.Errorf("read watermarks: %w", err)
	}
	counter, err := reply[1].ToArray()
	if err != nil {
		return UsageState{}, fmt.Errorf("read period counter: %w", err)
	}
	if len(counter) != 2 {
		return UsageState{}, fmt.Errorf("read period counter: %d fields, want 2", len(counter))
	}
	st := UsageState{Watermarks: wm}
	for j, dst := range []*string{&st.Requests, &st.UnitsMicro} {
		v, err := counter[j].ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return UsageState{}, fmt.Errorf("read period counter: %w", err)
		}
		*dst = v
	}
	return st, nil
}

// healScript rewrites one subscription's period counter and offset
// watermarks from ClickHouse's figures, if the watermark hash and the
// counter still hold what the check read (compare-and-set: when the
// processors moved in between, it gives up and the caller looks again).
// The watermarks written are the ones read plus those Redis had lost:
// a watermark is never moved forward over a batch Redis has yet to apply.
// Writing lost ones matters: a processor whose cached watermark is older
// finds it moved, reloads it and skips rows ClickHouse already has.
//
// A subscription record that names a later period than the one healed
// means the check read Postgres before the subscription renewed: the
// script writes nothing then, lest a stale period's counter clear the
// current period's block.
//
// It then recomputes what the counter implies from the effective quota.
// That is the subscription record's quota and hardness when the record is
// there and names the same period: a credit or a plan change written
// since the check read Postgres is in it, and must not be undone (a heal
// that blocked again right after a credit lifted the block). Only without
// such a record (after a flush) does the quota from ARGV, read from
// Postgres, apply. Every one of the Thresholds of a positive quota
// reached and not yet recorded for this quota is recorded
// (crossed_<pct> = quota) and its line pushed to the quota outbox, for the
// processors' sweep to produce, so a crossing lost with a flushed Redis
// is still announced (the control plane dedupes); a threshold no longer
// reached is forgotten. A hard quota (0 included) used up blocks until
// the period's end, anything else lifts the block, as the record's own
// write decides (putSubscriptionScript). The block is
// rewritten only when it changes, so the gateway's cached copy is
// invalidated only then. A hard meter quota of the record's meters that
// the counter's meter value reaches keeps the block too.
//
// KEYS[1] watermark hash, KEYS[2] period counter, KEYS[3] block, KEYS[4]
// the subscription record (period_start, quota_requests, quota_hard),
// KEYS[5] quota outbox; all carry the subscription's hash tag.
// ARGV[1], ARGV[2] the counter's requests and units_micro as read ("" for
// absent), ARGV[3], ARGV[4] the new ones, ARGV[5], ARGV[6] period start and
// end (Unix seconds), ARGV[7] counter ttl seconds, ARGV[8] quota (-1
// unlimited), ARGV[9] hard "1" or "0", ARGV[10] n, then n partition,
// offset pairs as read, then the pairs to write.
// Returns {0} when something moved, {2} when the record names a later
// period, {1, blocked, crossings} once healed.
var healScript = rueidis.NewLuaScript(lua + `
local n = tonumber(ARGV[10])
local cur = redis.call('HGETALL', KEYS[1])
if #cur ~= 2 * n then return {0} end
local read = {}
for i = 11, 10 + 2 * n, 2 do read[ARGV[i]] = ARGV[i + 1] end
for i = 1, #cur, 2 do
  if read[cur[i]] ~= cur[i + 1] then return {0} end
end
local c = redis.call('HMGET', KEYS[2], 'requests', 'units_micro')
if (c[1] or '') ~= ARGV[1] or (c[2] or '') ~= ARGV[2] then return {0} end

local quota, hard, mq, bover = tonumber(ARGV[8]), ARGV[9], {}, false
if redis.call('TYPE', KEYS[4])['ok'] == 'hash' then
  local rec = redis.call('HMGET', KEYS[4], 'period_start', 'quota_requests', 'quota_hard', 'meters')
  local recStart, q = tonumber(rec[1]), tonumber(rec[2])
  if recStart and recStart > tonumber(ARGV[5]) then return {2} end
  if recStart == tonumber(ARGV[5]) and q then
    quota = math.floor(q)
    hard = rec[3] == '1' and '1' or '0'
    mq = meter_quotas(rec[4])
    bover = budget_over(KEYS[4], KEYS[2])
  end
end

redis.call('DEL', KEYS[1])
if #ARGV > 10 + 2 * n then
  redis.call('HSET', KEYS[1], unpack(ARGV, 11 + 2 * n))
end
redis.call('HSET', KEYS[2], 'requests', ARGV[3], 'units_micro', ARGV[4], 'period_end', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])

local used = tonumber(ARGV[3])
local crossed = 0
if quota > 0 then
  -- A threshold the true count has not reached is forgotten, so that
  -- the count crossing it later is announced.
  for _, pct in ipairs(THRESHOLDS) do
    if used < threshold_at(quota, pct) then redis.call('HDEL', KEYS[2], 'crossed_' .. pct) end
  end
  crossed = announce(KEYS[2], KEYS[5], ARGV[5], ARGV[6], quota, used, hard == '1', -1)
end
return {1, reblock(KEYS[3], ARGV[6], quota, hard == '1', used, meters_used_up(KEYS[2], mq) or bover), crossed}
`)

// UsageHeal rewrites one subscription's period counter and watermarks.
type UsageHeal struct {
	ID     string
	Period Period
	// Read is the state the figures were computed against: the heal writes
	// nothing when Redis no longer holds it.
	Read UsageState
	// Requests, UnitsMicro and Watermarks are what to write.
	Requests, UnitsMicro int64
	Watermarks           map[int32]int64
	// Quota (-1 unlimited) and Hard apply when the subscription record is
	// missing or names another period (see healScript).
	Quota int64
	Hard  bool
}

// HealOutcome is how one heal ended.
type HealOutcome int

const (
	// Healed: written.
	Healed HealOutcome = iota
	// Moved: Redis no longer held what was read; nothing written.
	Moved
	// StalePeriod: the subscription record names a later period than the
	// one healed; nothing written.
	StalePeriod
)

// HealResult is what [HealUsage] did for one heal.
type HealResult struct {
	Outcome HealOutcome
	// Blocked reports whether the subscription is blocked after the heal.
	Blocked bool
	Err     error
}

// HealUsage runs the heals, in one round trip, in the order given.
func HealUsage(ctx context.Context, client rueidis.Client, heals []UsageHeal) []HealResult {
	out := make([]HealResult, len(heals))
	if len(heals) == 0 {
		return out
	}
	execs := make([]rueidis.LuaExec, len(heals))
	for i, h := range heals {
		execs[i] = h.exec()
	}
	for i, r := range healScript.ExecMulti(ctx, client, execs...) {
		res, err := r.AsIntSlice()
		switch {
		case err != nil:
			out[i].Err = fmt.Errorf("heal usage counter: %w", err)
		case len(res) == 1 && res[0] == 0:
			out[i].Outcome = Moved
		case len(res) == 1 && res[0] == 2:
			out[i].Outcome = StalePeriod
		case len(res) == 3 && res[0] == 1:
			out[i].Outcome, out[i].Blocked = Healed, res[1] == 1
		default:
			out[i].Err = fmt.Errorf("heal usage counter: unexpected reply %v", res)
		}
	}
	return out
}

func (h UsageHeal) exec() rueidis.LuaExec {
	hard := "0"
	if h.Hard {
		hard = "1"
	}
	args := make([]string, 0, 10+2*len(h.Read.Watermarks)+2*len(h.Watermarks))
	args = append(args, h.Read.Requests, h.Read.UnitsMicro, strconv.FormatInt(h.Requests, 10), strconv.FormatInt(h.UnitsMicro, 10),
		strconv.FormatInt(h.Period.Start.Unix(), 10), strconv.FormatInt(h.Period.End.Unix(), 10),
		strconv.Itoa(int(PeriodCounterTTL/time.Second)), strconv.FormatInt(h.Quota, 10), hard,
		strconv.Itoa(len(h.Read.Watermarks)))
	for field, v := range h.Read.Watermarks {
		args = append(args, field, v)
	}
	for p, off := range h.Watermarks {
		args = append(args, strconv.Itoa(int(p)), strconv.FormatInt(off, 10))
	}
	return rueidis.LuaExec{Keys: []string{
		WatermarkName(h.ID), PeriodCounterName(h.ID, h.Period.Start), BlockName(h.ID),
		SubscriptionName(h.ID), QuotaOutboxName(h.ID),
	}, Args: args}
}
