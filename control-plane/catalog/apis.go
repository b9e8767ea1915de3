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
	"github.com/veil-platform/veil/control-plane/catalog/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/pagination"
)

// VisibleTo reports whether actor may see an API of organization org with
// visibility v in state s: its own organization and admins always; every
// member of any organization when the API is in the public catalog, public
// and served by the gateway (providers consume other providers' APIs too).
// apiScope in store_dynamic.go is this rule in SQL.
func VisibleTo(actor identity.Actor, org uuid.UUID, v Visibility, s State) bool {
	if actor.IsAdmin() || actor.OrgID == org {
		return true
	}
	return v == VisibilityPublic && s.Routed()
}

// canSee reports whether actor may read a.
func (a API) canSee(actor identity.Actor) bool {
	return VisibleTo(actor, a.OrganizationID, a.Visibility, a.State)
}

// CreateAPI registers an API in state draft for the actor's organization.
func (s *Service) CreateAPI(ctx context.Context, actor identity.Actor, in APIInput) (API, error) {
	if actor.Role != identity.RoleProvider && actor.Role != identity.RoleAdmin {
		return API{}, identity.ErrForbidden
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
		q := db.New(tx)
		out, err = toAPI(q.APIInsert(ctx, db.APIInsertParams{
			OrganizationID: actor.OrgID, Name: in.Name, Slug: in.Slug, Description: in.Description, UpstreamUrl: in.UpstreamURL,
			Version: in.Version, Routes: routes, HealthCheckPath: in.HealthCheckPath, DocsUrl: in.DocsURL,
			Visibility: db.ApiVisibility(in.Visibility), CreatedBy: actor.Subject,
		}))
		if err != nil {
			return translate(err)
		}
		if err := q.APIVersionInsertInitial(ctx, db.APIVersionInsertInitialParams{
			ApiID: out.ID, Version: out.Version, UpstreamUrl: out.UpstreamURL, Routes: routes, CreatedBy: actor.Subject,
		}); err != nil {
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
	a, err := toAPI(db.New(s.pool).APIGetByID(ctx, id))
	if err != nil {
		return API{}, err
	}
	if !a.canSee(actor) {
		return API{}, ErrAPINotFound
	}
	return a.viewFor(actor), nil
}

// getOwnAPI returns the API with id if actor owns it (its organization, or
// an admin): identity.ErrForbidden if actor sees it only in the public catalog,
// ErrAPINotFound if not at all.
func (s *Service) getOwnAPI(ctx context.Context, actor identity.Actor, id uuid.UUID) (API, error) {
	a, err := s.GetAPI(ctx, actor, id)
	if err != nil {
		return API{}, err
	}
	if !a.ownedBy(actor) {
		return API{}, identity.ErrForbidden
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
	out, err := apiList(ctx, s.pool, actor.IsAdmin(), actor.OrgID, f.State, f.Search, after, limit+1)
	if err != nil {
		return nil, "", err
	}
	for i := range out {
		out[i] = out[i].viewFor(actor)
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
	err := s.changeAPI(ctx, actor, id, func(tx pgx.Tx, before API) error {
		var err error
		if before.State == StateRetired || ((p.touchesGateway() || p.changesPresentation(before)) && !before.State.editable()) {
			return fmt.Errorf("%w: %s (add a version and resubmit, or revise it first)", ErrNotEditable, before.State)
		}
		in := p.apply(before)
		if err := in.Validate(); err != nil {
			return err
		}
		routes, _ := json.Marshal(nonNil(in.Routes))
		out, err = toAPI(db.New(tx).APIUpdate(ctx, db.APIUpdateParams{
			ID: id, Name: in.Name, Slug: in.Slug, Description: in.Description, UpstreamUrl: in.UpstreamURL, Routes: routes,
			HealthCheckPath: in.HealthCheckPath, DocsUrl: in.DocsURL, Visibility: db.ApiVisibility(in.Visibility),
		}))
		if err != nil {
			return translate(err)
		}
		return s.record(ctx, tx, actor, "api.update", out, before, out, "api.updated")
	})
	return out, err
}

// DeleteAPI removes an API that the gateway cannot be routing to.
func (s *Service) DeleteAPI(ctx context.Context, actor identity.Actor, id uuid.UUID) error {
	return s.changeAPI(ctx, actor, id, func(tx pgx.Tx, before API) error {
		if !before.State.deletable() {
			return fmt.Errorf("%w: cannot delete in state %s; retire it first", ErrNotEditable, before.State)
		}
		// Subscriptions refuse the deletion of their API (ON DELETE
		// RESTRICT: invoices cite them), so say so before the foreign key
		// does. The API row is locked, so no subscription can appear
		// between this check and the delete.
		q := db.New(tx)
		subscribed, err := q.APIHasSubscriptions(ctx, id)
		if err != nil {
			return fmt.Errorf("count subscriptions of api: %w", err)
		}
		if subscribed {
			return fmt.Errorf("%w: it has subscriptions; a retired API with subscriptions stays retired", ErrAPIInUse)
		}
		if err := s.record(ctx, tx, actor, "api.delete", before, before, nil, "api.deleted"); err != nil {
			return err
		}
		if err := q.APIDelete(ctx, id); err != nil {
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
	err := s.changeAPI(ctx, actor, id, func(tx pgx.Tx, before API) error {
		var err error
		if !before.State.editable() {
			return fmt.Errorf("%w: %s; revise the API to draft first", ErrNotEditable, before.State)
		}
		routes, _ := json.Marshal(nonNil(in.Routes))
		out = Version{APIID: id, Version: in.Version, UpstreamURL: in.UpstreamURL, Routes: nonNil(in.Routes), Changelog: in.Changelog, CreatedBy: actor.Subject}
		q := db.New(tx)
		if out.CreatedAt, err = q.APIVersionInsert(ctx, db.APIVersionInsertParams{
			ApiID: id, Version: in.Version, UpstreamUrl: in.UpstreamURL, Routes: routes, Changelog: in.Changelog, CreatedBy: actor.Subject,
		}); err != nil {
			return translate(err)
		}
		after, err := toAPI(q.APIUpdateVersion(ctx, db.APIUpdateVersionParams{ID: id, Version: in.Version, UpstreamUrl: in.UpstreamURL, Routes: routes}))
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
	return ownList(ctx, s, actor, id, "versions", db.New(s.pool).APIVersionList, func(r db.ApiVersion) (Version, error) {
		v := Version{APIID: r.ApiID, Version: r.Version, UpstreamURL: r.UpstreamUrl, Changelog: r.Changelog, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt}
		return v, json.Unmarshal(r.Routes, &v.Routes)
	})
}

// Transitions returns an API's recorded state changes, oldest first, to
// its own organization and admins: a failed registration's reason names
// the upstream.
func (s *Service) Transitions(ctx context.Context, actor identity.Actor, id uuid.UUID) ([]Transition, error) {
	return ownList(ctx, s, actor, id, "transitions", db.New(s.pool).APITransitionList, func(r db.APITransitionListRow) (Transition, error) {
		return Transition{From: State(r.FromState), To: State(r.ToState), Actor: r.Actor, Reason: r.Reason, CreatedAt: r.CreatedAt}, nil
	})
}

// ownList returns what list reads of API id, each row converted by conv,
// to the API's own organization and admins only.
func ownList[R, T any](ctx context.Context, s *Service, actor identity.Actor, id uuid.UUID, what string,
	list func(context.Context, uuid.UUID) ([]R, error), conv func(R) (T, error)) ([]T, error) {
	if _, err := s.getOwnAPI(ctx, actor, id); err != nil {
		return nil, err
	}
	rows, err := list(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	out := make([]T, 0, len(rows))
	for _, r := range rows {
		v, err := conv(r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// lockAPI loads an API for change, holding its row lock until tx ends.
func (s *Service) lockAPI(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID) (API, error) {
	a, err := toAPI(db.New(tx).APIGetByIDForUpdate(ctx, id))
	if err != nil {
		return API{}, err
	}
	if !actor.CanProvide(a.OrganizationID) {
		if a.canSee(actor) {
			return API{}, identity.ErrForbidden
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
	// the live columns (see APIServedGetByID).
	q := db.New(tx)
	after, err := toAPI(q.APIUpdateState(ctx, db.APIUpdateStateParams{ID: a.ID, ToState: db.ApiState(to), Reason: reason, FromState: db.ApiState(a.State)}))
	if errors.Is(err, ErrAPINotFound) {
		return API{}, ErrConflict
	}
	if err != nil {
		return API{}, err
	}
	if err := q.APITransitionInsert(ctx, db.APITransitionInsertParams{
		ApiID: a.ID, FromState: db.ApiState(a.State), ToState: db.ApiState(to), Actor: actor.Subject, Reason: reason,
	}); err != nil {
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

// changeAPI runs change in a transaction, with API id locked for actor by
// lockAPI, whose refusal (not found, forbidden) ends it first.
func (s *Service) changeAPI(ctx context.Context, actor identity.Actor, id uuid.UUID, change func(tx pgx.Tx, a API) error) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		a, err := s.lockAPI(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		return change(tx, a)
	})
}

func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}
