package enforcement

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
)

// The meters a subscription record carries: what its plan version prices,
// as the processors count it and the counting script holds it against a
// quota. metering.Meter is the definition with its behaviour (which event
// a meter selects, what it adds); it imports this package, so the record
// carries a plain copy of its fields, and the processors convert.

// Meter aggregations, as metering names them.
const (
	MeterCount       = "count"
	MeterSum         = "sum"
	MeterMax         = "max"
	MeterUniqueCount = "unique_count"
)

// MaxMeters bounds the meters of one subscription record, so that one
// record cannot make every counting call of its subscription slow: a plan
// version charges at most 50 meters (pricing.MaxCharges).
const MaxMeters = 50

// Bounds of a meter's filter, which the processors test every event of
// the subscription against: at most MaxMeterFilterEntries entries in each
// list, a route pattern at most MaxMeterRouteBytes long and a meter's
// routes at most MaxMeterRoutesBytes together, so that a record's meters
// match an event in a bounded time (BenchmarkMatchWorstCase in the
// processors).
const (
	MaxMeterFilterEntries = 32
	MaxMeterRouteBytes    = 512
	MaxMeterRoutesBytes   = 4096
)

// MaxAPIMeterRoutesBytes bounds the route patterns of all the meters of
// one API together, and so of one subscription record, whose meters are
// those its plan charges: MaxMeters meters of MaxMeterRoutesBytes each
// cost an event milliseconds in the processors, every event of the
// subscription. Checked when a meter is created or changed
// (pricing.InsertMeter, pricing.ChangeMeter) and when a record is read.
const MaxAPIMeterRoutesBytes = 8192

// MaxMeterSetMembers bounds a unique_count meter's set per period: anyone
// with an ingest token can send events with new key_id values, and each
// would otherwise stay in Redis for the period. Past it the set, and so
// the meter, stops growing: a key id not yet in it is not added, and
// ClickHouse's figure (metering.MeterTotals) is held at the same bound,
// so both agree; the drift check reports the sets at the bound
// (veil_controlplane_usage_meter_sets_full).
const MaxMeterSetMembers = 100_000

// MaxMeterQuota is the largest meter quota a record holds, 2^53-1: the
// counting script compares a quota with the meter's value as Lua numbers
// (doubles), exact up to there and no further.
const MaxMeterQuota = 1<<53 - 1

// The meter definition rule is written here, where the records are read,
// and metering.Meter.Validate applies it too (metering imports this
// package, not the reverse).

// MeterSlugRe is the syntax of a meter's slug: it names the meter in plan
// files, quotes, a counter field (m:<slug>), a set (…:u:<slug>), an
// outbox line and metric labels, so it never holds a separator of theirs.
var MeterSlugRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// MeterStatusClasses are the status classes a meter's filter may name. 5xx
// is not among them: a call the upstream failed is never billable.
var MeterStatusClasses = []string{"1xx", "2xx", "3xx", "4xx"}

// CheckMeterField reports whether a meter of aggregation agg may
// aggregate field: count reads none, sum and max a number of the event,
// unique_count key_id. at names what is wrong, "aggregation" or "field".
func CheckMeterField(agg, field string) (at string, err error) {
	switch agg {
	case MeterCount:
		if field != "" {
			return "field", errors.New("count reads no field; leave it empty")
		}
	case MeterSum, MeterMax:
		switch field {
		case "units", "request_bytes", "response_bytes", "latency_ms":
		default:
			return "field", fmt.Errorf("%s aggregates units, request_bytes, response_bytes or latency_ms", agg)
		}
	case MeterUniqueCount:
		if field != "key_id" {
			return "field", errors.New("unique_count counts distinct key_id values")
		}
	default:
		return "aggregation", errors.New("must be count, sum, max or unique_count")
	}
	return "", nil
}

// CheckMeterRoutes reports whether routes can be a meter's routes filter:
// at most MaxMeterFilterEntries, each valid (ValidRoute) and at most
// MaxMeterRouteBytes, all together at most MaxMeterRoutesBytes. i is the
// index of the pattern at fault, -1 for the list as a whole.
func CheckMeterRoutes(routes []string) (i int, err error) {
	if len(routes) > MaxMeterFilterEntries {
		return -1, fmt.Errorf("at most %d entries", MaxMeterFilterEntries)
	}
	total := 0
	for i, r := range routes {
		if len(r) > MaxMeterRouteBytes {
			return i, fmt.Errorf("a route pattern is at most %d bytes", MaxMeterRouteBytes)
		}
		if err := ValidRoute(r); err != nil {
			return i, err
		}
		if total += len(r); total > MaxMeterRoutesBytes {
			return -1, fmt.Errorf("the route patterns are at most %d bytes together", MaxMeterRoutesBytes)
		}
	}
	return -1, nil
}

// MeterFilter is metering.Filter: empty lists select all.
type MeterFilter struct {
	Methods       []string `json:"methods"`
	Routes        []string `json:"routes"`
	StatusClasses []string `json:"status_classes"`
}

// MeterSpec is one meter of a subscription record.
type MeterSpec struct {
	Slug string
	// Aggregation is one of the Meter* constants.
	Aggregation string
	// Field is the event field aggregated; "" for count.
	Field  string
	Filter MeterFilter
	// Quota is the meter's quota per period, an integer at the meter's
	// scale (metering.Meter.Scale: micro-units for units, else whole
	// numbers); nil = unlimited.
	Quota *int64
	// QuotaHard blocks the whole subscription (not only the calls the
	// meter selects) once the quota is used up; otherwise overage is
	// billed.
	QuotaHard bool
}

// meterWire is the JSON of a MeterSpec in the record's meters field; the
// quota is a string, since Lua and JavaScript readers lose integers past
// 2^53.
type meterWire struct {
	Slug        string      `json:"slug"`
	Aggregation string      `json:"aggregation"`
	Field       string      `json:"field"`
	Filter      MeterFilter `json:"filter"`
	Quota       *string     `json:"quota,omitempty"`
	QuotaHard   bool        `json:"quota_hard"`
}

// validate reports whether m is a meter the processors can count.
func (m MeterSpec) validate() error {
	if !MeterSlugRe.MatchString(m.Slug) {
		return fmt.Errorf("slug %q: want %s", m.Slug, MeterSlugRe)
	}
	if at, err := CheckMeterField(m.Aggregation, m.Field); err != nil {
		return fmt.Errorf("meter %s: %s %q: %w", m.Slug, at, m.Field, err)
	}
	f := m.Filter
	if len(f.Methods) > MaxMeterFilterEntries || len(f.StatusClasses) > MaxMeterFilterEntries {
		return fmt.Errorf("meter %s: a filter list holds at most %d entries", m.Slug, MaxMeterFilterEntries)
	}
	for _, s := range f.Methods {
		if err := validMethod(s); err != nil {
			return fmt.Errorf("meter %s: filter methods: %w", m.Slug, err)
		}
	}
	if _, err := CheckMeterRoutes(f.Routes); err != nil {
		return fmt.Errorf("meter %s: filter routes: %w", m.Slug, err)
	}
	for _, s := range f.StatusClasses {
		if !slices.Contains(MeterStatusClasses, s) {
			return fmt.Errorf("meter %s: filter status class %q: want 1xx, 2xx, 3xx or 4xx", m.Slug, s)
		}
	}
	if m.Quota != nil && (*m.Quota < 0 || *m.Quota > MaxMeterQuota) {
		return fmt.Errorf("meter %s: quota %d, want 0 to %d", m.Slug, *m.Quota, int64(MaxMeterQuota))
	}
	return nil
}

// validMeters checks a record's meters: each valid, slugs unique, at most
// MaxMeters, their routes at most MaxAPIMeterRoutesBytes together.
func validMeters(ms []MeterSpec) error {
	if len(ms) > MaxMeters {
		return fmt.Errorf("%d meters, at most %d", len(ms), MaxMeters)
	}
	routes := 0
	for i, m := range ms {
		if err := m.validate(); err != nil {
			return err
		}
		if slices.IndexFunc(ms[:i], func(o MeterSpec) bool { return o.Slug == m.Slug }) >= 0 {
			return fmt.Errorf("meter %s listed twice", m.Slug)
		}
		for _, r := range m.Filter.Routes {
			routes += len(r)
		}
	}
	if routes > MaxAPIMeterRoutesBytes {
		return fmt.Errorf("the meters' filter routes are %d bytes together, at most %d", routes, MaxAPIMeterRoutesBytes)
	}
	return nil
}

// encodeMeters is the meters field of a record: a JSON array, [] for none.
func encodeMeters(ms []MeterSpec) string {
	w := make([]meterWire, len(ms))
	for i, m := range ms {
		w[i] = meterWire{Slug: m.Slug, Aggregation: m.Aggregation, Field: m.Field, Filter: m.Filter, QuotaHard: m.QuotaHard}
		for _, l := range []*[]string{&w[i].Filter.Methods, &w[i].Filter.Routes, &w[i].Filter.StatusClasses} {
			if *l == nil {
				*l = []string{} // [] rather than null: one spelling of "all"
			}
		}
		if m.Quota != nil {
			q := strconv.FormatInt(*m.Quota, 10)
			w[i].Quota = &q
		}
	}
	b, _ := json.Marshal(w) // strings, bools and lists always marshal
	return string(b)
}

// decodeMeters reads a record's meters field strictly: a JSON array of
// objects with no unknown member, each a valid meter, the quota a
// canonical non-negative integer.
func decodeMeters(v string) ([]MeterSpec, error) {
	if !bytes.HasPrefix([]byte(v), []byte("[")) {
		return nil, fmt.Errorf("%q, want a JSON array", v)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	dec.DisallowUnknownFields()
	var w []meterWire
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("want a JSON array of meters: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the array")
	}
	if len(w) == 0 {
		return nil, nil
	}
	out := make([]MeterSpec, len(w))
	for i, m := range w {
		out[i] = MeterSpec{Slug: m.Slug, Aggregation: m.Aggregation, Field: m.Field, Filter: m.Filter, QuotaHard: m.QuotaHard}
		for _, l := range []*[]string{&out[i].Filter.Methods, &out[i].Filter.Routes, &out[i].Filter.StatusClasses} {
			if len(*l) == 0 {
				*l = nil
			}
		}
		if m.Quota != nil {
			q, err := strconv.ParseInt(*m.Quota, 10, 64)
			if err != nil || q < 0 || strconv.FormatInt(q, 10) != *m.Quota {
				return nil, fmt.Errorf("meter %s: quota %q, want a non-negative integer", m.Slug, *m.Quota)
			}
			out[i].Quota = &q
		}
	}
	if err := validMeters(out); err != nil {
		return nil, err
	}
	return out, nil
}

// DecodeMeters reads a subscription record's meters field as
// [DecodeSubscription] does: an error for anything but a valid array.
func DecodeMeters(raw string) ([]MeterSpec, error) {
	ms, err := decodeMeters(raw)
	if err != nil {
		return nil, fmt.Errorf("decode meters: %w: %w", ErrCorruptRecord, err)
	}
	return ms, nil
}

// MeterFieldName is the field of a period counter (PeriodCounterName) that
// holds the meter's value, for every aggregation but unique_count.
func MeterFieldName(slug string) string { return "m:" + slug }
