package billing

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
)

// Who sees and who changes a bill: any member of either party sees it;
// the issuer's providers and admins change it; the customer's members are
// forbidden to, anyone else finds nothing (as the authorization matrix
// expects).
func TestPartiesRule(t *testing.T) {
	t.Parallel()
	p := parties{issuer: uuid.New(), customer: uuid.New()}
	errGone := errors.New("not found")
	for _, c := range []struct {
		name   string
		actor  identity.Actor
		see    bool
		change error
	}{
		{"admin", identity.Actor{Role: identity.RoleAdmin}, true, nil},
		{"system", identity.System, true, nil},
		{"issuer's provider", identity.Actor{Role: identity.RoleProvider, OrgID: p.issuer}, true, nil},
		{"issuer's consumer member", identity.Actor{Role: identity.RoleConsumer, OrgID: p.issuer}, true, errGone},
		{"customer's provider member", identity.Actor{Role: identity.RoleProvider, OrgID: p.customer}, true, identity.ErrForbidden},
		{"customer's consumer member", identity.Actor{Role: identity.RoleConsumer, OrgID: p.customer}, true, identity.ErrForbidden},
		{"stranger's provider", identity.Actor{Role: identity.RoleProvider, OrgID: uuid.New()}, false, errGone},
	} {
		if got := p.canSee(c.actor); got != c.see {
			t.Errorf("%s: canSee = %v; want %v", c.name, got, c.see)
		}
		if got := p.canChange(c.actor, errGone); !errors.Is(got, c.change) {
			t.Errorf("%s: canChange = %v; want %v", c.name, got, c.change)
		}
	}
}
