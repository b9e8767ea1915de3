package catalog

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/catalog/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/gatewayroute"
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

// loadServed reads the API id as the gateway serves it: the slug,
// upstream, routes and health path its review approved (approved_snapshot),
// never the live columns a provider may have changed since, and its
// signing secrets. An API without a snapshot is ErrNotApproved.
func loadServed(ctx context.Context, c db.DBTX, id uuid.UUID) (API, error) {
	return toServed(db.New(c).APIServedGetByID(ctx, id))
}

// gatewaySigning is the route's signing part for a, nil if a has no
// secret. The previous secret goes along until its overlap ends.
func (a API) gatewaySigning(now time.Time) *gatewayroute.Signing {
	if a.signing == nil {
		return nil
	}
	g := &gatewayroute.Signing{APIID: a.ID.String(), Secret: a.signing.secret}
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
	req.Header.Set(gatewayroute.APIHeader, g.APIID)
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
	err := s.changeAPI(ctx, actor, id, func(tx pgx.Tx, a API) error {
		if actor.OrgID != a.OrganizationID || (actor.Role != identity.RoleProvider && actor.Role != identity.RoleAdmin) {
			return identity.ErrForbidden
		}
		if a.State == StateRetired {
			return fmt.Errorf("%w: %s", ErrNotEditable, a.State)
		}
		now := s.now().UTC().Truncate(time.Microsecond)
		until := now.Add(SigningOverlap)
		secret := originsig.NewSecret()
		// A secret nobody was shown needs no overlap: no upstream has it.
		q := db.New(tx)
		cur, err := q.SigningSecretGetForUpdate(ctx, id)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read signing secret: %w", err)
		}
		var previous *string
		var prevUntil *time.Time
		if cur.Revealed {
			previous, prevUntil = &cur.Secret, &until
		}
		if err := q.SigningSecretUpsert(ctx, db.SigningSecretUpsertParams{
			ApiID: id, Secret: secret, PreviousSecret: previous, PreviousUntil: prevUntil, RotatedAt: now,
		}); err != nil {
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
	if err := db.New(tx).SigningSecretInsert(ctx, db.SigningSecretInsertParams{ApiID: id, Secret: originsig.NewSecret()}); err != nil {
		return fmt.Errorf("store signing secret: %w", err)
	}
	return nil
}
