package keys

import (
	"errors"
	"fmt"
	"slices"
)

// State is where an API key is in its life. The one state machine below
// decides every change.
type State string

// The states of a key.
const (
	// StatePending: created, not yet written to the gateway's Redis records.
	StatePending State = "pending"
	// StateActive: written to the gateway; the only state that lets calls through.
	StateActive State = "active"
	// StateSuspended: paused by the consumer or an admin; may be resumed.
	StateSuspended State = "suspended"
	// StateExpired: past its expiry. Terminal.
	StateExpired State = "expired"
	// StateRevoked: withdrawn for good. Terminal.
	StateRevoked State = "revoked"
	// StateFailedSync: writing it to the gateway keeps failing; retries go on.
	StateFailedSync State = "failed_sync"
)

// States lists every state, in lifecycle order.
var States = []State{
	StatePending, StateActive, StateSuspended, StateExpired, StateRevoked, StateFailedSync,
}

// transitions is the state machine: from → the states it may move to.
//
// A key becomes active only once the gateway holds it, so pending and
// failed_sync lead to active and nowhere else that lets calls through. A key
// that never reached the gateway is not suspended or expired (there is
// nothing to pause) but may be revoked. Expired and revoked are terminal: a
// new key is issued instead, so a leaked plaintext can never come back.
var transitions = map[State][]State{
	StatePending:    {StateActive, StateFailedSync, StateRevoked},
	StateActive:     {StateSuspended, StateRevoked, StateExpired},
	StateSuspended:  {StateActive, StateRevoked, StateExpired},
	StateFailedSync: {StateActive, StateRevoked},
	StateExpired:    nil,
	StateRevoked:    nil,
}

// ErrInvalidTransition is refused by the state machine; Check wraps it in a
// *TransitionError naming both states.
var ErrInvalidTransition = errors.New("invalid key state transition")

// TransitionError is a refused transition. errors.Is(err,
// ErrInvalidTransition) holds for it; the HTTP layer answers 409 with From
// and To.
type TransitionError struct {
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("%s: %s → %s", ErrInvalidTransition, e.From, e.To)
}

// Unwrap returns ErrInvalidTransition.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// CanTransition reports whether the state machine allows from → to.
func CanTransition(from, to State) bool {
	return slices.Contains(transitions[from], to)
}

// Check returns nil if from → to is allowed, and a *TransitionError wrapping
// ErrInvalidTransition otherwise.
func Check(from, to State) error {
	if !CanTransition(from, to) {
		return &TransitionError{From: from, To: to}
	}
	return nil
}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool { return s.Valid() && len(transitions[s]) == 0 }

// Usable reports whether the gateway should let calls through with a key in
// state s: only when active.
func (s State) Usable() bool { return s == StateActive }
