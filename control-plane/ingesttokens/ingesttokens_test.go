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
