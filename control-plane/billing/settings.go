package billing

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/validation"
)

// DefaultInvoicePrefix is an issuer's invoice number prefix until it
// sets one.
const DefaultInvoicePrefix = "INV"

// Settings are an issuer's billing settings.
type Settings struct {
	OrganizationID uuid.UUID `json:"organization_id"`
	// InvoicePrefix starts the issuer's invoice numbers
	// (<PREFIX>-<YYYY>-<NNNNNN>): 2 to 12 capitals or digits, default
	// INV. A change applies to invoices finalized afterwards; the
	// sequence goes on.
	InvoicePrefix string `json:"invoice_prefix"`
	// PlatformFeePercent is the platform's share of the issuer's net
	// revenue (0 to 100, two decimals), set by platform admins only;
	// shown on the revenue statement.
	PlatformFeePercent decimal.Decimal `json:"platform_fee_percent"`
	// UpdatedAt is null while the issuer has the defaults.
	UpdatedAt *time.Time `json:"updated_at"`
}

// SettingsInput changes an issuer's settings: the fields given (not
// null), the others kept.
type SettingsInput struct {
	InvoicePrefix      *string          `json:"invoice_prefix"`
	PlatformFeePercent *decimal.Decimal `json:"platform_fee_percent"`
}

var prefixRe = regexp.MustCompile(`^[A-Z0-9]{2,12}$`)

// Validate checks in; the prefix is put in capitals.
func (in *SettingsInput) Validate() error {
	var v validation.Error
	if in.InvoicePrefix == nil && in.PlatformFeePercent == nil {
		v.Add("invoice_prefix", "give invoice_prefix, platform_fee_percent or both")
	}
	if p := in.InvoicePrefix; p != nil {
		up := strings.ToUpper(strings.TrimSpace(*p))
		if !prefixRe.MatchString(up) {
			v.Add("invoice_prefix", "must be 2 to 12 letters or digits")
		}
		in.InvoicePrefix = &up
	}
	if f := in.PlatformFeePercent; f != nil && (f.IsNegative() || f.GreaterThan(percentScale) || !f.Equal(f.Round(2))) {
		v.Add("platform_fee_percent", "must be 0 to 100 with at most 2 decimals")
	}
	return v.Err()
}

// GetSettings returns org's settings (the defaults until set): to its
// members and admins.
func (s *Service) GetSettings(ctx context.Context, actor identity.Actor, org uuid.UUID) (Settings, error) {
	if !memberOrAdmin(actor, org) {
		return Settings{}, ErrOrganizationNotFound
	}
	if err := organizationExists(ctx, db.New(s.pool), org); err != nil {
		return Settings{}, err
	}
	return s.IssuerSettings(ctx, org)
}

// IssuerSettings returns org's settings, the defaults when it has none,
// for the service's own use (the prefix at finalization, the fee of a
// revenue statement).
func (s *Service) IssuerSettings(ctx context.Context, org uuid.UUID) (Settings, error) {
	return issuerSettings(ctx, db.New(s.pool), org)
}

func issuerSettings(ctx context.Context, q *db.Queries, org uuid.UUID) (Settings, error) {
	r, err := q.IssuerSettingsGet(ctx, org)
	if errors.Is(err, pgx.ErrNoRows) {
		return Settings{OrganizationID: org, InvoicePrefix: DefaultInvoicePrefix, PlatformFeePercent: decimal.Zero}, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("read issuer settings: %w", err)
	}
	return settingsFromRow(r), nil
}

func settingsFromRow(r db.IssuerSetting) Settings {
	at := r.UpdatedAt
	return Settings{OrganizationID: r.OrganizationID, InvoicePrefix: r.InvoicePrefix, PlatformFeePercent: r.PlatformFeePercent, UpdatedAt: &at}
}

// PutSettings changes org's settings: the prefix by its providers or an
// admin, the platform fee by admins only (a provider asking for it is
// forbidden, whatever else it asks).
func (s *Service) PutSettings(ctx context.Context, actor identity.Actor, org uuid.UUID, in SettingsInput) (Settings, error) {
	if !memberOrAdmin(actor, org) {
		return Settings{}, ErrOrganizationNotFound
	}
	if !actor.CanProvide(org) || (in.PlatformFeePercent != nil && !actor.IsAdmin()) {
		return Settings{}, identity.ErrForbidden
	}
	if err := in.Validate(); err != nil {
		return Settings{}, err
	}
	var out Settings
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := organizationExists(ctx, q, org); err != nil {
			return err
		}
		before, err := issuerSettings(ctx, q, org)
		if err != nil {
			return err
		}
		r, err := q.IssuerSettingsUpsert(ctx, db.IssuerSettingsUpsertParams{
			OrganizationID: org, InvoicePrefix: in.InvoicePrefix, PlatformFeePercent: in.PlatformFeePercent,
		})
		if err != nil {
			return fmt.Errorf("write issuer settings: %w", err)
		}
		out = settingsFromRow(r)
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: org, Action: "billing_settings.put",
			TargetType: "billing_settings", TargetID: org.String(), Before: before, After: out,
		})
	})
	return out, err
}
