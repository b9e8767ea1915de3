package keys

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/validation"
)

func TestActionTarget(t *testing.T) {
	for _, c := range []struct {
		a    Action
		want State
		ok   bool
	}{
		{ActionSuspend, StateSuspended, true},
		{ActionResume, StateActive, true},
		{ActionRevoke, StateRevoked, true},
		{"expire", "", false},
	} {
		if got, ok := c.a.Target(); got != c.want || ok != c.ok {
			t.Errorf("Action(%q).Target() = %q, %v; want %q, %v", c.a, got, ok, c.want, c.ok)
		}
	}
}

func TestRotateInputGrace(t *testing.T) {
	secs := func(n int64) *int64 { return &n }
	const def = 24 * time.Hour
	for _, c := range []struct {
		in   RotateInput
		want time.Duration
		bad  bool
	}{
		{RotateInput{}, def, false},
		{RotateInput{GraceSeconds: secs(0)}, 0, false},
		{RotateInput{GraceSeconds: secs(3600)}, time.Hour, false},
		{RotateInput{GraceSeconds: secs(int64(MaxGrace / time.Second))}, MaxGrace, false},
		{RotateInput{GraceSeconds: secs(int64(MaxGrace/time.Second) + 1)}, 0, true},
		{RotateInput{GraceSeconds: secs(-1)}, 0, true},
	} {
		got, err := c.in.Grace(def)
		var verr *validation.Error
		if c.bad != errors.As(err, &verr) || (!c.bad && got != c.want) {
			t.Errorf("Grace(%v) = %v, %v; want %v (refused: %v)", c.in.GraceSeconds, got, err, c.want, c.bad)
		}
	}
}

func TestSealerOpensOnlyItsKey(t *testing.T) {
	s, err := NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	id, other := uuid.New(), uuid.New()
	sealed, err := s.Seal(id, "vk_live_secret")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Open(id, sealed); err != nil || got != "vk_live_secret" {
		t.Fatalf("Open(id) = %q, %v; want the plaintext", got, err)
	}
	if _, err := s.Open(other, sealed); err == nil {
		t.Fatal("Open(another key's id) = nil error; want a refusal: a sealed copy cannot move to another key")
	}
}
