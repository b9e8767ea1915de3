package keys

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/validation"
)

// Settings are a key's settings, given when it is issued.
type Settings struct {
	Name          string         `json:"name"`
	ExpiresAt     *time.Time     `json:"expires_at"`
	Methods       []string       `json:"methods"`
	Routes        []string       `json:"routes"`
	RatePerSecond *int           `json:"rate_per_second"`
	RatePerMinute *int           `json:"rate_per_minute"`
	Metadata      map[string]any `json:"metadata"`
	// AutoRotate opts in to rotation every RotateEveryDays (default 90).
	AutoRotate      bool `json:"auto_rotate"`
	RotateEveryDays int  `json:"rotate_every_days"`
	// AutoRenew extends the expiry by RenewDays instead of expiring.
	AutoRenew bool `json:"auto_renew"`
	RenewDays *int `json:"renew_days"`
}

var methods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}

// Validate reports the fields that are wrong at now, and fills the
// defaults in: RotateEveryDays 90, empty methods, routes and metadata
// instead of nil.
func (in *Settings) Validate(now time.Time) error {
	var v validation.Error
	if utf8.RuneCountInString(in.Name) > 200 {
		v.Add("name", "must be at most 200 characters")
	}
	if in.ExpiresAt != nil && !in.ExpiresAt.After(now) {
		v.Add("expires_at", "must be in the future")
	}
	if len(in.Methods) > len(methods) {
		v.Add("methods", "at most %d methods", len(methods))
	}
	for i, m := range in.Methods {
		if !methods[m] {
			v.Add(fmt.Sprintf("methods[%d]", i), "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		}
	}
	if len(in.Routes) > 100 {
		v.Add("routes", "at most 100 route patterns")
	}
	for i, r := range in.Routes {
		if err := enforcement.ValidRoute(r); err != nil || len(r) > 500 {
			v.Add(fmt.Sprintf("routes[%d]", i), "must be a route pattern such as /forecast/{city} or /v1/*, at most 500 characters")
		}
	}
	for _, r := range []struct {
		field string
		v     *int
	}{{"rate_per_second", in.RatePerSecond}, {"rate_per_minute", in.RatePerMinute}} {
		if r.v != nil && (*r.v < 1 || *r.v > 1_000_000) {
			v.Add(r.field, "must be 1 to 1000000, or null for the subscription's limit")
		}
	}
	if b, _ := json.Marshal(in.Metadata); len(b) > 8192 {
		v.Add("metadata", "must encode to at most 8 KiB")
	}
	if in.RotateEveryDays == 0 {
		in.RotateEveryDays = 90
	}
	if in.RotateEveryDays < 1 || in.RotateEveryDays > 3650 {
		v.Add("rotate_every_days", "must be 1 to 3650")
	}
	if in.AutoRenew && in.RenewDays == nil {
		v.Add("renew_days", "is required with auto_renew")
	}
	if in.RenewDays != nil && (*in.RenewDays < 1 || *in.RenewDays > 3650) {
		v.Add("renew_days", "must be 1 to 3650")
	}
	if in.AutoRenew && in.ExpiresAt == nil {
		v.Add("auto_renew", "needs expires_at: a key without expiry never expires")
	}
	if in.Methods == nil {
		in.Methods = []string{}
	}
	if in.Routes == nil {
		in.Routes = []string{}
	}
	if in.Metadata == nil {
		in.Metadata = map[string]any{}
	}
	return v.Err()
}

// Patch changes a key's settings; absent fields stay as they are, and
// null clears expires_at, the rate limits and renew_days.
type Patch struct {
	Name            *string         `json:"name"`
	ExpiresAt       Opt[time.Time]  `json:"expires_at"`
	Methods         *[]string       `json:"methods"`
	Routes          *[]string       `json:"routes"`
	RatePerSecond   Opt[int]        `json:"rate_per_second"`
	RatePerMinute   Opt[int]        `json:"rate_per_minute"`
	Metadata        *map[string]any `json:"metadata"`
	AutoRotate      *bool           `json:"auto_rotate"`
	RotateEveryDays *int            `json:"rotate_every_days"`
	AutoRenew       *bool           `json:"auto_renew"`
	RenewDays       Opt[int]        `json:"renew_days"`
}

// Apply returns in with the patch's fields changed.
func (p Patch) Apply(in Settings) Settings {
	set(&in.Name, p.Name)
	if p.ExpiresAt.Set {
		in.ExpiresAt = p.ExpiresAt.Value
	}
	set(&in.Methods, p.Methods)
	set(&in.Routes, p.Routes)
	if p.RatePerSecond.Set {
		in.RatePerSecond = p.RatePerSecond.Value
	}
	if p.RatePerMinute.Set {
		in.RatePerMinute = p.RatePerMinute.Value
	}
	set(&in.Metadata, p.Metadata)
	set(&in.AutoRotate, p.AutoRotate)
	set(&in.RotateEveryDays, p.RotateEveryDays)
	set(&in.AutoRenew, p.AutoRenew)
	if p.RenewDays.Set {
		in.RenewDays = p.RenewDays.Value
	}
	return in
}

// Opt is an optional, nullable JSON field of a patch: Set when the field
// was present, Value nil when it was null.
type Opt[T any] struct {
	Set   bool
	Value *T
}

// UnmarshalJSON implements json.Unmarshaler.
func (o *Opt[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if string(b) == "null" {
		o.Value = nil
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	o.Value = &v
	return nil
}

func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}
