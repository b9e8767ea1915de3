package usage

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// appendStringCases are strings a request can put into an event: paths
// decode percent escapes into any byte.
var appendStringCases = []string{
	"",
	"/forecast/paris",
	`quote " and backslash \`,
	"control \x00\x01\x1f\t\n\r",
	"del \x7f",
	"unicode é € 𝄞",
	"line separators \u2028\u2029",
	"html <script>&</script>",
	"invalid utf-8 \xff\xfe",
	"truncated rune \xe2\x82",
	"lone surrogate \xed\xa0\x80",
}

func TestAppendString(t *testing.T) {
	for i, s := range appendStringCases {
		t.Run(strconv.Itoa(i), func(t *testing.T) { checkAppendString(t, s) })
	}
}

// FuzzAppendString holds appendString to valid JSON (and valid UTF-8,
// which the usage-event decoder insists on) for any string.
func FuzzAppendString(f *testing.F) {
	for _, s := range appendStringCases {
		f.Add(s)
	}
	f.Fuzz(checkAppendString)
}

func checkAppendString(t *testing.T, s string) {
	t.Helper()
	prefix := []byte(`{"k":`)
	b := appendString(prefix, s)
	if string(b[:len(prefix)]) != string(prefix) {
		t.Fatalf("appendString(%q) changed the bytes before it: %q", s, b)
	}
	b = append(b, '}')
	if !utf8.Valid(b) {
		t.Fatalf("appendString(%q) = %q; not valid UTF-8", s, b[len(prefix):len(b)-1])
	}
	var v struct{ K string }
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("appendString(%q) = %q; not a JSON string: %v", s, b[len(prefix):len(b)-1], err)
	}
	if want := strings.ToValidUTF8(s, "\uFFFD"); v.K != want {
		t.Fatalf("appendString(%q) decodes to %q; want %q", s, v.K, want)
	}
}
