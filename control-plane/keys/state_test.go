package keys

import (
	"errors"
	"testing"
)

// TestStateMachine checks every ordered pair of states: the allowed ones are
// listed here independently of the table in state.go, every other pair must
// be refused.
func TestStateMachine(t *testing.T) {
	allowed := map[[2]State]bool{
		{StatePending, StateActive}:     true, // written to the gateway
		{StatePending, StateFailedSync}: true, // gateway write keeps failing
		{StatePending, StateRevoked}:    true,
		{StateFailedSync, StateActive}:  true, // a retry healed it
		{StateFailedSync, StateRevoked}: true,
		{StateActive, StateSuspended}:   true,
		{StateActive, StateRevoked}:     true,
		{StateActive, StateExpired}:     true,
		{StateSuspended, StateActive}:   true, // resumed
		{StateSuspended, StateRevoked}:  true,
		{StateSuspended, StateExpired}:  true,
	}
	if len(States) != 6 {
		t.Fatalf("len(States) = %d; want 6", len(States))
	}
	for _, from := range States {
		for _, to := range States {
			want := allowed[[2]State{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v; want %v", from, to, got, want)
			}
			err := Check(from, to)
			if (err == nil) != want {
				t.Errorf("Check(%s, %s) = %v; want allowed=%v", from, to, err, want)
			}
			if err == nil {
				continue
			}
			var te *TransitionError
			if !errors.Is(err, ErrInvalidTransition) || !errors.As(err, &te) || te.From != from || te.To != to {
				t.Errorf("Check(%s, %s) = %#v; want a *TransitionError{%s, %s} wrapping ErrInvalidTransition", from, to, err, from, to)
			}
		}
	}
	// Unknown states move nowhere.
	if CanTransition("bogus", StateActive) || CanTransition(StateActive, "bogus") {
		t.Errorf("CanTransition with an unknown state = true; want false")
	}
}

func TestStatePredicates(t *testing.T) {
	tests := []struct {
		s                       State
		valid, terminal, usable bool
	}{
		{StatePending, true, false, false},
		{StateActive, true, false, true},
		{StateSuspended, true, false, false},
		{StateExpired, true, true, false},
		{StateRevoked, true, true, false},
		{StateFailedSync, true, false, false},
		{"bogus", false, false, false},
		{"", false, false, false},
	}
	for _, tt := range tests {
		if got := tt.s.Valid(); got != tt.valid {
			t.Errorf("%q.Valid() = %v; want %v", tt.s, got, tt.valid)
		}
		if got := tt.s.Terminal(); got != tt.terminal {
			t.Errorf("%q.Terminal() = %v; want %v", tt.s, got, tt.terminal)
		}
		if got := tt.s.Usable(); got != tt.usable {
			t.Errorf("%q.Usable() = %v; want %v", tt.s, got, tt.usable)
		}
	}
}

func TestTransitionErrorMessage(t *testing.T) {
	err := Check(StateRevoked, StateActive)
	if got, want := err.Error(), "invalid key state transition: revoked → active"; got != want {
		t.Errorf("Check(revoked, active).Error() = %q; want %q", got, want)
	}
}
