package usage_test

import (
	"encoding/json"
	"testing"

	"github.com/veil-platform/veil/schemas/usage"
)

// FuzzDecode feeds arbitrary bytes to the decoder. It must never panic, and
// whatever it accepts must survive Marshal and Decode unchanged and satisfy
// the JSON Schema.
func FuzzDecode(f *testing.F) {
	for _, tc := range cases {
		f.Add([]byte(tc.json))
	}
	s := compileSchema(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := usage.Decode(raw)
		if err == nil && !json.Valid(raw) {
			t.Fatalf("Decode accepts %q, which is not valid JSON", raw)
		}
		if err != nil {
			if _, ok := err.(*usage.Error); !ok {
				t.Fatalf("Decode(%q) error %T %v; want *usage.Error", raw, err, err)
			}
			return
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("Marshal(%+v) = %v", e, err)
		}
		if !schemaAccepts(s, string(b)) {
			t.Fatalf("schema rejects re-encoded %s (from %q)", b, raw)
		}
		again, err := usage.Decode(b)
		if err != nil {
			t.Fatalf("Decode(Marshal(Decode(%q))) = %v", raw, err)
		}
		if !again.Data.Units.Equal(e.Data.Units) || !again.Time.Equal(e.Time) {
			t.Fatalf("round trip changed %+v into %+v", e, again)
		}
		again.Data.Units = e.Data.Units
		again.Time = e.Time
		if again != e {
			t.Fatalf("round trip changed %+v into %+v", e, again)
		}
	})
}
