package usage

import "fmt"

// Reason is a stable, machine-readable code for why an event was refused.
// Reasons appear in ingest's problem details, in the dead-letter headers and
// in the usage_rejects table, so they never change meaning.
type Reason string

// Reasons an event is refused.
const (
	ReasonMalformedJSON          Reason = "malformed_json"
	ReasonMissingField           Reason = "missing_field"
	ReasonInvalidField           Reason = "invalid_field"
	ReasonUnknownField           Reason = "unknown_field"
	ReasonUnsupportedSpecVersion Reason = "unsupported_specversion"
	ReasonUnknownType            Reason = "unknown_type"
	ReasonInvalidTime            Reason = "invalid_time"
	ReasonInvalidUnits           Reason = "invalid_units"
	ReasonInvalidRefusal         Reason = "invalid_refusal"
	ReasonInvalidSubject         Reason = "invalid_subject"
	ReasonTimeInFuture           Reason = "time_in_future"
	ReasonTimeTooOld             Reason = "time_too_old"
)

// Error says why an event is invalid.
type Error struct {
	Reason Reason // stable code
	Field  string // the attribute at fault, e.g. "data.units"; empty for the whole event
	ID     string // the event's id when it could be read, to name the event in answers
	Detail string // human-readable explanation
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid usage event: %s: %s", e.Reason, e.Detail)
}

func newError(r Reason, field, format string, args ...any) *Error {
	return &Error{Reason: r, Field: field, Detail: fmt.Sprintf(format, args...)}
}
