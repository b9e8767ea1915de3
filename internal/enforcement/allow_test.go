package enforcement_test

import (
	"errors"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
)

func TestAllows(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	active := enforcement.KeyRecord{Status: enforcement.KeyActive}
	with := func(f func(*enforcement.KeyRecord)) enforcement.KeyRecord {
		r := active
		f(&r)
		return r
	}
	scoped := with(func(r *enforcement.KeyRecord) {
		r.Methods = []string{"GET", "HEAD"}
		r.Routes = []string{"/forecast/*", "/users/{id}", "/users/{id}/orders/*/items", "/"}
	})
	tests := []struct {
		name   string
		r      enforcement.KeyRecord
		method string
		path   string
		now    time.Time
		want   error
	}{
		{"active, no limits", active, "DELETE", "/anything/at/all", now, nil},
		{"suspended", with(func(r *enforcement.KeyRecord) { r.Status = enforcement.KeySuspended }), "GET", "/", now, enforcement.ErrKeyInactive},
		{"revoked", with(func(r *enforcement.KeyRecord) { r.Status = enforcement.KeyRevoked }), "GET", "/", now, enforcement.ErrKeyInactive},
		{"expired status", with(func(r *enforcement.KeyRecord) { r.Status = enforcement.KeyExpired }), "GET", "/", now, enforcement.ErrKeyExpired},
		{"unknown status", with(func(r *enforcement.KeyRecord) { r.Status = "" }), "GET", "/", now, enforcement.ErrKeyInactive},
		{"before expiry", with(func(r *enforcement.KeyRecord) { r.ExpiresAt = now.Add(time.Second) }), "GET", "/", now, nil},
		{"at expiry", with(func(r *enforcement.KeyRecord) { r.ExpiresAt = now }), "GET", "/", now, enforcement.ErrKeyExpired},
		{"past expiry", with(func(r *enforcement.KeyRecord) { r.ExpiresAt = now.Add(-time.Hour) }), "GET", "/", now, enforcement.ErrKeyExpired},
		{"rotated out, in grace", with(func(r *enforcement.KeyRecord) {
			r.Status, r.GraceUntil = enforcement.KeyRevoked, now.Add(time.Minute)
		}), "GET", "/", now, nil},
		{"rotated out, grace ended", with(func(r *enforcement.KeyRecord) {
			r.Status, r.GraceUntil = enforcement.KeyRevoked, now
		}), "GET", "/", now, enforcement.ErrKeyInactive},
		{"active with grace, in grace", with(func(r *enforcement.KeyRecord) { r.GraceUntil = now.Add(time.Minute) }), "GET", "/", now, nil},
		{"active with grace, grace ended", with(func(r *enforcement.KeyRecord) { r.GraceUntil = now.Add(-time.Minute) }), "GET", "/", now, enforcement.ErrKeyExpired},
		{"in grace but expired", with(func(r *enforcement.KeyRecord) {
			r.Status, r.GraceUntil, r.ExpiresAt = enforcement.KeyRevoked, now.Add(time.Hour), now
		}), "GET", "/", now, enforcement.ErrKeyExpired},
		{"suspended in grace", with(func(r *enforcement.KeyRecord) {
			r.Status, r.GraceUntil = enforcement.KeySuspended, now.Add(time.Hour)
		}), "GET", "/", now, enforcement.ErrKeyInactive},
		{"method allowed", scoped, "HEAD", "/forecast/today", now, nil},
		{"method refused", scoped, "POST", "/forecast/today", now, enforcement.ErrMethodNotAllowed},
		{"method case-sensitive", scoped, "get", "/forecast/today", now, enforcement.ErrMethodNotAllowed},
		{"inactive before method", with(func(r *enforcement.KeyRecord) { *r = scoped; r.Status = enforcement.KeySuspended }), "POST", "/nope", now, enforcement.ErrKeyInactive},
		{"wildcard tail", scoped, "GET", "/forecast/berlin/week", now, nil},
		{"wildcard tail, trailing slash", scoped, "GET", "/forecast/", now, nil},
		{"wildcard tail needs the slash", scoped, "GET", "/forecast", now, enforcement.ErrRouteNotAllowed},
		{"wildcard is not a prefix match", scoped, "GET", "/forecasts/x", now, enforcement.ErrRouteNotAllowed},
		{"param", scoped, "GET", "/users/42", now, nil},
		{"param takes one segment", scoped, "GET", "/users/42/profile", now, enforcement.ErrRouteNotAllowed},
		{"param not empty", scoped, "GET", "/users/", now, enforcement.ErrRouteNotAllowed},
		{"middle wildcard", scoped, "GET", "/users/42/orders/7/items", now, nil},
		{"middle wildcard not empty", scoped, "GET", "/users/42/orders//items", now, enforcement.ErrRouteNotAllowed},
		{"root", scoped, "GET", "/", now, nil},
		{"literal case-sensitive", scoped, "GET", "/Users/42", now, enforcement.ErrRouteNotAllowed},
		{"dot-dot escapes", scoped, "GET", "/forecast/../admin", now, enforcement.ErrRouteNotAllowed},
		{"dot segment", scoped, "GET", "/users/./42", now, enforcement.ErrRouteNotAllowed},
		{"relative path", scoped, "GET", "users/42", now, enforcement.ErrRouteNotAllowed},
		{"empty path", scoped, "GET", "", now, enforcement.ErrRouteNotAllowed},
		{"dots inside a segment are text", with(func(r *enforcement.KeyRecord) { r.Routes = []string{"/files/{name}"} }), "GET", "/files/a..b", now, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Allows(tt.method, tt.path, tt.now); !errors.Is(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("Allows(%q, %q) = %v; want %v", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

func TestValidRoute(t *testing.T) {
	tests := []struct {
		pattern string
		ok      bool
	}{
		{"/", true},
		{"/forecast/*", true},
		{"/users/{id}", true},
		{"/users/{id}/orders/*/items", true},
		{"/users/", true},
		{"", false},
		{"forecast", false},
		{"/a//b", false},
		{"/a/../b", false},
		{"/a/./b", false},
		{"/users/{}", false},
		{"/users/{id", false},
		{"/users/id}", false},
		{"/users/x{id}", false},
		{"/files/*.json", false},
		{"/users/{i*d}", false},
	}
	for _, tt := range tests {
		if err := enforcement.ValidRoute(tt.pattern); (err == nil) != tt.ok {
			t.Errorf("ValidRoute(%q) = %v; want ok=%v", tt.pattern, err, tt.ok)
		}
	}
}

func BenchmarkAllows(b *testing.B) {
	r := enforcement.KeyRecord{
		Status:    enforcement.KeyActive,
		Methods:   []string{"GET", "POST"},
		Routes:    []string{"/forecast/*", "/users/{id}", "/users/{id}/orders/*/items"},
		ExpiresAt: time.Now().Add(time.Hour),
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Allows("POST", "/users/42/orders/7/items", now); err != nil {
			b.Fatal(err)
		}
	}
}
