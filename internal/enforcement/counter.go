package enforcement

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// The counters the processors keep, and their watermarks: the scripts that
// change them and the Go that calls those scripts.
//
// The counters hold admitted requests only: quotas are enforced from them,
// and a request the gateway refused itself is never billed.

// Counter lifetimes: long enough to outlive the late-event window and the
// billing that reads them.
const (
	// PeriodCounterTTL is the lifetime of a PeriodCounterName hash.
	PeriodCounterTTL = 400 * 24 * time.Hour
	// KeyDayCounterTTL is the lifetime of a KeyDayCounterName hash.
	KeyDayCounterTTL = 45 * 24 * time.Hour
)

// fitsLua defines
//
//	fits(cur, inc)
//
// which reports whether cur + inc stays at or below usage.MaxCounterMicro
// (2^63-1, where HINCRBY would fail), cur and inc being integers as decimal
// strings (cur as HGET returns it: false for a missing field counts as 0),
// inc not negative. Lua's numbers are doubles, exact only below 2^53, so
// the check adds the two in halves of nine digits, each exact. A cur that
// is not an integer does not fit: HINCRBY would fail on it. A script
// checks every addition with fits before it writes anything, so that a
// refusal leaves nothing half done. Its Go twin is usage.CheckedAdd.
const fitsLua = `
local function fits(cur, inc)
  cur = cur or '0'
  if not string.match(cur, '^-?%d+$') or not string.match(inc, '^%d+$') then return false end
  if string.sub(cur, 1, 1) == '-' then return #inc <= 19 end
  cur, inc = string.gsub(cur, '^0+', ''), string.gsub(inc, '^0+', '')
  if #cur > 19 or #inc > 19 then return false end
  local function halves(s)
    return tonumber(string.sub(s, 1, -10)) or 0, tonumber(string.sub(s, -9)) or 0
  end
  local ch, cl = halves(cur)
  local ih, il = halves(inc)
  local hi, lo = ch + ih, cl + il
  if lo >= 1000000000 then hi, lo = hi + 1, lo - 1000000000 end
  return hi < 9223372036 or (hi == 9223372036 and lo <= 854775807)
end
`

// lua is every Lua function of the package, prepended to the scripts that
// change a counter or a quota.
var lua = budgetLua + quotaLua + fitsLua

// countScript adds one subject's increments and advances its watermark for
// one partition, atomically, only if the watermark is still the one the
// increments were computed against (compare-and-set). It returns "ok", or
// the current watermark when it moved, so the caller recomputes.
//
// In the same step it holds the period counter against the subscription's
// quota. The quota is read here, from the record, not passed in: the
// processor's cached copy may predate a credit or a plan change. Only the
// counter of the record's own period has a quota. Reaching each of the
// Thresholds pushes a line onto the subject's quota outbox (the format of
// [OutboxLine]), once per threshold and quota: crossed_<pct> on
// the counter remembers the quota it fired for, so a replay fires nothing
// and a credit that raises the quota lets the new thresholds fire. Because
// the outbox line is written by the same script as the count, a crash
// before the line reaches Kafka loses nothing: the line waits in Redis until
// a drain produces it. While a hard quota is used up the block is set to
// expire with the period, NX so that a busy subscription does not rewrite it
// (and invalidate the gateway's cached copy) on every batch, yet a block
// that went missing is restored by the next request counted. It returns
// "ok:<lines pushed>" when it pushed any.
//
// A period counter also carries its meters ([MeterIncrement]): field
// m:<slug> adds (count, sum) or keeps the largest value (max), and a
// unique_count meter adds key ids to its set (MeterSetName, built here
// from the counter's name, with the counter's ttl), whose SCARD is its
// value. Each meter with a quota in the record's meters field (read here,
// like the request quota) is held against it the same way: its thresholds
// fire once per quota (crossed_<pct>:<slug>, an outbox line naming the
// meter), and a hard meter quota used up sets the same block, which
// refuses every call of the subscription, not only those the meter
// selects.
//
// The events of the call whose API is not their subscription's are recorded
// in the subject's refusal hash (RefusalName, value refusedMismatch) in the
// same step as the watermark, so that a replay reads the decision back
// instead of making it again from a record that may have changed since.
//
// KEYS[1] watermark hash; KEYS[2] the subject's block; KEYS[3] its
// subscription record; KEYS[4] its quota outbox; KEYS[5] its refusal hash;
// KEYS[6..] counter hashes. ARGV[1] partition, ARGV[2] expected watermark
// ("-1" for none), ARGV[3] new watermark, ARGV[4] the offsets of the
// mismatched events, space separated ("" for none), ARGV[5] the refusal
// hash's ttl seconds, then per counter: requests, units_micro, ttl seconds,
// period_end and period_start ("" for a counter that is not a period's),
// the number of its meters, and per meter: "add" or "max", the slug and
// the value; or "set", the slug, the number of key ids and the key ids.
//
// Every counter's requests and units_micro, and every meter field that adds,
// are checked first (fits; a field that is not an integer fails it too,
// as HINCRBY would; a max field must hold an integer): when an addition
// would pass usage.MaxCounterMicro the script writes nothing, watermark
// included, and returns "overflow"; the caller then applies the events
// one by one and dead-letters the ones that do not fit ([SkipEvent]).
var countScript = rueidis.NewLuaScript(lua + `
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '-1'
if cur ~= ARGV[2] then return cur end
local counters, a = {}, 6
for i = 6, #KEYS do
  local c = {key = KEYS[i], req = ARGV[a], units = ARGV[a + 1], ttl = ARGV[a + 2], pend = ARGV[a + 3], pstart = ARGV[a + 4], meters = {}}
  local nm = tonumber(ARGV[a + 5])
  a = a + 6
  for j = 1, nm do
    local m = {op = ARGV[a], slug = ARGV[a + 1]}
    if m.op == 'set' then
      m.from, m.to = a + 3, a + 2 + tonumber(ARGV[a + 2])
      a = m.to + 1
    else
      m.value = ARGV[a + 2]
      a = a + 3
    end
    c.meters[j] = m
  end
  counters[#counters + 1] = c
end
for _, c in ipairs(counters) do
  local v = redis.call('HMGET', c.key, 'requests', 'units_micro')
  if not fits(v[1], c.req) or not fits(v[2], c.units) then return 'overflow' end
  for _, m in ipairs(c.meters) do
    local f = redis.call('HGET', c.key, 'm:' .. m.slug)
    if m.op == 'add' and not fits(f, m.value) then return 'overflow' end
    if m.op == 'max' and not (fits(f, '0') and fits('0', m.value)) then return 'overflow' end
  end
end
-- larger reports whether v, canonical digits, passes cur as HGET returns it.
local function larger(v, cur)
  if not cur or string.sub(cur, 1, 1) == '-' then return true end
  cur = (string.gsub(cur, '^0+', ''))
  if #v ~= #cur then return #v > #cur end
  return v > cur
end
-- count_meter applies one meter's increment and returns its value before and after.
local function count_meter(c, m)
  local field = 'm:' .. m.slug
  if m.op == 'add' then
    local after = redis.call('HINCRBY', c.key, field, m.value)
    return after - tonumber(m.value), after
  elseif m.op == 'max' then
    local old = redis.call('HGET', c.key, field)
    if larger(m.value, old) then
      redis.call('HSET', c.key, field, m.value)
      return tonumber(old) or 0, tonumber(m.value)
    end
    return tonumber(old), tonumber(old)
  end
  local set = c.key .. '` + meterSetInfix + `' .. m.slug
  local before = redis.call('SCARD', set)
  local room = ` + strconv.Itoa(MaxMeterSetMembers) + ` - before
  if m.to - m.from + 1 <= room then
    for i = m.from, m.to, 1000 do
      redis.call('SADD', set, unpack(ARGV, i, math.min(i + 999, m.to)))
    end
  else
    -- Near the bound (MaxMeterSetMembers): one at a time, until it.
    for i = m.from, m.to do
      if room <= 0 then break end
      room = room - redis.call('SADD', set, ARGV[i])
    end
  end
  redis.call('EXPIRE', set, c.ttl)
  return before, redis.call('SCARD', set)
end
local rec = redis.call('HMGET', KEYS[3], 'period_start', 'quota_requests', 'quota_hard', 'meters')
local recStart, quota = tonumber(rec[1]), math.floor(tonumber(rec[2]) or 0)
local hard = rec[3] == '1'
local mq
local pushed = 0
for _, c in ipairs(counters) do
  local inc = tonumber(c.req)
  local n = redis.call('HINCRBY', c.key, 'requests', inc)
  redis.call('HINCRBY', c.key, 'units_micro', c.units)
  redis.call('EXPIRE', c.key, c.ttl)
  if c.pend ~= '' then redis.call('HSET', c.key, 'period_end', c.pend) end
  local current = c.pstart ~= '' and recStart == tonumber(c.pstart)
  if current and quota > 0 then
    pushed = pushed + announce(c.key, KEYS[4], c.pstart, c.pend, quota, n, hard, n - inc)
    if hard and n >= quota then
      redis.call('SET', KEYS[2], c.pend, 'NX', 'EXAT', c.pend)
    end
  end
  if current and #c.meters > 0 and not mq then mq = meter_quotas(rec[4]) end
  for _, m in ipairs(c.meters) do
    local before, after = count_meter(c, m)
    local q = current and mq[m.slug]
    if q then
      if q.quota > 0 then
        pushed = pushed + announce(c.key, KEYS[4], c.pstart, c.pend, q.quota, after, q.hard, before, m.slug)
      end
      if q.hard and after >= q.quota then
        redis.call('SET', KEYS[2], c.pend, 'NX', 'EXAT', c.pend)
      end
    end
  end
end
local mismatched = false
for off in string.gmatch(ARGV[4], '%d+') do
  redis.call('HSET', KEYS[5], ARGV[1] .. ':' .. off, '` + refusedMismatch + `')
  mismatched = true
end
if mismatched then redis.call('EXPIRE', KEYS[5], ARGV[5]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if pushed == 0 then return 'ok' end
return 'ok:' .. pushed
`)

// skipScript advances a subject's watermark over one event the counters
// cannot take (it would overflow one), compare-and-set like countScript, and
// records the event's offset in the subject's overflow hash, so that a
// replay knows the event was dead-lettered rather than counted. It returns
// "ok", or the current watermark when it moved.
//
// KEYS[1] watermark hash; KEYS[2] overflow hash. ARGV[1] partition, ARGV[2]
// expected watermark, ARGV[3] the event's offset, ARGV[4] the overflow
// hash's ttl seconds.
var skipScript = rueidis.NewLuaScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '-1'
if cur ~= ARGV[2] then return cur end
redis.call('HSET', KEYS[2], ARGV[1] .. ':' .. ARGV[3], '1')
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 'ok'
`)

// refusedMismatch is the refusal hash's value for an event refused as
// ReasonSubjectAPIMismatch.
const refusedMismatch = "mismatch"

// compensateScript takes one event back out of its counters, once: the
// marker key (NX) makes a replay of the same compensation a no-op.
//
// KEYS[1] marker; KEYS[2..] counter hashes, the period counter first. ARGV[1]
// marker ttl seconds, then per counter: units_micro; then field, amount
// pairs taken off the period counter (its meters that add).
var compensateScript = rueidis.NewLuaScript(`
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'requests', -1)
  redis.call('HINCRBY', KEYS[i], 'units_micro', -tonumber(ARGV[i]))
end
for i = #KEYS + 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], '-' .. ARGV[i + 1])
end
return 1
`)

// Increment is what one counter gets from a batch.
type Increment struct {
	// Name is the counter: a PeriodCounterName or a KeyDayCounterName.
	Name                 string
	Requests, UnitsMicro int64
	// TTL is the counter's Redis lifetime, renewed by every batch.
	TTL time.Duration
	// Period is the period of a period counter, nil for a key's day
	// counter. Its end is stored on the counter, and when it is the
	// subscription record's period the record's quota is held against it.
	Period *Period
	// Meters are the period counter's meter increments, one per meter
	// the batch's events touch; a key's day counter has none.
	Meters []MeterIncrement
}

// MeterIncrement is what one meter of a period counter gets from a batch.
type MeterIncrement struct {
	Slug string
	// Aggregation is one of the Meter* constants: count and sum add
	// Value, max keeps the larger of Value and the counter's, unique_count
	// adds Keys (distinct, non-empty key ids) to the meter's set.
	Aggregation string
	Value       int64
	Keys        []string
}

// Count is one subscription's batch of events from one partition: the
// increments of its counters, and its watermark moved over them.
type Count struct {
	Subject   string
	Partition int32
	// Watermark is the watermark the increments were computed against
	// (-1: none); Through is the offset it moves to.
	Watermark, Through int64
	// Mismatched are the offsets of the events refused because their API
	// is not their subscription's: recorded in the refusal hash with the
	// watermark (see [Refusals]).
	Mismatched []int64
	Increments []Increment
}

// Exec is the counting script's call for c (see countScript).
func (c Count) Exec() rueidis.LuaExec {
	keys := append(make([]string, 0, 5+len(c.Increments)), WatermarkName(c.Subject), BlockName(c.Subject),
		SubscriptionName(c.Subject), QuotaOutboxName(c.Subject), RefusalName(c.Subject))
	mismatched := make([]string, len(c.Mismatched))
	for i, off := range c.Mismatched {
		mismatched[i] = strconv.FormatInt(off, 10)
	}
	args := append(make([]string, 0, 5+5*len(c.Increments)),
		strconv.Itoa(int(c.Partition)), strconv.FormatInt(c.Watermark, 10), strconv.FormatInt(c.Through, 10),
		strings.Join(mismatched, " "), strconv.Itoa(int(PeriodCounterTTL/time.Second)))
	for _, in := range c.Increments {
		var pend, pstart string
		if in.Period != nil {
			pstart, pend = strconv.FormatInt(in.Period.Start.Unix(), 10), strconv.FormatInt(in.Period.End.Unix(), 10)
		}
		keys = append(keys, in.Name)
		args = append(args, strconv.FormatInt(in.Requests, 10), strconv.FormatInt(in.UnitsMicro, 10),
			strconv.Itoa(int(in.TTL/time.Second)), pend, pstart, strconv.Itoa(len(in.Meters)))
		for _, m := range in.Meters {
			switch m.Aggregation {
			case MeterUniqueCount:
				args = append(args, "set", m.Slug, strconv.Itoa(len(m.Keys)))
				args = append(args, m.Keys...)
			case MeterMax:
				args = append(args, "max", m.Slug, strconv.FormatInt(m.Value, 10))
			default:
				args = append(args, "add", m.Slug, strconv.FormatInt(m.Value, 10))
			}
		}
	}
	return rueidis.LuaExec{Keys: keys, Args: args}
}

// CountResult is how one [Count] or [SkipEvent] went.
type CountResult struct {
	// Applied: counted (or skipped), the watermark moved. Pushed is how
	// many outbox lines the count pushed.
	Applied bool
	Pushed  int
	// Overflow: an addition would pass usage.MaxCounterMicro; nothing was
	// written, watermark included.
	Overflow bool
	// Watermark is, when neither, the current watermark: it moved since
	// the batch was computed, and nothing was written.
	Watermark int64
	// Err is a failure of Redis or a reply that makes no sense.
	Err error
}

// ApplyCounts runs the counts, in one round trip; results are in the
// order of counts.
func ApplyCounts(ctx context.Context, client rueidis.Client, counts ...Count) []CountResult {
	execs := make([]rueidis.LuaExec, len(counts))
	for i, c := range counts {
		execs[i] = c.Exec()
	}
	out := make([]CountResult, len(counts))
	for i, r := range countScript.ExecMulti(ctx, client, execs...) {
		out[i] = countResult(r)
	}
	return out
}

func countResult(r rueidis.RedisResult) CountResult {
	got, err := r.ToString()
	if err != nil {
		return CountResult{Err: err}
	}
	if got == "overflow" {
		return CountResult{Overflow: true}
	}
	if rest, ok := strings.CutPrefix(got, "ok"); ok {
		res := CountResult{Applied: true}
		if n, ok := strings.CutPrefix(rest, ":"); ok {
			res.Pushed, _ = strconv.Atoi(n)
		}
		return res
	}
	cur, err := strconv.ParseInt(got, 10, 64)
	if err != nil {
		return CountResult{Err: fmt.Errorf("unexpected reply %q", got)}
	}
	return CountResult{Watermark: cur}
}

// SkipEvent moves a subject's watermark over one event its counters cannot
// take (it would overflow one), compare-and-set against watermark, and
// records the event in the refusal hash as [RefusedOverflow] (see
// skipScript): Applied, or the current Watermark when it moved.
func SkipEvent(ctx context.Context, client rueidis.Client, subject string, partition int32, watermark, offset int64) CountResult {
	got, err := skipScript.Exec(ctx, client, []string{WatermarkName(subject), RefusalName(subject)},
		[]string{strconv.Itoa(int(partition)), strconv.FormatInt(watermark, 10), strconv.FormatInt(offset, 10),
			strconv.Itoa(int(PeriodCounterTTL / time.Second))}).ToString()
	if err != nil {
		return CountResult{Err: fmt.Errorf("skip event of %s: %w", subject, err)}
	}
	if got == "ok" {
		return CountResult{Applied: true}
	}
	cur, err := strconv.ParseInt(got, 10, 64)
	if err != nil {
		return CountResult{Err: fmt.Errorf("skip event of %s: unexpected reply %q", subject, got)}
	}
	return CountResult{Watermark: cur}
}

// WatermarkOf names one subject's watermark of one partition.
type WatermarkOf struct {
	Subject   string
	Partition int32
}

// Watermarks reads the watermarks, in one round trip, in the order asked;
// -1 for none.
func Watermarks(ctx context.Context, client rueidis.Client, of []WatermarkOf) ([]int64, error) {
	if len(of) == 0 {
		return nil, nil
	}
	cmds := make(rueidis.Commands, len(of))
	for i, w := range of {
		cmds[i] = client.B().Hget().Key(WatermarkName(w.Subject)).Field(strconv.Itoa(int(w.Partition))).Build()
	}
	out := make([]int64, len(of))
	for i, r := range client.DoMulti(ctx, cmds...) {
		wm, err := r.AsInt64()
		switch {
		case rueidis.IsRedisNil(err):
			wm = -1
		case err != nil:
			return nil, fmt.Errorf("read watermark of %s: %w", of[i].Subject, err)
		}
		out[i] = wm
	}
	return out, nil
}

// Refusal is what the refusal hash (RefusalName) says of one event.
type Refusal int

const (
	// NotRefused: the hash does not name the event (counted, or not settled).
	NotRefused Refusal = iota
	// RefusedOverflow: the event would have overflowed a counter.
	RefusedOverflow
	// RefusedMismatch: the event's API is not its subscription's.
	RefusedMismatch
)

// RefusalQuery asks one subject's refusal hash about events of a partition.
type RefusalQuery struct {
	Subject   string
	Partition int32
	Offsets   []int64
}

// Refusals answers the queries in one round trip: per query, per offset,
// what the refusal hash stored when the event was settled.
func Refusals(ctx context.Context, client rueidis.Client, queries []RefusalQuery) ([][]Refusal, error) {
	if len(queries) == 0 {
		return nil, nil
	}
	cmds := make(rueidis.Commands, len(queries))
	for i, q := range queries {
		fields := make([]string, len(q.Offsets))
		for j, off := range q.Offsets {
			fields[j] = strconv.Itoa(int(q.Partition)) + ":" + strconv.FormatInt(off, 10)
		}
		cmds[i] = client.B().Hmget().Key(RefusalName(q.Subject)).Field(fields...).Build()
	}
	out := make([][]Refusal, len(queries))
	for i, r := range client.DoMulti(ctx, cmds...) {
		vals, err := r.ToArray()
		if err != nil {
			return nil, fmt.Errorf("read overflow hash: %w", err)
		}
		out[i] = make([]Refusal, len(queries[i].Offsets))
		for j, v := range vals {
			if v.IsNil() || j >= len(out[i]) {
				continue
			}
			if reason, _ := v.ToString(); reason == refusedMismatch {
				out[i][j] = RefusedMismatch
			} else {
				out[i][j] = RefusedOverflow
			}
		}
	}
	return out, nil
}

// Compensation takes one counted event back out of its counters.
type Compensation struct {
	Subject, Topic string
	Partition      int32
	Offset         int64
	// Counters are the counters the event was counted into, the period
	// counter first.
	Counters   []string
	UnitsMicro int64
	// Meters are what the event added to the period counter's meters that
	// add (count and sum), by slug. A max or a unique_count cannot be
	// taken back: the drift check reports what is left.
	Meters map[string]int64
}

// Compensate takes the events back out of their counters, in one round
// trip, each once: a marker (CompensationName, NX) makes a replay of the
// same compensation a no-op.
func Compensate(ctx context.Context, client rueidis.Client, cs ...Compensation) error {
	execs := make([]rueidis.LuaExec, 0, len(cs))
	for _, c := range cs {
		keys := append([]string{CompensationName(c.Subject, c.Topic, c.Partition, c.Offset)}, c.Counters...)
		args := []string{strconv.Itoa(int(PeriodCounterTTL / time.Second))}
		for range c.Counters {
			args = append(args, strconv.FormatInt(c.UnitsMicro, 10))
		}
		if len(c.Counters) > 0 {
			for slug, v := range c.Meters {
				if v > 0 { // the script negates the digits: "-0" is no integer to Redis
					args = append(args, MeterFieldName(slug), strconv.FormatInt(v, 10))
				}
			}
		}
		execs = append(execs, rueidis.LuaExec{Keys: keys, Args: args})
	}
	for _, r := range compensateScript.ExecMulti(ctx, client, execs...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("compensate redis counters: %w", err)
		}
	}
	return nil
}

// PeriodRequests returns the requests the processors counted for the
// subscription in the period starting at start (0 when none were).
func (s *Store) PeriodRequests(ctx context.Context, id string, start time.Time) (int64, error) {
	n, err := s.client.Do(ctx, s.client.B().Hget().Key(PeriodCounterName(id, start)).Field("requests").Build()).AsInt64()
	if rueidis.IsRedisNil(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read period counter of %s: %w", id, err)
	}
	return n, nil
}

// PeriodCount returns what the processors counted for the subject in the
// period starting at start: requests and units in millionths (0 when
// nothing was).
func PeriodCount(ctx context.Context, client rueidis.Client, subject string, start time.Time) (requests, unitsMicro int64, err error) {
	vals, err := client.Do(ctx, client.B().Hmget().Key(PeriodCounterName(subject, start)).Field("requests", "units_micro").Build()).ToArray()
	if err != nil {
		return 0, 0, fmt.Errorf("read period counter of %s: %w", subject, err)
	}
	// A missing field reads as nil: nothing counted.
	requests, _ = vals[0].AsInt64()
	unitsMicro, _ = vals[1].AsInt64()
	return requests, unitsMicro, nil
}
