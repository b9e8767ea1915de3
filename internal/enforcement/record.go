package enforcement

import (
	"crypto/sha256"
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
	// PeriodAnchor is the subscription's billing anchor, which the
	// processors step neighbouring periods from (see PeriodEndAnchored);
	// zero = none.
	PeriodAnchor time.Time
	// QuotaRequests per period; -1 = unlimited.
	QuotaRequests int64
	// QuotaHard blocks requests over quota; otherwise overage is billed.
	QuotaHard bool
	// RatePerSecond and RatePerMinute limit the whole subscription; 0 = none.
	RatePerSecond int
	RatePerMinute int
	// Meters are the meters the plan version prices, each counted per
	// period and held against its own quota; none = nothing but requests.
	Meters []MeterSpec
	// UnpaidInvoiceID and UnpaidInvoiceNumber name the invoice whose missed
	// payment made the subscription past_due or suspended: the gateway
	// names it to the caller. Empty = none; a suspension without one is an
	// admin's.
	UnpaidInvoiceID     string
	UnpaidInvoiceNumber string
	// SuspendAt is when a past_due subscription is suspended unless its
	// invoice is paid first; zero = none.
	SuspendAt time.Time
	// Budget is the subscription's hard budget: once the period's cost
	// reaches it, the subscription is blocked like a used-up hard quota
	// (see [Store.EnforceBudget]); nil = none.
	Budget *Budget
	// Version is the writer's monotonic version; must be positive.
	Version int64

	// budgetKey is, in a decoded record, [SubscriptionRecord.BudgetKey]
	// of the budget field as stored.
	budgetKey string
}

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
	if !r.PeriodAnchor.IsZero() && r.PeriodAnchor.Unix() <= 0 {
		return fmt.Errorf("%w: period_anchor: %s, not after 1970", ErrInvalidRecord, r.PeriodAnchor)
	}
	if r.QuotaRequests < -1 {
		return fmt.Errorf("%w: quota_requests: %d, want -1 or more", ErrInvalidRecord, r.QuotaRequests)
	}
	if r.RatePerSecond < 0 || r.RatePerMinute < 0 {
		return fmt.Errorf("%w: rate limits: negative", ErrInvalidRecord)
	}
	if err := validMeters(r.Meters); err != nil {
		return fmt.Errorf("%w: meters: %w", ErrInvalidRecord, err)
	}
	if err := validUnpaid(r.UnpaidInvoiceID, r.UnpaidInvoiceNumber); err != nil {
		return fmt.Errorf("%w: unpaid invoice: %w", ErrInvalidRecord, err)
	}
	if !r.SuspendAt.IsZero() && r.SuspendAt.Unix() <= 0 {
		return fmt.Errorf("%w: suspend_at: %s, not after 1970", ErrInvalidRecord, r.SuspendAt)
	}
	if err := validBudget(r.Budget); err != nil {
		return fmt.Errorf("%w: budget: %w", ErrInvalidRecord, err)
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

// validUnpaid accepts no invoice, or an id and a number both of at most
// 64 letters, digits and . _ -: the gateway puts them in a header and a
// link unescaped.
func validUnpaid(id, number string) error {
	if id == "" && number == "" {
		return nil
	}
	for _, f := range []struct{ name, v string }{{"id", id}, {"number", number}} {
		if f.v == "" || len(f.v) > 64 {
			return fmt.Errorf("%s: %q, want 1 to 64 characters", f.name, f.v)
		}
		for i := 0; i < len(f.v); i++ {
			if c := f.v[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("%s: %q, want letters, digits, '.', '_' or '-'", f.name, f.v)
			}
		}
	}
	return nil
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

// parseAnchor decodes a record's period_anchor, the one rule of
// DecodeSubscription and RecordedPeriods: Unix seconds in [0, 2^62], 0
// meaning none.
func parseAnchor(v string) (time.Time, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > 1<<62 {
		return time.Time{}, fmt.Errorf("%q, want an integer in [0, %d]", v, int64(1<<62))
	}
	return timeOrZero(n), nil
}
