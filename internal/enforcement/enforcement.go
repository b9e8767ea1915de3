// Package enforcement is the contract between the control plane, which
// writes key and subscription records to Redis, and their readers: the
// gateway's Caddy module and the processors. Redis is the gateway's source
// of truth, so the layout below is a contract; change it only together with
// every reader.
//
// # Layout
//
// One Redis hash per record. Field names are snake_case, times are Unix
// seconds (0 = not set), lists are JSON arrays of strings, booleans are "0"
// or "1". Readers ignore fields they do not know, so fields can be added.
//
//	veil:key:<hash>   key record; <hash> is the hex SHA-256 of the plaintext key (see [Hash])
//	  key_id, subscription_id, api_id   ids
//	  status            active | suspended | revoked | expired
//	  methods           JSON array of allowed methods, [] = all
//	  routes            JSON array of route patterns (see [KeyRecord.Allows]), [] = all
//	  rate_per_second   per-key limit, 0 = the subscription's
//	  rate_per_minute   per-key limit, 0 = the subscription's
//	  expires_at        Unix seconds, 0 = never
//	  grace_until       Unix seconds, 0 = none; a rotated-out key is valid until then
//	  version           writer's monotonic version, a positive decimal
//
//	veil:sub:{<subscription id>}   subscription record; the id is a Redis Cluster hash tag,
//	                               shared with the processors' counters of that subscription
//	  api_id, plan_id   ids
//	  status            trialing | active | past_due | suspended | canceled
//	  period_start      Unix seconds, start of the current billing period (inclusive)
//	  period_end        Unix seconds, end of the current billing period (exclusive)
//	  quota_requests    requests per period, -1 = unlimited
//	  quota_hard        "1": block over quota; "0": overage is billed
//	  rate_per_second   0 = no limit
//	  rate_per_minute   0 = no limit
//	  version           as for keys
//
//	veil:block:{<subscription id>}   a string: Unix seconds until which the gateway refuses the
//	                                 subscription's calls (429, hard quota used up); the key
//	                                 expires then, so a new period needs no write
//
// # Versions
//
// Every write carries the writer's version and lands only when the stored
// version is lower (compare-and-set in one Lua script), so a write that
// arrives late never overwrites a newer one, whatever the order in which
// outbox jobs and reconciliation run. A stored record without a readable
// version counts as older than any write, so writes heal garbage.
//
// Key records of dead keys clean themselves up: a key with an expiry or a
// grace period expires from Redis 24 hours after the later of the two.
//
// # Reading
//
// Decoding is strict: a record with a missing or garbled field is an error
// naming the field ([ErrCorruptRecord]), never a record with zero values, so
// the gateway fails closed.
package enforcement

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors.
var (
	// ErrNotFound: no record under that key.
	ErrNotFound = errors.New("record not found")
	// ErrInvalidRecord: a record given to a Put fails validation; nothing was written.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrCorruptRecord: a stored record has a missing or garbled field.
	ErrCorruptRecord = errors.New("corrupt record")

	// Refusals of [KeyRecord.Allows].
	ErrKeyInactive      = errors.New("key not active")
	ErrKeyExpired       = errors.New("key expired")
	ErrMethodNotAllowed = errors.New("method not allowed for key")
	ErrRouteNotAllowed  = errors.New("route not allowed for key")
)

// Key statuses. Only [KeyActive] keys pass, and [KeyRevoked] ones inside
// their grace period.
const (
	KeyActive    = "active"
	KeySuspended = "suspended"
	KeyRevoked   = "revoked"
	KeyExpired   = "expired"
)

// Subscription statuses.
const (
	SubscriptionTrialing  = "trialing"
	SubscriptionActive    = "active"
	SubscriptionPastDue   = "past_due"
	SubscriptionSuspended = "suspended"
	SubscriptionCanceled  = "canceled"
)

// KeyRecord is what the gateway knows of one API key.
type KeyRecord struct {
	// Hash is the hex SHA-256 of the plaintext key (lower case, 64 digits).
	Hash           string
	KeyID          string
	SubscriptionID string
	APIID          string
	// Status is one of the Key* constants.
	Status string
	// Methods the key may use (upper case, e.g. GET); empty = all.
	Methods []string
	// Routes are the path patterns the key may call; empty = all. See
	// [KeyRecord.Allows] for the syntax.
	Routes []string
	// RatePerSecond and RatePerMinute override the subscription's limits;
	// 0 = the subscription's.
	RatePerSecond int
	RatePerMinute int
	// ExpiresAt is when the key stops working; zero = never.
	ExpiresAt time.Time
	// GraceUntil is, for a key rotated out, when it stops working; zero = no grace.
	GraceUntil time.Time
	// Version is the writer's monotonic version; must be positive.
	Version int64
}

// SubscriptionRecord is what the gateway and the processors know of one
// subscription.
type SubscriptionRecord struct {
	ID     string
	APIID  string
	PlanID string
	// Status is one of the Subscription* constants.
	Status string
	// PeriodStart and PeriodEnd bound the current billing period [start, end).
	PeriodStart time.Time
	PeriodEnd   time.Time
	// QuotaRequests per period; -1 = unlimited.
	QuotaRequests int64
	// QuotaHard blocks requests over quota; otherwise overage is billed.
	QuotaHard bool
	// RatePerSecond and RatePerMinute limit the whole subscription; 0 = none.
	RatePerSecond int
	RatePerMinute int
	// Version is the writer's monotonic version; must be positive.
	Version int64
}

// Hash returns the record hash of a plaintext key: its hex SHA-256.
func Hash(plaintext string) string {
	sum := sha256.Sum256([]byte(plaintext))
	return hex.EncodeToString(sum[:])
}

// KeyName is the Redis key of the key record with that hash.
func KeyName(hash string) string { return keyPrefix + hash }

// SubscriptionName is the Redis key of the subscription record with that
// id. It is the same key the processors read periods from.
func SubscriptionName(id string) string { return "veil:sub:{" + id + "}" }

// BlockName is the Redis key of a subscription's quota block.
func BlockName(id string) string { return "veil:block:{" + id + "}" }

// PeriodCounterName is the Redis hash of a subscription's request counter
// for the period starting at start (kept by the processors): requests,
// units_micro, period_end, crossed_<pct>.
func PeriodCounterName(id string, start time.Time) string {
	return "veil:usage:{" + id + "}:p:" + strconv.FormatInt(start.Unix(), 10)
}

// WatermarkName is the Redis hash of a subscription's per-partition Kafka
// offset watermarks (kept by the processors).
func WatermarkName(id string) string { return "veil:wm:{" + id + "}" }

// QuotaOutboxName is the Redis list of a subscription's quota threshold
// crossings waiting to be produced to veil.quota.events (see
// internal/enforcement).
func QuotaOutboxName(id string) string { return "veil:quota:outbox:{" + id + "}" }

// QuotaOutboxPattern matches every QuotaOutboxName, for a SCAN.
const QuotaOutboxPattern = "veil:quota:outbox:{*}"

const keyPrefix = "veil:key:"

// Validate reports whether r may be written.
func (r KeyRecord) Validate() error {
	if err := validHash(r.Hash); err != nil {
		return fmt.Errorf("%w: hash: %w", ErrInvalidRecord, err)
	}
	for _, f := range []struct{ name, v string }{{"key_id", r.KeyID}, {"subscription_id", r.SubscriptionID}, {"api_id", r.APIID}} {
		if f.v == "" {
			return fmt.Errorf("%w: %s: empty", ErrInvalidRecord, f.name)
		}
	}
	if !knownKeyStatus(r.Status) {
		return fmt.Errorf("%w: status: unknown %q", ErrInvalidRecord, r.Status)
	}
	for _, m := range r.Methods {
		if err := validMethod(m); err != nil {
			return fmt.Errorf("%w: methods: %w", ErrInvalidRecord, err)
		}
	}
	for _, p := range r.Routes {
		if err := ValidRoute(p); err != nil {
			return fmt.Errorf("%w: routes: %w", ErrInvalidRecord, err)
		}
	}
	if r.RatePerSecond < 0 || r.RatePerMinute < 0 {
		return fmt.Errorf("%w: rate limits: negative", ErrInvalidRecord)
	}
	// 0 means "not set" in Redis, so a set time must come after it.
	if !r.ExpiresAt.IsZero() && r.ExpiresAt.Unix() <= 0 || !r.GraceUntil.IsZero() && r.GraceUntil.Unix() <= 0 {
		return fmt.Errorf("%w: expires_at, grace_until: not after 1970", ErrInvalidRecord)
	}
	if r.Version <= 0 {
		return fmt.Errorf("%w: version: %d, want positive", ErrInvalidRecord, r.Version)
	}
	return nil
}

// Validate reports whether r may be written.
func (r SubscriptionRecord) Validate() error {
	if r.ID == "" || strings.ContainsAny(r.ID, "{}") {
		return fmt.Errorf("%w: id: %q: empty or with braces", ErrInvalidRecord, r.ID)
	}
	if r.APIID == "" {
		return fmt.Errorf("%w: api_id: empty", ErrInvalidRecord)
	}
	if r.PlanID == "" {
		return fmt.Errorf("%w: plan_id: empty", ErrInvalidRecord)
	}
	if !knownSubscriptionStatus(r.Status) {
		return fmt.Errorf("%w: status: unknown %q", ErrInvalidRecord, r.Status)
	}
	// The processors ignore a period that does not end after it starts and
	// count by calendar month instead: refuse to write one.
	if r.PeriodStart.Unix() <= 0 || r.PeriodEnd.Unix() <= r.PeriodStart.Unix() {
		return fmt.Errorf("%w: period: [%s, %s) is empty or unset", ErrInvalidRecord, r.PeriodStart, r.PeriodEnd)
	}
	if r.QuotaRequests < -1 {
		return fmt.Errorf("%w: quota_requests: %d, want -1 or more", ErrInvalidRecord, r.QuotaRequests)
	}
	if r.RatePerSecond < 0 || r.RatePerMinute < 0 {
		return fmt.Errorf("%w: rate limits: negative", ErrInvalidRecord)
	}
	if r.Version <= 0 {
		return fmt.Errorf("%w: version: %d, want positive", ErrInvalidRecord, r.Version)
	}
	return nil
}

func knownKeyStatus(s string) bool {
	switch s {
	case KeyActive, KeySuspended, KeyRevoked, KeyExpired:
		return true
	}
	return false
}

func knownSubscriptionStatus(s string) bool {
	switch s {
	case SubscriptionTrialing, SubscriptionActive, SubscriptionPastDue, SubscriptionSuspended, SubscriptionCanceled:
		return true
	}
	return false
}

func validHash(h string) error {
	if len(h) != sha256.Size*2 {
		return fmt.Errorf("%d characters, want %d", len(h), sha256.Size*2)
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return errors.New("want lower-case hex digits")
		}
	}
	return nil
}

// validMethod accepts an HTTP method token in upper case, the only form
// compared against (methods are case-sensitive).
func validMethod(m string) error {
	if m == "" {
		return errors.New("empty method")
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("method %q: want upper case letters, digits, - or _", m)
		}
	}
	return nil
}

// unixOrZero is t in Unix seconds, 0 for the zero time.
func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// timeOrZero undoes unixOrZero.
func timeOrZero(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}
