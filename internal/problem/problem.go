// Package problem writes RFC 9457 problem details. Only HTTP layers use it;
// domain packages return errors and the HTTP layer maps them here.
package problem

import (
	"encoding/json"
	"net/http"
)

// TypeBase prefixes every problem type URI Veil emits. The README documents
// each type.
const TypeBase = "https://veil.dev/problems/"

// Details is one problem. Extensions are merged into the top-level object,
// as RFC 9457 allows.
type Details struct {
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Status     int            `json:"status"`
	Detail     string         `json:"detail,omitempty"`
	Instance   string         `json:"instance,omitempty"`
	Extensions map[string]any `json:"-"`
}

// New returns a problem of the given short type (appended to TypeBase).
func New(status int, typ, title, detail string) Details {
	return Details{Type: TypeBase + typ, Title: title, Status: status, Detail: detail}
}

// With returns a copy of d carrying one more extension member.
func (d Details) With(key string, value any) Details {
	ext := make(map[string]any, len(d.Extensions)+1)
	for k, v := range d.Extensions {
		ext[k] = v
	}
	ext[key] = value
	d.Extensions = ext
	return d
}

// MarshalJSON flattens the extensions into the problem object.
func (d Details) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, 5+len(d.Extensions))
	for k, v := range d.Extensions {
		m[k] = v
	}
	m["type"] = d.Type
	m["title"] = d.Title
	m["status"] = d.Status
	if d.Detail != "" {
		m["detail"] = d.Detail
	}
	if d.Instance != "" {
		m["instance"] = d.Instance
	}
	return json.Marshal(m)
}

// Write sends d as application/problem+json with its status.
func Write(w http.ResponseWriter, d Details) {
	b, err := json.Marshal(d)
	if err != nil {
		// Extensions are built by Veil's own code from plain values; a failure
		// here is a programming error, answered without the extensions.
		b, _ = json.Marshal(Details{Type: d.Type, Title: d.Title, Status: d.Status, Detail: d.Detail})
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(d.Status)
	_, _ = w.Write(append(b, '\n'))
}
