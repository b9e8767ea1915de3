package identity

import (
	"errors"

	"github.com/google/uuid"
)

// ErrForbidden: the actor may see what it asked about but may not do what
// it asked. Every domain service answers it, and the HTTP layer maps it to
// one problem type.
var ErrForbidden = errors.New("forbidden")

// RoleSystem is the role of the control plane's own jobs (expiry, period
// rolls, reconciliation). No token carries it: ParseRole refuses it, so a
// caller can never claim what only jobs do.
const RoleSystem Role = "system"

// Actor is who asks for a change: an authenticated caller resolved to an
// organization, or System. Every domain service takes one and decides what
// it may do.
type Actor struct {
	Subject string
	Role    Role
	OrgID   uuid.UUID
}

// System is the actor of jobs.
var System = Actor{Subject: "system", Role: RoleSystem}

// IsAdmin reports whether a sees and decides everything: platform admins
// and the control plane's own jobs.
func (a Actor) IsAdmin() bool { return a.Role == RoleAdmin || a.Role == RoleSystem }

// CanProvide reports whether a may change what organization org provides
// (its APIs, their plans, the quotas of their subscriptions): org's
// providers, and admins. Org's consumers may not, and neither may the
// subscriber of one of its APIs.
func (a Actor) CanProvide(org uuid.UUID) bool {
	return a.IsAdmin() || (a.Role == RoleProvider && a.OrgID == org)
}
