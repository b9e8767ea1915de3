package billing

import (
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
)

// parties are the two organizations of a subscription's billing: the
// issuer (the provider of its API) and the customer (the subscriber).
// Who may see and who may change an invoice, a preview, a credit ledger
// or an adjustment is decided here alone, as the README's billing routes
// list it.
type parties struct {
	issuer, customer uuid.UUID
}

// canSee reports whether a may read what the parties share: any member of
// the issuer or of the customer, whatever their role, and admins.
func (p parties) canSee(a identity.Actor) bool {
	return a.IsAdmin() || a.OrgID == p.issuer || a.OrgID == p.customer
}

// canChange reports whether a may change it: nil for the issuer's
// providers and admins; identity.ErrForbidden for the customer's members,
// who are told their side may not; notFound for anyone else, the
// issuer's members of another role among them (the authorization matrix
// answers a consumer of the issuer's organization 404 on a change, as it
// does on every provider route).
func (p parties) canChange(a identity.Actor, notFound error) error {
	switch {
	case a.CanProvide(p.issuer):
		return nil
	case a.OrgID == p.customer:
		return identity.ErrForbidden
	default:
		return notFound
	}
}
