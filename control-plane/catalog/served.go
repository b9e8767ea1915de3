package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/originsig"
)

// ErrNotApproved: the API has no approved snapshot to serve (it was never
// approved, or it failed before approvals were recorded); it needs to be
// revised and submitted for review.
var ErrNotApproved = errors.New("api has no approved snapshot; revise and submit it for review")

// SigningOverlap is how long, after a rotation, the gateway also signs
// with the previous secret, so that a provider can roll the new one out to
// its upstream without refusing calls.
const SigningOverlap = 24 * time.Hour

// signing is an API's signing secrets as the gateway needs them. It is
// never serialised into an answer, an audit entry or a log line.
type signing struct {
	secret, previous string
	previousUntil    *time.Time
}

// servedColumns read an API as the gateway serves it: the slug, upstream,
// routes and health path its review approved (approved_snapshot), never
// the live columns a provider may have changed since, and its signing
// secrets. The order is apiColumns', so scanAPI reads the first part.
const servedColumns = `a.id, a.organization_id, a.name, a.approved_snapshot->>'slug', a.description,
	a.approved_snapshot->>'upstream_url', a.version, a.approved_snapshot->'routes', a.approved_snapshot->>'health_check_path',
	a.docs_url, a.visibility, a.state, a.state_reason, a.created_by, a.created_at, a.updated_at,
	s.secret, s.previous_secret, s.previous_until, a.approved_snapshot IS NOT NULL
	FROM apis a LEFT JOIN api_signing_secrets s ON s.api_id = a.id`

// snapshotSQL is what an approval records: the gateway-facing columns as
// the reviewer saw them.
const snapshotSQL = `jsonb_build_object('slug', slug, 'upstream_url', upstream_url, 'routes', routes,
	'health_check_path', health_check_path)`

// scanServed reads a row of servedColumns. An API without a snapshot is
// ErrNotApproved.
func scanServed(row pgx.Row) (API, error) {
	var (
		a                      API
		slug, upstream, health *string
		routes                 []byte
		secret, previous       *string
		previousUntil          *time.Time
		approved               bool
	)
	err := row.Scan(&a.ID, &a.OrganizationID, &a.Name, &slug, &a.Description, &upstream, &a.Version, &routes,
		&health, &a.DocsURL, &a.Visibility, &a.State, &a.StateReason, &a.CreatedBy, &a.CreatedAt, &a.UpdatedAt,
		&secret, &previous, &previousUntil, &approved)
	if errors.Is(err, pgx.ErrNoRows) {
		return API{}, ErrAPINotFound
	}
	if err != nil {
		return API{}, fmt.Errorf("scan served api: %w", err)
	}
	if !approved || slug == nil || upstream == nil || health == nil {
		return a, fmt.Errorf("api %s: %w", a.ID, ErrNotApproved)
	}
	a.Slug, a.UpstreamURL, a.HealthCheckPath = *slug, *upstream, *health
	if err := json.Unmarshal(routes, &a.Routes); err != nil {
		return API{}, fmt.Errorf("decode approved routes: %w", err)
	}
	a.GatewayPath = "/" + a.Slug
	if secret != nil {
		a.signing = &signing{secret: *secret, previousUntil: previousUntil}
		if previous != nil {
			a.signing.previous = *previous
		}
	}
	return a, nil
}

// loadServed reads the API id as the gateway serves it.
func loadServed(ctx context.Context, c interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, id uuid.UUID) (API, error) {
	return scanServed(c.QueryRow(ctx, `SELECT `+servedColumns+` WHERE a.id = $1`, id))
}

// gatewaySigning is the route's signing part for a, nil if a has no
// secret. The previous secret goes along until its overlap ends.
func (a API) gatewaySigning(now time.Time) *gatewayadmin.Signing {
	if a.signing == nil {
		return nil
	}
	g := &gatewayadmin.Signing{APIID: a.ID.String(), Secret: a.signing.secret}
	if a.signing.previous != "" && a.signing.previousUntil != nil && a.signing.previousUntil.After(now) {
		g.PreviousSecret, g.PreviousUntil = a.signing.previous, a.signing.previousUntil.Unix()
	}
	return g
}

// sign signs req as the gateway signs the API's calls, so that an upstream
// that refuses unsigned requests answers the control plane's health check
// too.
func (a API) sign(req *http.Request, now time.Time) {
	g := a.gatewaySigning(now)
	if g == nil {
		return
	}
	secrets := []string{g.Secret}
	if g.PreviousSecret != "" {
		secrets = append(secrets, g.PreviousSecret)
	}
	req.Header.Set(originsig.Header, originsig.Sign(now, req.Method, req.URL.EscapedPath(), req.URL.RawQuery, g.APIID, secrets...))
	req.Header.Set(gatewayadmin.APIHeader, g.APIID)
}

// SigningSecret is an API's signing secret as its provider sees it, once:
// in the answer to a rotation.
type SigningSecret struct {
	APIID uuid.UUID `json:"api_id"`
	// Secret is the HMAC key of the Veil-Signature header.
	Secret string `json:"signing_secret"`
	// PreviousValidUntil, after a rotation, is when the gateway stops
	// signing with the previous secret too.
	PreviousValidUntil *time.Time `json:"previous_valid_until,omitempty"`
	RotatedAt          time.Time  `json:"rotated_at"`
}

// RotateSigningSecret gives an API a new signing secret and returns it,
// the only time it is shown. The secret an API gets at creation is never
// shown: the provider's first rotation reveals one. After a later rotation
// the gateway signs with the previous (revealed) secret as well, until
// SigningOverlap has passed. Only the owning organization's
// providers and admins may rotate: a platform admin of another
// organization would see the new secret, so is refused like any outsider
// who can see the API.
func (s *Service) RotateSigningSecret(ctx context.Context, actor identity.Actor, id uuid.UUID) (SigningSecret, error) {
	var out SigningSecret
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		a, err := s.lockAPI(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if actor.OrgID != a.OrganizationID || (actor.Role != identity.RoleProvider && actor.Role != identity.RoleAdmin) {
			return ErrForbidden
		}
		if a.State == StateRetired {
			return fmt.Errorf("%w: %s", ErrNotEditable, a.State)
		}
		now := s.now().UTC().Truncate(time.Microsecond)
		until := now.Add(SigningOverlap)
		secret := originsig.NewSecret()
		// A secret nobody was shown needs no overlap: no upstream has it.
		var previous *string
		var revealed bool
		if err := tx.QueryRow(ctx, `SELECT secret, revealed FROM api_signing_secrets WHERE api_id = $1 FOR UPDATE`, id).Scan(&previous, &revealed); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read signing secret: %w", err)
		}
		var prevUntil *time.Time
		if !revealed {
			previous = nil
		} else {
			prevUntil = &until
		}
		if _, err := tx.Exec(ctx, `INSERT INTO api_signing_secrets (api_id, secret, previous_secret, previous_until, rotated_at, revealed)
			VALUES ($1, $2, $3, $4, $5, true)
			ON CONFLICT (api_id) DO UPDATE SET secret = EXCLUDED.secret, previous_secret = EXCLUDED.previous_secret,
				previous_until = EXCLUDED.previous_until, rotated_at = EXCLUDED.rotated_at, revealed = true`,
			id, secret, previous, prevUntil, now); err != nil {
			return fmt.Errorf("store signing secret: %w", err)
		}
		out = SigningSecret{APIID: id, Secret: secret, PreviousValidUntil: prevUntil, RotatedAt: now}
		// The audit entry says that and when, never the secret.
		return s.record(ctx, tx, actor, "api.signing_secret.rotate", a, nil,
			map[string]any{"rotated_at": now, "previous_valid_until": prevUntil}, "api.updated")
	})
	if err != nil {
		return SigningSecret{}, err
	}
	// A served API's route changes now; should this fail, reconciliation
	// puts it (the route's signing differs from the database's).
	if _, err := s.healRoute(ctx, id); err != nil {
		s.log.WarnContext(ctx, "put route with the rotated signing secret; reconciliation will retry", "api_id", id, "error", err)
	}
	return out, nil
}

// createSigningSecret stores a new API's first secret, not revealed.
func createSigningSecret(ctx context.Context, tx pgx.Tx, id uuid.UUID) error {
	if _, err := tx.Exec(ctx, `INSERT INTO api_signing_secrets (api_id, secret) VALUES ($1, $2)`, id, originsig.NewSecret()); err != nil {
		return fmt.Errorf("store signing secret: %w", err)
	}
	return nil
}
