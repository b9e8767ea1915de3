// Package accounts maps authenticated identities to organization and user
// rows. The identity provider is the authority on who belongs where: the
// first request of a new organization, user or membership creates its rows
// (just-in-time provisioning), later ones hit an in-memory cache.
package accounts

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO organizations (slug, name) VALUES ($1, $1)
			ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id`, id.Org).Scan(&a.OrgID); err != nil {
			return fmt.Errorf("upsert organization %q: %w", id.Org, err)
		}
		email := id.Email
		if email == "" {
			email = id.Subject + "@users.invalid"
		}
		// The identity provider is the authority on a user's email: a
		// token that carries one replaces the stored one, so notices go
		// where the user reads them now. A token without one keeps it. An
		// address another user still holds is not taken over (the index is
		// unique); the next token after that user changes theirs moves it.
		if err := tx.QueryRow(ctx, `INSERT INTO users (subject, email, name) VALUES ($1, $2, $3)
			ON CONFLICT (subject) DO UPDATE SET
				name = CASE WHEN EXCLUDED.name = '' THEN users.name ELSE EXCLUDED.name END,
				email = CASE WHEN $4 AND NOT EXISTS (SELECT 1 FROM users o
						WHERE lower(o.email) = lower(EXCLUDED.email) AND o.subject <> EXCLUDED.subject)
					THEN EXCLUDED.email ELSE users.email END
			RETURNING id`, id.Subject, email, id.Name, id.Email != "").Scan(&a.UserID); err != nil {
			return fmt.Errorf("upsert user %q: %w", id.Subject, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3::member_role)
			ON CONFLICT DO NOTHING`, a.OrgID, a.UserID, id.Role); err != nil {
			return fmt.Errorf("upsert membership: %w", err)
		}
		return nil
	})
	if err != nil {
		return Account{}, err
	}
	d.mu.Lock()
	d.cache[id] = a
	d.mu.Unlock()
	return a, nil
}

// OrgID returns the id of the organization with slug, or false.
func (d *Directory) OrgID(ctx context.Context, slug string) (uuid.UUID, bool, error) {
	var id uuid.UUID
	err := d.pool.QueryRow(ctx, `SELECT id FROM organizations WHERE slug = $1`, slug).Scan(&id)
	if err == pgx.ErrNoRows {
		return uuid.Nil, false, nil
	}
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("look up organization %q: %w", slug, err)
	}
	return id, true, nil
}
