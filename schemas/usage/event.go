// Package usage defines the usage event, Veil's unit of metering: a
// CloudEvents 1.0 event in structured JSON mode. Decoding follows the JSON
// Schema in schemas/usage-event.schema.json exactly (a test holds the two
// together); the time window, which depends on the receiver's clock, is
// checked separately by CheckTime.
package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
)

// Event types Veil knows.
const (
	// TypeAPIRequest is a call through the Veil gateway.
	TypeAPIRequest = "veil.api.request"
	// TypeUsageRecord is usage reported by another producer through ingest.
	TypeUsageRecord = "veil.usage.record"
)

// SpecVersion is the only CloudEvents version accepted.
const SpecVersion = "1.0"

// Time-window defaults.
const (
	// DefaultMaxFuture is how far ahead of the receiver's clock an event may be.
	DefaultMaxFuture = 5 * time.Minute
	// DefaultLateWindow is how old an event may be and still be accepted.
	DefaultLateWindow = 35 * 24 * time.Hour
)

// Limits of the stored columns, shared with the JSON Schema.
var (
	maxUnits       = decimal.New(1, 12) // exclusive
	unitsScale     = int32(6)
	maxUint32      = decimal.NewFromInt(4294967295)
	maxSafeInteger = decimal.NewFromInt(9007199254740991)
)

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
}

// MarshalJSON encodes the event in CloudEvents structured mode, units as an
// exact JSON number.
func (e Event) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(384)
	b.WriteString(`{"specversion":"1.0","id":`)
	writeString(&b, e.ID)
	b.WriteString(`,"source":`)
	writeString(&b, e.Source)
	b.WriteString(`,"type":`)
	writeString(&b, e.Type)
	b.WriteString(`,"time":"`)
	b.WriteString(e.Time.UTC().Format(time.RFC3339Nano))
	b.WriteString(`","subject":`)
	writeString(&b, e.Subject)
	b.WriteString(`,"datacontenttype":"application/json","data":{"api_id":`)
	writeString(&b, e.Data.APIID)
	d := e.Data
	if d.KeyID != "" {
		b.WriteString(`,"key_id":`)
		writeString(&b, d.KeyID)
	}
	if d.Method != "" {
		b.WriteString(`,"method":`)
		writeString(&b, d.Method)
	}
	if d.Route != "" {
		b.WriteString(`,"route":`)
		writeString(&b, d.Route)
	}
	if d.Path != "" || e.Type == TypeAPIRequest {
		b.WriteString(`,"path":`)
		writeString(&b, d.Path)
	}
	if d.Status != 0 {
		b.WriteString(`,"status":`)
		b.WriteString(strconv.FormatUint(uint64(d.Status), 10))
	}
	b.WriteString(`,"latency_ms":`)
	b.WriteString(strconv.FormatUint(uint64(d.LatencyMS), 10))
	b.WriteString(`,"request_bytes":`)
	b.WriteString(strconv.FormatUint(d.RequestBytes, 10))
	b.WriteString(`,"response_bytes":`)
	b.WriteString(strconv.FormatUint(d.ResponseBytes, 10))
	b.WriteString(`,"units":`)
	b.WriteString(d.Units.String())
	b.WriteString(`}}`)
	return b.Bytes(), nil
}

func writeString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // a string always marshals
	b.Write(q)
}

// Decode parses one event from its JSON encoding and checks it against the
// schema. Errors are *Error with a stable Reason.
func Decode(raw []byte) (Event, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return Event{}, newError(ReasonMalformedJSON, "", "%s", jsonDetail(err))
	}
	if top == nil {
		return Event{}, newError(ReasonMalformedJSON, "", "event must be a JSON object")
	}
	var e Event
	for name, v := range top {
		switch name {
		case "specversion":
			s, err := stringField(name, v, 0, -1)
			if err != nil {
				return Event{}, err
			}
			if s != SpecVersion {
				return Event{}, newError(ReasonUnsupportedSpecVersion, name, "specversion %q is not supported; use %q", s, SpecVersion)
			}
		case "id", "source":
			s, err := stringField(name, v, 1, 256)
			if err != nil {
				return Event{}, err
			}
			if name == "id" {
				e.ID = s
			} else {
				e.Source = s
			}
		case "type":
			s, err := stringField(name, v, 0, -1)
			if err != nil {
				return Event{}, err
			}
			if s != TypeAPIRequest && s != TypeUsageRecord {
				return Event{}, newError(ReasonUnknownType, name, "type %q is not one of %s, %s", s, TypeAPIRequest, TypeUsageRecord)
			}
			e.Type = s
		case "time":
			s, err := stringField(name, v, 0, -1)
			if err != nil {
				return Event{}, err
			}
			t, perr := parseTime(s)
			if perr != nil {
				return Event{}, newError(ReasonInvalidTime, name, "time %q is not RFC 3339", s)
			}
			e.Time = t
		case "subject":
			s, err := stringField(name, v, 1, 128)
			if err != nil {
				return Event{}, err
			}
			e.Subject = s
		case "datacontenttype":
			s, err := stringField(name, v, 0, -1)
			if err != nil {
				return Event{}, err
			}
			if s != "application/json" {
				return Event{}, newError(ReasonInvalidField, name, "datacontenttype must be application/json")
			}
		case "dataschema":
			if _, err := stringField(name, v, 0, 512); err != nil {
				return Event{}, err
			}
		case "data":
			// decoded below, once the type is known
		default:
			if !validExtensionName(name) {
				return Event{}, newError(ReasonUnknownField, name, "attribute %q is not a CloudEvents attribute or a valid extension name (lower-case letters and digits, at most 20)", name)
			}
			switch kindOf(v) {
			case '"', 'n', 't':
			default:
				return Event{}, newError(ReasonInvalidField, name, "extension %q must be a string, number or boolean", name)
			}
		}
	}
	for _, name := range [...]string{"specversion", "id", "source", "type", "time", "subject", "data"} {
		if _, ok := top[name]; !ok {
			return Event{}, newError(ReasonMissingField, name, "%s is required", name)
		}
	}
	d, err := decodeData(top["data"], e.Type == TypeAPIRequest)
	if err != nil {
		return Event{}, err
	}
	e.Data = d
	return e, nil
}

func decodeData(raw json.RawMessage, apiRequest bool) (Data, error) {
	if kindOf(raw) != '{' {
		return Data{}, newError(ReasonInvalidField, "data", "data must be a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Data{}, newError(ReasonMalformedJSON, "data", "%s", jsonDetail(err))
	}
	d := Data{Units: decimal.NewFromInt(1)}
	for name, v := range fields {
		field := "data." + name
		var err error
		switch name {
		case "api_id":
			d.APIID, err = stringField(field, v, 1, 128)
		case "key_id":
			d.KeyID, err = stringField(field, v, 0, 128)
		case "method":
			d.Method, err = stringField(field, v, 0, -1)
			if err == nil && !validMethod(d.Method) {
				err = newError(ReasonInvalidField, field, "method %q must be 1 to 16 upper-case letters", d.Method)
			}
		case "route":
			d.Route, err = stringField(field, v, 1, 512)
		case "path":
			d.Path, err = stringField(field, v, 0, 2048)
		case "status":
			var n decimal.Decimal
			n, err = integerField(field, v, decimal.NewFromInt(100), decimal.NewFromInt(599))
			d.Status = uint16(n.IntPart())
		case "latency_ms":
			var n decimal.Decimal
			n, err = integerField(field, v, decimal.Zero, maxUint32)
			d.LatencyMS = uint32(n.IntPart())
		case "request_bytes":
			var n decimal.Decimal
			n, err = integerField(field, v, decimal.Zero, maxSafeInteger)
			d.RequestBytes = uint64(n.IntPart())
		case "response_bytes":
			var n decimal.Decimal
			n, err = integerField(field, v, decimal.Zero, maxSafeInteger)
			d.ResponseBytes = uint64(n.IntPart())
		case "units":
			d.Units, err = unitsField(field, v)
		default:
			err = newError(ReasonUnknownField, field, "data field %q is not part of the usage event", name)
		}
		if err != nil {
			return Data{}, err
		}
	}
	required := []string{"api_id"}
	if apiRequest {
		required = append(required, "method", "route", "path", "status", "latency_ms")
	}
	for _, name := range required {
		if _, ok := fields[name]; !ok {
			return Data{}, newError(ReasonMissingField, "data."+name, "data.%s is required", name)
		}
	}
	return d, nil
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

// kindOf returns the first byte that tells a JSON value's kind: '{', '[',
// '"', 't' (true or false), 'n' (number) or 0 (null or empty).
func kindOf(v json.RawMessage) byte {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return 0
	}
	switch c := v[0]; {
	case c == '{' || c == '[' || c == '"':
		return c
	case c == 't' || c == 'f':
		return 't'
	case c == '-' || (c >= '0' && c <= '9'):
		return 'n'
	}
	return 0
}

// stringField decodes a JSON string whose length in code points lies in
// [minLen, maxLen]; maxLen < 0 means unbounded.
func stringField(field string, v json.RawMessage, minLen, maxLen int) (string, error) {
	if kindOf(v) != '"' {
		return "", newError(ReasonInvalidField, field, "%s must be a string", field)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", newError(ReasonMalformedJSON, field, "%s", jsonDetail(err))
	}
	n := utf8.RuneCountInString(s)
	if n < minLen {
		if minLen == 1 {
			return "", newError(ReasonInvalidField, field, "%s must not be empty", field)
		}
		return "", newError(ReasonInvalidField, field, "%s must be at least %d characters", field, minLen)
	}
	if maxLen >= 0 && n > maxLen {
		return "", newError(ReasonInvalidField, field, "%s must be at most %d characters", field, maxLen)
	}
	return s, nil
}

func numberField(field string, v json.RawMessage) (decimal.Decimal, error) {
	if kindOf(v) != 'n' {
		return decimal.Decimal{}, newError(ReasonInvalidField, field, "%s must be a number", field)
	}
	d, err := decimal.NewFromString(string(bytes.TrimSpace(v)))
	if err != nil {
		return decimal.Decimal{}, newError(ReasonInvalidField, field, "%s is not a valid number", field)
	}
	return d, nil
}

func integerField(field string, v json.RawMessage, lo, hi decimal.Decimal) (decimal.Decimal, error) {
	d, err := numberField(field, v)
	if err != nil {
		return d, err
	}
	if !d.IsInteger() {
		return d, newError(ReasonInvalidField, field, "%s must be an integer", field)
	}
	if d.LessThan(lo) || d.GreaterThan(hi) {
		return d, newError(ReasonInvalidField, field, "%s must be between %s and %s", field, lo, hi)
	}
	return d, nil
}

func unitsField(field string, v json.RawMessage) (decimal.Decimal, error) {
	d, err := numberField(field, v)
	if err != nil {
		return d, newError(ReasonInvalidUnits, field, "units must be a number")
	}
	switch {
	case d.IsNegative():
		return d, newError(ReasonInvalidUnits, field, "units must not be negative")
	case !d.Shift(unitsScale).IsInteger():
		return d, newError(ReasonInvalidUnits, field, "units may have at most %d decimal places", unitsScale)
	case d.GreaterThanOrEqual(maxUnits):
		return d, newError(ReasonInvalidUnits, field, "units must be below 10^12")
	}
	return d.Truncate(unitsScale), nil
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

// parseTime accepts RFC 3339 date-times, with the letters T and Z in either
// case as RFC 3339 allows.
func parseTime(s string) (time.Time, error) {
	if strings.ContainsAny(s, "tz") {
		s = strings.ToUpper(s)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse time: %w", err)
	}
	return t.UTC(), nil
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
