package pricing

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/pricing/internal/db"
)

// Sentinel errors; the HTTP layer maps each to one problem type.
var (
	ErrMeterNotFound = errors.New("meter not found")
	// ErrMeterSlugTaken: the API has a meter with that slug.
	ErrMeterSlugTaken = errors.New("meter slug already taken")
	// ErrMeterInUse: the change or deletion would alter what a plan
	// version charges (used by a subscription, for a change; any, for a
	// deletion).
	ErrMeterInUse = errors.New("meter in use")
	// ErrMeterLimit: the API has as many meters as it may.
	ErrMeterLimit = errors.New("meter limit reached")
	// ErrFileManaged: the plan or meter is declared in a plan file, which
	// alone changes it; the error's text names the file.
	ErrFileManaged = errors.New("managed by a plan file")
)

// MaxMetersPerAPI bounds an API's meters.
const MaxMetersPerAPI = 100

// FileManaged is the error of a REST write to what the plan file named
// file manages.
func FileManaged(what, file string) error {
	return fmt.Errorf("%w: %s is declared in %s; change the file instead", ErrFileManaged, what, file)
}

// Service is the REST life of meters, on Postgres.
type Service struct {
	pool *pgxpool.Pool
}

// New returns a Service on pool.
func New(pool *pgxpool.Pool) (*Service, error) {
	if pool == nil {
		return nil, errors.New("new pricing: pool is required")
	}
	return &Service{pool: pool}, nil
}

func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// apiFor checks that actor sees the API (else catalog.ErrAPINotFound) and,
// when change is set, may change it (its provider or an admin, else
// identity.ErrForbidden); it returns the API's organization.
func apiFor(ctx context.Context, q DB, actor identity.Actor, apiID uuid.UUID, change bool) (uuid.UUID, error) {
	a, err := db.New(q).APIAccessGet(ctx, apiID)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, catalog.ErrAPINotFound
	}
	if err != nil {
		return uuid.Nil, fmt.Errorf("load api: %w", err)
	}
	if !catalog.VisibleTo(actor, a.OrganizationID, catalog.Visibility(a.Visibility), catalog.State(a.State)) {
		return uuid.Nil, catalog.ErrAPINotFound
	}
	if change && !actor.CanProvide(a.OrganizationID) {
		return uuid.Nil, identity.ErrForbidden
	}
	return a.OrganizationID, nil
}

func record(ctx context.Context, tx pgx.Tx, actor identity.Actor, org uuid.UUID, action string, id uuid.UUID, before, after any) error {
	return audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: org,
		Action: action, TargetType: "meter", TargetID: id.String(), Before: before, After: after,
	})
}
