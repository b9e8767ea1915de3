package keys

import (
	"time"

	"github.com/veil-platform/veil/internal/validation"
)

// Action is a state change a caller asks for.
type Action string

// Key actions.
const (
	ActionSuspend Action = "suspend"
	ActionResume  Action = "resume"
	ActionRevoke  Action = "revoke"
)

var actionTarget = map[Action]State{
	ActionSuspend: StateSuspended, ActionResume: StateActive, ActionRevoke: StateRevoked,
}

// Target is the state action moves a key to; false for an unknown action.
func (a Action) Target() (State, bool) {
	to, ok := actionTarget[a]
	return to, ok
}

var events = map[State]string{
	StateActive: "activated", StateSuspended: "suspended", StateRevoked: "revoked",
	StateExpired: "expired", StateFailedSync: "sync_failed", StatePending: "pending",
}

// Event is the webhook event announcing that a key entered state to
// ("key." + Event(to)).
func Event(to State) string { return events[to] }

// RotateInput rotates a key. GraceSeconds nil takes the default grace; 0
// ends the old key now.
type RotateInput struct {
	GraceSeconds *int64 `json:"grace_seconds"`
}

// MaxGrace bounds a rotation's grace period.
const MaxGrace = 90 * 24 * time.Hour

// Grace is how long the rotated-out key keeps working: def when the caller
// named none.
func (in RotateInput) Grace(def time.Duration) (time.Duration, error) {
	if in.GraceSeconds == nil {
		return def, nil
	}
	if *in.GraceSeconds < 0 || *in.GraceSeconds > int64(MaxGrace/time.Second) {
		return 0, validation.One("grace_seconds", "must be 0 to 7776000 (90 days)")
	}
	return time.Duration(*in.GraceSeconds) * time.Second, nil
}
