package testenv

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Querier is a pool, a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Org inserts an organization whose slug and name are slug and returns its
// id: the owner most rows of a test database need.
func Org(t testing.TB, db Querier, slug string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := db.QueryRow(t.Context(), `INSERT INTO organizations (slug, name) VALUES ($1, $1) RETURNING id`, slug).Scan(&id); err != nil {
		t.Fatalf("insert organization %s: %v", slug, err)
	}
	return id
}

// User inserts a user with that email and identity-provider subject (the
// recipient of the emails sent to the subject) and returns its id.
func User(t testing.TB, db Querier, email, subject string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := db.QueryRow(t.Context(), `INSERT INTO users (email, subject) VALUES ($1, $2) RETURNING id`, email, subject).Scan(&id); err != nil {
		t.Fatalf("insert user %s: %v", subject, err)
	}
	return id
}
