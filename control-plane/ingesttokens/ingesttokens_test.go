package ingesttokens_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/ingesttokens"
	"github.com/veil-platform/veil/internal/ingesttoken"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestCreateStoresCanonicalAPIIDs: API ids typed in upper case, in braces
// or as a URN are stored as Postgres writes them, so that the token allows
// the events of those APIs, whose api_id is in that form.
func TestCreateStoresCanonicalAPIIDs(t *testing.T) {
	pool := testenv.Postgres(t)
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	tok, err := ingesttokens.New(pool).Create(t.Context(), identity.Actor{Subject: "ops", Role: identity.RoleAdmin}, ingesttokens.CreateInput{
		Name: "billing", Sources: []string{"/billing"},
		APIIDs: []string{strings.ToUpper(a), "{" + b + "}", "urn:uuid:" + c},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{a, b, c}; fmt.Sprint(tok.APIIDs) != fmt.Sprint(want) {
		t.Errorf("Create api_ids = %q; want %q", tok.APIIDs, want)
	}
	scope, err := ingesttoken.NewStore(pool).Lookup(t.Context(), ingesttoken.Hash(tok.Secret))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{a, b, c} {
		if !scope.AllowsAPI(id) {
			t.Errorf("the issued token's scope %q does not allow API %s", scope.APIIDs, id)
		}
	}
}

// TestTokenAndAuditEntryCommitTogether: a token whose audit entry cannot be
// written is neither issued nor revoked. A trigger in the test's own
// database refuses audit entries once the first token exists.
func TestTokenAndAuditEntryCommitTogether(t *testing.T) {
	pool := testenv.Postgres(t)
	svc := ingesttokens.New(pool)
	ops := identity.Actor{Subject: "ops", Role: identity.RoleAdmin}
	tok, err := svc.Create(t.Context(), ops, ingesttokens.CreateInput{Name: "billing", Sources: []string{"/billing"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `
		CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'audit log closed'; END $$;
		CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log
			FOR EACH ROW EXECUTE FUNCTION test_refuse_audit()`); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Create(t.Context(), ops, ingesttokens.CreateInput{Name: "other", Sources: []string{"/other"}}); err == nil {
		t.Error("Create() with the audit log refusing = nil; want an error")
	}
	if _, err := svc.Revoke(t.Context(), ops, tok.ID); err == nil {
		t.Error("Revoke() with the audit log refusing = nil; want an error")
	}
	got, err := svc.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != tok.ID || got[0].RevokedAt != nil {
		t.Errorf("List() = %+v; want only %s, not revoked", got, tok.ID)
	}
}
