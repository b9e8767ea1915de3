package enforcement

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Store reads and writes records in Redis. It is safe for concurrent use.
type Store struct {
	client rueidis.Client
}

// New returns a Store on client, which may be a cluster client.
func New(client rueidis.Client) *Store { return &Store{client: client} }

// putScript writes a record's fields only when the stored version is lower
// than the new one (compare-and-set). Versions compare as decimal strings,
// by length and then digit by digit, because Lua numbers are doubles and
// lose int64 precision above 2^53. A stored version that is not a canonical
// decimal, or a value of another type under the key, is garbage: the write
// replaces it.
//
// KEYS[1] record. ARGV[1] version; ARGV[2] expiry: "" leaves it alone, "0"
// removes it, else PEXPIREAT milliseconds; ARGV[3..] field, value pairs.
// Returns 1 when written, 0 when a newer or equal version is stored.
var putScript = rueidis.NewLuaScript(putBody + `
return 1
`)

const putBody = `
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'hash' then
  local cur = redis.call('HGET', KEYS[1], 'version')
  if cur and string.match(cur, '^%d+$') and (cur == '0' or string.sub(cur, 1, 1) ~= '0') then
    local v = ARGV[1]
    if #cur > #v or (#cur == #v and cur >= v) then return 0 end
  end
elseif t ~= 'none' then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if ARGV[2] == '0' then
  redis.call('PERSIST', KEYS[1])
elseif ARGV[2] ~= '' then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
`

// putSubscriptionScript is putScript for a subscription record, which then
// recomputes the subscription's quota block from the period counter the
// processors keep: a hard quota that the counter reaches blocks until the
// period's end, anything else (a soft or larger quota after a plan change
// or a credit, a new period whose counter is empty) lifts the block. The
// block is rewritten only when it changes, so the gateway's cached copy is
// invalidated only then. A quota that is lowered (a downgrade), newly set,
// or put on a new period (whose counter the processors filled before the
// roll, with no quota to compare with) has the thresholds it is already
// past announced here, as the processors' script announces crossings (a
// raised quota is not: its thresholds are announced as the count crosses
// them): crossed_<pct> on the counter holds the quota each
// fired for, and the line goes to the subscription's outbox (see
// [Crossing]). All keys carry the subscription's hash tag.
//
// A roll also keeps the previous period's start (prev_period_start), so
// the processors count a late event of that period into its counter.
//
// The meters' quotas (the record's meters field) take part the same way: a
// hard meter quota the counter's meter value reaches keeps the block (it
// blocks the whole subscription), and every threshold of a meter quota
// already reached and not yet recorded for that quota is announced, which
// is idempotent (crossed_<pct>:<slug> holds the quota it fired for). A
// unique_count meter's set is named from the counter's name (MeterSetName),
// in the same slot.
//
// KEYS[1] record, KEYS[2] block, KEYS[3] the period counter, KEYS[4] the
// quota outbox. ARGV as putScript's; the record's fields include
// quota_requests, quota_hard, period_start and period_end.
var putSubscriptionScript = rueidis.NewLuaScript(lua + `
local before, beforeStart
if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then
  local b = redis.call('HMGET', KEYS[1], 'quota_requests', 'period_start')
  before, beforeStart = tonumber(b[1]), b[2]
end
` + putBody + `
local rec = redis.call('HMGET', KEYS[1], 'quota_requests', 'quota_hard', 'period_end', 'period_start', 'meters')
local quota, hard, pend = tonumber(rec[1]), rec[2] == '1', rec[3]
local rolled = beforeStart and beforeStart ~= rec[4]
if rolled then redis.call('HSET', KEYS[1], 'prev_period_start', beforeStart) end
local used = tonumber(redis.call('HGET', KEYS[3], 'requests') or '0')
local mq = meter_quotas(rec[5])
reblock(KEYS[2], pend, quota or -1, hard, used, meters_used_up(KEYS[3], mq) or budget_over(KEYS[1], KEYS[3]))
if quota and quota > 0 and used > 0 and (not before or before < 0 or quota < before or rolled) then
  announce(KEYS[3], KEYS[4], rec[4], pend, quota, used, hard, -1)
end
for slug, m in pairs(mq) do
  if m.quota > 0 then
    announce(KEYS[3], KEYS[4], rec[4], pend, m.quota, meter_value(KEYS[3], slug, m.agg), m.hard, -1, slug)
  end
end
return 1
`)

// deleteScript deletes a record when its stored version is at most the
// given one, or unreadable. KEYS[1] record, ARGV[1] version. Returns 1 when
// the record is gone afterwards, 0 when a newer version is stored.
var deleteScript = rueidis.NewLuaScript(`
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return 1 end
if t == 'hash' then
  local cur = redis.call('HGET', KEYS[1], 'version')
  if cur and string.match(cur, '^%d+$') and (cur == '0' or string.sub(cur, 1, 1) ~= '0') then
    local v = ARGV[1]
    if #cur > #v or (#cur == #v and cur > v) then return 0 end
  end
end
redis.call('DEL', KEYS[1])
return 1
`)

// deadKeyRetention is how long a key record outlives its expiry or grace,
// so a caller with a dead key still gets "expired" rather than "unknown"
// for a day.
const deadKeyRetention = 24 * time.Hour

// PutKey writes r unless the stored record has the same or a newer
// version; applied reports whether it was written. A key with an expiry or
// a grace period gets a Redis expiry 24 hours after the later of the two
// (at once, if that has passed), one without loses any Redis expiry.
func (s *Store) PutKey(ctx context.Context, r KeyRecord) (applied bool, err error) {
	if err := r.Validate(); err != nil {
		return false, fmt.Errorf("put key record: %w", err)
	}
	expiry := "0"
	if end := later(r.ExpiresAt, r.GraceUntil); !end.IsZero() {
		expiry = strconv.FormatInt(end.Add(deadKeyRetention).UnixMilli(), 10)
	}
	args := append([]string{strconv.FormatInt(r.Version, 10), expiry}, encodeKey(r)...)
	n, err := putScript.Exec(ctx, s.client, []string{KeyName(r.Hash)}, args).AsInt64()
	if err != nil {
		return false, fmt.Errorf("put key record %s: %w", r.KeyID, err)
	}
	return n == 1, nil
}

// DeleteKey removes the key record with that hash unless the stored one
// has a newer version than version. applied reports whether no record is
// left, so deleting twice applies twice; a stored record that cannot be
// read is removed whatever its version, so reconciliation can clear garbage.
func (s *Store) DeleteKey(ctx context.Context, hash string, version int64) (applied bool, err error) {
	if version < 0 {
		return false, fmt.Errorf("delete key record: %w: version %d", ErrInvalidRecord, version)
	}
	n, err := deleteScript.Exec(ctx, s.client, []string{KeyName(hash)}, []string{strconv.FormatInt(version, 10)}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("delete key record %s: %w", hash, err)
	}
	return n == 1, nil
}

// GetKey reads the key record with that hash: ErrNotFound when there is
// none, an error wrapping ErrCorruptRecord and naming the bad fields when
// it cannot be decoded (and then the zero KeyRecord, which allows nothing).
func (s *Store) GetKey(ctx context.Context, hash string) (KeyRecord, error) {
	fields, err := s.client.Do(ctx, s.client.B().Hgetall().Key(KeyName(hash)).Build()).AsStrMap()
	return keyResult(hash, fields, err)
}

// GetKeyCached is GetKey through rueidis client-side caching: no round trip
// while the record is unchanged, and Redis invalidates the cached copy when
// the record is written or deleted (absent records are cached too). ttl
// bounds how long a copy lives without word from Redis. It is the gateway's
// per-request read.
func (s *Store) GetKeyCached(ctx context.Context, hash string, ttl time.Duration) (KeyRecord, error) {
	fields, err := s.client.DoCache(ctx, s.client.B().Hgetall().Key(KeyName(hash)).Cache(), ttl).AsStrMap()
	return keyResult(hash, fields, err)
}

func keyResult(hash string, fields map[string]string, err error) (KeyRecord, error) {
	return recordResult("key", hash, fields, err, DecodeKey)
}

// recordResult decodes a record read with HGETALL: a failed read and
// ErrNotFound are wrapped with the record's kind and name, a decode error
// names the bad fields itself. The zero record comes with every error.
func recordResult[R any](kind, name string, fields map[string]string, err error, decode func(string, map[string]string) (R, error)) (R, error) {
	var zero R
	if err != nil {
		return zero, fmt.Errorf("get %s record %s: %w", kind, name, err)
	}
	r, err := decode(name, fields)
	switch {
	case errors.Is(err, ErrNotFound):
		return zero, fmt.Errorf("get %s record %s: %w", kind, name, err)
	case err != nil:
		return zero, err
	}
	return r, nil
}

// ScanError is what ScanKeys returns when it met records it could not
// decode: their hashes, in the order met, and the decode errors (each
// wrapping ErrCorruptRecord, so errors.Is works on a ScanError).
type ScanError struct {
	Hashes []string
	Errs   []error
}

func (e *ScanError) Error() string {
	return fmt.Sprintf("scan key records: %d corrupt: %s", len(e.Hashes), strings.Join(e.Hashes, ", "))
}

// Unwrap returns the decode errors.
func (e *ScanError) Unwrap() []error { return e.Errs }

// scanCount is the SCAN COUNT hint: big pages, few round trips.
const scanCount = 1000

// ScanKeys calls fn once for every key record in Redis (SCAN's guarantees:
// a record present for the whole scan is seen, possibly more than once).
// A record it cannot decode does not stop the scan: fn gets what could be
// decoded (Hash always set, Status empty) and the hash goes into a
// *ScanError returned at the end, so reconciliation can still remove the
// garbage. An error from fn stops the scan and is returned as is.
func (s *Store) ScanKeys(ctx context.Context, fn func(KeyRecord) error) error {
	nodes, err := Primaries(ctx, s.client)
	if err != nil {
		return fmt.Errorf("scan key records: %w", err)
	}
	var bad ScanError
	for _, node := range nodes {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(keyPrefix+"*").Count(scanCount).Build()).AsScanEntry()
			if err != nil {
				return fmt.Errorf("scan key records: %w", err)
			}
			if err := s.visit(ctx, e.Elements, fn, &bad); err != nil {
				return err
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	if len(bad.Hashes) > 0 {
		return &bad
	}
	return nil
}

// visit reads one page of key records in one round trip and hands them to fn.
func (s *Store) visit(ctx context.Context, names []string, fn func(KeyRecord) error, bad *ScanError) error {
	if len(names) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, len(names))
	for i, name := range names {
		cmds[i] = s.client.B().Hgetall().Key(name).Build()
	}
	for i, res := range s.client.DoMulti(ctx, cmds...) {
		hash := strings.TrimPrefix(names[i], keyPrefix)
		fields, err := res.AsStrMap()
		var r KeyRecord
		switch {
		case err != nil && !isWrongType(err):
			return fmt.Errorf("scan key records: read %s: %w", hash, err)
		case err != nil:
			r = KeyRecord{Hash: hash}
			err = fmt.Errorf("decode key record %s: %w: %w", hash, ErrCorruptRecord, err)
		default:
			r, err = DecodeKey(hash, fields)
			if errors.Is(err, ErrNotFound) {
				continue // deleted since SCAN saw it
			}
		}
		if err != nil {
			bad.Hashes = append(bad.Hashes, hash)
			bad.Errs = append(bad.Errs, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func isWrongType(err error) bool {
	var re *rueidis.RedisError
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "WRONGTYPE")
}

// PutSubscription writes r unless the stored record has the same or a
// newer version; applied reports whether it was written. Fields it does
// not own on that key are left alone, and so is any Redis expiry. A write
// recomputes the quota block from the period's counter in the same step
// (see putSubscriptionScript): a plan change, a credit or a new period
// takes effect at the gateway with the record.
func (s *Store) PutSubscription(ctx context.Context, r SubscriptionRecord) (applied bool, err error) {
	if err := r.Validate(); err != nil {
		return false, fmt.Errorf("put subscription record: %w", err)
	}
	args := append([]string{strconv.FormatInt(r.Version, 10), ""}, encodeSubscription(r)...)
	keys := []string{SubscriptionName(r.ID), BlockName(r.ID), PeriodCounterName(r.ID, r.PeriodStart), QuotaOutboxName(r.ID)}
	n, err := putSubscriptionScript.Exec(ctx, s.client, keys, args).AsInt64()
	if err != nil {
		return false, fmt.Errorf("put subscription record %s: %w", r.ID, err)
	}
	return n == 1, nil
}

// GetSubscription reads the subscription record with that id, with the
// errors of GetKey.
func (s *Store) GetSubscription(ctx context.Context, id string) (SubscriptionRecord, error) {
	fields, err := s.client.Do(ctx, s.client.B().Hgetall().Key(SubscriptionName(id)).Build()).AsStrMap()
	return subscriptionResult(id, fields, err)
}

// GetSubscriptionCached is GetSubscription through client-side caching,
// as GetKeyCached: the gateway's per-request read.
func (s *Store) GetSubscriptionCached(ctx context.Context, id string, ttl time.Duration) (SubscriptionRecord, error) {
	fields, err := s.client.DoCache(ctx, s.client.B().Hgetall().Key(SubscriptionName(id)).Cache(), ttl).AsStrMap()
	return subscriptionResult(id, fields, err)
}

func subscriptionResult(id string, fields map[string]string, err error) (SubscriptionRecord, error) {
	return recordResult("subscription", id, fields, err, DecodeSubscription)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
