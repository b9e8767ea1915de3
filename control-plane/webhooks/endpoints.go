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

	"github.com/veil-platform/veil/internal/pagination"
)

// Endpoint is a URL an organization receives events at. The signing secret
// is not part of it: only CreateEndpoint and RotateSecret return it.
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

const endpointColumns = `id, organization_id, url, description, event_types, enabled, created_at, updated_at`

func scanEndpoint(row pgx.Row) (Endpoint, error) {
	var e Endpoint
	err := row.Scan(&e.ID, &e.OrganizationID, &e.URL, &e.Description, &e.EventTypes, &e.Enabled, &e.CreatedAt, &e.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Endpoint{}, ErrEndpointNotFound
	}
	return e, err
}

// CreateEndpoint registers an endpoint of the organization and returns it
// with its signing secret, which is not shown again.
func (s *Service) CreateEndpoint(ctx context.Context, orgID uuid.UUID, in EndpointInput) (Endpoint, string, error) {
	if err := in.Validate(); err != nil {
		return Endpoint{}, "", err
	}
	if err := s.checkURL(ctx, "url", in.URL); err != nil {
		return Endpoint{}, "", err
	}
	enabled := in.Enabled == nil || *in.Enabled
	secret := newSecret()
	e, err := scanEndpoint(s.pool.QueryRow(ctx, `INSERT INTO webhook_endpoints
			(organization_id, url, description, event_types, secret, enabled)
		VALUES ($1, $2, $3, $4, $5, $6)
		RETURNING `+endpointColumns,
		orgID, in.URL, in.Description, in.EventTypes, secret, enabled))
	if err != nil {
		return Endpoint{}, "", fmt.Errorf("insert webhook endpoint: %w", err)
	}
	s.log.InfoContext(ctx, "webhook endpoint created", "organization_id", orgID, "endpoint_id", e.ID, "event_types", e.EventTypes)
	return e, secret, nil
}

// ListEndpoints returns the organization's endpoints oldest first, at most
// limit (default 50, at most 200) after the cursor, and the cursor of the
// next page ("" on the last).
func (s *Service) ListEndpoints(ctx context.Context, orgID uuid.UUID, after string, limit int) ([]Endpoint, string, error) {
	c, err := pagination.Decode(after)
	if err != nil {
		return nil, "", err
	}
	limit = pagination.Limit(limit)
	rows, err := s.pool.Query(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints
		WHERE organization_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
		ORDER BY created_at, id LIMIT $4`, orgID, c.Time(), c.ID, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("query webhook endpoints: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Endpoint, error) { return scanEndpoint(row) })
	if err != nil {
		return nil, "", fmt.Errorf("query webhook endpoints: %w", err)
	}
	out, next := pagination.Page(out, limit, func(e Endpoint) pagination.Cursor { return pagination.Cursor{At: e.CreatedAt, ID: e.ID} })
	return out, next, nil
}

// GetEndpoint returns one endpoint of the organization.
func (s *Service) GetEndpoint(ctx context.Context, orgID, id uuid.UUID) (Endpoint, error) {
	e, err := scanEndpoint(s.pool.QueryRow(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints
		WHERE id = $1 AND organization_id = $2`, id, orgID))
	if err != nil && !errors.Is(err, ErrEndpointNotFound) {
		return Endpoint{}, fmt.Errorf("get webhook endpoint: %w", err)
	}
	return e, err
}

// UpdateEndpoint applies p to one endpoint of the organization.
func (s *Service) UpdateEndpoint(ctx context.Context, orgID, id uuid.UUID, p EndpointPatch) (Endpoint, error) {
	var out Endpoint
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := scanEndpoint(tx.QueryRow(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints
			WHERE id = $1 AND organization_id = $2 FOR UPDATE`, id, orgID))
		if err != nil {
			return err
		}
		in := p.apply(before)
		if err := in.Validate(); err != nil {
			return err
		}
		if in.URL != before.URL {
			if err := s.checkURL(ctx, "url", in.URL); err != nil {
				return err
			}
		}
		out, err = scanEndpoint(tx.QueryRow(ctx, `UPDATE webhook_endpoints
			SET url = $2, description = $3, event_types = $4, enabled = $5, updated_at = now()
			WHERE id = $1 RETURNING `+endpointColumns,
			id, in.URL, in.Description, in.EventTypes, *in.Enabled))
		return err
	})
	if err != nil {
		return Endpoint{}, wrapNotFound("update webhook endpoint", err)
	}
	return out, nil
}

// DeleteEndpoint removes one endpoint of the organization with its
// deliveries; their pending jobs end without sending.
func (s *Service) DeleteEndpoint(ctx context.Context, orgID, id uuid.UUID) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM webhook_endpoints WHERE id = $1 AND organization_id = $2`, id, orgID)
	if err != nil {
		return fmt.Errorf("delete webhook endpoint: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrEndpointNotFound
	}
	s.log.InfoContext(ctx, "webhook endpoint deleted", "organization_id", orgID, "endpoint_id", id)
	return nil
}

// RotateSecret gives one endpoint of the organization a new signing secret
// and returns it. Attempts from now on are signed with the new secret only.
func (s *Service) RotateSecret(ctx context.Context, orgID, id uuid.UUID) (string, error) {
	secret := newSecret()
	tag, err := s.pool.Exec(ctx, `UPDATE webhook_endpoints SET secret = $3, updated_at = now()
		WHERE id = $1 AND organization_id = $2`, id, orgID, secret)
	if err != nil {
		return "", fmt.Errorf("rotate webhook secret: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return "", ErrEndpointNotFound
	}
	s.log.InfoContext(ctx, "webhook secret rotated", "organization_id", orgID, "endpoint_id", id)
	return secret, nil
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
