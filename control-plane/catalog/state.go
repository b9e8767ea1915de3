package catalog

import "fmt"

// State is where an API is in its life. The one state machine below decides
// every change; the database records each one in api_transitions.
type State string

// The states of an API.
const (
	StateDraft           State = "draft"
	StateSubmitted       State = "submitted"
	StatePendingApproval State = "pending_approval"
	StateApproved        State = "approved" // approved, registration with the gateway in progress
	StateActive          State = "active"   // served by the gateway, verified
	StateRejected        State = "rejected"
	StateFailed          State = "failed" // gateway registration gave up; nothing half-registered remains
	StateSuspended       State = "suspended"
	StateDeprecated      State = "deprecated" // still served; new subscriptions discouraged
	StateRetired         State = "retired"
)

// States lists every state, in lifecycle order.
var States = []State{
	StateDraft, StateSubmitted, StatePendingApproval, StateApproved, StateActive,
	StateRejected, StateFailed, StateSuspended, StateDeprecated, StateRetired,
}

// transitions is the state machine: from → the states it may move to.
var transitions = map[State][]State{
	StateDraft:           {StateSubmitted},
	StateSubmitted:       {StatePendingApproval},
	StatePendingApproval: {StateApproved, StateRejected, StateDraft},
	StateApproved:        {StateActive, StateFailed, StateSuspended, StateRetired},
	StateActive:          {StateSuspended, StateDeprecated, StateRetired},
	StateRejected:        {StateDraft, StateSubmitted},
	StateFailed:          {StateApproved, StateDraft, StateRetired},
	StateSuspended:       {StateApproved, StateRetired},
	StateDeprecated:      {StateActive, StateSuspended, StateRetired},
	StateRetired:         nil,
}

// CanTransition reports whether the state machine allows from → to.
func CanTransition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// Routed reports whether the gateway should serve an API in state s.
func (s State) Routed() bool { return s == StateActive || s == StateDeprecated }

// editable reports whether an API's upstream, routes and slug may change in
// state s. Once approved, a change of what the gateway serves needs a new
// review, and failed is approved too: an admin's retry registers what was
// approved, so a failed API is revised to draft before it changes.
func (s State) editable() bool {
	return s == StateDraft || s == StateRejected
}

// deletable reports whether an API may be deleted in state s: never while
// the gateway may route to it.
func (s State) deletable() bool {
	return s == StateDraft || s == StateRejected || s == StateFailed || s == StateRetired
}

func checkTransition(from, to State) error {
	if !CanTransition(from, to) {
		return fmt.Errorf("%w: %s → %s", ErrInvalidTransition, from, to)
	}
	return nil
}
