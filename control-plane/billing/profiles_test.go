package billing

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/internal/validation"
)

func TestProfileInputValidate(t *testing.T) {
	t.Parallel()
	good := func() ProfileInput {
		return ProfileInput{LegalName: " Acme SAS ", Country: "fr", Region: "", TaxID: "fr xx 123456789", Email: " billing@acme.example "}
	}
	in := good()
	if err := in.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v; want nil", good(), err)
	}
	if in.LegalName != "Acme SAS" || in.Country != "FR" || in.TaxID != "FRXX123456789" || in.Email != "billing@acme.example" {
		t.Errorf("Validate stored %+v; want trimmed, FR, FRXX123456789", in)
	}
	us := ProfileInput{LegalName: "Acme Inc", Country: "US", Region: "us-ca", TaxID: "12-3456789", Email: "a@acme.example"}
	if err := us.Validate(); err != nil || us.Region != "CA" || us.TaxID != "12-3456789" {
		t.Errorf("Validate(US) = %+v, %v; want region CA, tax id kept", us, err)
	}

	bad := []struct {
		field string
		edit  func(*ProfileInput)
	}{
		{"legal_name", func(p *ProfileInput) { p.LegalName = "  " }},
		{"legal_name", func(p *ProfileInput) { p.LegalName = strings.Repeat("é", 201) }},
		{"legal_name", func(p *ProfileInput) { p.LegalName = "Acme\nBcc: x@evil.example" }},
		{"legal_name", func(p *ProfileInput) { p.LegalName = "Acme\x00" }},
		{"legal_name", func(p *ProfileInput) { p.LegalName = "Acme\xff" }},
		{"city", func(p *ProfileInput) { p.City = "Paris\u202eSIRAP" }},
		{"address_line1", func(p *ProfileInput) { p.AddressLine1 = strings.Repeat("a", 201) }},
		{"city", func(p *ProfileInput) { p.City = strings.Repeat("a", 101) }},
		{"postal_code", func(p *ProfileInput) { p.PostalCode = strings.Repeat("1", 21) }},
		{"country", func(p *ProfileInput) { p.Country = "UK" }},
		{"country", func(p *ProfileInput) { p.Country = "" }},
		{"country", func(p *ProfileInput) { p.Country = "FRA" }},
		{"region", func(p *ProfileInput) { p.Region = "Île-de-France" }},
		{"region", func(p *ProfileInput) { p.Region = "IDFX" }},
		{"tax_id", func(p *ProfileInput) { p.TaxID = "FR123" }},
		{"tax_id", func(p *ProfileInput) { p.TaxID = strings.Repeat("1", 100) }},
		{"email", func(p *ProfileInput) { p.Email = "" }},
		{"email", func(p *ProfileInput) { p.Email = "billing" }},
		{"email", func(p *ProfileInput) { p.Email = "Billing <billing@acme.example>" }},
		{"email", func(p *ProfileInput) { p.Email = "a@b.example, c@d.example" }},
		{"email", func(p *ProfileInput) { p.Email = "a@b.example\r\nBcc: c@d.example" }},
		{"email", func(p *ProfileInput) { p.Email = "a@localhost" }},
		{"email", func(p *ProfileInput) { p.Email = strings.Repeat("a", 320) + "@b.example" }},
	}
	for _, b := range bad {
		in := good()
		b.edit(&in)
		err := in.Validate()
		var v *validation.Error
		if !errors.As(err, &v) || len(v.Fields) != 1 || v.Fields[0].Field != b.field {
			t.Errorf("Validate(%+v) = %v; want one error on %s", in, err, b.field)
		}
	}
}

func TestProfiles(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	consumerOrg := testenv.Org(t, f.pool, "consumer-"+testenv.Suffix())
	consumer := identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: consumerOrg}

	if _, err := f.svc.GetProfile(t.Context(), consumer, consumerOrg); !errors.Is(err, ErrProfileNotFound) {
		t.Errorf("GetProfile(none yet) = %v; want ErrProfileNotFound", err)
	}
	in := ProfileInput{LegalName: "Kunde GmbH", AddressLine1: "Hauptstr. 1", City: "Berlin", PostalCode: "10115", Country: "DE",
		Region: "DE-BE", TaxID: "DE 123 456 789", Email: "rechnung@kunde.example"}
	p, err := f.svc.PutProfile(t.Context(), consumer, consumerOrg, in)
	if err != nil {
		t.Fatalf("PutProfile: %v", err)
	}
	if p.OrganizationID != consumerOrg || p.TaxID != "DE123456789" || p.Region != "BE" || p.UpdatedAt.IsZero() {
		t.Errorf("PutProfile = %+v; want the canonical tax id and region", p)
	}
	// Again, changed: one row, the new values, audited twice.
	in.LegalName = "Kunde AG"
	if p, err = f.svc.PutProfile(t.Context(), consumer, consumerOrg, in); err != nil || p.LegalName != "Kunde AG" {
		t.Fatalf("PutProfile(again) = %+v, %v", p, err)
	}
	got, err := f.svc.GetProfile(t.Context(), consumer, consumerOrg)
	if err != nil || got != p {
		t.Errorf("GetProfile = %+v, %v; want %+v", got, err, p)
	}
	var audits int
	if err := f.pool.QueryRow(t.Context(), `SELECT count(*) FROM audit_log WHERE action = 'billing_profile.put' AND target_id = $1`, consumerOrg.String()).Scan(&audits); err != nil || audits != 2 {
		t.Errorf("audit entries = %d, %v; want 2", audits, err)
	}

	// Another organization's member finds nothing, in either direction;
	// an admin may read and write any existing organization's.
	if _, err := f.svc.GetProfile(t.Context(), f.provider, consumerOrg); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("GetProfile(another org) = %v; want ErrOrganizationNotFound", err)
	}
	if _, err := f.svc.PutProfile(t.Context(), f.provider, consumerOrg, in); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("PutProfile(another org) = %v; want ErrOrganizationNotFound", err)
	}
	if got, err := f.svc.GetProfile(t.Context(), f.admin, consumerOrg); err != nil || got.LegalName != "Kunde AG" {
		t.Errorf("GetProfile(admin) = %+v, %v", got, err)
	}
	if _, err := f.svc.PutProfile(t.Context(), f.admin, uuid.New(), in); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("PutProfile(admin, unknown org) = %v; want ErrOrganizationNotFound", err)
	}
	// Invalid input changes nothing.
	in.Email = "nope"
	if _, err := f.svc.PutProfile(t.Context(), consumer, consumerOrg, in); err == nil {
		t.Error("PutProfile(bad email) = nil; want a validation error")
	}
	if got, _ := f.svc.GetProfile(t.Context(), consumer, consumerOrg); got.Email != "rechnung@kunde.example" {
		t.Errorf("email after a refused put = %q; want unchanged", got.Email)
	}
}

func TestSettings(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	got, err := f.svc.GetSettings(t.Context(), f.provider, f.issuer)
	if err != nil || got.InvoicePrefix != DefaultInvoicePrefix || !got.PlatformFeePercent.IsZero() || got.UpdatedAt != nil {
		t.Errorf("GetSettings(defaults) = %+v, %v; want INV, 0", got, err)
	}
	// The provider sets the prefix, not the fee.
	if got, err = f.svc.PutSettings(t.Context(), f.provider, f.issuer, SettingsInput{InvoicePrefix: taxPtr("acme")}); err != nil || got.InvoicePrefix != "ACME" || !got.PlatformFeePercent.IsZero() {
		t.Errorf("PutSettings(prefix) = %+v, %v; want ACME", got, err)
	}
	if _, err = f.svc.PutSettings(t.Context(), f.provider, f.issuer, SettingsInput{InvoicePrefix: taxPtr("ACME2"), PlatformFeePercent: taxPtr(taxNum("1"))}); !errors.Is(err, identity.ErrForbidden) {
		t.Errorf("PutSettings(provider sets the fee) = %v; want ErrForbidden", err)
	}
	// An admin sets the fee; the prefix stays.
	if got, err = f.svc.PutSettings(t.Context(), f.admin, f.issuer, SettingsInput{PlatformFeePercent: taxPtr(taxNum("2.50"))}); err != nil ||
		got.InvoicePrefix != "ACME" || !got.PlatformFeePercent.Equal(taxNum("2.5")) {
		t.Errorf("PutSettings(admin fee) = %+v, %v; want ACME, 2.5", got, err)
	}
	if s, err := f.svc.IssuerSettings(t.Context(), f.issuer); err != nil || s.InvoicePrefix != "ACME" || !s.PlatformFeePercent.Equal(taxNum("2.5")) {
		t.Errorf("IssuerSettings = %+v, %v", s, err)
	}

	consumer := identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: f.issuer}
	stranger := identity.Actor{Subject: "x", Role: identity.RoleProvider, OrgID: uuid.New()}
	refused := []struct {
		name  string
		actor identity.Actor
		org   uuid.UUID
		in    SettingsInput
		want  error
	}{
		{"a consumer of the org", consumer, f.issuer, SettingsInput{InvoicePrefix: taxPtr("XX")}, identity.ErrForbidden},
		{"another org's provider", stranger, f.issuer, SettingsInput{InvoicePrefix: taxPtr("XX")}, ErrOrganizationNotFound},
		{"an unknown org", f.admin, uuid.New(), SettingsInput{InvoicePrefix: taxPtr("XX")}, ErrOrganizationNotFound},
	}
	for _, r := range refused {
		if _, err := f.svc.PutSettings(t.Context(), r.actor, r.org, r.in); !errors.Is(err, r.want) {
			t.Errorf("PutSettings(%s) = %v; want %v", r.name, err, r.want)
		}
	}
	for _, in := range []SettingsInput{
		{},
		{InvoicePrefix: taxPtr("A")},
		{InvoicePrefix: taxPtr("INV-")},
		{InvoicePrefix: taxPtr("ABCDEFGHIJKLM")},
		{PlatformFeePercent: taxPtr(taxNum("-0.01"))},
		{PlatformFeePercent: taxPtr(taxNum("100.01"))},
		{PlatformFeePercent: taxPtr(taxNum("1.005"))},
	} {
		var v *validation.Error
		if _, err := f.svc.PutSettings(t.Context(), f.admin, f.issuer, in); !errors.As(err, &v) {
			t.Errorf("PutSettings(%+v) = %v; want a validation error", in, err)
		}
	}
	if _, err := f.svc.GetSettings(t.Context(), stranger, f.issuer); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("GetSettings(stranger) = %v; want ErrOrganizationNotFound", err)
	}
}

// Every issuer starts with the prefix INV, so two issuers' first invoices
// of a year carry the same number: unique per issuer only.
func TestInvoiceNumbersPerIssuer(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	b := newRevenueBook(t, f)
	other := newIssuerBook(t, f, "other")
	c := b.customer("DE")
	jan := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	b.invoice(invoiceRow{status: "open", customer: c, periodEnd: jan, finalized: jan, number: "INV-2026-000001"})
	other.invoice(invoiceRow{status: "open", customer: c, periodEnd: jan, finalized: jan, number: "INV-2026-000001"})
	var n int
	if err := f.pool.QueryRow(t.Context(), `SELECT count(*) FROM invoices WHERE number = 'INV-2026-000001'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("invoices numbered INV-2026-000001 = %d, %v; want one per issuer", n, err)
	}
	_, err := f.pool.Exec(t.Context(), `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end, finalized_at)
		SELECT issuer_id, customer_id, subscription_id, 'open', number, currency, period_start, period_end, finalized_at FROM invoices
		WHERE issuer_id = $1`, f.issuer)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "invoices_issuer_number_key" {
		t.Errorf("a second INV-2026-000001 of one issuer = %v; want invoices_issuer_number_key violated", err)
	}
}
