// Package accounts maps authenticated identities to organization and user
// rows. The identity provider is the authority on who belongs where: the
// first request of a new organization, user or membership creates its rows
// (just-in-time provisioning), later ones hit an in-memory cache. The
// queries are in internal/db (sqlc).
package accounts

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/accounts/internal/db"
)

// Account is the resolved identity of a caller.
type Account struct {
	OrgID  uuid.UUID
	UserID uuid.UUID
}

// Identity is what a verified token says about its caller.
type Identity struct {
	Org     string // organization slug
	Subject string
	Role    string
	Name    string
	Email   string
	// EmailVerified: the identity provider vouches that the user controls
	// Email. An unverified email is never stored.
	EmailVerified bool
}

// Directory resolves identities. It is safe for concurrent use.
type Directory struct {
	pool  *pgxpool.Pool
	mu    sync.RWMutex
	cache map[Identity]Account
}

// New returns a Directory on pool.
func New(pool *pgxpool.Pool) *Directory {
	return &Directory{pool: pool, cache: make(map[Identity]Account)}
}

// Resolve returns the organization and user of id, creating them and the
// membership on first sight.
func (d *Directory) Resolve(ctx context.Context, id Identity) (Account, error) {
	d.mu.RLock()
	a, ok := d.cache[id]
	d.mu.RUnlock()
	if ok {
		return a, nil
	}
	// Two first sign-ins racing for one address both find it free; the
	// loser's insert hits the unique index, and a second attempt that does
	// not adopt the address is what its user gets instead of an error.
	adopt := id.EmailVerified && id.Email != ""
	a, err := d.resolve(ctx, id, adopt)
	if adopt && isEmailConflict(err) {
		a, err = d.resolve(ctx, id, false)
	}
	if err != nil {
		return Account{}, err
	}
	d.mu.Lock()
	d.cache[id] = a
	d.mu.Unlock()
	return a, nil
}

// resolve upserts the organization, the user and the membership of id in
// one transaction. adopt says whether the user may take id.Email.
func (d *Directory) resolve(ctx context.Context, id Identity, adopt bool) (Account, error) {
	var a Account
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		var err error
		if a.OrgID, err = q.OrganizationUpsert(ctx, id.Org); err != nil {
			return fmt.Errorf("upsert organization %q: %w", id.Org, err)
		}
		// The identity provider is the authority on a user's email, but
		// only where it says it checked it (email_verified): anyone can put
		// any address in an unverified claim, and the address is where
		// notices go and how operators tell users apart. A verified email
		// that nobody else holds replaces the stored one, so notices go
		// where the user reads them now; anything else keeps the stored
		// one, and a new user without an address of their own gets a
		// placeholder that never receives mail. An address another user
		// holds is never taken over, and never fails a sign-in.
		a.UserID, err = q.UserUpsert(ctx, db.UserUpsertParams{Subject: id.Subject, Email: id.Email, Name: id.Name, Adopt: adopt})
		if err != nil {
			return fmt.Errorf("upsert user %q: %w", id.Subject, err)
		}
		err = q.MembershipInsert(ctx, db.MembershipInsertParams{OrganizationID: a.OrgID, UserID: a.UserID, Role: db.MemberRole(id.Role)})
		if err != nil {
			return fmt.Errorf("upsert membership: %w", err)
		}
		return nil
	})
	return a, err
}

// isEmailConflict reports whether err is the unique index on users' emails
// refusing an address another user took meanwhile.
func isEmailConflict(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23505" && pg.ConstraintName == "users_email_key"
}

// OrgID returns the id of the organization with slug, or false.
func (d *Directory) OrgID(ctx context.Context, slug string) (uuid.UUID, bool, error) {
	id, err := db.New(d.pool).OrganizationIDBySlug(ctx, slug)
	if err == pgx.ErrNoRows {
		return uuid.Nil, false, nil
	}
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("look up organization %q: %w", slug, err)
	}
	return id, true, nil
}
