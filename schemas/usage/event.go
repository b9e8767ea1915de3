// Package usage defines the usage event, Veil's unit of metering: a
// CloudEvents 1.0 event in structured JSON mode. Decoding follows the JSON
// Schema in schemas/usage-event.schema.json exactly (a test holds the two
// together); the time window, which depends on the receiver's clock, is
// checked separately by CheckTime.
//
// Files: event.go (the event, its types and limits), decode.go (Decode and
// the schema's checks), encode.go (AppendEvent, the one writer of the
// event's JSON), errors.go (the decoder's errors and their reasons).
package usage

import (
	"errors"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
)

// Event types Veil knows.
const (
	// TypeAPIRequest is a call through the Veil gateway.
	TypeAPIRequest = "veil.api.request"
	// TypeUsageRecord is usage reported by another producer through ingest.
	TypeUsageRecord = "veil.usage.record"
)

// AnonymousSubject is the subject of the gateway's events of requests it
// refused without a usable key: no subscription to bill. Only a
// veil.api.request event with a refusal may carry it.
const AnonymousSubject = "anonymous"

// SpecVersion is the only CloudEvents version accepted.
const SpecVersion = "1.0"

// Time-window defaults.
const (
	// DefaultMaxFuture is how far ahead of the receiver's clock an event may be.
	DefaultMaxFuture = 5 * time.Minute
	// DefaultLateWindow is how old an event may be and still be accepted.
	DefaultLateWindow = 35 * 24 * time.Hour
)

// The units cap. One event carries at most MaxUnits units; the Redis
// counters hold micro-units (units × 10^6) in a signed 64-bit integer, whose
// largest value is 9,223,372,036,854,775,807, so a counter takes 9,223
// events at the cap (9,223 × 10^15 micro) before it could overflow, and
// 9.2 × 10^12 units in all. Every addition to a counter is checked against
// MaxCounterMicro (CheckedAdd here, the same rule in the processors' Lua):
// what would pass it is refused, never wrapped. The JSON Schema's maximum
// is the same number (a test holds the two together).
const (
	// MaxUnits is the most units one event may carry, inclusive: 10^9.
	MaxUnits = 1_000_000_000
	// MaxUnitsMicro is MaxUnits in micro-units: 10^15.
	MaxUnitsMicro int64 = MaxUnits * 1_000_000
	// MaxCounterMicro is the most a counter of micro-units may hold
	// (math.MaxInt64).
	MaxCounterMicro int64 = 1<<63 - 1
)

// ErrCounterOverflow is returned by CheckedAdd when a sum would pass
// MaxCounterMicro.
var ErrCounterOverflow = errors.New("counter would overflow")

// CheckedAdd returns a+b for non-negative a and b, or ErrCounterOverflow
// when the sum would pass MaxCounterMicro. It is the one rule every Go sum of
// micro-units follows before it is written anywhere.
func CheckedAdd(a, b int64) (int64, error) {
	if a < 0 || b < 0 || a > MaxCounterMicro-b {
		return 0, fmt.Errorf("add %d and %d micro-units: %w", a, b, ErrCounterOverflow)
	}
	return a + b, nil
}

// Limits of the stored columns, shared with the JSON Schema.
var (
	maxUnits   = decimal.NewFromInt(MaxUnits) // inclusive
	unitsScale = int32(6)
)

const maxSafeInteger = 9007199254740991 // 2^53-1, the largest integer every JSON reader keeps exact

// Event is one decoded, structurally valid usage event.
type Event struct {
	ID      string    `json:"id"`
	Source  string    `json:"source"`
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	Subject string    `json:"subject"`
	Data    Data      `json:"data"`
}

// Data is the payload of a usage event.
type Data struct {
	APIID         string          `json:"api_id"`
	KeyID         string          `json:"key_id,omitempty"`
	Method        string          `json:"method,omitempty"`
	Route         string          `json:"route,omitempty"`
	Path          string          `json:"path,omitempty"`
	Status        uint16          `json:"status,omitempty"`
	LatencyMS     uint32          `json:"latency_ms"`
	RequestBytes  uint64          `json:"request_bytes"`
	ResponseBytes uint64          `json:"response_bytes"`
	Units         decimal.Decimal `json:"units"`
	// Refusal is set when the gateway refused the request itself, so it
	// never reached the upstream: a reason such as invalid_key or
	// rate_limited. Empty means admitted. Refused requests are stored like
	// any other but are never billed and never count towards quotas.
	Refusal string `json:"refusal,omitempty"`
}

// MarshalJSON encodes the event with AppendEvent.
func (e Event) MarshalJSON() ([]byte, error) {
	return AppendEvent(make([]byte, 0, 384), &e), nil
}

// CheckTime enforces the time window: the event may be at most maxFuture
// ahead of now and at most lateWindow behind it.
func (e Event) CheckTime(now time.Time, maxFuture, lateWindow time.Duration) error {
	if e.Time.After(now.Add(maxFuture)) {
		return newError(ReasonTimeInFuture, "time", "time %s is more than %s ahead of the receiver's clock", e.Time.Format(time.RFC3339), maxFuture)
	}
	if e.Time.Before(now.Add(-lateWindow)) {
		return newError(ReasonTimeTooOld, "time", "time %s is older than the late-event window of %s", e.Time.Format(time.RFC3339), lateWindow)
	}
	return nil
}
