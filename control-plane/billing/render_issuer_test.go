package billing

import (
	"strings"
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
)

// A finalized invoice's From block is the issuer's profile as it was:
// the provider renaming itself later changes its next invoices, not this
// one.
func TestDocumentKeepsIssuerProfile(t *testing.T) {
	f := invoiceSetup(t)
	admin := identity.Actor{Subject: "root", Role: identity.RoleAdmin}
	put := func(name string) {
		t.Helper()
		if _, err := f.svc.PutProfile(f.ctx, admin, f.issuer, ProfileInput{
			LegalName: name, AddressLine1: "Hauptstr. 1", City: "Berlin", PostalCode: "10115", Country: "DE", Email: "billing@acme.example",
		}); err != nil {
			t.Fatalf("PutProfile: %v", err)
		}
	}
	put("Acme Data GmbH")
	id, _ := f.finalized()
	put("Acme Renamed AG")
	d, err := f.svc.Document(f.ctx, f.provider, id)
	if err != nil {
		t.Fatal(err)
	}
	var html strings.Builder
	if err := RenderHTML(&html, d); err != nil {
		t.Fatal(err)
	}
	if d.Issuer.Name != "Acme Data GmbH" || !strings.Contains(html.String(), "Acme Data GmbH") || strings.Contains(html.String(), "Renamed") {
		t.Fatalf("issuer of the finalized invoice = %q; want the name it was issued with, Acme Data GmbH", d.Issuer.Name)
	}
}
