package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/pagination"
)

const apiColumns = `id, organization_id, name, slug, description, upstream_url, version, routes, health_check_path,
	docs_url, visibility, state, state_reason, created_by, created_at, updated_at`

func scanAPI(row pgx.Row) (API, error) {
	var a API
	var routes []byte
	err := row.Scan(&a.ID, &a.OrganizationID, &a.Name, &a.Slug, &a.Description, &a.UpstreamURL, &a.Version, &routes,
		&a.HealthCheckPath, &a.DocsURL, &a.Visibility, &a.State, &a.StateReason, &a.CreatedBy, &a.CreatedAt, &a.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return API{}, ErrAPINotFound
	}
	if err != nil {
		return API{}, fmt.Errorf("scan api: %w", err)
	}
	if err := json.Unmarshal(routes, &a.Routes); err != nil {
		return API{}, fmt.Errorf("decode api routes: %w", err)
	}
	if a.Routes == nil {
		a.Routes = []Route{}
	}
	a.GatewayPath = "/" + a.Slug
	return a, nil
}

// canSee reports whether actor may read a.
func (a API) canSee(actor identity.Actor) bool {
	if actor.IsAdmin() || actor.OrgID == a.OrganizationID {
		return true
	}
	// The public catalog: what the gateway serves, for every member of any
	// organization (providers consume other providers' APIs too).
	return a.Visibility == VisibilityPublic && a.State.Routed()
}

// canChange reports whether actor may change a as its provider.
func (a API) canChange(actor identity.Actor) bool {
	return actor.IsAdmin() || (actor.Role == identity.RoleProvider && actor.OrgID == a.OrganizationID)
}

// CreateAPI registers an API in state draft for the actor's organization.
func (s *Service) CreateAPI(ctx context.Context, actor identity.Actor, in APIInput) (API, error) {
	if actor.Role != identity.RoleProvider && actor.Role != identity.RoleAdmin {
		return API{}, ErrForbidden
	}
	if err := in.Validate(); err != nil {
		return API{}, err
	}
	if err := s.checkUpstream(ctx, in.UpstreamURL); err != nil {
		return API{}, err
	}
	routes, _ := json.Marshal(nonNil(in.Routes))
	var out API
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanAPI(tx.QueryRow(ctx, `INSERT INTO apis (organization_id, name, slug, description, upstream_url, version, routes,
				health_check_path, docs_url, visibility, created_by)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING `+apiColumns,
			actor.OrgID, in.Name, in.Slug, in.Description, in.UpstreamURL, in.Version, routes, in.HealthCheckPath,
			in.DocsURL, in.Visibility, actor.Subject))
		if err != nil {
			return translate(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO api_versions (api_id, version, upstream_url, routes, created_by)
			VALUES ($1, $2, $3, $4, $5)`, out.ID, out.Version, out.UpstreamURL, routes, actor.Subject); err != nil {
			return fmt.Errorf("insert api version: %w", err)
		}
		// The gateway signs from the first registration on; the provider
		// reveals the secret by rotating it (RotateSigningSecret).
		if err := createSigningSecret(ctx, tx, out.ID); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, "api.create", out, nil, out, "api.created")
	})
	return out, err
}

func nonNil(r []Route) []Route {
	if r == nil {
		return []Route{}
	}
	return r
}

// subscriptionsAPIFK is the foreign key that refuses the deletion of a
// subscribed API (ON DELETE RESTRICT, checked before any cascade). Postgres
// reports the referencing table and constraint, never apis; apis' own
// foreign key (its organization) must not read as "in use".
const subscriptionsAPIFK = "subscriptions_api_id_fkey"

// translate maps constraint violations to domain errors.
func translate(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" && pgErr.ConstraintName == subscriptionsAPIFK {
		return ErrAPIInUse
	}
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		switch {
		case strings.Contains(pgErr.ConstraintName, "slug"):
			return ErrSlugTaken
		case strings.Contains(pgErr.ConstraintName, "api_versions"):
			return ErrVersionExists
		}
	}
	return err
}

// GetAPI returns the API with id if actor may see it.
func (s *Service) GetAPI(ctx context.Context, actor identity.Actor, id uuid.UUID) (API, error) {
	a, err := scanAPI(s.pool.QueryRow(ctx, `SELECT `+apiColumns+` FROM apis WHERE id = $1`, id))
	if err != nil {
		return API{}, err
	}
	if !a.canSee(actor) {
		return API{}, ErrAPINotFound
	}
	return a.viewFor(actor), nil
}

// getOwnAPI returns the API with id if actor owns it (its organization, or
// an admin): ErrForbidden if actor sees it only in the public catalog,
// ErrAPINotFound if not at all.
func (s *Service) getOwnAPI(ctx context.Context, actor identity.Actor, id uuid.UUID) (API, error) {
	a, err := s.GetAPI(ctx, actor, id)
	if err != nil {
		return API{}, err
	}
	if !a.ownedBy(actor) {
		return API{}, ErrForbidden
	}
	return a, nil
}

// APIFilter selects APIs.
type APIFilter struct {
	State  State
	After  string // cursor
	Limit  int
	Search string
}

// ListAPIs lists the APIs actor may see: admins all, everyone else their
// own organization's and the public active or deprecated ones.
func (s *Service) ListAPIs(ctx context.Context, actor identity.Actor, f APIFilter) ([]API, string, error) {
	after, err := pagination.Decode(f.After)
	if err != nil {
		return nil, "", err
	}
	limit := pagination.Limit(f.Limit)
	// Admins see everything ($1 is still typed, so the query plans alike);
	// everyone else their organization's APIs and the public catalog.
	scope := "(organization_id = $1::uuid OR (visibility = 'public' AND state IN ('active', 'deprecated')))"
	if actor.IsAdmin() {
		scope = "($1::uuid IS NULL OR true)"
	}
	rows, err := s.pool.Query(ctx, `SELECT `+apiColumns+` FROM apis
		WHERE `+scope+` AND ($2 = '' OR state = $2::api_state)
		  AND ($3 = '' OR name ILIKE '%' || $3 || '%' OR slug ILIKE '%' || $3 || '%')
		  AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))
		ORDER BY created_at, id LIMIT $6`,
		actor.OrgID, string(f.State), f.Search, after.Time(), after.ID, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list apis: %w", err)
	}
	defer rows.Close()
	var out []API
	for rows.Next() {
		a, err := scanAPI(rows)
		if err != nil {
			return nil, "", err
		}
		out = append(out, a.viewFor(actor))
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list apis: %w", err)
	}
	out, next := pagination.Page(out, limit, func(a API) pagination.Cursor { return pagination.Cursor{At: a.CreatedAt, ID: a.ID} })
	return out, next, nil
}

// UpdateAPI applies p. What the gateway serves (slug, upstream, routes,
// health path) and what the catalog shows (name, description, docs_url,
// visibility other than going private) change only while the API is
// editable (draft or rejected): both were reviewed.
func (s *Service) UpdateAPI(ctx context.Context, actor identity.Actor, id uuid.UUID, p APIPatch) (API, error) {
	// Resolved before the row is locked: a slow resolver holds no lock.
	if p.UpstreamURL != nil {
		if err := s.checkUpstream(ctx, *p.UpstreamURL); err != nil {
			return API{}, err
		}
	}
	var out API
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.lockAPI(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if before.State == StateRetired || ((p.touchesGateway() || p.changesPresentation(before)) && !before.State.editable()) {
			return fmt.Errorf("%w: %s (add a version and resubmit, or revise it first)", ErrNotEditable, before.State)
		}
		in := p.apply(before)
		if err := in.Validate(); err != nil {
			return err
		}
		routes, _ := json.Marshal(nonNil(in.Routes))
		out, err = scanAPI(tx.QueryRow(ctx, `UPDATE apis SET name = $2, slug = $3, description = $4, upstream_url = $5, routes = $6,
				health_check_path = $7, docs_url = $8, visibility = $9, updated_at = now()
			WHERE id = $1 RETURNING `+apiColumns,
			id, in.Name, in.Slug, in.Description, in.UpstreamURL, routes, in.HealthCheckPath, in.DocsURL, in.Visibility))
		if err != nil {
			return translate(err)
		}
		return s.record(ctx, tx, actor, "api.update", out, before, out, "api.updated")
	})
	return out, err
}

// DeleteAPI removes an API that the gateway cannot be routing to.
func (s *Service) DeleteAPI(ctx context.Context, actor identity.Actor, id uuid.UUID) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.lockAPI(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if !before.State.deletable() {
			return fmt.Errorf("%w: cannot delete in state %s; retire it first", ErrNotEditable, before.State)
		}
		// Subscriptions refuse the deletion of their API (ON DELETE
		// RESTRICT: invoices cite them), so say so before the foreign key
		// does. The API row is locked, so no subscription can appear
		// between this check and the delete.
		var subscribed bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM subscriptions WHERE api_id = $1)`, id).Scan(&subscribed); err != nil {
			return fmt.Errorf("count subscriptions of api: %w", err)
		}
		if subscribed {
			return fmt.Errorf("%w: it has subscriptions; a retired API with subscriptions stays retired", ErrAPIInUse)
		}
		if err := s.record(ctx, tx, actor, "api.delete", before, before, nil, "api.deleted"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM apis WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete api: %w", translate(err))
		}
		return nil
	})
}

// CreateVersion records a new version. While the API is editable the new
// version becomes current; afterwards it is refused, since what the gateway
// serves changes only through a new review.
func (s *Service) CreateVersion(ctx context.Context, actor identity.Actor, id uuid.UUID, in VersionInput) (Version, error) {
	if err := in.Validate(); err != nil {
		return Version{}, err
	}
	if err := s.checkUpstream(ctx, in.UpstreamURL); err != nil {
		return Version{}, err
	}
	var out Version
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.lockAPI(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if !before.State.editable() {
			return fmt.Errorf("%w: %s; revise the API to draft first", ErrNotEditable, before.State)
		}
		routes, _ := json.Marshal(nonNil(in.Routes))
		out = Version{APIID: id, Version: in.Version, UpstreamURL: in.UpstreamURL, Routes: nonNil(in.Routes), Changelog: in.Changelog, CreatedBy: actor.Subject}
		if err := tx.QueryRow(ctx, `INSERT INTO api_versions (api_id, version, upstream_url, routes, changelog, created_by)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at`, id, in.Version, in.UpstreamURL, routes, in.Changelog, actor.Subject).Scan(&out.CreatedAt); err != nil {
			return translate(err)
		}
		after, err := scanAPI(tx.QueryRow(ctx, `UPDATE apis SET version = $2, upstream_url = $3, routes = $4, updated_at = now()
			WHERE id = $1 RETURNING `+apiColumns, id, in.Version, in.UpstreamURL, routes))
		if err != nil {
			return err
		}
		return s.record(ctx, tx, actor, "api.version.create", after, before, after, "api.updated")
	})
	return out, err
}

// ListVersions returns the versions of an API, newest first, to its own
// organization and admins: each names an upstream.
func (s *Service) ListVersions(ctx context.Context, actor identity.Actor, id uuid.UUID) ([]Version, error) {
	if _, err := s.getOwnAPI(ctx, actor, id); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT api_id, version, upstream_url, routes, changelog, created_by, created_at
		FROM api_versions WHERE api_id = $1 ORDER BY created_at DESC, version DESC`, id)
	if err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Version, error) {
		var v Version
		var routes []byte
		if err := row.Scan(&v.APIID, &v.Version, &v.UpstreamURL, &routes, &v.Changelog, &v.CreatedBy, &v.CreatedAt); err != nil {
			return v, err
		}
		return v, json.Unmarshal(routes, &v.Routes)
	})
}

// Transitions returns an API's recorded state changes, oldest first, to
// its own organization and admins: a failed registration's reason names
// the upstream.
func (s *Service) Transitions(ctx context.Context, actor identity.Actor, id uuid.UUID) ([]Transition, error) {
	if _, err := s.getOwnAPI(ctx, actor, id); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT from_state, to_state, actor, reason, created_at
		FROM api_transitions WHERE api_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("list transitions: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[Transition])
}

// lockAPI loads an API for change, holding its row lock until tx ends.
func (s *Service) lockAPI(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID) (API, error) {
	a, err := scanAPI(tx.QueryRow(ctx, `SELECT `+apiColumns+` FROM apis WHERE id = $1 FOR UPDATE`, id))
	if err != nil {
		return API{}, err
	}
	if !a.canChange(actor) {
		if a.canSee(actor) {
			return API{}, ErrForbidden
		}
		return API{}, ErrAPINotFound
	}
	return a, nil
}

// transition moves a locked API to state to, recording the change, auditing
// it and announcing it.
func (s *Service) transition(ctx context.Context, tx pgx.Tx, actor identity.Actor, a API, to State, reason string) (API, error) {
	if err := checkTransition(a.State, to); err != nil {
		return API{}, err
	}
	// A review's approval records what it approved: registration,
	// retries, resumptions and reconciliation serve that snapshot, never
	// the live columns (see servedColumns).
	after, err := scanAPI(tx.QueryRow(ctx, `UPDATE apis SET state = $2, state_reason = $3, updated_at = now(),
			approved_snapshot = CASE WHEN $4::api_state = 'pending_approval' AND $2::api_state = 'approved'
				THEN `+snapshotSQL+` ELSE approved_snapshot END
		WHERE id = $1 AND state = $4 RETURNING `+apiColumns, a.ID, to, reason, a.State))
	if errors.Is(err, ErrAPINotFound) {
		return API{}, ErrConflict
	}
	if err != nil {
		return API{}, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO api_transitions (api_id, from_state, to_state, actor, reason)
		VALUES ($1, $2, $3, $4, $5)`, a.ID, a.State, to, actor.Subject, reason); err != nil {
		return API{}, fmt.Errorf("record transition: %w", err)
	}
	event := "api.state_changed"
	switch to {
	case StateActive:
		event = "api.activated"
	case StateFailed:
		event = "api.failed"
	}
	type change struct {
		API    API    `json:"api"`
		From   State  `json:"from"`
		To     State  `json:"to"`
		Reason string `json:"reason,omitempty"`
	}
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: a.OrganizationID,
		Action: "api.transition." + string(to), TargetType: "api", TargetID: a.ID.String(),
		Before: map[string]State{"state": a.State}, After: map[string]any{"state": to, "reason": reason},
	}); err != nil {
		return API{}, err
	}
	if err := s.cfg.Publisher.Publish(ctx, tx, a.OrganizationID, event, change{API: after, From: a.State, To: to, Reason: reason}); err != nil {
		return API{}, fmt.Errorf("publish %s: %w", event, err)
	}
	return after, nil
}

// record audits a change to an API and announces it.
func (s *Service) record(ctx context.Context, tx pgx.Tx, actor identity.Actor, action string, a API, before, after any, event string) error {
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: a.OrganizationID,
		Action: action, TargetType: "api", TargetID: a.ID.String(), Before: before, After: after,
	}); err != nil {
		return err
	}
	if err := s.cfg.Publisher.Publish(ctx, tx, a.OrganizationID, event, map[string]any{"api": a}); err != nil {
		return fmt.Errorf("publish %s: %w", event, err)
	}
	return nil
}

func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}
