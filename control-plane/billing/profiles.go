package billing

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/validation"
)

var (
	// ErrOrganizationNotFound: no such organization the caller may see
	// (another organization's profile, settings or revenue).
	ErrOrganizationNotFound = errors.New("organization not found")
	// ErrProfileNotFound: the organization has no billing profile yet.
	ErrProfileNotFound = errors.New("billing profile not found")
)

// Profile is an organization's billing profile: who its invoices are
// addressed to (as a customer) or from (as an issuer). The country (and
// region) decide the tax rule that applies to a customer; an issuer's
// country decides whether a customer elsewhere in the EU is reverse
// charged. Each finalized invoice cites the customer's profile as it was.
type Profile struct {
	OrganizationID uuid.UUID `json:"organization_id"`
	LegalName      string    `json:"legal_name"`
	AddressLine1   string    `json:"address_line1"`
	AddressLine2   string    `json:"address_line2"`
	City           string    `json:"city"`
	PostalCode     string    `json:"postal_code"`
	// Country is an ISO 3166-1 alpha-2 code.
	Country string `json:"country"`
	// Region is an ISO 3166-2 subdivision code without its country part
	// (CA for US-CA, QC for CA-QC), or empty.
	Region string `json:"region"`
	// TaxID is the VAT or tax number, stored in its canonical form for a
	// country of known format (DE123456789), empty for none.
	TaxID     string    `json:"tax_id"`
	Email     string    `json:"email"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ProfileInput sets a billing profile.
type ProfileInput struct {
	LegalName    string `json:"legal_name"`
	AddressLine1 string `json:"address_line1"`
	AddressLine2 string `json:"address_line2"`
	City         string `json:"city"`
	PostalCode   string `json:"postal_code"`
	Country      string `json:"country"`
	Region       string `json:"region"`
	TaxID        string `json:"tax_id"`
	Email        string `json:"email"`
}

// regionRe is a subdivision code's part after the country (ISO 3166-2
// uses one to three letters or digits).
var regionRe = regexp.MustCompile(`^[A-Z0-9]{1,3}$`)

// Validate checks in and puts it in stored form: fields trimmed, country
// and region in capitals, the region without a country prefix, the tax id
// canonical. The bounds are the columns'.
func (in *ProfileInput) Validate() error {
	var v validation.Error
	text := func(field string, s *string, minLen, maxLen int) {
		*s = strings.TrimSpace(*s)
		n := utf8.RuneCountInString(*s)
		switch {
		case !utf8.ValidString(*s) || strings.IndexFunc(*s, controlOrBidi) >= 0:
			v.Add(field, "must be text without control characters")
		case n < minLen || n > maxLen:
			v.Add(field, "must be %d to %d characters", minLen, maxLen)
		}
	}
	text("legal_name", &in.LegalName, 1, 200)
	text("address_line1", &in.AddressLine1, 0, 200)
	text("address_line2", &in.AddressLine2, 0, 200)
	text("city", &in.City, 0, 100)
	text("postal_code", &in.PostalCode, 0, 20)
	in.Country = strings.ToUpper(strings.TrimSpace(in.Country))
	if !ValidCountry(in.Country) {
		v.Add("country", "must be an ISO 3166-1 alpha-2 country code, such as DE")
	}
	if r, ok := normalizeRegion(in.Country, in.Region); ok {
		in.Region = r
	} else {
		v.Add("region", "must be an ISO 3166-2 subdivision code (CA or US-CA), or empty")
	}
	if len(in.TaxID) > 64 {
		v.Add("tax_id", "must be at most 32 characters")
	} else if id, ok := NormalizeTaxID(in.Country, in.TaxID); ok && len(id) <= 32 {
		in.TaxID = id
	} else {
		v.Add("tax_id", "is not a tax id of the country's format (a VAT number such as DE123456789 in the EU)")
	}
	in.Email = strings.TrimSpace(in.Email)
	if !validEmail(in.Email) {
		v.Add("email", "must be one email address, such as billing@example.com")
	}
	return v.Err()
}

// controlOrBidi reports control characters and the bidirectional
// controls, which would let a profile's text read differently on an
// invoice than it is stored (an address shown reversed).
func controlOrBidi(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}

// normalizeRegion returns region in capitals without "<country>-", or
// false when it is not a subdivision code.
func normalizeRegion(country, region string) (string, bool) {
	r := strings.ToUpper(strings.TrimSpace(region))
	if r == "" {
		return "", true
	}
	r = strings.TrimPrefix(r, country+"-")
	return r, regionRe.MatchString(r)
}

// validEmail accepts one bare address (no display name, no line breaks,
// a dot in the domain) of at most 320 characters: where invoices are sent.
func validEmail(s string) bool {
	if len(s) < 3 || len(s) > 320 || strings.ContainsAny(s, "\r\n<>,; ") {
		return false
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	domain := s[at+1:]
	return at > 0 && strings.Contains(domain, ".") && !strings.HasPrefix(domain, ".") && !strings.HasSuffix(domain, ".")
}

// memberOrAdmin reports whether actor acts for org (any role) or for the
// platform: who sees an organization's profile, settings and revenue.
func memberOrAdmin(actor identity.Actor, org uuid.UUID) bool {
	return actor.IsAdmin() || actor.OrgID == org
}

func profileFromRow(r db.BillingProfile) Profile {
	return Profile{
		OrganizationID: r.OrganizationID, LegalName: r.LegalName, AddressLine1: r.AddressLine1, AddressLine2: r.AddressLine2,
		City: r.City, PostalCode: r.PostalCode, Country: r.Country, Region: r.Region, TaxID: r.TaxID, Email: r.Email,
		UpdatedAt: r.UpdatedAt,
	}
}

// GetProfile returns org's billing profile: to its members and admins;
// another organization's is not found.
func (s *Service) GetProfile(ctx context.Context, actor identity.Actor, org uuid.UUID) (Profile, error) {
	if !memberOrAdmin(actor, org) {
		return Profile{}, ErrOrganizationNotFound
	}
	p, ok, err := s.BillingProfile(ctx, org)
	if err != nil {
		return Profile{}, err
	}
	if !ok {
		return Profile{}, ErrProfileNotFound
	}
	return p, nil
}

// BillingProfile returns org's billing profile, ok false when it has
// none: what invoices cite and TaxFor reads, for the service's own use.
func (s *Service) BillingProfile(ctx context.Context, org uuid.UUID) (Profile, bool, error) {
	r, err := db.New(s.pool).BillingProfileGet(ctx, org)
	if errors.Is(err, pgx.ErrNoRows) {
		return Profile{}, false, nil
	}
	if err != nil {
		return Profile{}, false, fmt.Errorf("read billing profile: %w", err)
	}
	return profileFromRow(r), true, nil
}

// PutProfile creates or replaces org's billing profile: its members (a
// consumer for the invoices it receives, a provider for those it issues)
// and admins. Invoices already finalized keep the profile they cite.
func (s *Service) PutProfile(ctx context.Context, actor identity.Actor, org uuid.UUID, in ProfileInput) (Profile, error) {
	if !memberOrAdmin(actor, org) {
		return Profile{}, ErrOrganizationNotFound
	}
	if err := in.Validate(); err != nil {
		return Profile{}, err
	}
	var out Profile
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := organizationExists(ctx, q, org); err != nil {
			return err
		}
		var before any
		if r, err := q.BillingProfileGet(ctx, org); err == nil {
			before = profileFromRow(r)
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read billing profile: %w", err)
		}
		r, err := q.BillingProfileUpsert(ctx, db.BillingProfileUpsertParams{
			OrganizationID: org, LegalName: in.LegalName, AddressLine1: in.AddressLine1, AddressLine2: in.AddressLine2,
			City: in.City, PostalCode: in.PostalCode, Country: in.Country, Region: in.Region, TaxID: in.TaxID, Email: in.Email,
		})
		if err != nil {
			return fmt.Errorf("write billing profile: %w", err)
		}
		out = profileFromRow(r)
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: org, Action: "billing_profile.put",
			TargetType: "billing_profile", TargetID: org.String(), Before: before, After: out,
		})
	})
	return out, err
}

// organizationExists is nil when org exists, ErrOrganizationNotFound when
// it does not.
func organizationExists(ctx context.Context, q *db.Queries, org uuid.UUID) error {
	ok, err := q.OrganizationExists(ctx, org)
	if err != nil {
		return fmt.Errorf("read organization: %w", err)
	}
	if !ok {
		return ErrOrganizationNotFound
	}
	return nil
}
