package keys

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/validation"
)

func TestSettingsValidate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Hour), now.Add(time.Hour)
	n := func(v int) *int { return &v }
	for _, c := range []struct {
		name   string
		in     Settings
		fields []string
	}{
		{name: "empty", in: Settings{}},
		{name: "full", in: Settings{Name: "ci", ExpiresAt: &future, Methods: []string{"GET"}, Routes: []string{"/v1/*"},
			RatePerSecond: n(10), AutoRenew: true, RenewDays: n(30)}},
		{name: "expired", in: Settings{ExpiresAt: &past}, fields: []string{"expires_at"}},
		{name: "unknown method", in: Settings{Methods: []string{"TRACE"}}, fields: []string{"methods[0]"}},
		{name: "rate out of range", in: Settings{RatePerMinute: n(0)}, fields: []string{"rate_per_minute"}},
		{name: "auto-renew without expiry or days", in: Settings{AutoRenew: true}, fields: []string{"renew_days", "auto_renew"}},
		{name: "rotation too rare", in: Settings{RotateEveryDays: 3651}, fields: []string{"rotate_every_days"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := c.in
			err := in.Validate(now)
			var got []string
			var verr *validation.Error
			if errors.As(err, &verr) {
				for _, f := range verr.Fields {
					got = append(got, f.Field)
				}
			} else if err != nil {
				t.Fatalf("Validate(%+v) = %v; want field errors or nil", c.in, err)
			}
			if !slices.Equal(got, c.fields) {
				t.Fatalf("Validate(%+v) refused %v; want %v", c.in, got, c.fields)
			}
		})
	}
}

func TestSettingsValidateFillsDefaults(t *testing.T) {
	var in Settings
	if err := in.Validate(time.Now()); err != nil {
		t.Fatal(err)
	}
	if in.RotateEveryDays != 90 || in.Methods == nil || in.Routes == nil || in.Metadata == nil {
		t.Fatalf("Validate(empty) left %+v; want rotate_every_days 90 and empty, non-nil methods, routes and metadata", in)
	}
}

func TestPatchApply(t *testing.T) {
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	base := Settings{Name: "old", ExpiresAt: &exp, Methods: []string{"GET"}, RatePerSecond: new(int)}
	var p Patch
	if err := json.Unmarshal([]byte(`{"name": "new", "expires_at": null}`), &p); err != nil {
		t.Fatal(err)
	}
	got := p.Apply(base)
	if got.Name != "new" || got.ExpiresAt != nil || !slices.Equal(got.Methods, []string{"GET"}) || got.RatePerSecond == nil {
		t.Fatalf("Apply(name new, expires_at null) = %+v; want the name changed, the expiry cleared, the rest kept", got)
	}
}
