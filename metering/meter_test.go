package metering_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/usage"
)

// TestMeterValidate: every definition a processor can count passes, and
// every refusal wraps ErrInvalidMeter and names the field at fault.
func TestMeterValidate(t *testing.T) {
	ok := []metering.Meter{
		{Slug: "requests", Aggregation: metering.AggCount},
		{Slug: "a", Name: strings.Repeat("é", 200), Aggregation: metering.AggCount},
		{Slug: "0" + strings.Repeat("x", 62), Aggregation: metering.AggCount},
		{Slug: "units_in", Aggregation: metering.AggSum, Field: metering.FieldUnits},
		{Slug: "req-bytes", Aggregation: metering.AggSum, Field: metering.FieldRequestBytes},
		{Slug: "resp", Aggregation: metering.AggMax, Field: metering.FieldResponseBytes},
		{Slug: "slowest", Aggregation: metering.AggMax, Field: metering.FieldLatencyMS},
		{Slug: "keys", Aggregation: metering.AggUniqueCount, Field: metering.FieldKeyID},
		{Slug: "filtered", Aggregation: metering.AggCount, Filter: metering.Filter{
			Methods:       metering.Methods,
			Routes:        []string{"/", "/users/{id}", "/files/*", "/a.b/(c)/"},
			StatusClasses: metering.StatusClasses,
		}},
		{Slug: "max-lists", Aggregation: metering.AggCount, Filter: metering.Filter{Routes: routes(metering.MaxFilterEntries)}},
		{Slug: "long-route", Aggregation: metering.AggCount, Filter: metering.Filter{Routes: []string{"/" + strings.Repeat("x", 511)}}},
		{Slug: "long-routes", Aggregation: metering.AggCount, Filter: metering.Filter{Routes: longRoutes(8)}},
	}
	for _, m := range ok {
		if err := m.Validate(); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", m, err)
		}
	}
	count := func(f metering.Filter) metering.Meter {
		return metering.Meter{Slug: "m", Aggregation: metering.AggCount, Filter: f}
	}
	bad := []struct {
		m     metering.Meter
		field string
	}{
		{metering.Meter{Slug: "", Aggregation: metering.AggCount}, "slug"},
		{metering.Meter{Slug: "Requests", Aggregation: metering.AggCount}, "slug"},
		{metering.Meter{Slug: "_a", Aggregation: metering.AggCount}, "slug"},
		{metering.Meter{Slug: "a.b", Aggregation: metering.AggCount}, "slug"},
		{metering.Meter{Slug: "a" + strings.Repeat("x", 63), Aggregation: metering.AggCount}, "slug"},
		{metering.Meter{Slug: "a\n", Aggregation: metering.AggCount}, "slug"},
		{metering.Meter{Slug: "m", Name: strings.Repeat("x", 201), Aggregation: metering.AggCount}, "name"},
		{metering.Meter{Slug: "m", Aggregation: ""}, "aggregation"},
		{metering.Meter{Slug: "m", Aggregation: "avg", Field: metering.FieldUnits}, "aggregation"},
		{metering.Meter{Slug: "m", Aggregation: "COUNT"}, "aggregation"},
		{metering.Meter{Slug: "m", Aggregation: metering.AggCount, Field: metering.FieldUnits}, "field"},
		{metering.Meter{Slug: "m", Aggregation: metering.AggSum}, "field"},
		{metering.Meter{Slug: "m", Aggregation: metering.AggSum, Field: metering.FieldKeyID}, "field"},
		{metering.Meter{Slug: "m", Aggregation: metering.AggMax, Field: "status"}, "field"},
		{metering.Meter{Slug: "m", Aggregation: metering.AggUniqueCount}, "field"},
		{metering.Meter{Slug: "m", Aggregation: metering.AggUniqueCount, Field: metering.FieldUnits}, "field"},
		{count(metering.Filter{Methods: []string{"get"}}), "filter.methods[0]"},
		{count(metering.Filter{Methods: []string{"GET", "TRACE"}}), "filter.methods[1]"},
		{count(metering.Filter{Methods: []string{"GET", "POST", "GET"}}), "filter.methods[2]"},
		{count(metering.Filter{Methods: make([]string, metering.MaxFilterEntries+1)}), "filter.methods"},
		{count(metering.Filter{Routes: []string{"users"}}), "filter.routes[0]"},
		{count(metering.Filter{Routes: []string{"/a", "/a//b"}}), "filter.routes[1]"},
		{count(metering.Filter{Routes: []string{"/a/../b"}}), "filter.routes[0]"},
		{count(metering.Filter{Routes: []string{"/a/{id"}}), "filter.routes[0]"},
		{count(metering.Filter{Routes: []string{"/a*"}}), "filter.routes[0]"},
		{count(metering.Filter{Routes: []string{"/a", "/a"}}), "filter.routes[1]"},
		{count(metering.Filter{Routes: []string{"/" + strings.Repeat("x", 512)}}), "filter.routes[0]"},
		{count(metering.Filter{Routes: routes(metering.MaxFilterEntries + 1)}), "filter.routes"},
		// 4608 bytes, past the 4096 a meter's routes hold together.
		{count(metering.Filter{Routes: longRoutes(9)}), "filter.routes"},
		{count(metering.Filter{StatusClasses: []string{"5xx"}}), "filter.status_classes[0]"},
		{count(metering.Filter{StatusClasses: []string{"2xx", "2XX"}}), "filter.status_classes[1]"},
		{count(metering.Filter{StatusClasses: []string{"2xx", "2xx"}}), "filter.status_classes[1]"},
		{count(metering.Filter{StatusClasses: []string{"200"}}), "filter.status_classes[0]"},
	}
	for _, c := range bad {
		err := c.m.Validate()
		if !errors.Is(err, metering.ErrInvalidMeter) {
			t.Errorf("Validate(%q) = %v, want ErrInvalidMeter", c.m, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "invalid meter: "+c.field+": ") {
			t.Errorf("Validate(%q) = %q, want it to name %s", c.m, err, c.field)
		}
	}
}

// routes returns n distinct valid route patterns.
// longRoutes are n distinct route patterns of 512 bytes.
func longRoutes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/%02d/", i) + strings.Repeat("x", 508)
	}
	return out
}

func routes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "/r/" + strings.Repeat("x", i+1)
	}
	return out
}

// meterEvent is a billable GET of /users/42 with a 200, changed by edit.
func meterEvent(edit func(d *usage.Data)) *usage.Event {
	e := &usage.Event{ID: "e1", Subject: "sub_1", Data: usage.Data{
		APIID: "api_1", KeyID: "key_1", Method: "GET", Path: "/users/42", Status: 200,
		LatencyMS: 12, RequestBytes: 100, ResponseBytes: 2000, Units: decimal.RequireFromString("1.5"),
	}}
	if edit != nil {
		edit(&e.Data)
	}
	return e
}

// TestMeterMatches: billable events only (no refusal, status below 500,
// status 0 included), then each list of the filter, entries of a list with
// OR and lists with AND.
func TestMeterMatches(t *testing.T) {
	all := metering.Filter{}
	methods := metering.Filter{Methods: []string{"GET", "POST"}}
	classes := metering.Filter{StatusClasses: []string{"2xx", "4xx"}}
	paths := metering.Filter{Routes: []string{"/users/{id}", "/files/*"}}
	every := metering.Filter{Methods: []string{"POST"}, Routes: []string{"/files/*"}, StatusClasses: []string{"2xx"}}
	for _, c := range []struct {
		name   string
		filter metering.Filter
		edit   func(d *usage.Data)
		want   bool
	}{
		{"billable", all, nil, true},
		{"refused", all, func(d *usage.Data) { d.Refusal = "rate_limited"; d.Status = 429 }, false},
		{"refused with a 200", all, func(d *usage.Data) { d.Refusal = "quota_exhausted" }, false},
		{"499", all, func(d *usage.Data) { d.Status = 499 }, true},
		{"500", all, func(d *usage.Data) { d.Status = 500 }, false},
		{"503", all, func(d *usage.Data) { d.Status = 503 }, false},
		{"599", all, func(d *usage.Data) { d.Status = 599 }, false},
		{"status 0, no filter", all, func(d *usage.Data) { d.Status = 0 }, true},
		{"status 0, class filter", classes, func(d *usage.Data) { d.Status = 0 }, false},
		{"method listed", methods, func(d *usage.Data) { d.Method = "POST" }, true},
		{"method not listed", methods, func(d *usage.Data) { d.Method = "DELETE" }, false},
		{"method compared exactly", methods, func(d *usage.Data) { d.Method = "get" }, false},
		{"class 2xx", classes, func(d *usage.Data) { d.Status = 204 }, true},
		{"class 4xx", classes, func(d *usage.Data) { d.Status = 404 }, true},
		{"class 3xx not listed", classes, func(d *usage.Data) { d.Status = 301 }, false},
		{"class 1xx not listed", classes, func(d *usage.Data) { d.Status = 101 }, false},
		{"first route", paths, nil, true},
		{"second route", paths, func(d *usage.Data) { d.Path = "/files/a/b" }, true},
		{"no route", paths, func(d *usage.Data) { d.Path = "/users/42/orders" }, false},
		{"route with a dot segment", paths, func(d *usage.Data) { d.Path = "/files/../users/42" }, false},
		{"route case-sensitive", paths, func(d *usage.Data) { d.Path = "/Users/42" }, false},
		{"empty path", paths, func(d *usage.Data) { d.Path = "" }, false},
		{"every list passes", every, func(d *usage.Data) { d.Method = "POST"; d.Path = "/files/x" }, true},
		{"method fails", every, func(d *usage.Data) { d.Path = "/files/x" }, false},
		{"route fails", every, func(d *usage.Data) { d.Method = "POST" }, false},
		{"class fails", every, func(d *usage.Data) { d.Method = "POST"; d.Path = "/files/x"; d.Status = 404 }, false},
	} {
		m := metering.Meter{Slug: "m", Aggregation: metering.AggCount, Filter: c.filter}
		e := meterEvent(c.edit)
		if got := m.Matches(e); got != c.want {
			t.Errorf("%s: Matches(%+v) = %v, want %v", c.name, e.Data, got, c.want)
		}
		// Without a filter, a meter counts exactly the billable events.
		if unfiltered := c.filter.Methods == nil && c.filter.Routes == nil && c.filter.StatusClasses == nil; unfiltered {
			if got := metering.Billable(e); got != c.want {
				t.Errorf("%s: Billable(%+v) = %v, want %v", c.name, e.Data, got, c.want)
			}
		}
	}
}

// TestMeterContribution: what each aggregation and field adds, at the
// meter's Scale; nothing for an event the meter does not count; a
// unique_count meter counts KeyValue instead.
func TestMeterContribution(t *testing.T) {
	e := meterEvent(func(d *usage.Data) { d.Units = decimal.RequireFromString("1234.000001") })
	huge := meterEvent(func(d *usage.Data) { d.RequestBytes = 1<<64 - 1; d.ResponseBytes = 1 << 63 })
	refused := meterEvent(func(d *usage.Data) { d.Refusal = "invalid_key"; d.Status = 401 })
	for _, c := range []struct {
		agg   metering.Aggregation
		field string
		e     *usage.Event
		want  int64
		ok    bool
	}{
		{metering.AggCount, "", e, 1, true},
		{metering.AggSum, metering.FieldUnits, e, 1_234_000_001, true},
		{metering.AggMax, metering.FieldUnits, e, 1_234_000_001, true},
		{metering.AggSum, metering.FieldRequestBytes, e, 100, true},
		{metering.AggMax, metering.FieldResponseBytes, e, 2000, true},
		{metering.AggSum, metering.FieldLatencyMS, e, 12, true},
		{metering.AggSum, metering.FieldRequestBytes, huge, 1<<63 - 1, true},
		{metering.AggMax, metering.FieldResponseBytes, huge, 1<<63 - 1, true},
		{metering.AggCount, "", refused, 0, false},
		{metering.AggSum, metering.FieldUnits, refused, 0, false},
		{metering.AggUniqueCount, metering.FieldKeyID, e, 0, false},
	} {
		m := metering.Meter{Slug: "m", Aggregation: c.agg, Field: c.field}
		if v, ok := m.Contribution(c.e); v != c.want || ok != c.ok {
			t.Errorf("%s(%s).Contribution = %d, %v; want %d, %v", c.agg, c.field, v, ok, c.want, c.ok)
		}
	}
	keys := metering.Meter{Slug: "keys", Aggregation: metering.AggUniqueCount, Field: metering.FieldKeyID}
	for _, c := range []struct {
		e    *usage.Event
		want string
	}{
		{e, "key_1"},
		{refused, ""},
		{meterEvent(func(d *usage.Data) { d.KeyID = "" }), ""},
		{meterEvent(func(d *usage.Data) { d.Status = 502 }), ""},
	} {
		if got := keys.KeyValue(c.e); got != c.want {
			t.Errorf("KeyValue(%+v) = %q, want %q", c.e.Data, got, c.want)
		}
	}
	count := metering.Meter{Slug: "m", Aggregation: metering.AggCount}
	if got := count.KeyValue(e); got != "" {
		t.Errorf("a count meter's KeyValue = %q, want empty", got)
	}
}

// TestMeterScaleAndQuantity: units keep 6 decimals, every other field and
// count none; Quantity undoes the scale exactly, at the extremes too.
func TestMeterScaleAndQuantity(t *testing.T) {
	for _, c := range []struct {
		m       metering.Meter
		scale   int32
		counter int64
		want    string
	}{
		{metering.Meter{Aggregation: metering.AggCount}, 0, 7, "7"},
		{metering.Meter{Aggregation: metering.AggSum, Field: metering.FieldUnits}, 6, 1_500_000, "1.5"},
		{metering.Meter{Aggregation: metering.AggMax, Field: metering.FieldUnits}, 6, 1, "0.000001"},
		{metering.Meter{Aggregation: metering.AggSum, Field: metering.FieldUnits}, 6, 1<<63 - 1, "9223372036854.775807"},
		{metering.Meter{Aggregation: metering.AggSum, Field: metering.FieldRequestBytes}, 0, 1<<63 - 1, "9223372036854775807"},
		{metering.Meter{Aggregation: metering.AggMax, Field: metering.FieldLatencyMS}, 0, 0, "0"},
		{metering.Meter{Aggregation: metering.AggSum, Field: metering.FieldResponseBytes}, 0, 12, "12"},
		{metering.Meter{Aggregation: metering.AggUniqueCount, Field: metering.FieldKeyID}, 0, 3, "3"},
	} {
		if got := c.m.Scale(); got != c.scale {
			t.Errorf("%s(%s).Scale() = %d, want %d", c.m.Aggregation, c.m.Field, got, c.scale)
		}
		if got := c.m.Quantity(c.counter); !got.Equal(decimal.RequireFromString(c.want)) || got.String() != c.want {
			t.Errorf("%s(%s).Quantity(%d) = %s, want %s", c.m.Aggregation, c.m.Field, c.counter, got, c.want)
		}
	}
}

func TestMeterCounter(t *testing.T) {
	units := metering.Meter{Slug: "tokens", Aggregation: metering.AggSum, Field: metering.FieldUnits}
	calls := metering.Meter{Slug: "calls", Aggregation: metering.AggCount}
	for _, c := range []struct {
		m    metering.Meter
		q    string
		want int64
		err  bool
	}{
		{units, "1.5", 1_500_000, false},
		{units, "0.0000019", 1, false}, // rounded down
		{units, "9223372036854.775807", 1<<63 - 1, false},
		{units, "9223372036854.775808", 0, true},
		{calls, "100.9", 100, false},
		{calls, "9223372036854775807", 1<<63 - 1, false},
		{calls, "9223372036854775808", 0, true},
		{calls, "-1", 0, true},
		{calls, "0", 0, false},
	} {
		got, err := c.m.Counter(decimal.RequireFromString(c.q))
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%s.Counter(%s) = %d, %v; want %d, error %v", c.m.Slug, c.q, got, err, c.want, c.err)
		}
	}
}

// TestMeterOfSpec: a record's meter reads back as the definition it was
// written from, and the aggregations carry the records' names.
func TestMeterOfSpec(t *testing.T) {
	want := metering.Meter{Slug: "tokens", Aggregation: metering.AggSum, Field: metering.FieldUnits,
		Filter: metering.Filter{Methods: []string{"GET"}, Routes: []string{"/v1/*"}, StatusClasses: []string{"2xx"}}}
	got := metering.MeterOfSpec(enforcement.MeterSpec{Slug: "tokens", Aggregation: enforcement.MeterSum, Field: "units",
		Filter: enforcement.MeterFilter{Methods: []string{"GET"}, Routes: []string{"/v1/*"}, StatusClasses: []string{"2xx"}}})
	if !reflect.DeepEqual(got, want) || got.Validate() != nil {
		t.Errorf("MeterOfSpec() = %+v, %v; want %+v, valid", got, got.Validate(), want)
	}
}
