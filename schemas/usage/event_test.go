package usage_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/schemas"
	"github.com/veil-platform/veil/schemas/usage"
)

// testSubject is a subscription id.
const testSubject = "0b5e0f8e-6a4c-4d52-9d0e-2f4b8f3a9c11"

// base returns a valid veil.api.request event as a generic map, for cases to
// change one thing in.
func base() map[string]any {
	return map[string]any{
		"specversion": "1.0",
		"id":          "evt-1",
		"source":      "/gateway/test",
		"type":        "veil.api.request",
		"time":        "2026-11-26T10:00:00Z",
		"subject":     testSubject,
		"data": map[string]any{
			"api_id":         "api_1",
			"key_id":         "key_1",
			"method":         "GET",
			"route":          "/v1/things/{id}",
			"path":           "/v1/things/42",
			"status":         200,
			"latency_ms":     12,
			"request_bytes":  0,
			"response_bytes": 512,
			"units":          1,
		},
	}
}

func with(f func(e map[string]any)) string {
	e := base()
	f(e)
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func data(e map[string]any) map[string]any { return e["data"].(map[string]any) }

type validationCase struct {
	name   string
	json   string
	reason usage.Reason // "" means valid
}

// cases covers every rejection reason the decoder has, and the edges of each
// constraint on both sides.
var cases = []validationCase{
	{"valid api request", with(func(map[string]any) {}), ""},
	{"valid anonymous refusal", with(func(e map[string]any) {
		e["subject"] = "anonymous"
		data(e)["refusal"] = "missing_key"
	}), ""},
	{"valid usage record with only api_id", with(func(e map[string]any) {
		e["type"] = "veil.usage.record"
		e["data"] = map[string]any{"api_id": "api_1"}
	}), ""},
	{"valid extension attribute", with(func(e map[string]any) { e["traceparent"] = "00-abc" }), ""},
	{"valid numeric extension", with(func(e map[string]any) { e["region1"] = 3 }), ""},
	{"valid datacontenttype", with(func(e map[string]any) { e["datacontenttype"] = "application/json" }), ""},
	{"valid fractional units", with(func(e map[string]any) { data(e)["units"] = json.Number("0.000001") }), ""},
	{"valid zero units", with(func(e map[string]any) { data(e)["units"] = 0 }), ""},
	{"valid max units", with(func(e map[string]any) { data(e)["units"] = json.Number("1000000000") }), ""},
	{"valid units in exponent form", with(func(e map[string]any) { data(e)["units"] = json.Number("1.5e3") }), ""},
	{"valid integer written as 200.0", with(func(e map[string]any) { data(e)["status"] = json.Number("200.0") }), ""},
	{"valid time with offset and fraction", with(func(e map[string]any) { e["time"] = "2026-11-26T11:00:00.123456+01:00" }), ""},
	{"valid lower-case t and z", with(func(e map[string]any) { e["time"] = "2026-11-26t10:00:00z" }), ""},
	{"valid empty key_id", with(func(e map[string]any) { data(e)["key_id"] = "" }), ""},
	{"valid 256-char id", with(func(e map[string]any) { e["id"] = strings.Repeat("x", 256) }), ""},
	{"valid multibyte id at limit", with(func(e map[string]any) { e["id"] = strings.Repeat("é", 256) }), ""},
	{"valid refusal", with(func(e map[string]any) { data(e)["status"] = 429; data(e)["refusal"] = "rate_limited" }), ""},
	{"valid one-letter refusal", with(func(e map[string]any) { data(e)["refusal"] = "x" }), ""},
	{"valid 32-char refusal", with(func(e map[string]any) { data(e)["refusal"] = "q" + strings.Repeat("_", 31) }), ""},
	{"valid empty refusal means admitted", with(func(e map[string]any) { data(e)["refusal"] = "" }), ""},
	{"valid refusal on a usage record", with(func(e map[string]any) {
		e["type"] = "veil.usage.record"
		e["data"] = map[string]any{"api_id": "api_1", "refusal": "quota_exhausted"}
	}), ""},

	{"not JSON", `{"id":`, usage.ReasonMalformedJSON},
	{"JSON array", `[1,2]`, usage.ReasonMalformedJSON},
	{"JSON null", `null`, usage.ReasonMalformedJSON},
	{"JSON string", `"event"`, usage.ReasonMalformedJSON},
	{"missing id", with(func(e map[string]any) { delete(e, "id") }), usage.ReasonMissingField},
	{"missing source", with(func(e map[string]any) { delete(e, "source") }), usage.ReasonMissingField},
	{"missing specversion", with(func(e map[string]any) { delete(e, "specversion") }), usage.ReasonMissingField},
	{"missing type", with(func(e map[string]any) { delete(e, "type") }), usage.ReasonMissingField},
	{"missing time", with(func(e map[string]any) { delete(e, "time") }), usage.ReasonMissingField},
	{"missing subject", with(func(e map[string]any) { delete(e, "subject") }), usage.ReasonMissingField},
	{"missing data", with(func(e map[string]any) { delete(e, "data") }), usage.ReasonMissingField},
	{"missing api_id", with(func(e map[string]any) { delete(data(e), "api_id") }), usage.ReasonMissingField},
	{"api request missing status", with(func(e map[string]any) { delete(data(e), "status") }), usage.ReasonMissingField},
	{"api request missing route", with(func(e map[string]any) { delete(data(e), "route") }), usage.ReasonMissingField},
	{"api request missing method", with(func(e map[string]any) { delete(data(e), "method") }), usage.ReasonMissingField},
	{"api request missing path", with(func(e map[string]any) { delete(data(e), "path") }), usage.ReasonMissingField},
	{"api request missing latency", with(func(e map[string]any) { delete(data(e), "latency_ms") }), usage.ReasonMissingField},
	{"wrong specversion", with(func(e map[string]any) { e["specversion"] = "0.3" }), usage.ReasonUnsupportedSpecVersion},
	{"unknown type", with(func(e map[string]any) { e["type"] = "com.example.thing" }), usage.ReasonUnknownType},
	{"type not a string", with(func(e map[string]any) { e["type"] = 7 }), usage.ReasonInvalidField},
	{"empty id", with(func(e map[string]any) { e["id"] = "" }), usage.ReasonInvalidField},
	{"id too long", with(func(e map[string]any) { e["id"] = strings.Repeat("x", 257) }), usage.ReasonInvalidField},
	{"id a number", with(func(e map[string]any) { e["id"] = 42 }), usage.ReasonInvalidField},
	{"empty source", with(func(e map[string]any) { e["source"] = "" }), usage.ReasonInvalidField},
	{"empty subject", with(func(e map[string]any) { e["subject"] = "" }), usage.ReasonInvalidField},
	{"subject too long", with(func(e map[string]any) { e["subject"] = strings.Repeat("s", 129) }), usage.ReasonInvalidField},
	{"subject not a subscription id", with(func(e map[string]any) { e["subject"] = "sub_123" }), usage.ReasonInvalidSubject},
	{"subject with a hash tag", with(func(e map[string]any) { e["subject"] = "{0b5e0f8e}-6a4c-4d52-9d0e-2f4b8f3a9c" }), usage.ReasonInvalidSubject},
	{"subject a braced UUID", with(func(e map[string]any) { e["subject"] = "{" + testSubject + "}" }), usage.ReasonInvalidSubject},
	{"subject in upper case", with(func(e map[string]any) { e["subject"] = strings.ToUpper(testSubject) }), usage.ReasonInvalidSubject},
	{"subject a UUID without hyphens", with(func(e map[string]any) { e["subject"] = strings.ReplaceAll(testSubject, "-", "") }), usage.ReasonInvalidSubject},
	{"anonymous admitted", with(func(e map[string]any) { e["subject"] = "anonymous" }), usage.ReasonInvalidSubject},
	{"anonymous usage record", with(func(e map[string]any) {
		e["subject"], e["type"] = "anonymous", "veil.usage.record"
		data(e)["refusal"] = "invalid_key"
	}), usage.ReasonInvalidSubject},
	{"time not RFC 3339", with(func(e map[string]any) { e["time"] = "26/11/2026 10:00" }), usage.ReasonInvalidTime},
	{"time without zone", with(func(e map[string]any) { e["time"] = "2026-11-26T10:00:00" }), usage.ReasonInvalidTime},
	{"time with one-digit hour", with(func(e map[string]any) { e["time"] = "2026-11-26T1:00:00Z" }), usage.ReasonInvalidTime},
	{"time with a space for T", with(func(e map[string]any) { e["time"] = "2026-11-26 10:00:00Z" }), usage.ReasonInvalidTime},
	{"time with empty fraction", with(func(e map[string]any) { e["time"] = "2026-11-26T10:00:00.Z" }), usage.ReasonInvalidTime},
	{"number with leading zero", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a","units":01}}`, usage.ReasonMalformedJSON},
	{"raw control character in string", "{\"specversion\":\"1.0\",\"id\":\"x\u0001\",\"source\":\"s\",\"type\":\"veil.usage.record\",\"time\":\"2026-11-26T10:00:00Z\",\"subject\":\"s\",\"data\":{\"api_id\":\"a\"}}", usage.ReasonMalformedJSON},
	{"trailing comma in object", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a","units":1,}}`, usage.ReasonMalformedJSON},
	{"trailing comma at top level", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a"},}`, usage.ReasonMalformedJSON},
	{"missing comma", `{"specversion":"1.0","id":"x""source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a"}}`, usage.ReasonMalformedJSON},
	{"invalid escape", `{"specversion":"1.0","id":"x\q","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a"}}`, usage.ReasonMalformedJSON},
	{"short unicode escape", `{"specversion":"1.0","id":"\u12","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a"}}`, usage.ReasonMalformedJSON},
	{"number with trailing dot", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a","units":1.}}`, usage.ReasonMalformedJSON},
	{"number with leading plus", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a","units":+1}}`, usage.ReasonMalformedJSON},
	{"number with leading dot", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a","units":.5}}`, usage.ReasonMalformedJSON},
	{"exponent without digits", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a","units":1e}}`, usage.ReasonMalformedJSON},
	{"NaN", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a","units":NaN}}`, usage.ReasonMalformedJSON},
	{"bare word", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a","units":truth}}`, usage.ReasonMalformedJSON},
	{"two values", `{"specversion":"1.0","id":"x","source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a"}} {}`, usage.ReasonMalformedJSON},
	{"single quotes", `{"specversion":"1.0",'id':'x',"source":"s","type":"veil.usage.record","time":"2026-11-26T10:00:00Z","subject":"s","data":{"api_id":"a"}}`, usage.ReasonMalformedJSON},
	{"time as unix seconds", with(func(e map[string]any) { e["time"] = 1795000000 }), usage.ReasonInvalidField},
	{"bad datacontenttype", with(func(e map[string]any) { e["datacontenttype"] = "text/plain" }), usage.ReasonInvalidField},
	{"data not an object", with(func(e map[string]any) { e["data"] = "x" }), usage.ReasonInvalidField},
	{"data null", with(func(e map[string]any) { e["data"] = nil }), usage.ReasonInvalidField},
	{"empty api_id", with(func(e map[string]any) { data(e)["api_id"] = "" }), usage.ReasonInvalidField},
	{"status below 100", with(func(e map[string]any) { data(e)["status"] = 99 }), usage.ReasonInvalidField},
	{"status above 599", with(func(e map[string]any) { data(e)["status"] = 600 }), usage.ReasonInvalidField},
	{"status fractional", with(func(e map[string]any) { data(e)["status"] = 200.5 }), usage.ReasonInvalidField},
	{"status as string", with(func(e map[string]any) { data(e)["status"] = "200" }), usage.ReasonInvalidField},
	{"negative latency", with(func(e map[string]any) { data(e)["latency_ms"] = -1 }), usage.ReasonInvalidField},
	{"latency beyond uint32", with(func(e map[string]any) { data(e)["latency_ms"] = int64(4294967296) }), usage.ReasonInvalidField},
	{"negative request bytes", with(func(e map[string]any) { data(e)["request_bytes"] = -5 }), usage.ReasonInvalidField},
	{"lower-case method", with(func(e map[string]any) { data(e)["method"] = "get" }), usage.ReasonInvalidField},
	{"empty method", with(func(e map[string]any) { data(e)["method"] = "" }), usage.ReasonInvalidField},
	{"empty route", with(func(e map[string]any) { data(e)["route"] = "" }), usage.ReasonInvalidField},
	{"negative units", with(func(e map[string]any) { data(e)["units"] = -1 }), usage.ReasonInvalidUnits},
	{"units with 7 decimals", with(func(e map[string]any) { data(e)["units"] = json.Number("0.0000001") }), usage.ReasonInvalidUnits},
	{"units just over the cap", with(func(e map[string]any) { data(e)["units"] = json.Number("1000000000.000001") }), usage.ReasonInvalidUnits},
	{"units of the overflow report", with(func(e map[string]any) { data(e)["units"] = json.Number("999999999999.999999") }), usage.ReasonInvalidUnits},
	{"units at 10^12", with(func(e map[string]any) { data(e)["units"] = json.Number("1000000000000") }), usage.ReasonInvalidUnits},
	{"units as string", with(func(e map[string]any) { data(e)["units"] = "1.5" }), usage.ReasonInvalidUnits},
	{"units null", with(func(e map[string]any) { data(e)["units"] = nil }), usage.ReasonInvalidUnits},
	{"refusal too long", with(func(e map[string]any) { data(e)["refusal"] = "q" + strings.Repeat("_", 32) }), usage.ReasonInvalidRefusal},
	{"upper-case refusal", with(func(e map[string]any) { data(e)["refusal"] = "Invalid_key" }), usage.ReasonInvalidRefusal},
	{"refusal starting with underscore", with(func(e map[string]any) { data(e)["refusal"] = "_invalid_key" }), usage.ReasonInvalidRefusal},
	{"refusal with a digit", with(func(e map[string]any) { data(e)["refusal"] = "error429" }), usage.ReasonInvalidRefusal},
	{"refusal with a hyphen", with(func(e map[string]any) { data(e)["refusal"] = "rate-limited" }), usage.ReasonInvalidRefusal},
	{"refusal with a space", with(func(e map[string]any) { data(e)["refusal"] = "rate limited" }), usage.ReasonInvalidRefusal},
	{"refusal with a trailing newline", with(func(e map[string]any) { data(e)["refusal"] = "rate_limited\n" }), usage.ReasonInvalidRefusal},
	{"non-ASCII refusal", with(func(e map[string]any) { data(e)["refusal"] = "refusé" }), usage.ReasonInvalidRefusal},
	{"refusal as number", with(func(e map[string]any) { data(e)["refusal"] = 429 }), usage.ReasonInvalidRefusal},
	{"refusal as boolean", with(func(e map[string]any) { data(e)["refusal"] = true }), usage.ReasonInvalidRefusal},
	{"refusal null", with(func(e map[string]any) { data(e)["refusal"] = nil }), usage.ReasonInvalidRefusal},
	{"unknown data field", with(func(e map[string]any) { data(e)["customer"] = "acme" }), usage.ReasonUnknownField},
	{"upper-case extension name", with(func(e map[string]any) { e["TraceParent"] = "x" }), usage.ReasonUnknownField},
	{"extension name too long", with(func(e map[string]any) { e[strings.Repeat("a", 21)] = "x" }), usage.ReasonUnknownField},
	{"extension with underscore", with(func(e map[string]any) { e["trace_id"] = "x" }), usage.ReasonUnknownField},
	{"object extension value", with(func(e map[string]any) { e["ext"] = map[string]any{"a": 1} }), usage.ReasonInvalidField},
	{"null extension value", with(func(e map[string]any) { e["ext"] = nil }), usage.ReasonInvalidField},
}

func compileSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemas.UsageEventJSONSchema))
	if err != nil {
		t.Fatalf("parse schema: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	const url = "https://veil.dev/schemas/usage-event.schema.json"
	if err := c.AddResource(url, doc); err != nil {
		t.Fatalf("add schema: %v", err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	return s
}

// schemaAccepts reports whether the JSON Schema accepts raw.
func schemaAccepts(s *jsonschema.Schema, raw string) bool {
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(raw))
	if err != nil {
		return false
	}
	return s.Validate(inst) == nil
}

func TestDecodeReasons(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := usage.Decode([]byte(tc.json))
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Decode(%s) = %v; want valid", tc.json, err)
				}
				return
			}
			var ve *usage.Error
			if !errors.As(err, &ve) {
				t.Fatalf("Decode(%s) = %v; want reason %s", tc.json, err, tc.reason)
			}
			if ve.Reason != tc.reason {
				t.Fatalf("Decode(%s) reason = %s (%s); want %s", tc.json, ve.Reason, ve.Detail, tc.reason)
			}
		})
	}
}

// TestSchemaAgreesWithDecoder holds the JSON Schema and the Go decoder
// together: over every case, both accept or both reject.
func TestSchemaAgreesWithDecoder(t *testing.T) {
	s := compileSchema(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := usage.Decode([]byte(tc.json))
			goOK := err == nil
			schemaOK := schemaAccepts(s, tc.json)
			if goOK != schemaOK {
				t.Fatalf("%s: decoder accepts = %v (%v); schema accepts = %v", tc.json, goOK, err, schemaOK)
			}
			if wantOK := tc.reason == ""; goOK != wantOK {
				t.Fatalf("%s: accepted = %v; want %v", tc.json, goOK, wantOK)
			}
		})
	}
}

func TestDecodeFields(t *testing.T) {
	e, err := usage.Decode([]byte(with(func(e map[string]any) { data(e)["units"] = json.Number("2.500000") })))
	if err != nil {
		t.Fatal(err)
	}
	want := usage.Event{
		ID: "evt-1", Source: "/gateway/test", Type: usage.TypeAPIRequest, Subject: testSubject,
		Time: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC),
		Data: usage.Data{
			APIID: "api_1", KeyID: "key_1", Method: "GET", Route: "/v1/things/{id}", Path: "/v1/things/42",
			Status: 200, LatencyMS: 12, ResponseBytes: 512, Units: decimal.RequireFromString("2.5"),
		},
	}
	if !e.Data.Units.Equal(want.Data.Units) {
		t.Fatalf("units = %s; want %s", e.Data.Units, want.Data.Units)
	}
	e.Data.Units, want.Data.Units = decimal.Zero, decimal.Zero
	if e != want {
		t.Fatalf("Decode = %+v; want %+v", e, want)
	}
}

func TestErrorNamesTheEvent(t *testing.T) {
	for _, raw := range []string{
		with(func(e map[string]any) { data(e)["units"] = -1 }),
		with(func(e map[string]any) { delete(e, "subject") }),
		with(func(e map[string]any) { e["zz"] = map[string]any{} }),
	} {
		_, err := usage.Decode([]byte(raw))
		var ve *usage.Error
		if !errors.As(err, &ve) || ve.ID != "evt-1" {
			t.Errorf("Decode(%s) = %#v; want an *Error with ID evt-1", raw, err)
		}
	}
}

func TestUnitsDefaultToOne(t *testing.T) {
	e, err := usage.Decode([]byte(with(func(e map[string]any) { delete(data(e), "units") })))
	if err != nil {
		t.Fatal(err)
	}
	if !e.Data.Units.Equal(decimal.NewFromInt(1)) {
		t.Fatalf("units = %s; want 1", e.Data.Units)
	}
}

func TestRefusal(t *testing.T) {
	tests := []struct {
		name string
		set  func(d map[string]any)
		want string
	}{
		{"absent means admitted", func(map[string]any) {}, ""},
		{"empty means admitted", func(d map[string]any) { d["refusal"] = "" }, ""},
		{"invalid key", func(d map[string]any) { d["status"] = 401; d["refusal"] = "invalid_key" }, "invalid_key"},
		{"quota exhausted", func(d map[string]any) { d["status"] = 429; d["refusal"] = "quota_exhausted" }, "quota_exhausted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := with(func(e map[string]any) { tc.set(data(e)) })
			e, err := usage.Decode([]byte(raw))
			if err != nil {
				t.Fatalf("Decode(%s) = %v", raw, err)
			}
			if e.Data.Refusal != tc.want {
				t.Fatalf("Decode(%s).Data.Refusal = %q; want %q", raw, e.Data.Refusal, tc.want)
			}
		})
	}
}

func TestInvalidRefusalNamesTheField(t *testing.T) {
	raw := with(func(e map[string]any) { data(e)["refusal"] = "Rate-Limited" })
	_, err := usage.Decode([]byte(raw))
	var ve *usage.Error
	if !errors.As(err, &ve) || ve.Reason != usage.ReasonInvalidRefusal || ve.Field != "data.refusal" || ve.ID != "evt-1" {
		t.Fatalf("Decode(%s) = %#v; want an *Error invalid_refusal on data.refusal naming evt-1", raw, err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	s := compileSchema(t)
	for _, refusal := range []string{"", "rate_limited"} {
		in := usage.Event{
			ID: "a\"b", Source: "/src", Type: usage.TypeAPIRequest, Subject: testSubject,
			Time: time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.UTC),
			Data: usage.Data{APIID: "api", Method: "POST", Route: "/r", Path: "/r?x=1", Status: 429,
				LatencyMS: 3, RequestBytes: 10, ResponseBytes: 20, Units: decimal.RequireFromString("0.125"), Refusal: refusal},
		}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if !schemaAccepts(s, string(b)) {
			t.Fatalf("schema rejects marshalled event %s", b)
		}
		if got := bytes.Contains(b, []byte(`"refusal"`)); got != (refusal != "") {
			t.Fatalf("Marshal(refusal %q) = %s; want the refusal attribute only when set", refusal, b)
		}
		out, err := usage.Decode(b)
		if err != nil {
			t.Fatalf("Decode(Marshal(e)) = %v", err)
		}
		if !out.Data.Units.Equal(in.Data.Units) || !out.Time.Equal(in.Time) {
			t.Fatalf("round trip = %+v; want %+v", out, in)
		}
		out.Data.Units, out.Time = in.Data.Units, in.Time
		if out != in {
			t.Fatalf("round trip = %+v; want %+v", out, in)
		}
	}
}

func TestCheckTime(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		at     time.Time
		reason usage.Reason
	}{
		{"now", now, ""},
		{"4m59s ahead", now.Add(4*time.Minute + 59*time.Second), ""},
		{"5m1s ahead", now.Add(5*time.Minute + time.Second), usage.ReasonTimeInFuture},
		{"34 days old", now.Add(-34 * 24 * time.Hour), ""},
		{"36 days old", now.Add(-36 * 24 * time.Hour), usage.ReasonTimeTooOld},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := usage.Event{Time: tc.at}.CheckTime(now, usage.DefaultMaxFuture, usage.DefaultLateWindow)
			var ve *usage.Error
			switch {
			case tc.reason == "" && err != nil:
				t.Fatalf("CheckTime(%s) = %v; want nil", tc.at, err)
			case tc.reason != "" && (!errors.As(err, &ve) || ve.Reason != tc.reason):
				t.Fatalf("CheckTime(%s) = %v; want %s", tc.at, err, tc.reason)
			}
		})
	}
}

func TestCheckedAdd(t *testing.T) {
	for _, tc := range []struct {
		a, b    int64
		want    int64
		overflo bool
	}{
		{0, 0, 0, false},
		{usage.MaxUnitsMicro, usage.MaxUnitsMicro, 2 * usage.MaxUnitsMicro, false},
		{usage.MaxCounterMicro - 1, 1, usage.MaxCounterMicro, false},
		{usage.MaxCounterMicro, 1, 0, true},
		// The report: ten events of 999,999,999,999.999999 units.
		{9 * 999_999_999_999_999_999, 999_999_999_999_999_999, 0, true},
		{-1, 1, 0, true},
	} {
		got, err := usage.CheckedAdd(tc.a, tc.b)
		if tc.overflo != errors.Is(err, usage.ErrCounterOverflow) || got != tc.want {
			t.Errorf("CheckedAdd(%d, %d) = %d, %v; want %d, overflow %v", tc.a, tc.b, got, err, tc.want, tc.overflo)
		}
	}
	// The cap leaves room for 9,223 events at it in one counter, not 9,224.
	var sum int64
	for i := 0; i < 9223; i++ {
		var err error
		if sum, err = usage.CheckedAdd(sum, usage.MaxUnitsMicro); err != nil {
			t.Fatalf("event %d at the cap: %v", i+1, err)
		}
	}
	if _, err := usage.CheckedAdd(sum, usage.MaxUnitsMicro); !errors.Is(err, usage.ErrCounterOverflow) {
		t.Fatalf("event 9,224 at the cap: err = %v; want ErrCounterOverflow", err)
	}
}
