package metering

// Meters: what a plan charges for. A meter belongs to an API and turns the
// billable events of a subscription into one quantity per window, by an
// aggregation over one event field. The processors keep each meter's value
// per billing period in Redis (see internal/enforcement), ClickHouse can
// compute it for any window (MeterTotals), and the two must agree.

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/schemas/usage"
)

// Aggregation is how a meter folds events into a quantity.
type Aggregation string

// The aggregations, by the names the subscription records use.
const (
	// AggCount counts the billable events the filter selects; it reads no field.
	AggCount Aggregation = enforcement.MeterCount
	// AggSum adds the field's values.
	AggSum Aggregation = enforcement.MeterSum
	// AggMax is the largest value of the field (0 when nothing matched).
	AggMax Aggregation = enforcement.MeterMax
	// AggUniqueCount counts the distinct values of the field (key_id only).
	AggUniqueCount Aggregation = enforcement.MeterUniqueCount
)

// The event fields a meter can aggregate.
const (
	FieldUnits         = "units"
	FieldRequestBytes  = "request_bytes"
	FieldResponseBytes = "response_bytes"
	FieldLatencyMS     = "latency_ms"
	FieldKeyID         = "key_id"
)

// ErrInvalidMeter wraps every reason a meter definition is refused.
var ErrInvalidMeter = errors.New("invalid meter")

// The definition rule (the slug's syntax, the status classes, which
// aggregation takes which field, the filter's bounds) is
// internal/enforcement's, which reads the subscription records and
// cannot import this package; Validate applies it and adds what only a
// definition has (the name, the methods' list).

// MeterSlugRe is the syntax of a meter's slug: it names the meter in plan
// files, quotes, Redis counter fields and metric labels.
var MeterSlugRe = enforcement.MeterSlugRe

// StatusClasses a filter may name. 5xx is not among them: a call the
// upstream failed is never billable.
var StatusClasses = enforcement.MeterStatusClasses

// Methods a filter may name.
var Methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// MaxFilterEntries bounds each list of a filter; a meter's routes are also
// at most enforcement.MaxMeterRoutesBytes together.
const MaxFilterEntries = enforcement.MaxMeterFilterEntries

// Filter selects among billable events. An empty list selects all; the
// lists combine with AND, entries of one list with OR.
type Filter struct {
	// Methods compare exactly (upper case).
	Methods []string `json:"methods"`
	// Routes are path patterns in the syntax of the gateway's key routes
	// (enforcement.KeyRecord.Allows), matched against the event's path.
	Routes []string `json:"routes"`
	// StatusClasses are "1xx" … "4xx", matched against the event's status.
	StatusClasses []string `json:"status_classes"`
}

// Meter is one meter of an API.
type Meter struct {
	Slug        string      `json:"slug"`
	Name        string      `json:"name"`
	Aggregation Aggregation `json:"aggregation"`
	// Field is the event field aggregated; empty for count.
	Field  string `json:"field"`
	Filter Filter `json:"filter"`
}

// MeterOfSpec is the meter a subscription record names (the processors
// count by it, the drift check compares it); a record carries no name.
func MeterOfSpec(s enforcement.MeterSpec) Meter {
	return Meter{Slug: s.Slug, Aggregation: Aggregation(s.Aggregation), Field: s.Field,
		Filter: Filter{Methods: s.Filter.Methods, Routes: s.Filter.Routes, StatusClasses: s.Filter.StatusClasses}}
}

// Validate reports whether m can be metered: every reason wraps
// ErrInvalidMeter and names the field of the definition at fault.
func (m Meter) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidMeter, field, fmt.Sprintf(format, a...))
	}
	if !MeterSlugRe.MatchString(m.Slug) {
		return bad("slug", "must match %s", MeterSlugRe)
	}
	if n := len([]rune(m.Name)); n > 200 {
		return bad("name", "must be at most 200 characters")
	}
	if at, err := enforcement.CheckMeterField(string(m.Aggregation), m.Field); err != nil {
		return bad(at, "%v", err)
	}
	return m.Filter.validate(bad)
}

func (f Filter) validate(bad func(field, format string, a ...any) error) error {
	lists := []struct {
		field string
		list  []string
		check func(string) error
	}{
		{"filter.methods", f.Methods, func(s string) error {
			if !slices.Contains(Methods, s) {
				return fmt.Errorf("%q is not one of %s", s, strings.Join(Methods, ", "))
			}
			return nil
		}},
		{"filter.routes", f.Routes, func(string) error { return nil }},
		{"filter.status_classes", f.StatusClasses, func(s string) error {
			if !slices.Contains(StatusClasses, s) {
				return fmt.Errorf("%q is not one of %s (5xx is never billable)", s, strings.Join(StatusClasses, ", "))
			}
			return nil
		}},
	}
	if i, err := enforcement.CheckMeterRoutes(f.Routes); err != nil {
		if i < 0 {
			return bad("filter.routes", "%v", err)
		}
		return bad(fmt.Sprintf("filter.routes[%d]", i), "%v", err)
	}
	for _, l := range lists {
		if len(l.list) > MaxFilterEntries {
			return bad(l.field, "at most %d entries", MaxFilterEntries)
		}
		for i, s := range l.list {
			if err := l.check(s); err != nil {
				return bad(fmt.Sprintf("%s[%d]", l.field, i), "%v", err)
			}
			if slices.Index(l.list, s) != i {
				return bad(fmt.Sprintf("%s[%d]", l.field, i), "%q is listed twice", s)
			}
		}
	}
	return nil
}

// Billable reports whether an event can be billed at all: the call reached
// the upstream (the gateway did not refuse it) and got a status below 500.
// An event without a status (reported by a provider, not the gateway)
// counts as reaching the upstream.
func Billable(e *usage.Event) bool {
	return e.Data.Refusal == "" && e.Data.Status < 500
}

// Matches reports whether the meter counts e: e is billable and passes the
// filter. m must be valid (Validate, or decoded from a subscription
// record, which checks the same): its route patterns are not checked
// again on every event.
func (m Meter) Matches(e *usage.Event) bool {
	if !Billable(e) {
		return false
	}
	f := &m.Filter
	if len(f.Methods) > 0 && !slices.Contains(f.Methods, e.Data.Method) {
		return false
	}
	if len(f.StatusClasses) > 0 {
		if e.Data.Status < 100 {
			return false
		}
		// 5xx is not billable, so the class is one of StatusClasses.
		if !slices.Contains(f.StatusClasses, StatusClasses[e.Data.Status/100-1]) {
			return false
		}
	}
	return len(f.Routes) == 0 || enforcement.MatchRoutes(f.Routes, e.Data.Path)
}

// Scale is the number of decimals the meter's counter keeps: 6 for a sum
// or max of units (their precision in events and in ClickHouse), 0 for
// everything else, which is a whole number.
func (m Meter) Scale() int32 {
	if m.Field == FieldUnits {
		return 6
	}
	return 0
}

// Contribution is what e adds to the meter's counter, as an integer at the
// meter's Scale: 1 for count, the field's value for sum and max. ok is
// false when the meter does not count e, or for unique_count, whose
// counter is a set of KeyValue instead. A units value with more than 6
// decimals cannot occur: ingest refuses it.
func (m Meter) Contribution(e *usage.Event) (v int64, ok bool) {
	if m.Aggregation == AggUniqueCount || !m.Matches(e) {
		return 0, false
	}
	switch m.Field {
	case "":
		return 1, true
	case FieldUnits:
		return e.Data.Units.Shift(6).IntPart(), true
	case FieldRequestBytes:
		return clampInt64(e.Data.RequestBytes), true
	case FieldResponseBytes:
		return clampInt64(e.Data.ResponseBytes), true
	case FieldLatencyMS:
		return int64(e.Data.LatencyMS), true
	}
	return 0, false
}

// KeyValue is the value a unique_count meter counts for e ("" when the
// meter does not count e or e has no key).
func (m Meter) KeyValue(e *usage.Event) string {
	if m.Aggregation != AggUniqueCount || !m.Matches(e) {
		return ""
	}
	return e.Data.KeyID
}

// Quantity turns a counter at the meter's Scale into the metered quantity.
func (m Meter) Quantity(counter int64) decimal.Decimal {
	return decimal.New(counter, -m.Scale())
}

// Counter turns a quantity into the meter's counter, an integer at its
// Scale, the inverse of Quantity: decimals past the scale are rounded down
// (a quota so converted never allows more than it says), and a negative
// quantity or one past an int64 is refused.
func (m Meter) Counter(q decimal.Decimal) (int64, error) {
	scaled := q.Shift(m.Scale()).Floor()
	if scaled.IsNegative() || scaled.GreaterThan(decimal.NewFromInt(math.MaxInt64)) {
		return 0, fmt.Errorf("convert quantity %s of meter %s: outside a counter's range", q, m.Slug)
	}
	return scaled.IntPart(), nil
}

// clampInt64 keeps a byte count from wrapping negative; a value that large
// cannot fit a counter anyway and is dead-lettered as an overflow.
func clampInt64(u uint64) int64 {
	if u > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(u)
}
