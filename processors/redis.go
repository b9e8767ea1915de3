package processors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/schemas/usage"
)

// Redis key layout. Every key of one subject carries the subject as its hash
// tag, so one script touches one slot and the layout works on Redis Cluster.
//
//	veil:sub:{S}                     subscription record (control plane): api_id, period_start, period_end (Unix seconds), quota_requests, quota_hard
//	veil:wm:{S}                      field <partition> = last Kafka offset applied for S from that partition
//	veil:usage:{S}:p:<period_start>  period counter: requests, units_micro, period_end, crossed_80|90|100 (the quota crossed)
//	veil:usage:{S}:k:<key>:<YYYYMMDD> per key per day counter: requests, units_micro
//	veil:block:{S}                   quota block for the gateway: Unix seconds of the period's end, expiring then
//	veil:quota:outbox:{S}            list of quota crossings waiting for veil.quota.events (internal/enforcement)
//
// The counters hold admitted requests only: quotas are enforced from them,
// and a request the gateway refused itself (data.refusal) is never billed.
// The names the control plane and the gateway share are
// internal/enforcement's; the per key per day counter is the processors'.
const keyKeyDay = "veil:usage:{%s}:k:%s:%s"

// PeriodKey is the Redis key of a subject's counter for the period starting at start.
func PeriodKey(subject string, start time.Time) string {
	return enforcement.PeriodCounterName(subject, start)
}

// SubscriptionKey is the Redis key of the subscription record the control
// plane writes (period_start and period_end as Unix seconds).
func SubscriptionKey(subject string) string { return enforcement.SubscriptionName(subject) }

// WatermarkKey is the Redis hash of a subject's per-partition offset watermarks.
func WatermarkKey(subject string) string { return enforcement.WatermarkName(subject) }

// applyScript adds one subject's increments and advances its watermark for
// one partition, atomically, only if the watermark is still the one the
// increments were computed against (compare-and-set). It returns "ok", or
// the current watermark when it moved, so the caller recomputes.
//
// In the same step it holds the period counter against the subscription's
// quota. The quota is read here, from the record, not passed in: the
// processor's cached copy may predate a credit or a plan change. Only the
// counter of the record's own period has a quota. Reaching 80, 90 and 100%
// of it pushes a line onto the subject's quota outbox (the format of
// enforcement.OutboxEntry), once per threshold and quota: crossed_<pct> on
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
// The events of the call whose API is not their subscription's are recorded
// in the subject's refusal hash (keyOverflow, value refusedMismatch) in the
// same step as the watermark, so that a replay reads the decision back
// instead of making it again from a record that may have changed since.
//
// KEYS[1] watermark hash; KEYS[2] the subject's block; KEYS[3] its
// subscription record; KEYS[4] its quota outbox; KEYS[5] its refusal hash;
// KEYS[6..] counter hashes. ARGV[1] partition, ARGV[2] expected watermark
// ("-1" for none), ARGV[3] new watermark, ARGV[4] the offsets of the
// mismatched events, space separated ("" for none), ARGV[5] the refusal
// hash's ttl seconds, then per counter: requests, units_micro, ttl seconds,
// period_end and period_start ("" for a counter that is not a period's).
//
// Every counter's requests and units_micro are checked first (enforcement.s
// fits; a field that is not an integer fails it too, as HINCRBY would):
// when an addition would pass usage.MaxCounterMicro the script writes nothing,
// watermark included, and returns "overflow"; the caller then applies the
// events one by one and dead-letters the ones that do not fit
// (skipScript).
var applyScript = rueidis.NewLuaScript(enforcement.Lua + `
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '-1'
if cur ~= ARGV[2] then return cur end
for i = 6, #KEYS do
  local b = 6 + (i - 6) * 5
  local c = redis.call('HMGET', KEYS[i], 'requests', 'units_micro')
  if not fits(c[1], ARGV[b]) or not fits(c[2], ARGV[b + 1]) then return 'overflow' end
end
local rec = redis.call('HMGET', KEYS[3], 'period_start', 'quota_requests', 'quota_hard')
local recStart, quota = tonumber(rec[1]), math.floor(tonumber(rec[2]) or 0)
local hard = rec[3] == '1'
local pushed = 0
for i = 6, #KEYS do
  local b = 6 + (i - 6) * 5
  local inc = tonumber(ARGV[b])
  local n = redis.call('HINCRBY', KEYS[i], 'requests', inc)
  redis.call('HINCRBY', KEYS[i], 'units_micro', ARGV[b + 1])
  redis.call('EXPIRE', KEYS[i], ARGV[b + 2])
  local pend, pstart = ARGV[b + 3], ARGV[b + 4]
  if pend ~= '' then redis.call('HSET', KEYS[i], 'period_end', pend) end
  if pstart ~= '' and quota > 0 and recStart == tonumber(pstart) then
    pushed = pushed + announce(KEYS[i], KEYS[4], pstart, pend, quota, n, hard, n - inc)
    if hard and n >= quota then
      redis.call('SET', KEYS[2], pend, 'NX', 'EXAT', pend)
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
// cannot take (it would overflow one), compare-and-set like applyScript, and
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

// keyOverflow is a subject's hash of the events its counters refused
// (field <partition>:<offset>); only the processors read it. The value says
// why: refusedMismatch for an event of another API than its subscription's
// (applyScript), anything else for one that would overflow a counter
// (skipScript writes "1").
const keyOverflow = "veil:overflow:{%s}"

// refusedMismatch is the refusal hash's value for an event refused as
// ReasonSubjectAPIMismatch.
const refusedMismatch = "mismatch"

// errOverflow is how a script call's refusal reaches the caller.
var errOverflow = errors.New("counter would overflow")

// compensateScript takes one event back out of its counters, once: the
// marker key (NX) makes a replay of the same compensation a no-op.
//
// KEYS[1] marker; KEYS[2..] counter hashes. ARGV[1] marker ttl seconds, then
// per counter: units_micro.
var compensateScript = rueidis.NewLuaScript(`
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'requests', -1)
  redis.call('HINCRBY', KEYS[i], 'units_micro', -tonumber(ARGV[i]))
end
return 1
`)

// Counter lifetimes: long enough to outlive the late-event window and the
// billing that reads them.
const (
	periodTTL = 400 * 24 * time.Hour
	keyDayTTL = 45 * 24 * time.Hour
)

// item is what the Redis sink needs of one unique, valid event.
type item struct {
	subject    string
	keyID      string
	partition  int32
	offset     int64
	time       time.Time
	unitsMicro int64
	// apiID is the event's data.api_id, held against the subscription
	// record's api_id.
	apiID string
	// apiMismatch marks an event whose api_id is not its subscription's:
	// apply sets it, the event advances the watermark but counts nowhere,
	// and the caller dead-letters it (ReasonSubjectAPIMismatch). The
	// decision is stored with the watermark and a replay reads it back.
	apiMismatch bool
	// gatewayRefused marks a request the gateway refused itself: it
	// advances the watermark but counts nowhere, since quotas are enforced
	// from these counters and a refusal is never billed.
	gatewayRefused bool
}

// Period returns the billing period that holds t for the subject: the one in
// its subscription record when the control plane wrote one and it holds t,
// a neighbouring one stepped by the record's interval when it does not,
// and the calendar month (UTC) when there is no record. The processors
// count into the same period.
func Period(ctx context.Context, client rueidis.Client, subject string, t time.Time) (start, end time.Time, err error) {
	s := redisSink{client: client}
	ps, err := s.periods(ctx, []subjectPartition{{subject: subject}})
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	p := periodFor(ps[subject], t)
	return p.start, p.end, nil
}

func periodFor(sub *period, t time.Time) period {
	if sub == nil {
		return calendarMonth(t)
	}
	if !t.Before(sub.start) && t.Before(sub.end) {
		return period{start: sub.start, end: sub.end}
	}
	if !sub.prevStart.IsZero() && !t.Before(sub.prevStart) && t.Before(sub.start) {
		return period{start: sub.prevStart, end: sub.start}
	}
	// An event of a neighbouring period (the record not rolled yet at the
	// period's end, or a late event of the one before): step by the
	// record's own interval, so the counter is the one the control plane
	// will name when it rolls the record.
	step := func(at time.Time, n int) time.Time {
		switch {
		case sub.start.AddDate(0, 1, 0).Equal(sub.end):
			return at.AddDate(0, n, 0)
		case sub.start.AddDate(1, 0, 0).Equal(sub.end):
			return at.AddDate(n, 0, 0)
		}
		return at.Add(time.Duration(n) * sub.end.Sub(sub.start))
	}
	start, end := sub.start, sub.end
	for range 36 {
		switch {
		case !t.Before(end):
			start, end = end, step(end, 1)
		case t.Before(start):
			start, end = step(start, -1), start
		default:
			return period{start: start, end: end}
		}
	}
	return calendarMonth(t)
}

// period is a billing period [start, end).
type period struct {
	start, end time.Time
	// prevStart is where the period before began, when the record was
	// rolled (its counter is [prevStart, start)); zero when unknown.
	prevStart time.Time
	// apiID is the subscription record's api_id; "" when the record has none.
	apiID string
}

func calendarMonth(t time.Time) period {
	t = t.UTC()
	start := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return period{start: start, end: start.AddDate(0, 1, 0)}
}

// redisSink keeps the per-subject counters exactly once.
type redisSink struct {
	client rueidis.Client
	// watermarks caches, per partition, the watermark of each subject seen;
	// the script's compare-and-set makes a stale entry harmless.
	watermarks map[int32]map[string]int64
}

func newRedisSink(client rueidis.Client) *redisSink {
	return &redisSink{client: client, watermarks: map[int32]map[string]int64{}}
}

// forget drops the cached state of partitions this processor no longer owns.
func (s *redisSink) forget(partitions []int32) {
	for _, p := range partitions {
		delete(s.watermarks, p)
	}
}

type subjectPartition struct {
	subject   string
	partition int32
}

// apply adds the items to the counters. Items of one subject and partition
// must be in offset order. It returns after every group is applied or on the
// first error; calling it again with the same items is safe. outboxed names
// the subjects whose quota outbox got lines, for the caller to drain (even
// when err is not nil: the groups applied before the error count).
//
// refused are the items the counters refused: because an addition would
// pass usage.MaxCounterMicro, or, marked apiMismatch, because the
// subscription record names another API than the event (a producer allowed
// to write for one API may not spend another API's subscription); the caller
// dead-letters them. An event of a subject without a record is not checked:
// a canceled subscription's late events still count. A group whose
// sum does not fit is applied again one event at a time, so only the events
// that do not fit are refused and every other one counts. An item at or
// below its watermark was settled by an earlier call (a replay after a
// crash, or another processor): its decision is read back from the refusal
// hash, where both kinds of refusal are stored with the watermark, never
// made again, so every call reports the same ones whatever became of the
// record since; an item settled without a stored refusal was counted.
func (s *redisSink) apply(ctx context.Context, items []item) (outboxed []string, overflowed []item, err error) {
	groups := map[subjectPartition][]item{}
	var order []subjectPartition
	for _, it := range items {
		k := subjectPartition{it.subject, it.partition}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], it)
	}
	if err := s.loadWatermarks(ctx, order); err != nil {
		return nil, nil, err
	}
	periods, err := s.periods(ctx, order)
	if err != nil {
		return nil, nil, err
	}
	// Only the items after the watermark are decided from the record here
	// (counterArgs skips the others); applyScript stores the decision.
	for _, k := range order {
		rec := periods[k.subject]
		g := groups[k]
		for i := range g {
			g[i].apiMismatch = rec != nil && rec.apiID != "" && g[i].apiID != rec.apiID
		}
	}
	// decided holds, per group, the watermark below which its items were
	// settled before this call: counted or refused, the overflow hash tells.
	decided := map[subjectPartition]int64{}
	var poisoned []subjectPartition
	pending := order
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt == 5 {
			return outboxed, nil, fmt.Errorf("redis counters: watermarks of %d subjects keep moving", len(pending))
		}
		var (
			execs []rueidis.LuaExec
			sent  []subjectPartition
			newWM []int64
		)
		for _, k := range pending {
			wm := s.watermarks[k.partition][k.subject]
			decided[k] = wm
			keys, args, last, serr := counterArgs(k, groups[k], wm, periods[k.subject])
			switch {
			case errors.Is(serr, errOverflow):
				poisoned = append(poisoned, k) // the batch's own sum does not fit
				continue
			case keys == nil:
				continue // everything already applied
			}
			execs = append(execs, rueidis.LuaExec{Keys: keys, Args: args})
			sent = append(sent, k)
			newWM = append(newWM, last)
		}
		if len(sent) == 0 {
			break
		}
		results := applyScript.ExecMulti(ctx, s.client, execs...)
		pending = pending[:0]
		for i, r := range results {
			k := sent[i]
			got, err := r.ToString()
			if err != nil {
				return outboxed, nil, fmt.Errorf("redis counters for %s: %w", k.subject, err)
			}
			if got == "overflow" {
				poisoned = append(poisoned, k)
				continue
			}
			if rest, ok := strings.CutPrefix(got, "ok"); ok {
				s.setWatermark(k, newWM[i])
				if rest != "" && !slices.Contains(outboxed, k.subject) {
					outboxed = append(outboxed, k.subject)
				}
				continue
			}
			cur, perr := strconv.ParseInt(got, 10, 64)
			if perr != nil {
				return outboxed, nil, fmt.Errorf("redis counters for %s: unexpected reply %q", k.subject, got)
			}
			s.setWatermark(k, cur)
			pending = append(pending, k)
		}
	}
	for _, k := range poisoned {
		refused, pushed, err := s.applyEach(ctx, k, groups[k], periods[k.subject])
		if pushed && !slices.Contains(outboxed, k.subject) {
			outboxed = append(outboxed, k.subject)
		}
		if err != nil {
			return outboxed, nil, err
		}
		overflowed = append(overflowed, refused...)
	}
	// Every item after its group's decided watermark was applied by this
	// call (or the call failed above), its mismatch stored with it.
	var mismatched []item
	for _, k := range order {
		for _, it := range groups[k] {
			if it.apiMismatch && it.offset > decided[k] {
				mismatched = append(mismatched, it)
			}
		}
	}
	earlier, err := s.refusedEarlier(ctx, groups, decided)
	if err != nil {
		return outboxed, nil, err
	}
	return outboxed, append(append(overflowed, earlier...), mismatched...), nil
}

// applyEach applies a group's items one at a time, after its sum was
// refused: an item that does not fit is skipped (skipScript) and returned,
// every other one counts. A moved watermark is an error: the caller's retry
// starts again from the new one.
func (s *redisSink) applyEach(ctx context.Context, k subjectPartition, items []item, sub *period) (refused []item, pushed bool, err error) {
	for _, it := range items {
		wm := s.watermarks[k.partition][k.subject]
		if it.offset <= wm {
			continue
		}
		keys, args, last, serr := counterArgs(k, []item{it}, wm, sub)
		got := "overflow" // one event never passes the cap, but a counter near it may not take even one
		if serr == nil {
			got, err = applyScript.Exec(ctx, s.client, keys, args).ToString()
			if err != nil {
				return refused, pushed, fmt.Errorf("redis counters for %s: %w", k.subject, err)
			}
		}
		if got == "overflow" {
			got, err = skipScript.Exec(ctx, s.client,
				[]string{enforcement.WatermarkName(k.subject), fmt.Sprintf(keyOverflow, k.subject)},
				[]string{strconv.Itoa(int(k.partition)), strconv.FormatInt(wm, 10), strconv.FormatInt(it.offset, 10),
					strconv.Itoa(int(periodTTL / time.Second))}).ToString()
			if err != nil {
				return refused, pushed, fmt.Errorf("skip event of %s: %w", k.subject, err)
			}
			if got == "ok" {
				s.setWatermark(k, it.offset)
				refused = append(refused, it)
				continue
			}
		}
		rest, ok := strings.CutPrefix(got, "ok")
		if !ok {
			if cur, perr := strconv.ParseInt(got, 10, 64); perr == nil {
				s.setWatermark(k, cur)
			}
			return refused, pushed, fmt.Errorf("redis counters for %s: watermark moved to %s", k.subject, got)
		}
		s.setWatermark(k, last)
		pushed = pushed || rest != ""
	}
	return refused, pushed, nil
}

// refusedEarlier returns the items at or below their group's decided
// watermark that the refusal hash names: refused by an earlier call, with
// apiMismatch as stored, not as the record reads now. Outside replays no
// item is at or below it, and no round trip is made.
func (s *redisSink) refusedEarlier(ctx context.Context, groups map[subjectPartition][]item, decided map[subjectPartition]int64) ([]item, error) {
	var (
		cmds  rueidis.Commands
		asked [][]item
	)
	for k, wm := range decided {
		var old []item
		var fields []string
		for _, it := range groups[k] {
			if it.offset <= wm {
				old = append(old, it)
				fields = append(fields, strconv.Itoa(int(it.partition))+":"+strconv.FormatInt(it.offset, 10))
			}
		}
		if len(old) > 0 {
			cmds = append(cmds, s.client.B().Hmget().Key(fmt.Sprintf(keyOverflow, k.subject)).Field(fields...).Build())
			asked = append(asked, old)
		}
	}
	var out []item
	for i, r := range s.client.DoMulti(ctx, cmds...) {
		vals, err := r.ToArray()
		if err != nil {
			return nil, fmt.Errorf("read overflow hash: %w", err)
		}
		for j, v := range vals {
			if v.IsNil() || j >= len(asked[i]) {
				continue
			}
			it := asked[i][j]
			reason, _ := v.ToString()
			it.apiMismatch = reason == refusedMismatch
			out = append(out, it)
		}
	}
	return out, nil
}

func (s *redisSink) setWatermark(k subjectPartition, wm int64) {
	m := s.watermarks[k.partition]
	if m == nil {
		m = map[string]int64{}
		s.watermarks[k.partition] = m
	}
	m[k.subject] = wm
}

// counterArgs builds the script call for the items after watermark wm, or
// nil keys when there are none. Items the gateway refused, and items whose
// API is not their subscription's, only move the watermark (the latter are
// also named, for the script to store the refusal): a call may carry no
// counter at all.
//
// The sums are checked (usage.CheckedAdd): errOverflow when one of them
// would pass usage.MaxCounterMicro, before anything is sent.
func counterArgs(k subjectPartition, items []item, wm int64, sub *period) (keys, args []string, last int64, err error) {
	type sums struct {
		requests, units        int64
		periodStart, periodEnd string
		ttl                    time.Duration
	}
	byKey := map[string]*sums{}
	var keyOrder, mismatched []string
	overflow := false
	add := func(key string, it item, ttl time.Duration, periodStart, periodEnd string) {
		c, ok := byKey[key]
		if !ok {
			c = &sums{ttl: ttl, periodStart: periodStart, periodEnd: periodEnd}
			byKey[key] = c
			keyOrder = append(keyOrder, key)
		}
		c.requests++
		units, err := usage.CheckedAdd(c.units, it.unitsMicro)
		if err != nil {
			overflow = true
		}
		c.units = units
	}
	last = wm
	for _, it := range items {
		if it.offset <= wm {
			continue
		}
		last = it.offset
		if it.apiMismatch {
			mismatched = append(mismatched, strconv.FormatInt(it.offset, 10))
			continue
		}
		if it.gatewayRefused {
			continue
		}
		p := periodFor(sub, it.time)
		start := strconv.FormatInt(p.start.Unix(), 10)
		add(enforcement.PeriodCounterName(k.subject, p.start), it, periodTTL, start, strconv.FormatInt(p.end.Unix(), 10))
		if it.keyID != "" {
			add(fmt.Sprintf(keyKeyDay, k.subject, it.keyID, it.time.UTC().Format("20060102")), it, keyDayTTL, "", "")
		}
	}
	if overflow {
		return nil, nil, wm, errOverflow
	}
	if last == wm {
		return nil, nil, wm, nil
	}
	keys = append(make([]string, 0, 5+len(keyOrder)), enforcement.WatermarkName(k.subject), enforcement.BlockName(k.subject),
		enforcement.SubscriptionName(k.subject), enforcement.QuotaOutboxName(k.subject), fmt.Sprintf(keyOverflow, k.subject))
	args = append(make([]string, 0, 5+5*len(keyOrder)),
		strconv.Itoa(int(k.partition)), strconv.FormatInt(wm, 10), strconv.FormatInt(last, 10),
		strings.Join(mismatched, " "), strconv.Itoa(int(periodTTL/time.Second)))
	for _, key := range keyOrder {
		c := byKey[key]
		keys = append(keys, key)
		args = append(args, strconv.FormatInt(c.requests, 10), strconv.FormatInt(c.units, 10),
			strconv.Itoa(int(c.ttl/time.Second)), c.periodEnd, c.periodStart)
	}
	return keys, args, last, nil
}

// compensate removes items that apply counted but ClickHouse refused for
// good. Items the gateway refused were never counted and are skipped.
func (s *redisSink) compensate(ctx context.Context, items []item, topic string) error {
	items = slices.DeleteFunc(slices.Clone(items), func(it item) bool { return it.gatewayRefused })
	if len(items) == 0 {
		return nil
	}
	subs := make([]subjectPartition, 0, len(items))
	for _, it := range items {
		subs = append(subs, subjectPartition{subject: it.subject, partition: it.partition})
	}
	periods, err := s.periods(ctx, subs)
	if err != nil {
		return err
	}
	execs := make([]rueidis.LuaExec, 0, len(items))
	for _, it := range items {
		p := periodFor(periods[it.subject], it.time)
		marker := fmt.Sprintf("veil:comp:{%s}:%s:%d:%d", it.subject, topic, it.partition, it.offset)
		keys := []string{marker, enforcement.PeriodCounterName(it.subject, p.start)}
		args := []string{strconv.Itoa(int(periodTTL / time.Second)), strconv.FormatInt(it.unitsMicro, 10)}
		if it.keyID != "" {
			keys = append(keys, fmt.Sprintf(keyKeyDay, it.subject, it.keyID, it.time.UTC().Format("20060102")))
			args = append(args, strconv.FormatInt(it.unitsMicro, 10))
		}
		execs = append(execs, rueidis.LuaExec{Keys: keys, Args: args})
	}
	for _, r := range compensateScript.ExecMulti(ctx, s.client, execs...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("compensate redis counters: %w", err)
		}
	}
	return nil
}

// loadWatermarks fetches, in one round trip, the watermarks of the subjects
// this process has not seen on their partition yet.
func (s *redisSink) loadWatermarks(ctx context.Context, order []subjectPartition) error {
	var (
		cmds    rueidis.Commands
		missing []subjectPartition
	)
	for _, k := range order {
		if _, ok := s.watermarks[k.partition][k.subject]; ok {
			continue
		}
		missing = append(missing, k)
		cmds = append(cmds, s.client.B().Hget().Key(enforcement.WatermarkName(k.subject)).Field(strconv.Itoa(int(k.partition))).Build())
	}
	if len(cmds) == 0 {
		return nil
	}
	for i, r := range s.client.DoMulti(ctx, cmds...) {
		wm, err := r.AsInt64()
		switch {
		case rueidis.IsRedisNil(err):
			wm = -1
		case err != nil:
			return fmt.Errorf("read watermark of %s: %w", missing[i].subject, err)
		}
		s.setWatermark(missing[i], wm)
	}
	return nil
}

// periods reads the subscription records' period bounds and api_id through the
// client-side cache: no round trip while a record is unchanged, and Redis
// invalidates the cache when the control plane rewrites it. (The quota is
// read by applyScript itself, never from this cache.)
func (s *redisSink) periods(ctx context.Context, order []subjectPartition) (map[string]*period, error) {
	out := map[string]*period{}
	var (
		cmds     []rueidis.CacheableTTL
		subjects []string
	)
	for _, k := range order {
		if _, ok := out[k.subject]; ok {
			continue
		}
		out[k.subject] = nil
		subjects = append(subjects, k.subject)
		cmds = append(cmds, rueidis.CT(s.client.B().Hmget().Key(enforcement.SubscriptionName(k.subject)).
			Field("period_start", "period_end", "prev_period_start", "api_id").Cache(), time.Minute))
	}
	if len(cmds) == 0 {
		return out, nil
	}
	for i, r := range s.client.DoMultiCache(ctx, cmds...) {
		vals, err := r.ToArray()
		if err != nil {
			return nil, fmt.Errorf("read subscription %s: %w", subjects[i], err)
		}
		if len(vals) != 4 {
			continue
		}
		start, err1 := vals[0].AsInt64()
		end, err2 := vals[1].AsInt64()
		if err1 != nil || err2 != nil || end <= start {
			continue // no record, or an unusable one: the calendar month applies
		}
		p := &period{start: time.Unix(start, 0).UTC(), end: time.Unix(end, 0).UTC()}
		if prev, err := vals[2].AsInt64(); err == nil && prev < start {
			p.prevStart = time.Unix(prev, 0).UTC()
		}
		p.apiID, _ = vals[3].ToString() // nil: a record without api_id, not checked
		out[subjects[i]] = p
	}
	return out, nil
}
