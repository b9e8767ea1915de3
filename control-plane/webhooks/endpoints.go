package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/webhooks/internal/db"
	"github.com/veil-platform/veil/internal/pagination"
)

// Endpoint is a URL an organization receives events at. The signing secret
// is not part of it: only CreateEndpoint and RotateSecret return it. Its
// fields are the columns of the endpoint queries (internal/db), in their
// order, so that a row converts to it.
type Endpoint struct {
	ID             uuid.UUID `json:"id"`
	OrganizationID uuid.UUID `json:"organization_id"`
	URL            string    `json:"url"`
	Description    string    `json:"description"`
	EventTypes     []string  `json:"event_types"`
	Enabled        bool      `json:"enabled"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// EndpointInput registers an endpoint.
type EndpointInput struct {
	// URL receives the POSTs: absolute http or https, without credentials
	// or fragment, at most 2048 characters.
	URL         string `json:"url"`
	Description string `json:"description"`
	// EventTypes are the types delivered to the endpoint, each one of
	// EventTypes or "*" for every type.
	EventTypes []string `json:"event_types"`
	// Enabled defaults to true.
	Enabled *bool `json:"enabled"`
}

// EndpointPatch changes an endpoint; nil fields stay as they are.
type EndpointPatch struct {
	URL         *string   `json:"url"`
	Description *string   `json:"description"`
	EventTypes  *[]string `json:"event_types"`
	Enabled     *bool     `json:"enabled"`
}

const (
	maxURLLength         = 2048
	maxDescriptionLength = 1000
)

var knownEventTypes = func() map[string]bool {
	m := map[string]bool{EventAll: true}
	for _, t := range EventTypes {
		m[t] = true
	}
	return m
}()

// Validate checks in without touching the network; CreateEndpoint and
// UpdateEndpoint also refuse hosts on private networks.
func (in EndpointInput) Validate() error {
	var v ValidationError
	validateURL(&v, "url", in.URL)
	if len(in.Description) > maxDescriptionLength {
		v.Add("description", "must be at most %d characters", maxDescriptionLength)
	}
	if len(in.EventTypes) == 0 {
		v.Add("event_types", `must name at least one event type, or "*" for all`)
	}
	for i, t := range in.EventTypes {
		field := fmt.Sprintf("event_types[%d]", i)
		switch {
		case !knownEventTypes[t]:
			v.Add(field, `unknown event type %q; want "*" or one of %s`, t, strings.Join(EventTypes, ", "))
		case slices.Contains(in.EventTypes[:i], t):
			v.Add(field, "repeats %q", t)
		}
	}
	return v.Err()
}

func validateURL(v *ValidationError, field, raw string) {
	if raw == "" {
		v.Add(field, "is required")
		return
	}
	if len(raw) > maxURLLength {
		v.Add(field, "must be at most %d characters", maxURLLength)
		return
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil || u.Fragment != "" {
		v.Add(field, "must be an absolute http or https URL without credentials or fragment")
	}
}

// apply returns the input a patched endpoint would have.
func (p EndpointPatch) apply(e Endpoint) EndpointInput {
	in := EndpointInput{URL: e.URL, Description: e.Description, EventTypes: e.EventTypes, Enabled: &e.Enabled}
	if p.URL != nil {
		in.URL = *p.URL
	}
	if p.Description != nil {
		in.Description = *p.Description
	}
	if p.EventTypes != nil {
		in.EventTypes = *p.EventTypes
	}
	if p.Enabled != nil {
		in.Enabled = p.Enabled
	}
	return in
}

// notFound turns "no row" into ErrEndpointNotFound.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrEndpointNotFound
	}
	return err
}

// CreateEndpoint registers an endpoint of by's organization, audited as by's
// change in the same transaction, and returns it with its signing secret,
// which is not shown again.
func (s *Service) CreateEndpoint(ctx context.Context, by identity.Actor, in EndpointInput) (Endpoint, string, error) {
	if err := in.Validate(); err != nil {
		return Endpoint{}, "", err
	}
	if err := s.checkURL(ctx, "url", in.URL); err != nil {
		return Endpoint{}, "", err
	}
	enabled := in.Enabled == nil || *in.Enabled
	secret := newSecret()
	var e Endpoint
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		row, err := db.New(tx).EndpointInsert(ctx, db.EndpointInsertParams{
			OrganizationID: by.OrgID, URL: in.URL, Description: in.Description,
			EventTypes: in.EventTypes, Secret: secret, Enabled: enabled,
		})
		if err != nil {
			return fmt.Errorf("insert webhook endpoint: %w", err)
		}
		e = Endpoint(row)
		return s.recordChange(ctx, tx, by, "webhook.create", e.ID, nil, e)
	})
	if err != nil {
		return Endpoint{}, "", err
	}
	s.log.InfoContext(ctx, "webhook endpoint created", "organization_id", by.OrgID, "endpoint_id", e.ID, "event_types", e.EventTypes)
	return e, secret, nil
}

// ListEndpoints returns the organization's endpoints oldest first, at most
// limit (default 50, at most 200) after the cursor, and the cursor of the
// next page ("" on the last).
func (s *Service) ListEndpoints(ctx context.Context, orgID uuid.UUID, after string, limit int) ([]Endpoint, string, error) {
	return listPage(after, limit, func(c pagination.Cursor, rows int32) ([]db.EndpointListRow, error) {
		out, err := db.New(s.pool).EndpointList(ctx, db.EndpointListParams{
			OrganizationID: orgID, AfterCreatedAt: c.Time(), AfterID: c.ID, MaxRows: rows,
		})
		if err != nil {
			return nil, fmt.Errorf("query webhook endpoints: %w", err)
		}
		return out, nil
	}, func(r db.EndpointListRow) Endpoint { return Endpoint(r) },
		func(e Endpoint) pagination.Cursor { return pagination.Cursor{At: e.CreatedAt, ID: e.ID} })
}

// listPage reads one page of a list ordered by (created_at, id), at most
// limit items (default 50, at most 200) after the cursor after, and the
// cursor of the next page ("" on the last). read gets the decoded cursor
// and how many rows to fetch: one more than the page, which tells whether
// a next page exists.
func listPage[R, T any](after string, limit int, read func(c pagination.Cursor, rows int32) ([]R, error),
	conv func(R) T, at func(T) pagination.Cursor) ([]T, string, error) {
	c, err := pagination.Decode(after)
	if err != nil {
		return nil, "", err
	}
	limit = pagination.Limit(limit)
	rows, err := read(c, int32(limit+1))
	if err != nil {
		return nil, "", err
	}
	out := make([]T, 0, len(rows))
	for _, r := range rows {
		out = append(out, conv(r))
	}
	out, next := pagination.Page(out, limit, at)
	return out, next, nil
}

// GetEndpoint returns one endpoint of the organization.
func (s *Service) GetEndpoint(ctx context.Context, orgID, id uuid.UUID) (Endpoint, error) {
	row, err := db.New(s.pool).EndpointGetByID(ctx, db.EndpointGetByIDParams{ID: id, OrganizationID: orgID})
	if err != nil {
		if err = notFound(err); errors.Is(err, ErrEndpointNotFound) {
			return Endpoint{}, err
		}
		return Endpoint{}, fmt.Errorf("get webhook endpoint: %w", err)
	}
	return Endpoint(row), nil
}

// UpdateEndpoint applies p to one endpoint of by's organization, audited as
// by's change in the same transaction.
func (s *Service) UpdateEndpoint(ctx context.Context, by identity.Actor, id uuid.UUID, p EndpointPatch) (Endpoint, error) {
	var out Endpoint
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		row, err := q.EndpointGetByIDForUpdate(ctx, db.EndpointGetByIDForUpdateParams{ID: id, OrganizationID: by.OrgID})
		if err != nil {
			return notFound(err)
		}
		before := Endpoint(row)
		in := p.apply(before)
		if err := in.Validate(); err != nil {
			return err
		}
		if in.URL != before.URL {
			if err := s.checkURL(ctx, "url", in.URL); err != nil {
				return err
			}
		}
		updated, err := q.EndpointUpdate(ctx, db.EndpointUpdateParams{
			ID: id, URL: in.URL, Description: in.Description, EventTypes: in.EventTypes, Enabled: *in.Enabled,
		})
		if err != nil {
			return notFound(err)
		}
		out = Endpoint(updated)
		return s.recordChange(ctx, tx, by, "webhook.update", id, before, out)
	})
	if err != nil {
		return Endpoint{}, wrapNotFound("update webhook endpoint", err)
	}
	return out, nil
}

// DeleteEndpoint removes one endpoint of by's organization with its
// deliveries, audited as by's change in the same transaction; their pending
// jobs end without sending.
func (s *Service) DeleteEndpoint(ctx context.Context, by identity.Actor, id uuid.UUID) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		row, err := db.New(tx).EndpointDelete(ctx, db.EndpointDeleteParams{ID: id, OrganizationID: by.OrgID})
		if err != nil {
			return notFound(err)
		}
		return s.recordChange(ctx, tx, by, "webhook.delete", id, Endpoint(row), nil)
	})
	if err != nil {
		return wrapNotFound("delete webhook endpoint", err)
	}
	s.log.InfoContext(ctx, "webhook endpoint deleted", "organization_id", by.OrgID, "endpoint_id", id)
	return nil
}

// RotateSecret gives one endpoint of by's organization a new signing secret,
// audited as by's change in the same transaction, and returns it. Attempts
// from now on are signed with the new secret only.
func (s *Service) RotateSecret(ctx context.Context, by identity.Actor, id uuid.UUID) (string, error) {
	secret := newSecret()
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		n, err := db.New(tx).EndpointSetSecret(ctx, db.EndpointSetSecretParams{ID: id, OrganizationID: by.OrgID, Secret: secret})
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrEndpointNotFound
		}
		// The entry says that the secret changed, never what it is.
		return s.recordChange(ctx, tx, by, "webhook.rotate_secret", id, nil, map[string]string{"secret": "rotated"})
	})
	if err != nil {
		return "", wrapNotFound("rotate webhook secret", err)
	}
	s.log.InfoContext(ctx, "webhook secret rotated", "organization_id", by.OrgID, "endpoint_id", id)
	return secret, nil
}

// recordChange records by's change to endpoint id in tx, the transaction
// that makes it: the entry exists exactly when the change does.
func (s *Service) recordChange(ctx context.Context, tx pgx.Tx, by identity.Actor, action string, id uuid.UUID, before, after any) error {
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: by.Subject, ActorRole: string(by.Role), OrganizationID: by.OrgID,
		Action: action, TargetType: "webhook_endpoint", TargetID: id.String(), Before: before, After: after,
	}); err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}

// wrapNotFound passes sentinel and validation errors through unchanged and
// wraps the others with op.
func wrapNotFound(op string, err error) error {
	var v *ValidationError
	if errors.Is(err, ErrEndpointNotFound) || errors.Is(err, ErrDeliveryNotFound) || errors.As(err, &v) {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}
