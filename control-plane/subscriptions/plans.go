package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// PlanStatus says whether a plan takes subscriptions.
type PlanStatus string

// Plan statuses: only active plans take new subscriptions; archived ones
// keep serving the subscriptions they have.
const (
	PlanDraft    PlanStatus = "draft"
	PlanActive   PlanStatus = "active"
	PlanArchived PlanStatus = "archived"
)

// Terms are a plan version's priced terms: the base fee and limits here,
// and the per-meter charges, which control-plane/pricing validates, writes
// and reads. Promotions are not terms: they are redeemed by subscriptions.
type Terms struct {
	// Type is usage_based, subscription, freemium or hybrid.
	Type     string `json:"type"`
	Currency string `json:"currency"`
	// Interval is the billing period: month (default) or year.
	Interval  string          `json:"interval"`
	BaseFee   decimal.Decimal `json:"base_fee"`
	TrialDays int             `json:"trial_days"`
	// QuotaRequests per period; null is unlimited.
	QuotaRequests *int64 `json:"quota_requests"`
	// QuotaHard blocks calls over the quota; false bills them as overage.
	QuotaHard     bool `json:"quota_hard"`
	RatePerSecond *int `json:"rate_per_second"`
	RatePerMinute *int `json:"rate_per_minute"`
	// IncludedUnits is the plan's as a whole; nothing prices with it, since
	// each charge has included units of its own.
	IncludedUnits decimal.Decimal `json:"included_units"`
	// Charges price the meters of the plan's API, in the order of their
	// slugs once stored; the plan's type says which it may have
	// (pricing.ValidateType).
	Charges []pricing.Charge `json:"charges"`
}

// maxAmount bounds amounts and units: the columns are numeric(20, 6).
var maxAmount = decimal.New(1, 14)

var (
	planSlugRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	currencyRe = regexp.MustCompile(`^[A-Z]{3}$`)
	planTypes  = map[string]bool{"usage_based": true, "subscription": true, "freemium": true, "hybrid": true}
)

// Validate checks the terms as every writer of plan versions holds them
// (the REST API, plan files), filling defaults; each field is named under
// prefix (terms over REST: terms.base_fee), or bare when prefix is empty.
func (t *Terms) Validate(v *validation.Error, prefix string) {
	at := func(field string) string {
		if prefix == "" {
			return field
		}
		return prefix + "." + field
	}
	if t.Type == "" {
		t.Type = "subscription"
	}
	if !planTypes[t.Type] {
		v.Add(at("type"), "must be usage_based, subscription, freemium or hybrid")
	}
	if _, err := metering.CurrencyOf(t.Currency); !currencyRe.MatchString(t.Currency) || err != nil {
		v.Add(at("currency"), "must be an ISO 4217 code Veil prices in, such as USD")
	}
	if t.Interval == "" {
		t.Interval = "month"
	}
	if t.Interval != "month" && t.Interval != "year" {
		v.Add(at("interval"), "must be month or year")
	}
	if !validation.Sane(t.BaseFee) || t.BaseFee.IsNegative() || t.BaseFee.Exponent() < -6 || t.BaseFee.GreaterThanOrEqual(maxAmount) {
		v.Add(at("base_fee"), "must be zero or more and below 10^14, with at most 6 decimals")
	}
	if t.TrialDays < 0 || t.TrialDays > 365 {
		v.Add(at("trial_days"), "must be 0 to 365")
	}
	// A quota of 0 would block a subscription before its first call: a
	// plan that sells nothing is a draft or archived plan instead.
	if t.QuotaRequests != nil && *t.QuotaRequests < 1 {
		v.Add(at("quota_requests"), "must be 1 or more, or null for unlimited")
	}
	for _, r := range []struct {
		field string
		v     *int
	}{{at("rate_per_second"), t.RatePerSecond}, {at("rate_per_minute"), t.RatePerMinute}} {
		if r.v != nil && (*r.v < 1 || *r.v > 1_000_000) {
			v.Add(r.field, "must be 1 to 1000000, or null for no limit")
		}
	}
	if !validation.Sane(t.IncludedUnits) || t.IncludedUnits.IsNegative() || t.IncludedUnits.Exponent() < -6 || t.IncludedUnits.GreaterThanOrEqual(maxAmount) {
		v.Add(at("included_units"), "must be zero or more and below 10^14, with at most 6 decimals")
	}
	if t.Charges == nil {
		t.Charges = []pricing.Charge{}
	}
	pricing.ValidateCharges(v, at("charges"), t.Charges)
	pricing.ValidateType(v, prefix, t.Type, t.BaseFee, t.Charges)
}

// PlanVersion is one immutable set of terms.
type PlanVersion struct {
	ID      uuid.UUID `json:"id"`
	PlanID  uuid.UUID `json:"plan_id"`
	Version int       `json:"version"`
	Terms   Terms     `json:"terms"`
	// Source is api or file; SourceFile names the plan file of a version
	// that came from one.
	Source     string    `json:"source"`
	SourceFile *string   `json:"source_file"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
}

// Plan is a plan of an API with its latest version.
type Plan struct {
	ID          uuid.UUID   `json:"id"`
	APIID       uuid.UUID   `json:"api_id"`
	Name        string      `json:"name"`
	Slug        string      `json:"slug"`
	Description string      `json:"description"`
	Status      PlanStatus  `json:"status"`
	Current     PlanVersion `json:"current_version"`
	// SourceFile names the plan file that manages the plan; such a plan is
	// read-only over REST.
	SourceFile *string   `json:"source_file"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// PlanInput creates a plan with its first version.
type PlanInput struct {
	Name        string     `json:"name"`
	Slug        string     `json:"slug"`
	Description string     `json:"description"`
	Status      PlanStatus `json:"status"`
	Terms       Terms      `json:"terms"`
}

// Validate checks in, filling defaults.
func (in *PlanInput) Validate() error {
	var v validation.Error
	in.Name = strings.TrimSpace(in.Name)
	if n := utf8.RuneCountInString(strings.TrimSpace(in.Name)); n == 0 || n > 200 {
		v.Add("name", "must be 1 to 200 characters")
	}
	if !planSlugRe.MatchString(in.Slug) {
		v.Add("slug", "must match %s", planSlugRe)
	}
	if utf8.RuneCountInString(in.Description) > 5000 {
		v.Add("description", "must be at most 5000 characters")
	}
	switch in.Status {
	case "":
		in.Status = PlanActive
	case PlanDraft, PlanActive:
	default:
		v.Add("status", "must be draft or active")
	}
	in.Terms.Validate(&v, "terms")
	return v.Err()
}

// PlanPatch changes a plan's description or status; terms change by
// adding a version.
type PlanPatch struct {
	Name        *string     `json:"name"`
	Description *string     `json:"description"`
	Status      *PlanStatus `json:"status"`
}

// VersionInput adds a version of a plan's terms.
type VersionInput struct {
	Terms Terms `json:"terms"`
}

// apiFor loads the API of a plan operation: the caller must see it, and
// change it when change is set (its provider or an admin).
func (s *Service) apiFor(ctx context.Context, q pgx.Tx, actor identity.Actor, apiID uuid.UUID, change bool) (org uuid.UUID, state catalog.State, err error) {
	a, err := db.New(q).APIAccessGet(ctx, apiID)
	org, state, vis := a.OrganizationID, catalog.State(a.State), catalog.Visibility(a.Visibility)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, "", catalog.ErrAPINotFound
	}
	if err != nil {
		return uuid.Nil, "", fmt.Errorf("load api: %w", err)
	}
	if !catalog.VisibleTo(actor, org, vis, state) {
		return uuid.Nil, "", catalog.ErrAPINotFound
	}
	if change && !actor.CanProvide(org) {
		return uuid.Nil, "", identity.ErrForbidden
	}
	return org, state, nil
}

// CreatePlan adds a plan, with version 1 of its terms, to an API the
// actor provides.
func (s *Service) CreatePlan(ctx context.Context, actor identity.Actor, apiID uuid.UUID, in PlanInput) (Plan, error) {
	if err := in.Validate(); err != nil {
		return Plan{}, err
	}
	var out Plan
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		org, _, err := s.apiFor(ctx, tx, actor, apiID, true)
		if err != nil {
			return err
		}
		q := db.New(tx)
		id, err := q.PlanInsert(ctx, db.PlanInsertParams{ApiID: apiID, Name: in.Name, Slug: in.Slug, Description: in.Description, Status: db.PlanStatus(in.Status)})
		if err != nil {
			return translatePlan(err)
		}
		if err := insertVersion(ctx, tx, apiID, id, 1, in.Terms, actor.Subject); err != nil {
			return err
		}
		if out, err = withCharges(ctx, tx)(toPlan(q.PlanGetByID(ctx, id))); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, org, "plan.create", "plan", id, nil, out, "plan.created", map[string]any{"plan": out})
	})
	return out, err
}

// insertVersion adds a version of the terms t, with its charges, to the
// plan planID of the API apiID.
func insertVersion(ctx context.Context, tx pgx.Tx, apiID, planID uuid.UUID, version int, t Terms, by string) error {
	id, err := db.New(tx).PlanVersionInsert(ctx, db.PlanVersionInsertParams{
		PlanID: planID, Version: int32(version), Type: db.PlanType(t.Type), Currency: t.Currency, Interval: db.BillingInterval(t.Interval),
		BaseFee: t.BaseFee, TrialDays: int32(t.TrialDays), QuotaRequests: t.QuotaRequests, QuotaHard: t.QuotaHard,
		RatePerSecond: int32Ptr(t.RatePerSecond), RatePerMinute: int32Ptr(t.RatePerMinute), IncludedUnits: t.IncludedUnits, CreatedBy: by,
	})
	if err != nil {
		return fmt.Errorf("insert plan version: %w", err)
	}
	return pricing.WriteCharges(ctx, tx, apiID, id, "terms.charges", t.Charges)
}

// ErrSlugTaken: the API has a plan with that slug.
var ErrSlugTaken = errors.New("plan slug already taken")

func translatePlan(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return ErrSlugTaken
	}
	return fmt.Errorf("insert plan: %w", err)
}

// ListPlans lists an API's plans: its provider and admins see all, everyone
// else the active ones.
func (s *Service) ListPlans(ctx context.Context, actor identity.Actor, apiID uuid.UUID) ([]Plan, error) {
	var out []Plan
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		org, _, err := s.apiFor(ctx, tx, actor, apiID, false)
		if err != nil {
			return err
		}
		all := actor.IsAdmin() || actor.OrgID == org
		rows, err := db.New(tx).PlanListByAPI(ctx, db.PlanListByAPIParams{ApiID: apiID, Every: all})
		if err != nil {
			return fmt.Errorf("list plans: %w", err)
		}
		out = make([]Plan, 0, len(rows))
		for _, r := range rows {
			p, err := toPlan(r, nil)
			if err != nil {
				return err
			}
			out = append(out, p)
		}
		return attachCharges(ctx, tx, out)
	})
	return out, err
}

// GetPlan returns a plan the actor may see.
func (s *Service) GetPlan(ctx context.Context, actor identity.Actor, id uuid.UUID) (Plan, error) {
	var out Plan
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = s.loadPlan(ctx, tx, actor, id, false, false)
		return err
	})
	return out, err
}

func (s *Service) loadPlan(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID, change, lock bool) (Plan, error) {
	var p Plan
	var err error
	if lock {
		p, err = withCharges(ctx, tx)(toPlan(db.New(tx).PlanGetByIDForUpdate(ctx, id)))
	} else {
		p, err = withCharges(ctx, tx)(toPlan(db.New(tx).PlanGetByID(ctx, id)))
	}
	if err != nil {
		return Plan{}, err
	}
	// Visibility first: a plan the actor may not see is not found, whether
	// it asks to read or to change it.
	org, _, err := s.apiFor(ctx, tx, actor, p.APIID, false)
	if errors.Is(err, catalog.ErrAPINotFound) {
		return Plan{}, ErrPlanNotFound
	}
	if err != nil {
		return Plan{}, err
	}
	if p.Status != PlanActive && !(actor.IsAdmin() || actor.OrgID == org) {
		return Plan{}, ErrPlanNotFound
	}
	if change {
		if _, _, err := s.apiFor(ctx, tx, actor, p.APIID, true); err != nil {
			return Plan{}, err
		}
	}
	return p, nil
}

// UpdatePlan changes a plan's name, description or status.
func (s *Service) UpdatePlan(ctx context.Context, actor identity.Actor, id uuid.UUID, p PlanPatch) (Plan, error) {
	var out Plan
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.loadPlan(ctx, tx, actor, id, true, true)
		if err != nil {
			return err
		}
		if before.SourceFile != nil {
			return pricing.FileManaged("plan "+before.Slug, *before.SourceFile)
		}
		name, desc, status := before.Name, before.Description, before.Status
		set(&name, p.Name)
		name = strings.TrimSpace(name)
		set(&desc, p.Description)
		set(&status, p.Status)
		var v validation.Error
		if n := utf8.RuneCountInString(strings.TrimSpace(name)); n == 0 || n > 200 {
			v.Add("name", "must be 1 to 200 characters")
		}
		if utf8.RuneCountInString(desc) > 5000 {
			v.Add("description", "must be at most 5000 characters")
		}
		if status != PlanDraft && status != PlanActive && status != PlanArchived {
			v.Add("status", "must be draft, active or archived")
		}
		if err := v.Err(); err != nil {
			return err
		}
		q := db.New(tx)
		if err := q.PlanUpdate(ctx, db.PlanUpdateParams{ID: id, Name: name, Description: desc, Status: db.PlanStatus(status)}); err != nil {
			return fmt.Errorf("update plan: %w", err)
		}
		if out, err = withCharges(ctx, tx)(toPlan(q.PlanGetByID(ctx, id))); err != nil {
			return err
		}
		org, _, _ := s.apiFor(ctx, tx, actor, out.APIID, false)
		return s.record(ctx, tx, actor, org, "plan.update", "plan", id, before, out, "plan.updated", map[string]any{"plan": out})
	})
	return out, err
}

// CreateVersion adds the next version of a plan's terms. Subscriptions keep
// the version they pinned; new subscriptions get the latest.
func (s *Service) CreateVersion(ctx context.Context, actor identity.Actor, id uuid.UUID, in VersionInput) (Plan, error) {
	var v validation.Error
	in.Terms.Validate(&v, "terms")
	if err := v.Err(); err != nil {
		return Plan{}, err
	}
	var out Plan
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.loadPlan(ctx, tx, actor, id, true, true)
		if err != nil {
			return err
		}
		if before.SourceFile != nil {
			return pricing.FileManaged("plan "+before.Slug, *before.SourceFile)
		}
		if err := insertVersion(ctx, tx, before.APIID, id, before.Current.Version+1, in.Terms, actor.Subject); err != nil {
			return err
		}
		if out, err = withCharges(ctx, tx)(toPlan(db.New(tx).PlanGetByID(ctx, id))); err != nil {
			return err
		}
		org, _, _ := s.apiFor(ctx, tx, actor, out.APIID, false)
		return s.record(ctx, tx, actor, org, "plan.version.create", "plan", id, before.Current, out.Current,
			"plan.version_created", map[string]any{"plan": out})
	})
	return out, err
}

// ReadPlan reads the plan id with its current version's charges in tx, as
// the REST API shows it and its webhooks carry it (plan files publish it
// too).
func ReadPlan(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Plan, error) {
	return withCharges(ctx, tx)(toPlan(db.New(tx).PlanGetByID(ctx, id)))
}

// withCharges completes a plan read by toPlan with its current version's
// charges.
func withCharges(ctx context.Context, tx pgx.Tx) func(Plan, error) (Plan, error) {
	return func(p Plan, err error) (Plan, error) {
		if err != nil {
			return Plan{}, err
		}
		plans := []Plan{p}
		if err := attachCharges(ctx, tx, plans); err != nil {
			return Plan{}, err
		}
		return plans[0], nil
	}
}

// attachCharges reads the charges of the plans' current versions.
func attachCharges(ctx context.Context, tx pgx.Tx, plans []Plan) error {
	ids := make([]uuid.UUID, len(plans))
	for i, p := range plans {
		ids[i] = p.Current.ID
	}
	charges, err := pricing.ChargesForVersions(ctx, tx, ids)
	if err != nil {
		return err
	}
	for i := range plans {
		plans[i].Current.Terms.Charges = charges[plans[i].Current.ID]
	}
	return nil
}

// versionRow is a generated row holding one plan version.
type versionRow interface {
	db.PlanVersionGetByIDRow | db.PlanVersionGetByNumberRow | db.PlanVersionListByPlanRow
}

func toVersion[R versionRow](r R) PlanVersion {
	row := db.PlanVersionGetByIDRow(r)
	return PlanVersion{
		ID: row.ID, PlanID: row.PlanID, Version: int(row.Version), Source: row.Source, SourceFile: row.SourceFile,
		CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt,
		Terms: Terms{
			Type: string(row.Type), Currency: row.Currency, Interval: string(row.Interval), BaseFee: row.BaseFee,
			TrialDays: int(row.TrialDays), QuotaRequests: row.QuotaRequests, QuotaHard: row.QuotaHard,
			RatePerSecond: intPtr(row.RatePerSecond), RatePerMinute: intPtr(row.RatePerMinute), IncludedUnits: row.IncludedUnits,
		},
	}
}

// versionsWithCharges reads the charges of versions.
func versionsWithCharges(ctx context.Context, tx pgx.Tx, versions []PlanVersion) error {
	ids := make([]uuid.UUID, len(versions))
	for i, v := range versions {
		ids[i] = v.ID
	}
	charges, err := pricing.ChargesForVersions(ctx, tx, ids)
	if err != nil {
		return err
	}
	for i := range versions {
		versions[i].Terms.Charges = charges[versions[i].ID]
	}
	return nil
}

// ListVersions lists the versions of a plan the actor may see, newest
// first, each with its charges.
func (s *Service) ListVersions(ctx context.Context, actor identity.Actor, planID uuid.UUID) ([]PlanVersion, error) {
	var out []PlanVersion
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := s.loadPlan(ctx, tx, actor, planID, false, false); err != nil {
			return err
		}
		rows, err := db.New(tx).PlanVersionListByPlan(ctx, planID)
		if err != nil {
			return fmt.Errorf("list plan versions: %w", err)
		}
		out = make([]PlanVersion, len(rows))
		for i, r := range rows {
			out[i] = toVersion(r)
		}
		return versionsWithCharges(ctx, tx, out)
	})
	return out, err
}

// GetVersion returns a version of a plan the actor may see; any other is
// pricing.ErrVersionNotFound.
func (s *Service) GetVersion(ctx context.Context, actor identity.Actor, id uuid.UUID) (PlanVersion, error) {
	var out PlanVersion
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		row, err := db.New(tx).PlanVersionGetByID(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			return pricing.ErrVersionNotFound
		}
		if err != nil {
			return fmt.Errorf("read plan version: %w", err)
		}
		if _, err := s.loadPlan(ctx, tx, actor, row.PlanID, false, false); errors.Is(err, ErrPlanNotFound) {
			return pricing.ErrVersionNotFound
		} else if err != nil {
			return err
		}
		versions := []PlanVersion{toVersion(row)}
		if err := versionsWithCharges(ctx, tx, versions); err != nil {
			return err
		}
		out = versions[0]
		return nil
	})
	return out, err
}

// QuoteTerms returns what a version of a plan the actor may see charges,
// as metering prices it (pricing.TermsForVersion), with the version's
// number: the current version when version is 0. A version the plan does
// not have is a validation error of the field version.
func (s *Service) QuoteTerms(ctx context.Context, actor identity.Actor, planID uuid.UUID, version int) (metering.PlanTerms, int, error) {
	var terms metering.PlanTerms
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		p, err := s.loadPlan(ctx, tx, actor, planID, false, false)
		if err != nil {
			return err
		}
		versionID := p.Current.ID
		if version == 0 {
			version = p.Current.Version
		} else if version != p.Current.Version {
			row, err := db.New(tx).PlanVersionGetByNumber(ctx, db.PlanVersionGetByNumberParams{PlanID: planID, Version: int32(min(version, 1<<31-1))})
			if errors.Is(err, pgx.ErrNoRows) {
				return validation.One("version", fmt.Sprintf("the plan has no version %d", version))
			}
			if err != nil {
				return fmt.Errorf("read plan version: %w", err)
			}
			versionID = row.ID
		}
		terms, err = pricing.TermsForVersion(ctx, tx, versionID)
		return err
	})
	return terms, version, err
}
