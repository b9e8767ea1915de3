package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
	"github.com/valyala/fastjson"
)

// parsers lets Decode reuse fastjson parsers, and their memory, across calls.
var parsers fastjson.ParserPool

// Decode parses one event from its JSON encoding and checks it against the
// schema. Errors are *Error with a stable Reason.
//
// It runs on the processors' hot path: fastjson parses the text (checking
// its structure), one pass over the bytes holds the tokens to RFC 8259 where
// fastjson is lenient (control characters and escapes in strings, the number
// grammar), and the fields are read from fastjson's tree, allocating only the
// strings kept. It accepts exactly the texts encoding/json's Valid does; the
// fuzz test holds it to that.
func Decode(raw []byte) (Event, error) {
	if !utf8.Valid(raw) {
		return Event{}, newError(ReasonMalformedJSON, "", "the event is not valid UTF-8")
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(raw)
	if err != nil || !lexOK(raw) {
		// fastjson checks the structure and lexOK the tokens; for the
		// detail, ask encoding/json, which says where the text goes wrong.
		var probe any
		return Event{}, newError(ReasonMalformedJSON, "", "%s", jsonDetail(json.Unmarshal(raw, &probe)))
	}
	top, err := v.Object()
	if err != nil {
		return Event{}, newError(ReasonMalformedJSON, "", "event must be a JSON object")
	}
	var a attributes
	// Later duplicates win, as in the JSON Schema validator's decoding.
	top.Visit(a.visit)
	if a.failure != nil {
		a.failure.ID = string(top.Get("id").GetStringBytes())
		return Event{}, a.failure
	}
	e := a.e
	for i, name := range [...]string{"specversion", "id", "source", "type", "time", "subject", "data"} {
		if a.seen&(1<<i) == 0 {
			err := newError(ReasonMissingField, name, "%s is required", name)
			err.ID = e.ID
			return Event{}, err
		}
	}
	d, derr := decodeData(a.data, e.Type == TypeAPIRequest)
	if derr != nil {
		derr.ID = e.ID
		return Event{}, derr
	}
	e.Data = d
	if !validSubject(e.Subject, e.Type, d.Refusal) {
		err := newError(ReasonInvalidSubject, "subject", "subject %q must be a subscription id (a lower-case UUID)", e.Subject)
		err.ID = e.ID
		return Event{}, err
	}
	return e, nil
}

// attributes collects an event's top-level attributes as Decode visits
// them: the event so far, the data object (decoded once the type is known),
// which required attributes were seen, and the first failure.
type attributes struct {
	e       Event
	data    *fastjson.Value
	seen    uint8
	failure *Error
}

// The bits of attributes.seen, in the order Decode names missing ones.
const (
	seenSpec = 1 << iota
	seenID
	seenSource
	seenType
	seenTime
	seenSubject
	seenData
)

// visit checks one top-level attribute.
func (a *attributes) visit(key []byte, v *fastjson.Value) {
	if a.failure != nil {
		return
	}
	switch name := string(key); name {
	case "specversion":
		a.seen |= seenSpec
		s, err := stringField(name, v, 0, -1)
		if err != nil {
			a.failure = err
		} else if s != SpecVersion {
			a.failure = newError(ReasonUnsupportedSpecVersion, name, "specversion %q is not supported; use %q", s, SpecVersion)
		}
	case "id":
		a.seen |= seenID
		a.e.ID, a.failure = stringField(name, v, 1, 256)
	case "source":
		a.seen |= seenSource
		a.e.Source, a.failure = stringField(name, v, 1, 256)
	case "type":
		a.seen |= seenType
		a.e.Type, a.failure = typeField(name, v)
	case "time":
		a.seen |= seenTime
		a.e.Time, a.failure = timeField(name, v)
	case "subject":
		a.seen |= seenSubject
		a.e.Subject, a.failure = stringField(name, v, 1, 128)
	case "datacontenttype":
		s, err := stringField(name, v, 0, -1)
		if err != nil {
			a.failure = err
		} else if s != "application/json" {
			a.failure = newError(ReasonInvalidField, name, "datacontenttype must be application/json")
		}
	case "dataschema":
		_, a.failure = stringField(name, v, 0, 512)
	case "data":
		a.seen |= seenData
		a.data = v
	default:
		a.failure = extensionField(name, v)
	}
}

// typeField returns the event type, one of the types Veil knows.
func typeField(name string, v *fastjson.Value) (string, *Error) {
	s, err := stringField(name, v, 0, -1)
	switch {
	case err != nil:
		return "", err
	case s != TypeAPIRequest && s != TypeUsageRecord:
		return "", newError(ReasonUnknownType, name, "type %q is not one of %s, %s", s, TypeAPIRequest, TypeUsageRecord)
	}
	return s, nil
}

// timeField returns the event time, an RFC 3339 date-time.
func timeField(name string, v *fastjson.Value) (time.Time, *Error) {
	s, err := stringField(name, v, 0, -1)
	if err != nil {
		return time.Time{}, err
	}
	t, perr := parseTime(s)
	if perr != nil {
		return time.Time{}, newError(ReasonInvalidTime, name, "time %q is not RFC 3339", s)
	}
	return t, nil
}

// extensionField checks a CloudEvents extension attribute: a valid name and
// a string, number or boolean value.
func extensionField(name string, v *fastjson.Value) *Error {
	if !validExtensionName(name) {
		return newError(ReasonUnknownField, name, "attribute %q is not a CloudEvents attribute or a valid extension name (lower-case letters and digits, at most 20)", name)
	}
	switch v.Type() {
	case fastjson.TypeString, fastjson.TypeNumber, fastjson.TypeTrue, fastjson.TypeFalse:
		return nil
	}
	return newError(ReasonInvalidField, name, "extension %q must be a string, number or boolean", name)
}

// validSubject holds the subject to what it keys: a subscription id, the
// Kafka key and the Redis counters' names. A subscription id is a UUID in
// Postgres's lower-case text form, so one subscription has one spelling
// (one counter) and no subject can hold the braces of a Redis Cluster hash
// tag. The gateway's anonymous refusals are the one exception.
func validSubject(s, typ, refusal string) bool {
	if s == AnonymousSubject {
		return typ == TypeAPIRequest && refusal != ""
	}
	return IsSubscriptionID(s)
}

// IsSubscriptionID reports whether s is a subscription id in its one
// spelling: a UUID in Postgres's lower-case text form.
func IsSubscriptionID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

func decodeData(v *fastjson.Value, apiRequest bool) (Data, *Error) {
	fields, err := v.Object()
	if err != nil {
		return Data{}, newError(ReasonInvalidField, "data", "data must be a JSON object")
	}
	d := Data{Units: decimal.NewFromInt(1)}
	var (
		seen    uint8
		failure *Error
	)
	const (
		seenAPIID = 1 << iota
		seenMethod
		seenRoute
		seenPath
		seenStatus
		seenLatency
	)
	fields.Visit(func(key []byte, v *fastjson.Value) {
		if failure != nil {
			return
		}
		var n int64
		switch string(key) {
		case "api_id":
			seen |= seenAPIID
			d.APIID, failure = stringField("data.api_id", v, 1, 128)
		case "key_id":
			d.KeyID, failure = stringField("data.key_id", v, 0, 128)
		case "method":
			seen |= seenMethod
			d.Method, failure = stringField("data.method", v, 0, -1)
			if failure == nil && !validMethod(d.Method) {
				failure = newError(ReasonInvalidField, "data.method", "method %q must be 1 to 16 upper-case letters", d.Method)
			}
		case "route":
			seen |= seenRoute
			d.Route, failure = stringField("data.route", v, 1, 512)
		case "path":
			seen |= seenPath
			d.Path, failure = stringField("data.path", v, 0, 2048)
		case "status":
			seen |= seenStatus
			n, failure = integerField("data.status", v, 100, 599)
			d.Status = uint16(n)
		case "latency_ms":
			seen |= seenLatency
			n, failure = integerField("data.latency_ms", v, 0, 4294967295)
			d.LatencyMS = uint32(n)
		case "request_bytes":
			n, failure = integerField("data.request_bytes", v, 0, maxSafeInteger)
			d.RequestBytes = uint64(n)
		case "response_bytes":
			n, failure = integerField("data.response_bytes", v, 0, maxSafeInteger)
			d.ResponseBytes = uint64(n)
		case "units":
			d.Units, failure = unitsField("data.units", v)
		case "refusal":
			d.Refusal, failure = refusalField("data.refusal", v)
		default:
			failure = newError(ReasonUnknownField, "data."+string(key), "data field %q is not part of the usage event", key)
		}
	})
	if failure != nil {
		return Data{}, failure
	}
	required := [...]string{"api_id", "method", "route", "path", "status", "latency_ms"}
	n := 1
	if apiRequest {
		n = len(required)
	}
	for i, name := range required[:n] {
		if seen&(1<<i) == 0 {
			return Data{}, newError(ReasonMissingField, "data."+name, "data.%s is required", name)
		}
	}
	return d, nil
}

// stringField returns a JSON string whose length in code points lies in
// [minLen, maxLen]; maxLen < 0 means unbounded.
func stringField(field string, v *fastjson.Value, minLen, maxLen int) (string, *Error) {
	b, err := v.StringBytes()
	if err != nil {
		return "", newError(ReasonInvalidField, field, "%s must be a string", field)
	}
	n := utf8.RuneCount(b)
	if n < minLen {
		if minLen == 1 {
			return "", newError(ReasonInvalidField, field, "%s must not be empty", field)
		}
		return "", newError(ReasonInvalidField, field, "%s must be at least %d characters", field, minLen)
	}
	if maxLen >= 0 && n > maxLen {
		return "", newError(ReasonInvalidField, field, "%s must be at most %d characters", field, maxLen)
	}
	return string(b), nil
}

// numberText returns the literal text of a JSON number; lexOK has already
// held it to the JSON grammar.
func numberText(v *fastjson.Value) ([]byte, bool) {
	if v.Type() != fastjson.TypeNumber {
		return nil, false
	}
	return v.MarshalTo(nil), true
}

// integerField returns a JSON number with no fractional part in [lo, hi].
// Plain integer literals, the common case, are parsed without allocating;
// forms such as 2e2 or 200.0 go through decimal.
func integerField(field string, v *fastjson.Value, lo, hi int64) (int64, *Error) {
	if v.Type() != fastjson.TypeNumber {
		return 0, newError(ReasonInvalidField, field, "%s must be a number", field)
	}
	n, err := v.Int64()
	if err != nil {
		d, derr := decimal.NewFromString(string(v.MarshalTo(nil)))
		if derr != nil {
			return 0, newError(ReasonInvalidField, field, "%s is not a valid number", field)
		}
		if !d.IsInteger() {
			return 0, newError(ReasonInvalidField, field, "%s must be an integer", field)
		}
		if d.LessThan(decimal.NewFromInt(lo)) || d.GreaterThan(decimal.NewFromInt(hi)) {
			return 0, newError(ReasonInvalidField, field, "%s must be between %d and %d", field, lo, hi)
		}
		return d.IntPart(), nil
	}
	if n < lo || n > hi {
		return 0, newError(ReasonInvalidField, field, "%s must be between %d and %d", field, lo, hi)
	}
	return n, nil
}

func unitsField(field string, v *fastjson.Value) (decimal.Decimal, *Error) {
	text, ok := numberText(v)
	if !ok {
		return decimal.Decimal{}, newError(ReasonInvalidUnits, field, "units must be a number")
	}
	d, err := decimal.NewFromString(string(text))
	switch {
	case err != nil:
		return d, newError(ReasonInvalidUnits, field, "units is not a valid number")
	case d.IsNegative():
		return d, newError(ReasonInvalidUnits, field, "units must not be negative")
	case !d.Shift(unitsScale).IsInteger():
		return d, newError(ReasonInvalidUnits, field, "units may have at most %d decimal places", unitsScale)
	case d.GreaterThan(maxUnits):
		return d, newError(ReasonInvalidUnits, field, "units must be at most %d (10^9) per event", int64(MaxUnits))
	}
	return d.Truncate(unitsScale), nil
}

// refusalField returns a refusal reason: empty (admitted), or a lower-case
// letter followed by at most 31 lower-case letters and underscores: short,
// stable codes that analysts group by, not free text.
func refusalField(field string, v *fastjson.Value) (string, *Error) {
	b, err := v.StringBytes()
	if err != nil {
		return "", newError(ReasonInvalidRefusal, field, "refusal must be a string")
	}
	if !validRefusal(b) {
		return "", newError(ReasonInvalidRefusal, field, "refusal %q must be empty or a lower-case letter followed by at most 31 lower-case letters and underscores", b)
	}
	return string(b), nil
}

func validRefusal(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if len(b) > 32 || b[0] < 'a' || b[0] > 'z' {
		return false
	}
	for _, c := range b[1:] {
		if (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

func validMethod(s string) bool {
	if len(s) < 1 || len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

func validExtensionName(s string) bool {
	if len(s) < 1 || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// parseTime accepts RFC 3339 date-times, with T and Z in either case as RFC
// 3339 allows. time.Parse alone is laxer (it takes a one-digit hour, for
// one), so the shape is checked first; times whose UTC year falls outside
// 0001–9999 are refused because they cannot be written back as RFC 3339.
func parseTime(s string) (time.Time, error) {
	if !rfc3339Shape(s) {
		return time.Time{}, errors.New("parse time: not RFC 3339")
	}
	if strings.ContainsAny(s, "tz") {
		s = strings.ToUpper(s)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse time: %w", err)
	}
	t = t.UTC()
	if y := t.Year(); y < 1 || y > 9999 {
		return time.Time{}, errors.New("parse time: year out of range")
	}
	return t, nil
}

// rfc3339Shape reports whether s has the form
// YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM) with digits where digits belong.
func rfc3339Shape(s string) bool {
	digits := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		return len(s) > 0
	}
	if len(s) < 20 || !digits(s[0:4]) || s[4] != '-' || !digits(s[5:7]) || s[7] != '-' || !digits(s[8:10]) ||
		(s[10] != 'T' && s[10] != 't') || !digits(s[11:13]) || s[13] != ':' || !digits(s[14:16]) || s[16] != ':' || !digits(s[17:19]) {
		return false
	}
	rest := s[19:]
	if len(rest) > 0 && rest[0] == '.' {
		i := 1
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 1 {
			return false
		}
		rest = rest[i:]
	}
	switch {
	case rest == "Z" || rest == "z":
		return true
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && digits(rest[1:3]) && rest[3] == ':' && digits(rest[4:6]):
		return rest[1:3] <= "23" && rest[4:6] <= "59"
	}
	return false
}

func jsonDetail(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, se.Error())
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field == "" {
		return fmt.Sprintf("expected a JSON object, got %s", te.Value)
	}
	return err.Error()
}

// lexOK reports whether every token of b is lexically valid JSON: strings
// without raw control characters and with valid escapes, numbers in JSON's
// grammar, only true, false and null as bare words, and every number and word
// ending at a delimiter. The structure is fastjson's to check.
func lexOK(b []byte) bool {
	for i := 0; i < len(b); {
		switch c := b[i]; c {
		case ' ', '\t', '\n', '\r', '{', '}', '[', ']', ':', ',':
			i++
		case '"':
			n := stringLen(b[i:])
			if n == 0 {
				return false
			}
			i += n
		case 't', 'f', 'n':
			word := "null"
			if c == 't' {
				word = "true"
			} else if c == 'f' {
				word = "false"
			}
			if !bytes.HasPrefix(b[i:], []byte(word)) || !delimited(b, i+len(word)) {
				return false
			}
			i += len(word)
		default:
			n := numberLen(b[i:])
			if n == 0 || !delimited(b, i+n) {
				return false
			}
			i += n
		}
	}
	return true
}

// delimited reports whether a number or word ending at i is followed by the
// end of the text, whitespace or a structural character.
func delimited(b []byte, i int) bool {
	if i >= len(b) {
		return true
	}
	switch b[i] {
	case ' ', '\t', '\n', '\r', '}', ']', ',', ':':
		return true
	}
	return false
}

// stringLen returns the length of the JSON string literal at the start of
// b, quotes included, or 0 if it is not a valid one.
func stringLen(b []byte) int {
	for i := 1; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c < 0x20:
			return 0
		case c == '\\':
			if i+1 >= len(b) {
				return 0
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return 0
				}
				for _, h := range b[i+2 : i+6] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return 0
					}
				}
				i += 6
			default:
				return 0
			}
		default:
			i++
		}
	}
	return 0
}

// numberLen returns the length of the JSON number at the start of b
// (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?), or 0 if there is none.
func numberLen(b []byte) int {
	i := 0
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return 0
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return 0
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return 0
		}
	}
	return i
}
