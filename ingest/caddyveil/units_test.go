package caddyveil

import (
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestUnitsHeaderClampedToTheCap: units the upstream reports above
// usage.MaxUnits count as the cap (the event would otherwise be refused
// whole and the call count nowhere), and the writer says so; invalid
// values leave the call at its default.
func TestUnitsHeaderClampedToTheCap(t *testing.T) {
	tests := []struct {
		header  string
		want    string // "" = no units taken from the header
		clamped bool
	}{
		{"2.5", "2.5", false},
		{"1000000000", "1000000000", false},
		{"1000000000.000001", "1000000000", true},
		{"5000000000", "1000000000", true},
		{"999999999999", "1000000000", true},
		{"1e20", "1000000000", true},
		{"-1", "", false},
		{"1.0000001", "", false},
		{"many", "", false},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		cw := &countingWriter{ResponseWriter: rec, unitsHeader: "X-Units"}
		cw.Header().Set("X-Units", tt.header)
		cw.WriteHeader(200)
		got := ""
		if cw.units != nil {
			got = cw.units.String()
		}
		if got != tt.want || cw.clamped != tt.clamped {
			t.Errorf("X-Units: %s gives units %q, clamped %v; want %q, %v", tt.header, got, cw.clamped, tt.want, tt.clamped)
		}
		if v := rec.Header().Get("X-Units"); v != "" {
			t.Errorf("X-Units: %s stays in the answer as %q; want it removed", tt.header, v)
		}
	}
}

// TestSourceMustBeAGatewaySource: the app refuses an event source outside
// /gateway/ before it opens anything, since ingest's rule that only tokens
// scoped to /gateway/ sources may write the gateway's events rests on it.
func TestSourceMustBeAGatewaySource(t *testing.T) {
	for _, src := range []string{"/billing/eu", "gateway/eu-1", "/gateway", "/gateway/", "/Gateway/eu-1"} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		a := &App{Source: src, SpoolDir: t.TempDir()}
		err := a.Provision(ctx)
		_ = a.Cleanup()
		cancel()
		if !errors.Is(err, ErrSource) {
			t.Errorf("Provision with source %q = %v; want ErrSource", src, err)
		}
	}
	if err := CheckSource("/gateway/eu-1"); err != nil {
		t.Errorf("CheckSource(/gateway/eu-1) = %v; want nil", err)
	}
}
