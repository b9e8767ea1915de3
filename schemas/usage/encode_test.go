package usage_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/schemas/usage"
)

// FuzzEncodeDecode holds AppendEvent to Decode: every valid event it
// encodes decodes to itself, and the text satisfies the JSON Schema.
func FuzzEncodeDecode(f *testing.F) {
	f.Add("evt-1", "/gateway/test", true, int64(1764151200000000000), []byte("0b5e0f8e6a4c4d52"), false,
		"api_1", "key_1", "GET", "/v1/things/{id}", "/v1/things/42", uint16(200), uint32(12), uint64(0), uint64(512), int64(1_000_000), "")
	f.Add("e\"\\\x00\u2028<&>", "/s", false, int64(-1), []byte{}, true,
		"a", "", "", "", "", uint16(0), uint32(0), uint64(0), uint64(0), int64(0), "")
	f.Add("\xff\xfe", "src", true, int64(0), []byte("x"), true,
		"api", "k", "get", "/", "/caf\xc3\xa9/%ff\xff", uint16(599), uint32(1<<32-1), uint64(1<<53-1), uint64(7), int64(1), "rate_limited")
	s := compileSchema(f)
	f.Fuzz(func(t *testing.T, id, source string, apiRequest bool, nanos int64, subject []byte, anonymous bool,
		apiID, keyID, method, route, path string, status uint16, latency uint32, reqBytes, resBytes uint64, micro int64, refusal string) {
		e := validEvent(id, source, apiRequest, nanos, subject, anonymous)
		e.Data = validData(apiRequest, apiID, keyID, method, route, path, status, latency, reqBytes, resBytes, micro, refusal)
		if e.Subject == usage.AnonymousSubject && e.Data.Refusal == "" {
			e.Data.Refusal = "missing_key"
		}
		b := usage.AppendEvent([]byte("prefix"), &e)
		if string(b[:6]) != "prefix" {
			t.Fatalf("AppendEvent changed the bytes before it: %q", b)
		}
		b = b[6:]
		if !schemaAccepts(s, string(b)) {
			t.Fatalf("schema rejects %s (from %+v)", b, e)
		}
		got, err := usage.Decode(b)
		if err != nil {
			t.Fatalf("Decode(AppendEvent(%+v)) = %v (text %s)", e, err, b)
		}
		if !got.Data.Units.Equal(e.Data.Units) || !got.Time.Equal(e.Time) {
			t.Fatalf("Decode(AppendEvent(%+v)) = %+v", e, got)
		}
		got.Data.Units, got.Time = e.Data.Units, e.Time
		if got != e {
			t.Fatalf("Decode(AppendEvent(%+v)) = %+v", e, got)
		}
	})
}

// validEvent makes the fuzzer's attributes valid: strings in UTF-8 within
// their lengths, a subscription id made of its bytes.
func validEvent(id, source string, apiRequest bool, nanos int64, subject []byte, anonymous bool) usage.Event {
	e := usage.Event{
		ID:     fit(id, 1, 256),
		Source: fit(source, 1, 256),
		Type:   usage.TypeUsageRecord,
		Time:   time.Unix(0, nanos).UTC(),
	}
	if apiRequest {
		e.Type = usage.TypeAPIRequest
	}
	var u uuid.UUID
	copy(u[:], subject)
	e.Subject = u.String()
	if anonymous && apiRequest {
		e.Subject = usage.AnonymousSubject
	}
	return e
}

func validData(apiRequest bool, apiID, keyID, method, route, path string, status uint16, latency uint32,
	reqBytes, resBytes uint64, micro int64, refusal string) usage.Data {
	d := usage.Data{
		APIID:         fit(apiID, 1, 128),
		KeyID:         fit(keyID, 0, 128),
		Method:        strings.Map(upper, fit(method, 0, 16)),
		Route:         fit(route, 0, 512),
		Path:          fit(path, 0, 2048),
		LatencyMS:     latency,
		RequestBytes:  reqBytes % (1 << 53),
		ResponseBytes: resBytes % (1 << 53),
		Units:         decimal.New(max(micro, -micro, 0)%(usage.MaxUnitsMicro+1), -6),
		Refusal:       strings.Map(lower, fit(refusal, 0, 32)),
	}
	if status != 0 {
		d.Status = 100 + status%500
	}
	if d.Refusal != "" && (d.Refusal[0] < 'a' || d.Refusal[0] > 'z') {
		d.Refusal = "r" + d.Refusal[1:]
	}
	if apiRequest {
		// A veil.api.request carries every field the gateway knows.
		if d.Method == "" {
			d.Method = "GET"
		}
		d.Route = fit(d.Route, 1, 512)
		d.Status = max(d.Status, 100)
	}
	return d
}

// fit returns s in valid UTF-8 with between lo and hi code points.
func fit(s string, lo, hi int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	n := 0
	for i := range s {
		if n == hi {
			return s[:i]
		}
		n++
	}
	for ; n < lo; n++ {
		s += "x"
	}
	return s
}

func upper(r rune) rune { return 'A' + abs(r)%26 }

func lower(r rune) rune {
	if r == '_' {
		return r
	}
	return 'a' + abs(r)%26
}

func abs(r rune) rune {
	if r < 0 {
		return -r
	}
	return r
}

// TestAppendEventMatchesMarshal holds MarshalJSON to AppendEvent.
func TestAppendEventMatchesMarshal(t *testing.T) {
	e, err := usage.Decode([]byte(with(func(map[string]any) {})))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := e.MarshalJSON()
	if a := usage.AppendEvent(nil, &e); string(a) != string(m) {
		t.Fatalf("AppendEvent = %s; want MarshalJSON's %s", a, m)
	}
}
