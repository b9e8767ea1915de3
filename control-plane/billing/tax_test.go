package billing

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// taxFixture is a billing service on a fresh database with an issuer
// (a provider organization) and the actors that ask.
type taxFixture struct {
	t        *testing.T
	pool     *pgxpool.Pool
	svc      *Service
	clock    *testenv.Clock
	issuer   uuid.UUID
	provider identity.Actor
	admin    identity.Actor
}

func taxSetup(t *testing.T) *taxFixture {
	t.Helper()
	pool := testenv.Postgres(t)
	clock := testenv.NewClock(time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC))
	svc, err := New(Config{Pool: pool, Logger: testenv.Logger(t), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	issuer := testenv.Org(t, pool, "issuer-"+testenv.Suffix())
	return &taxFixture{
		t: t, pool: pool, svc: svc, clock: clock, issuer: issuer,
		provider: identity.Actor{Subject: "prov", Role: identity.RoleProvider, OrgID: issuer},
		admin:    identity.Actor{Subject: "root", Role: identity.RoleAdmin},
	}
}

func taxPtr[T any](v T) *T { return &v }

func (f *taxFixture) rule(in TaxRuleInput) TaxRule {
	f.t.Helper()
	r, err := f.svc.CreateTaxRule(f.t.Context(), f.provider, f.issuer, in)
	if err != nil {
		f.t.Fatalf("CreateTaxRule(%+v): %v", in, err)
	}
	return r
}

func (f *taxFixture) issuerProfile(country string) {
	f.t.Helper()
	if _, err := f.svc.PutProfile(f.t.Context(), f.provider, f.issuer, ProfileInput{
		LegalName: "Issuer GmbH", Country: country, Email: "billing@issuer.example",
	}); err != nil {
		f.t.Fatalf("PutProfile(issuer): %v", err)
	}
}

func (f *taxFixture) taxFor(c Profile, at time.Time) metering.TaxTreatment {
	f.t.Helper()
	tr, err := f.svc.TaxFor(f.t.Context(), f.issuer, c, at)
	if err != nil {
		f.t.Fatalf("TaxFor: %v", err)
	}
	return tr
}

func taxNum(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// A rule applies over [effective_from, effective_until): at its start,
// not at its end; a later rule supersedes an open-ended one from its
// start; a region's rule comes before the country's.
func TestTaxForSelectsRuleAtBoundaries(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	jan := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	jul := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	oct := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	f.rule(TaxRuleInput{Country: "US", Name: "Sales tax", RatePercent: taxNum("5"), EffectiveFrom: &jan})
	f.rule(TaxRuleInput{Country: "US", Name: "Sales tax", RatePercent: taxNum("6"), EffectiveFrom: &jul})
	f.rule(TaxRuleInput{Country: "US", Region: "US-CA", Name: "CA sales tax", RatePercent: taxNum("7.25"), EffectiveFrom: &jan, EffectiveUntil: &oct})
	f.rule(TaxRuleInput{Country: "DE", Name: "USt", RatePercent: taxNum("19"), Inclusive: true, EffectiveFrom: &jan, EffectiveUntil: &jul})

	us := Profile{Country: "US", Region: "NY"}
	ca := Profile{Country: "US", Region: "CA"}
	de := Profile{Country: "DE"}
	tests := []struct {
		name     string
		customer Profile
		at       time.Time
		want     metering.TaxTreatment
	}{
		{"before any rule", us, jan.Add(-time.Nanosecond), metering.TaxTreatment{}},
		{"at the first rule's start", us, jan, metering.TaxTreatment{Name: "Sales tax", RatePercent: taxNum("5")}},
		{"just before the later rule", us, jul.Add(-time.Microsecond), metering.TaxTreatment{Name: "Sales tax", RatePercent: taxNum("5")}},
		{"the later rule supersedes from its start", us, jul, metering.TaxTreatment{Name: "Sales tax", RatePercent: taxNum("6")}},
		{"region over country", ca, jul, metering.TaxTreatment{Name: "CA sales tax", RatePercent: taxNum("7.25")}},
		{"region rule just before its end", ca, oct.Add(-time.Microsecond), metering.TaxTreatment{Name: "CA sales tax", RatePercent: taxNum("7.25")}},
		{"region rule ended: the country's", ca, oct, metering.TaxTreatment{Name: "Sales tax", RatePercent: taxNum("6")}},
		{"inclusive rule in force", de, jul.Add(-time.Microsecond), metering.TaxTreatment{Name: "USt", RatePercent: taxNum("19"), Inclusive: true}},
		{"inclusive rule ended", de, jul, metering.TaxTreatment{}},
		{"a country without rules", Profile{Country: "FR"}, jul, metering.TaxTreatment{}},
		{"a customer without a profile", Profile{}, jul, metering.TaxTreatment{}},
	}
	for _, tt := range tests {
		got := f.taxFor(tt.customer, tt.at)
		if got.Name != tt.want.Name || !got.RatePercent.Equal(tt.want.RatePercent) || got.Inclusive != tt.want.Inclusive || got.ReverseCharge || got.Mention != "" {
			t.Errorf("%s: TaxFor(%s/%s, %s) = %+v; want %+v", tt.name, tt.customer.Country, tt.customer.Region, tt.at.Format(time.RFC3339Nano), got, tt.want)
		}
	}

	// Another issuer's rules never apply.
	other := testenv.Org(t, f.pool, "other-"+testenv.Suffix())
	if got, err := f.svc.TaxFor(t.Context(), other, us, jul); err != nil || got.Name != "" {
		t.Errorf("TaxFor(other issuer) = %+v, %v; want no tax", got, err)
	}
}

// EU reverse charge: a business customer (a VAT number of its country's
// format) in another member state than the issuer's, and a rule that
// allows it. Any missing condition taxes at the rule's rate.
func TestTaxForReverseCharge(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	f.rule(TaxRuleInput{Country: "FR", Name: "TVA", RatePercent: taxNum("20"), EffectiveFrom: &from})
	f.rule(TaxRuleInput{Country: "DE", Name: "USt", RatePercent: taxNum("19"), EffectiveFrom: &from})
	f.rule(TaxRuleInput{Country: "IT", Name: "IVA", RatePercent: taxNum("22"), ReverseCharge: taxPtr(false), EffectiveFrom: &from})
	f.rule(TaxRuleInput{Country: "CH", Name: "MWST", RatePercent: taxNum("8.1"), EffectiveFrom: &from})

	// Without an issuer profile the issuer's country is unknown: no
	// reverse charge.
	fr := Profile{Country: "FR", TaxID: "FRXX123456789"}
	if got := f.taxFor(fr, at); got.ReverseCharge || !got.RatePercent.Equal(taxNum("20")) {
		t.Errorf("TaxFor(FR business, issuer without profile) = %+v; want 20%% TVA", got)
	}
	f.issuerProfile("DE")

	taxed := func(name, rate string) metering.TaxTreatment {
		return metering.TaxTreatment{Name: name, RatePercent: taxNum(rate)}
	}
	reverse := func(name string) metering.TaxTreatment {
		return metering.TaxTreatment{Name: name, RatePercent: decimal.Zero, ReverseCharge: true, Mention: ReverseChargeMention}
	}
	tests := []struct {
		name     string
		customer Profile
		want     metering.TaxTreatment
	}{
		{"valid VAT number in another member state", fr, reverse("TVA")},
		{"no VAT number (a consumer)", Profile{Country: "FR"}, taxed("TVA", "20")},
		{"VAT number of an invalid format", Profile{Country: "FR", TaxID: "FR123"}, taxed("TVA", "20")},
		{"VAT number of another country's format", Profile{Country: "FR", TaxID: "ATU12345678"}, taxed("TVA", "20")},
		{"same country as the issuer", Profile{Country: "DE", TaxID: "DE123456789"}, taxed("USt", "19")},
		{"the rule does not allow it", Profile{Country: "IT", TaxID: "IT12345678901"}, taxed("IVA", "22")},
		{"outside the EU", Profile{Country: "CH", TaxID: "CHE123456789MWST"}, taxed("MWST", "8.1")},
	}
	for _, tt := range tests {
		got := f.taxFor(tt.customer, at)
		if got.Name != tt.want.Name || !got.RatePercent.Equal(tt.want.RatePercent) || got.ReverseCharge != tt.want.ReverseCharge ||
			got.Mention != tt.want.Mention || got.Inclusive != tt.want.Inclusive {
			t.Errorf("%s: TaxFor(%s %q) = %+v; want %+v", tt.name, tt.customer.Country, tt.customer.TaxID, got, tt.want)
		}
	}

	// An issuer outside the EU never reverse charges.
	f.issuerProfile("GB")
	if got := f.taxFor(fr, at); got.ReverseCharge {
		t.Errorf("TaxFor(FR business, GB issuer) = %+v; want taxed", got)
	}

	// TaxRuleFor names the rule an invoice cites.
	_, rule, err := f.svc.TaxRuleFor(t.Context(), f.issuer, fr, at)
	if err != nil || rule == nil || rule.Country != "FR" {
		t.Errorf("TaxRuleFor(FR) = %+v, %v; want the FR rule", rule, err)
	}
}

func TestTaxRuleInputRefused(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bad := []struct {
		field string
		in    TaxRuleInput
	}{
		{"country", TaxRuleInput{Country: "UK", RatePercent: taxNum("20")}},
		{"country", TaxRuleInput{Country: "", RatePercent: taxNum("20")}},
		{"region", TaxRuleInput{Country: "US", Region: "California", RatePercent: taxNum("7")}},
		{"rate_percent", TaxRuleInput{Country: "DE", RatePercent: taxNum("-1")}},
		{"rate_percent", TaxRuleInput{Country: "DE", RatePercent: taxNum("100.0001")}},
		{"rate_percent", TaxRuleInput{Country: "DE", RatePercent: taxNum("19.00001")}},
		{"name", TaxRuleInput{Country: "DE", RatePercent: taxNum("19"), Name: "VAT\x00"}},
		{"effective_until", TaxRuleInput{Country: "DE", RatePercent: taxNum("19"), EffectiveFrom: &from, EffectiveUntil: &from}},
		{"effective_from", TaxRuleInput{Country: "DE", RatePercent: taxNum("19"), EffectiveFrom: taxPtr(time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC))}},
	}
	for _, b := range bad {
		_, err := f.svc.CreateTaxRule(t.Context(), f.provider, f.issuer, b.in)
		var v *validation.Error
		if !errors.As(err, &v) || v.Fields[0].Field != b.field {
			t.Errorf("CreateTaxRule(%+v) = %v; want a validation error on %s", b.in, err, b.field)
		}
	}
	// Trailing zeros are not decimals: 19.000000 is 19.
	r := f.rule(TaxRuleInput{Country: "de", Region: "de-by", RatePercent: taxNum("19.000000"), EffectiveFrom: &from})
	if r.Country != "DE" || r.Region != "BY" || r.Name != "VAT" || !r.ReverseCharge || !r.RatePercent.Equal(taxNum("19")) {
		t.Errorf("CreateTaxRule(de/de-by) = %+v; want DE/BY, VAT, reverse charge allowed", r)
	}
	// The same start for the same country and region is ambiguous.
	if _, err := f.svc.CreateTaxRule(t.Context(), f.provider, f.issuer, TaxRuleInput{Country: "DE", Region: "BY", RatePercent: taxNum("7"), EffectiveFrom: &from}); !errors.Is(err, ErrTaxRuleConflict) {
		t.Errorf("CreateTaxRule(same start) = %v; want ErrTaxRuleConflict", err)
	}

	// Who may: another organization's provider finds nothing; a consumer
	// of the issuer's organization may read but not create.
	stranger := identity.Actor{Subject: "x", Role: identity.RoleProvider, OrgID: uuid.New()}
	if _, err := f.svc.CreateTaxRule(t.Context(), stranger, f.issuer, TaxRuleInput{Country: "FR", RatePercent: taxNum("20")}); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("CreateTaxRule(stranger) = %v; want ErrOrganizationNotFound", err)
	}
	if _, err := f.svc.ListTaxRules(t.Context(), stranger, f.issuer); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("ListTaxRules(stranger) = %v; want ErrOrganizationNotFound", err)
	}
	member := identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: f.issuer}
	if _, err := f.svc.CreateTaxRule(t.Context(), member, f.issuer, TaxRuleInput{Country: "FR", RatePercent: taxNum("20")}); !errors.Is(err, identity.ErrForbidden) {
		t.Errorf("CreateTaxRule(consumer member) = %v; want ErrForbidden", err)
	}
	if rules, err := f.svc.ListTaxRules(t.Context(), member, f.issuer); err != nil || len(rules) != 1 {
		t.Errorf("ListTaxRules(member) = %d rules, %v; want 1", len(rules), err)
	}
	if _, err := f.svc.ListTaxRules(t.Context(), f.admin, uuid.New()); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("ListTaxRules(admin, unknown issuer) = %v; want ErrOrganizationNotFound", err)
	}
	if _, err := f.svc.CreateTaxRule(t.Context(), f.admin, uuid.New(), TaxRuleInput{Country: "FR", RatePercent: taxNum("20")}); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("CreateTaxRule(admin, unknown issuer) = %v; want ErrOrganizationNotFound", err)
	}
}

// A rule no finalized invoice may have used is deleted; one that may
// have is ended now and kept, so its invoices can still be explained.
func TestDeleteTaxRuleKeepsRulesInUse(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	b := newRevenueBook(t, f)
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	unused := f.rule(TaxRuleInput{Country: "FR", RatePercent: taxNum("20"), EffectiveFrom: &from})
	cited := f.rule(TaxRuleInput{Country: "DE", RatePercent: taxNum("19"), EffectiveFrom: &from})
	byWindow := f.rule(TaxRuleInput{Country: "NL", RatePercent: taxNum("21"), EffectiveFrom: &from})
	draftOnly := f.rule(TaxRuleInput{Country: "BE", RatePercent: taxNum("21"), EffectiveFrom: &from})
	byCitedProfile := f.rule(TaxRuleInput{Country: "AT", RatePercent: taxNum("20"), EffectiveFrom: &from})

	// A finalized invoice citing the DE rule; one to an NL customer whose
	// cites name no rule, ended while the NL rule was in force; a draft to
	// a BE customer, which is recomputed and so uses nothing.
	feb := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	b.invoice(invoiceRow{status: "open", customer: b.customer("DE"), periodEnd: feb, finalized: feb, cites: `{"tax_rule_id": "` + cited.ID.String() + `"}`})
	b.invoice(invoiceRow{status: "paid", customer: b.customer("NL"), periodEnd: feb, finalized: feb})
	b.invoice(invoiceRow{status: "draft", customer: b.customer("BE"), periodEnd: feb})
	// A customer now in BE, in AT when its invoice was finalized.
	b.invoice(invoiceRow{status: "open", customer: b.customer("BE"), periodEnd: feb, finalized: feb, cites: `{"customer": {"country": "AT"}}`})

	now := f.clock.Now()
	for _, tt := range []struct {
		rule    TaxRule
		deleted bool
	}{{unused, true}, {cited, false}, {byWindow, false}, {draftOnly, true}, {byCitedProfile, false}} {
		got, deleted, err := f.svc.DeleteTaxRule(t.Context(), f.provider, f.issuer, tt.rule.ID)
		if err != nil || deleted != tt.deleted {
			t.Errorf("DeleteTaxRule(%s) = deleted %v, %v; want deleted %v", tt.rule.Country, deleted, err, tt.deleted)
			continue
		}
		if !deleted && (got.EffectiveUntil == nil || !got.EffectiveUntil.Equal(now)) {
			t.Errorf("DeleteTaxRule(%s) kept the rule until %v; want it ended at %s", tt.rule.Country, got.EffectiveUntil, now)
		}
	}
	rules, err := f.svc.ListTaxRules(t.Context(), f.provider, f.issuer)
	if err != nil || len(rules) != 3 {
		t.Fatalf("ListTaxRules = %d rules, %v; want the 3 in use", len(rules), err)
	}
	// The ended rule still taxes what ended before now, and nothing after.
	if got := f.taxFor(Profile{Country: "DE"}, feb); !got.RatePercent.Equal(taxNum("19")) {
		t.Errorf("TaxFor(DE, February) after the end = %+v; want 19%%", got)
	}
	if got := f.taxFor(Profile{Country: "DE"}, now); got.Name != "" {
		t.Errorf("TaxFor(DE, now) after the end = %+v; want none", got)
	}
	// Deleting an ended rule again keeps it as it is.
	f.clock.Advance(time.Hour)
	if got, deleted, err := f.svc.DeleteTaxRule(t.Context(), f.provider, f.issuer, cited.ID); err != nil || deleted || !got.EffectiveUntil.Equal(now) {
		t.Errorf("DeleteTaxRule(ended) = %+v, %v, %v; want kept, ended at %s", got.EffectiveUntil, deleted, err, now)
	}
	if _, _, err := f.svc.DeleteTaxRule(t.Context(), f.provider, f.issuer, unused.ID); !errors.Is(err, ErrTaxRuleNotFound) {
		t.Errorf("DeleteTaxRule(deleted) = %v; want ErrTaxRuleNotFound", err)
	}
	other := testenv.Org(t, f.pool, "other-"+testenv.Suffix())
	otherProvider := identity.Actor{Subject: "o", Role: identity.RoleProvider, OrgID: other}
	if _, _, err := f.svc.DeleteTaxRule(t.Context(), otherProvider, other, cited.ID); !errors.Is(err, ErrTaxRuleNotFound) {
		t.Errorf("DeleteTaxRule(another issuer's rule) = %v; want ErrTaxRuleNotFound", err)
	}
}

// Concurrent creations of rules with one start: one wins, the others are
// conflicts (the advisory lock orders the check and the insert).
func TestCreateTaxRuleConcurrentSameStart(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := f.svc.CreateTaxRule(t.Context(), f.provider, f.issuer, TaxRuleInput{
				Country: "SE", RatePercent: taxNum(fmt.Sprint(20 + i)), EffectiveFrom: &from,
			})
			errs <- err
		}()
	}
	var won, conflicts int
	for range n {
		switch err := <-errs; {
		case err == nil:
			won++
		case errors.Is(err, ErrTaxRuleConflict):
			conflicts++
		default:
			t.Errorf("CreateTaxRule = %v; want nil or ErrTaxRuleConflict", err)
		}
	}
	if won != 1 || conflicts != n-1 {
		t.Errorf("concurrent creations: %d created, %d conflicts; want 1 and %d", won, conflicts, n-1)
	}
}
