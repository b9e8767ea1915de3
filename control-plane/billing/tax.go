package billing

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// ReverseChargeMention is the legal mention of a reverse-charged invoice.
const ReverseChargeMention = "Reverse charge: VAT to be accounted for by the recipient, Article 196, Council Directive 2006/112/EC"

// CiteTaxRule is the key under which an invoice's cites name the tax rule
// that applied (its id): a rule a finalized invoice cites is never
// deleted, only ended, so the invoice can still be explained.
const CiteTaxRule = "tax_rule_id"

var (
	// ErrTaxRuleNotFound: no such rule of the issuer.
	ErrTaxRuleNotFound = errors.New("tax rule not found")
	// ErrTaxRuleConflict: the issuer has a rule for the same country and
	// region starting at the same instant, so neither would supersede the
	// other.
	ErrTaxRuleConflict = errors.New("tax rule with the same country, region and start exists")
)

// TaxRule is an issuer's tax for customers in a country, or in one region
// of it, over [EffectiveFrom, EffectiveUntil).
//
// Which rule applies (TaxFor): among the rules in force at the instant
// asked for, a rule of the customer's region before one of the whole
// country, and among those the one that started last, so that a new rule
// supersedes an open-ended one from its start without editing it.
type TaxRule struct {
	ID       uuid.UUID `json:"id"`
	IssuerID uuid.UUID `json:"issuer_id"`
	Country  string    `json:"country"`
	// Region is empty for the whole country.
	Region string `json:"region"`
	// Name is what invoices call the tax (VAT, GST, Sales tax).
	Name        string          `json:"name"`
	RatePercent decimal.Decimal `json:"rate_percent"`
	// Inclusive: prices include the tax, which the invoice states.
	Inclusive bool `json:"inclusive"`
	// ReverseCharge allows the EU reverse charge for business customers
	// of this country with a VAT number, when the issuer is elsewhere in
	// the EU.
	ReverseCharge  bool       `json:"reverse_charge"`
	EffectiveFrom  time.Time  `json:"effective_from"`
	EffectiveUntil *time.Time `json:"effective_until"`
	CreatedBy      string     `json:"created_by"`
	CreatedAt      time.Time  `json:"created_at"`
}

// inForce reports whether r applies at t.
func (r TaxRule) inForce(t time.Time) bool {
	return !r.EffectiveFrom.After(t) && (r.EffectiveUntil == nil || r.EffectiveUntil.After(t))
}

// TaxRuleInput creates a tax rule.
type TaxRuleInput struct {
	Country     string          `json:"country"`
	Region      string          `json:"region"`
	Name        string          `json:"name"`
	RatePercent decimal.Decimal `json:"rate_percent"`
	Inclusive   bool            `json:"inclusive"`
	// ReverseCharge defaults to true.
	ReverseCharge *bool `json:"reverse_charge"`
	// EffectiveFrom defaults to now.
	EffectiveFrom  *time.Time `json:"effective_from"`
	EffectiveUntil *time.Time `json:"effective_until"`
}

var (
	percentScale = decimal.NewFromInt(100)
	// Rules may be dated from 2000 to 9999, the years an invoice number
	// can carry.
	minRuleTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxRuleTime = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
)

// Validate checks in and fills its defaults (now is EffectiveFrom's).
func (in *TaxRuleInput) Validate(now time.Time) error {
	var v validation.Error
	in.Country = strings.ToUpper(strings.TrimSpace(in.Country))
	if !ValidCountry(in.Country) {
		v.Add("country", "must be an ISO 3166-1 alpha-2 country code, such as DE")
	}
	if r, ok := normalizeRegion(in.Country, in.Region); ok {
		in.Region = r
	} else {
		v.Add("region", "must be an ISO 3166-2 subdivision code (CA or US-CA), or empty for the whole country")
	}
	in.Name = strings.TrimSpace(in.Name)
	if in.Name == "" {
		in.Name = "VAT"
	}
	if utf8.RuneCountInString(in.Name) > 100 || !utf8.ValidString(in.Name) || strings.IndexFunc(in.Name, controlOrBidi) >= 0 {
		v.Add("name", "must be at most 100 characters of text")
	}
	if rate := in.RatePercent; rate.IsNegative() || rate.GreaterThan(percentScale) || !rate.Equal(rate.Round(4)) {
		v.Add("rate_percent", "must be 0 to 100 with at most 4 decimals")
	}
	if in.ReverseCharge == nil {
		yes := true
		in.ReverseCharge = &yes
	}
	if in.EffectiveFrom == nil {
		from := now.Truncate(time.Second)
		in.EffectiveFrom = &from
	}
	if in.EffectiveFrom.Before(minRuleTime) || in.EffectiveFrom.After(maxRuleTime) {
		v.Add("effective_from", "must be in the years 2000 to 9999")
	}
	if u := in.EffectiveUntil; u != nil && (!u.After(*in.EffectiveFrom) || u.After(maxRuleTime)) {
		v.Add("effective_until", "must be after effective_from, before the year 10000, or null for no end")
	}
	return v.Err()
}

func taxRuleFromRow(r db.TaxRule) TaxRule {
	return TaxRule{
		ID: r.ID, IssuerID: r.IssuerID, Country: r.Country, Region: r.Region, Name: r.Name, RatePercent: r.RatePercent,
		Inclusive: r.Inclusive, ReverseCharge: r.ReverseCharge, EffectiveFrom: r.EffectiveFrom, EffectiveUntil: r.EffectiveUntil,
		CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt,
	}
}

// pickTaxRule returns the rule that applies at t to a customer in
// country and region among rules, false when none does.
func pickTaxRule(rules []TaxRule, country, region string, t time.Time) (TaxRule, bool) {
	var cands []TaxRule
	for _, r := range rules {
		if r.Country == country && (r.Region == "" || r.Region == region) && r.inForce(t) {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		return TaxRule{}, false
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if (a.Region != "") != (b.Region != "") {
			return a.Region != ""
		}
		if !a.EffectiveFrom.Equal(b.EffectiveFrom) {
			return a.EffectiveFrom.After(b.EffectiveFrom)
		}
		// Equal starts cannot be created (ErrTaxRuleConflict); ordered
		// anyway, so that the choice never depends on the rows' order.
		return a.ID.String() < b.ID.String()
	})
	return cands[0], true
}

// taxTreatment is how rule taxes customer when the issuer is in
// issuerCountry ("" when unknown). A reverse charge needs all of: the
// rule allows it, the issuer and the customer in different member states
// of the EU VAT area, and a VAT number of the customer's country's
// format. It charges no tax (an inclusive rule's prices are then charged
// as they are) and carries ReverseChargeMention.
func taxTreatment(rule TaxRule, customer Profile, issuerCountry string) metering.TaxTreatment {
	if rule.ReverseCharge && InEUVATArea(customer.Country) && InEUVATArea(issuerCountry) &&
		customer.Country != issuerCountry && validVATID(customer.Country, customer.TaxID) {
		return metering.TaxTreatment{Name: rule.Name, RatePercent: decimal.Zero, ReverseCharge: true, Mention: ReverseChargeMention}
	}
	return metering.TaxTreatment{Name: rule.Name, RatePercent: rule.RatePercent, Inclusive: rule.Inclusive}
}

// TaxFor returns how tax applies at the instant at to an invoice of
// issuerID to customer: the most specific rule of the issuer in force
// then for the customer's country and region, reverse charged as
// taxTreatment says (the issuer's country is its own billing profile's).
// No rule, or a customer without a country, is no tax: the zero
// treatment.
func (s *Service) TaxFor(ctx context.Context, issuerID uuid.UUID, customer Profile, at time.Time) (metering.TaxTreatment, error) {
	t, _, err := s.TaxRuleFor(ctx, issuerID, customer, at)
	return t, err
}

// TaxRuleFor is TaxFor with the rule that applied, nil for none: the id
// an invoice cites under CiteTaxRule.
func (s *Service) TaxRuleFor(ctx context.Context, issuerID uuid.UUID, customer Profile, at time.Time) (metering.TaxTreatment, *TaxRule, error) {
	if customer.Country == "" {
		return metering.TaxTreatment{}, nil, nil
	}
	q := db.New(s.pool)
	rows, err := q.TaxRulesInForce(ctx, db.TaxRulesInForceParams{IssuerID: issuerID, Country: customer.Country, Region: customer.Region, At: at})
	if err != nil {
		return metering.TaxTreatment{}, nil, fmt.Errorf("read tax rules: %w", err)
	}
	rules := make([]TaxRule, len(rows))
	for i, r := range rows {
		rules[i] = taxRuleFromRow(r)
	}
	rule, ok := pickTaxRule(rules, customer.Country, customer.Region, at)
	if !ok {
		return metering.TaxTreatment{}, nil, nil
	}
	issuer, _, err := s.BillingProfile(ctx, issuerID)
	if err != nil {
		return metering.TaxTreatment{}, nil, err
	}
	return taxTreatment(rule, customer, issuer.Country), &rule, nil
}

// CreateTaxRule adds a rule of issuer: its providers and admins. A rule
// for the same country and region with the same start is a conflict; a
// later start supersedes the earlier rule from then on.
func (s *Service) CreateTaxRule(ctx context.Context, actor identity.Actor, issuer uuid.UUID, in TaxRuleInput) (TaxRule, error) {
	if !memberOrAdmin(actor, issuer) {
		return TaxRule{}, ErrOrganizationNotFound
	}
	if !actor.CanProvide(issuer) {
		return TaxRule{}, identity.ErrForbidden
	}
	if err := in.Validate(s.now()); err != nil {
		return TaxRule{}, err
	}
	var out TaxRule
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := organizationExists(ctx, q, issuer); err != nil {
			return err
		}
		if err := q.TaxRuleLock(ctx, db.TaxRuleLockParams{IssuerID: issuer.String(), Country: in.Country, Region: in.Region}); err != nil {
			return fmt.Errorf("lock tax rules: %w", err)
		}
		taken, err := q.TaxRuleStartTaken(ctx, db.TaxRuleStartTakenParams{
			IssuerID: issuer, Country: in.Country, Region: in.Region, EffectiveFrom: *in.EffectiveFrom,
		})
		if err != nil {
			return fmt.Errorf("read tax rules: %w", err)
		}
		if taken {
			return ErrTaxRuleConflict
		}
		r, err := q.TaxRuleInsert(ctx, db.TaxRuleInsertParams{
			IssuerID: issuer, Country: in.Country, Region: in.Region, Name: in.Name, RatePercent: in.RatePercent,
			Inclusive: in.Inclusive, ReverseCharge: *in.ReverseCharge, EffectiveFrom: *in.EffectiveFrom,
			EffectiveUntil: in.EffectiveUntil, CreatedBy: actor.Subject,
		})
		if err != nil {
			return fmt.Errorf("insert tax rule: %w", err)
		}
		out = taxRuleFromRow(r)
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: issuer, Action: "tax_rule.create",
			TargetType: "tax_rule", TargetID: out.ID.String(), After: out,
		})
	})
	return out, err
}

// ListTaxRules lists issuer's rules by country, region and start: to its
// members and admins.
func (s *Service) ListTaxRules(ctx context.Context, actor identity.Actor, issuer uuid.UUID) ([]TaxRule, error) {
	if !memberOrAdmin(actor, issuer) {
		return nil, ErrOrganizationNotFound
	}
	q := db.New(s.pool)
	rows, err := q.TaxRuleListByIssuer(ctx, issuer)
	if err != nil {
		return nil, fmt.Errorf("list tax rules: %w", err)
	}
	if len(rows) == 0 {
		// An admin naming an organization that does not exist.
		if err := organizationExists(ctx, q, issuer); err != nil {
			return nil, err
		}
	}
	out := make([]TaxRule, len(rows))
	for i, r := range rows {
		out[i] = taxRuleFromRow(r)
	}
	return out, nil
}

// DeleteTaxRule deletes a rule of issuer (its providers and admins), or,
// when a finalized invoice may have used it, ends it now instead (an
// ended rule stays as it is): deleted says which. A rule that ends keeps
// explaining the invoices it taxed; drafts are recomputed without it.
func (s *Service) DeleteTaxRule(ctx context.Context, actor identity.Actor, issuer, id uuid.UUID) (rule TaxRule, deleted bool, err error) {
	if !memberOrAdmin(actor, issuer) {
		return TaxRule{}, false, ErrOrganizationNotFound
	}
	if !actor.CanProvide(issuer) {
		return TaxRule{}, false, identity.ErrForbidden
	}
	now := s.now()
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		row, err := q.TaxRuleGetForUpdate(ctx, db.TaxRuleGetForUpdateParams{IssuerID: issuer, ID: id})
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrTaxRuleNotFound
		}
		if err != nil {
			return fmt.Errorf("read tax rule: %w", err)
		}
		before := taxRuleFromRow(row)
		inUse, err := q.TaxRuleInUse(ctx, db.TaxRuleInUseParams{
			IssuerID: issuer, RuleID: id.String(), EffectiveFrom: row.EffectiveFrom, EffectiveUntil: row.EffectiveUntil, Country: row.Country,
		})
		if err != nil {
			return fmt.Errorf("read invoices of tax rule: %w", err)
		}
		rule, deleted, err = endOrDelete(ctx, q, before, inUse, now)
		if err != nil {
			return err
		}
		action, after := "tax_rule.delete", any(nil)
		if !deleted {
			action, after = "tax_rule.end", rule
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: issuer, Action: action,
			TargetType: "tax_rule", TargetID: id.String(), Before: before, After: after,
		})
	})
	return rule, deleted, err
}

// endOrDelete deletes r, or ends it at now when inUse. A rule in use
// started before now (an invoice it taxed has ended), so now is after its
// start.
func endOrDelete(ctx context.Context, q *db.Queries, r TaxRule, inUse bool, now time.Time) (TaxRule, bool, error) {
	if !inUse {
		if err := q.TaxRuleDelete(ctx, db.TaxRuleDeleteParams{IssuerID: r.IssuerID, ID: r.ID}); err != nil {
			return TaxRule{}, false, fmt.Errorf("delete tax rule: %w", err)
		}
		return r, true, nil
	}
	if r.EffectiveUntil != nil && !r.EffectiveUntil.After(now) {
		return r, false, nil
	}
	if !now.After(r.EffectiveFrom) {
		now = r.EffectiveFrom.Add(time.Microsecond)
	}
	row, err := q.TaxRuleEnd(ctx, db.TaxRuleEndParams{IssuerID: r.IssuerID, ID: r.ID, EffectiveUntil: &now})
	if err != nil {
		return TaxRule{}, false, fmt.Errorf("end tax rule: %w", err)
	}
	return taxRuleFromRow(row), false, nil
}
