// Package enforcement is the record of a subscription's period counter
// crossing a share of its request quota: written by the processors' counting
// script into a Redis outbox (atomically with the count that crossed it),
// produced from there to veil.quota.events, and consumed by the control
// plane, which turns each into notices once.
//
// An outbox entry is a compact line the Lua script can build:
//
//	v1|<period_start>|<period_end>|<threshold>|<quota>|<used>|<hard>
//
// with Unix seconds for the period bounds, threshold 80, 90 or 100, the
// quota in force when it was crossed, the counter right after, and hard "1"
// or "0". The Kafka record is the JSON of Event, keyed by subscription.
package enforcement

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Thresholds are the shares of a quota, in percent, that are announced.
var Thresholds = []int{80, 90, 100}

// Event is one crossing.
type Event struct {
	SubscriptionID string    `json:"subscription_id"`
	PeriodStart    time.Time `json:"period_start"`
	PeriodEnd      time.Time `json:"period_end"`
	// Threshold is 80, 90 or 100.
	Threshold int `json:"threshold"`
	// Quota is the period's request quota when it was crossed (a credit
	// raises it, and the thresholds of the new quota are crossed anew).
	Quota int64 `json:"quota"`
	// Used is the period counter right after the batch that crossed it.
	Used int64 `json:"used"`
	// Hard reports whether the quota blocks at 100%.
	Hard bool `json:"hard"`
	// At is when the crossing was produced.
	At time.Time `json:"at"`
}

// ID identifies the crossing: one notice per subscription, period,
// threshold and quota.
func (e Event) ID() string {
	return fmt.Sprintf("%s:%d:%d:%d", e.SubscriptionID, e.PeriodStart.Unix(), e.Threshold, e.Quota)
}

// Blocked reports whether the crossing blocked the subscription.
func (e Event) Blocked() bool { return e.Hard && e.Threshold == 100 }

// ErrInvalid wraps every decoding and validation failure.
var ErrInvalid = errors.New("invalid quota event")

// Validate reports whether e is well formed.
func (e Event) Validate() error {
	switch {
	case e.SubscriptionID == "":
		return fmt.Errorf("%w: no subscription_id", ErrInvalid)
	case !validThreshold(e.Threshold):
		return fmt.Errorf("%w: threshold %d is not 80, 90 or 100", ErrInvalid, e.Threshold)
	case e.Quota <= 0:
		return fmt.Errorf("%w: quota %d is not positive", ErrInvalid, e.Quota)
	case e.Used < 0:
		return fmt.Errorf("%w: used %d is negative", ErrInvalid, e.Used)
	case e.PeriodStart.IsZero() || !e.PeriodEnd.After(e.PeriodStart):
		return fmt.Errorf("%w: period [%s, %s) is empty", ErrInvalid, e.PeriodStart, e.PeriodEnd)
	}
	return nil
}

func validThreshold(t int) bool { return t == 80 || t == 90 || t == 100 }

// Marshal returns the Kafka record value of e.
func (e Event) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(e)
}

// Unmarshal decodes and validates a Kafka record value.
func Unmarshal(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	e.PeriodStart, e.PeriodEnd, e.At = e.PeriodStart.UTC(), e.PeriodEnd.UTC(), e.At.UTC()
	return e, e.Validate()
}

// OutboxEntry is the outbox line of e (see the package comment).
func OutboxEntry(e Event) string {
	hard := "0"
	if e.Hard {
		hard = "1"
	}
	return fmt.Sprintf("v1|%d|%d|%d|%d|%d|%s", e.PeriodStart.Unix(), e.PeriodEnd.Unix(), e.Threshold, e.Quota, e.Used, hard)
}

// ParseOutbox reads an outbox line of the subscription's outbox.
func ParseOutbox(subscriptionID, entry string) (Event, error) {
	f := strings.Split(entry, "|")
	if len(f) != 7 || f[0] != "v1" || (f[6] != "0" && f[6] != "1") {
		return Event{}, fmt.Errorf("%w: outbox entry %q", ErrInvalid, entry)
	}
	var n [5]int64
	for i := range n {
		v, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return Event{}, fmt.Errorf("%w: outbox entry %q", ErrInvalid, entry)
		}
		n[i] = v
	}
	e := Event{
		SubscriptionID: subscriptionID,
		PeriodStart:    time.Unix(n[0], 0).UTC(), PeriodEnd: time.Unix(n[1], 0).UTC(),
		Threshold: int(n[2]), Quota: n[3], Used: n[4], Hard: f[6] == "1",
	}
	return e, e.Validate()
}

// Lua defines the functions the Redis scripts that change a period counter
// or its quota share (the processors' count, the record's write, the drift
// heal), so a threshold is recorded and its outbox line written one way.
// Prepend it to a script.
//
//	announce(counter, outbox, pstart, pend, quota, used, hard, from)
//
// records every threshold with from < at <= used (at = ceil(quota*pct/100))
// not yet recorded for this quota (crossed_<pct> = quota on the counter)
// and pushes its OutboxEntry line; from = -1 takes every threshold reached.
// pstart and pend are the period's Unix seconds as strings, quota and used
// numbers, hard a boolean. It returns how many lines it pushed.
//
//	reblock(block, pend, quota, hard, used)
//
// sets the block until pend when a hard quota is used up (rewriting it
// only when it changes, so the gateway's cached copy is invalidated only
// then) and removes it otherwise; it returns 1 when blocked.
//
//	fits(cur, inc)
//
// reports whether cur + inc stays at or below usage.MaxCounterMicro (2^63-1,
// where HINCRBY would fail), cur and inc being integers as decimal strings
// (cur as HGET returns it: false for a missing field counts as 0), inc not
// negative. Lua's numbers are doubles, exact only below 2^53, so the check
// adds the two in halves of nine digits, each exact. A cur that is not an
// integer does not fit: HINCRBY would fail on it. A script checks every
// addition with fits before it writes anything, so that a refusal leaves
// nothing half done.
const Lua = `
local function announce(counter, outbox, pstart, pend, quota, used, hard, from)
  local q, u, pushed = string.format('%d', quota), string.format('%d', used), 0
  for _, pct in ipairs({80, 90, 100}) do
    local at = math.ceil(quota * pct / 100)
    local field = 'crossed_' .. pct
    if from < at and at <= used and redis.call('HGET', counter, field) ~= q then
      redis.call('HSET', counter, field, q)
      redis.call('RPUSH', outbox, table.concat({'v1', pstart, pend, pct, q, u, hard and '1' or '0'}, '|'))
      pushed = pushed + 1
    end
  end
  return pushed
end
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
local function reblock(block, pend, quota, hard, used)
  if quota >= 0 and hard and used >= quota then
    if redis.call('GET', block) ~= pend then redis.call('SET', block, pend, 'EXAT', pend) end
    return 1
  end
  redis.call('DEL', block)
  return 0
end
`
