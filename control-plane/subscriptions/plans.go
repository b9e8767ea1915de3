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
	"github.com/veil-platform/veil/internal/validation"
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

// Terms are a plan version's priced terms. Per-meter charges, tiers and
// promotions live in their own tables, filled by the pricing service.
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
	QuotaHard     bool            `json:"quota_hard"`
	RatePerSecond *int            `json:"rate_per_second"`
	RatePerMinute *int            `json:"rate_per_minute"`
	IncludedUnits decimal.Decimal `json:"included_units"`
}

// maxAmount bounds amounts and units: the columns are numeric(20, 6).
var maxAmount = decimal.New(1, 14)

var (
	planSlugRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	currencyRe = regexp.MustCompile(`^[A-Z]{3}$`)
	planTypes  = map[string]bool{"usage_based": true, "subscription": true, "freemium": true, "hybrid": true}
)

func (t *Terms) validate(v *validation.Error) {
	if t.Type == "" {
		t.Type = "subscription"
	}
	if !planTypes[t.Type] {
		v.Add("terms.type", "must be usage_based, subscription, freemium or hybrid")
	}
	if !currencyRe.MatchString(t.Currency) {
		v.Add("terms.currency", "must be an ISO 4217 code such as USD")
	}
	if t.Interval == "" {
		t.Interval = "month"
	}
	if t.Interval != "month" && t.Interval != "year" {
		v.Add("terms.interval", "must be month or year")
	}
	if t.BaseFee.IsNegative() || t.BaseFee.Exponent() < -6 || t.BaseFee.GreaterThanOrEqual(maxAmount) {
		v.Add("terms.base_fee", "must be zero or more and below 10^14, with at most 6 decimals")
	}
	if t.TrialDays < 0 || t.TrialDays > 365 {
		v.Add("terms.trial_days", "must be 0 to 365")
	}
	// A quota of 0 would block a subscription before its first call: a
	// plan that sells nothing is a draft or archived plan instead.
	if t.QuotaRequests != nil && *t.QuotaRequests < 1 {
		v.Add("terms.quota_requests", "must be 1 or more, or null for unlimited")
	}
	for _, r := range []struct {
		field string
		v     *int
	}{{"terms.rate_per_second", t.RatePerSecond}, {"terms.rate_per_minute", t.RatePerMinute}} {
		if r.v != nil && (*r.v < 1 || *r.v > 1_000_000) {
			v.Add(r.field, "must be 1 to 1000000, or null for no limit")
		}
	}
	if t.IncludedUnits.IsNegative() || t.IncludedUnits.Exponent() < -6 || t.IncludedUnits.GreaterThanOrEqual(maxAmount) {
		v.Add("terms.included_units", "must be zero or more and below 10^14, with at most 6 decimals")
	}
}

// PlanVersion is one immutable set of terms.
type PlanVersion struct {
	ID        uuid.UUID `json:"id"`
	Version   int       `json:"version"`
	Terms     Terms     `json:"terms"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
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
	CreatedAt   time.Time   `json:"created_at"`
	UpdatedAt   time.Time   `json:"updated_at"`
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
	in.Terms.validate(&v)
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

const planColumns = `p.id, p.api_id, p.name, p.slug, p.description, p.status, p.created_at, p.updated_at,
	v.id, v.version, v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard,
	v.rate_per_second, v.rate_per_minute, v.included_units, v.created_by, v.created_at`

// planFrom joins each plan to its latest version.
const planFrom = ` FROM plans p JOIN LATERAL (SELECT * FROM plan_versions WHERE plan_id = p.id ORDER BY version DESC LIMIT 1) v ON true`

func scanPlan(row pgx.Row) (Plan, error) {
	var p Plan
	t := &p.Current.Terms
	err := row.Scan(&p.ID, &p.APIID, &p.Name, &p.Slug, &p.Description, &p.Status, &p.CreatedAt, &p.UpdatedAt,
		&p.Current.ID, &p.Current.Version, &t.Type, &t.Currency, &t.Interval, &t.BaseFee, &t.TrialDays, &t.QuotaRequests,
		&t.QuotaHard, &t.RatePerSecond, &t.RatePerMinute, &t.IncludedUnits, &p.Current.CreatedBy, &p.Current.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Plan{}, ErrPlanNotFound
	}
	if err != nil {
		return Plan{}, fmt.Errorf("scan plan: %w", err)
	}
	return p, nil
}

// apiFor loads the API of a plan operation: the caller must see it, and
// change it when change is set (its provider or an admin).
func (s *Service) apiFor(ctx context.Context, q pgx.Tx, actor identity.Actor, apiID uuid.UUID, change bool) (org uuid.UUID, state catalog.State, err error) {
	var vis string
	err = q.QueryRow(ctx, `SELECT organization_id, state, visibility FROM apis WHERE id = $1`, apiID).Scan(&org, &state, &vis)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, "", catalog.ErrAPINotFound
	}
	if err != nil {
		return uuid.Nil, "", fmt.Errorf("load api: %w", err)
	}
	own := actor.IsAdmin() || actor.OrgID == org
	if !own && !(vis == string(catalog.VisibilityPublic) && state.Routed()) {
		return uuid.Nil, "", catalog.ErrAPINotFound
	}
	if change && !(actor.IsAdmin() || actor.Role == identity.RoleProvider && actor.OrgID == org) {
		return uuid.Nil, "", ErrForbidden
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
		var id uuid.UUID
		err = tx.QueryRow(ctx, `INSERT INTO plans (api_id, name, slug, description, status) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
			apiID, in.Name, in.Slug, in.Description, in.Status).Scan(&id)
		if err != nil {
			return translatePlan(err)
		}
		if err := insertVersion(ctx, tx, id, 1, in.Terms, actor.Subject); err != nil {
			return err
		}
		if out, err = scanPlan(tx.QueryRow(ctx, `SELECT `+planColumns+planFrom+` WHERE p.id = $1`, id)); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, org, "plan.create", "plan", id, nil, out, "plan.created", map[string]any{"plan": out})
	})
	return out, err
}

func insertVersion(ctx context.Context, tx pgx.Tx, planID uuid.UUID, version int, t Terms, by string) error {
	_, err := tx.Exec(ctx, `INSERT INTO plan_versions (plan_id, version, type, currency, interval, base_fee, trial_days,
			quota_requests, quota_hard, rate_per_second, rate_per_minute, included_units, created_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		planID, version, t.Type, t.Currency, t.Interval, t.BaseFee, t.TrialDays, t.QuotaRequests, t.QuotaHard,
		t.RatePerSecond, t.RatePerMinute, t.IncludedUnits, by)
	if err != nil {
		return fmt.Errorf("insert plan version: %w", err)
	}
	return nil
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
		rows, err := tx.Query(ctx, `SELECT `+planColumns+planFrom+` WHERE p.api_id = $1 AND ($2 OR p.status = 'active')
			ORDER BY p.created_at, p.id`, apiID, all)
		if err != nil {
			return fmt.Errorf("list plans: %w", err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Plan, error) { return scanPlan(r) })
		return err
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
	q := `SELECT ` + planColumns + planFrom + ` WHERE p.id = $1`
	if lock {
		q += ` FOR UPDATE OF p`
	}
	p, err := scanPlan(tx.QueryRow(ctx, q, id))
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
		if _, err := tx.Exec(ctx, `UPDATE plans SET name = $2, description = $3, status = $4, updated_at = now() WHERE id = $1`,
			id, name, desc, status); err != nil {
			return fmt.Errorf("update plan: %w", err)
		}
		if out, err = scanPlan(tx.QueryRow(ctx, `SELECT `+planColumns+planFrom+` WHERE p.id = $1`, id)); err != nil {
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
	in.Terms.validate(&v)
	if err := v.Err(); err != nil {
		return Plan{}, err
	}
	var out Plan
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.loadPlan(ctx, tx, actor, id, true, true)
		if err != nil {
			return err
		}
		if err := insertVersion(ctx, tx, id, before.Current.Version+1, in.Terms, actor.Subject); err != nil {
			return err
		}
		if out, err = scanPlan(tx.QueryRow(ctx, `SELECT `+planColumns+planFrom+` WHERE p.id = $1`, id)); err != nil {
			return err
		}
		org, _, _ := s.apiFor(ctx, tx, actor, out.APIID, false)
		return s.record(ctx, tx, actor, org, "plan.version.create", "plan", id, before.Current, out.Current,
			"plan.version_created", map[string]any{"plan": out})
	})
	return out, err
}
