package usage

import (
	"strconv"
	"strings"
	"time"
)

// AppendEvent appends e's JSON encoding (CloudEvents structured mode,
// units as an exact JSON number) to b and returns the extended slice. It is
// the one writer of the event's JSON: the gateway calls it on every
// request, so it allocates nothing beyond growing b (pass a buffer of about
// 512 bytes and it does not grow either).
//
// Optional data fields are left out when empty; path is always written for
// a veil.api.request, whose schema requires it. Strings are written as they
// are, except that invalid UTF-8 becomes U+FFFD: paths decode percent
// escapes into any byte, and Decode refuses text that is not UTF-8. An
// event that Decode accepted encodes to a text Decode turns back into the
// same event.
func AppendEvent(b []byte, e *Event) []byte {
	b = append(b, `{"specversion":"1.0","id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"type":`...)
	b = appendString(b, e.Type)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","subject":`...)
	b = appendString(b, e.Subject)
	b = append(b, `,"datacontenttype":"application/json","data":`...)
	b = appendData(b, &e.Data, e.Type == TypeAPIRequest)
	return append(b, '}')
}

// appendData appends the data object.
func appendData(b []byte, d *Data, apiRequest bool) []byte {
	b = append(b, `{"api_id":`...)
	b = appendString(b, d.APIID)
	if d.KeyID != "" {
		b = append(b, `,"key_id":`...)
		b = appendString(b, d.KeyID)
	}
	if d.Method != "" {
		b = append(b, `,"method":`...)
		b = appendString(b, d.Method)
	}
	if d.Route != "" {
		b = append(b, `,"route":`...)
		b = appendString(b, d.Route)
	}
	if d.Path != "" || apiRequest {
		b = append(b, `,"path":`...)
		b = appendString(b, d.Path)
	}
	if d.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendUint(b, uint64(d.Status), 10)
	}
	b = append(b, `,"latency_ms":`...)
	b = strconv.AppendUint(b, uint64(d.LatencyMS), 10)
	b = append(b, `,"request_bytes":`...)
	b = strconv.AppendUint(b, d.RequestBytes, 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendUint(b, d.ResponseBytes, 10)
	b = append(b, `,"units":`...)
	b = append(b, d.Units.String()...)
	if d.Refusal != "" {
		b = append(b, `,"refusal":`...)
		b = appendString(b, d.Refusal)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string: quotes and backslashes escaped,
// control characters as \u00XX, invalid UTF-8 as U+FFFD, everything else
// as it is.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	s = strings.ToValidUTF8(s, "\uFFFD")
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '"' || ch == '\\':
			b = append(b, '\\', ch)
		case ch < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[ch>>4], hex[ch&0xf])
		default:
			b = append(b, ch)
		}
	}
	return append(b, '"')
}
