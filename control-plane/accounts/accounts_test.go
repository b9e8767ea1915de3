package accounts_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/accounts"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/migrate"
)

func setup(t *testing.T) (*pgxpool.Pool, *accounts.Directory) {
	t.Helper()
	url := testenv.PostgresURL(t)
	if _, err := migrate.Postgres(t.Context(), url, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, accounts.New(pool)
}

func emailOf(t *testing.T, pool *pgxpool.Pool, subject string) string {
	t.Helper()
	var email string
	if err := pool.QueryRow(t.Context(), `SELECT email FROM users WHERE subject = $1`, subject).Scan(&email); err != nil {
		t.Fatalf("read email of %s: %v", subject, err)
	}
	return email
}

// TestResolveKeepsEmailCurrent: each verified token's email replaces the
// stored one, so notices reach the address the identity provider holds now;
// a token without an email keeps it, and an address another user holds is
// not taken over.
func TestResolveKeepsEmailCurrent(t *testing.T) {
	pool, dir := setup(t)
	ctx := t.Context()
	sfx := testenv.Suffix()
	alice, bob := "alice-"+sfx, "bob-"+sfx
	id := accounts.Identity{Org: "acme-" + sfx, Subject: alice, Role: "consumer", Email: alice + "@old.example"}

	steps := []struct {
		email, want string
	}{
		{alice + "@old.example", alice + "@old.example"},
		{alice + "@new.example", alice + "@new.example"},
		{"", alice + "@new.example"},                   // no email claim: keep the known one
		{bob + "@example.com", alice + "@new.example"}, // bob's address: not taken over
		{alice + "@newer.example", alice + "@newer.example"},
	}
	if _, err := dir.Resolve(ctx, accounts.Identity{Org: id.Org, Subject: bob, Role: "consumer", Email: bob + "@example.com"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		id.Email = s.email
		if _, err := dir.Resolve(ctx, id); err != nil {
			t.Fatalf("Resolve(email %q) = %v; want nil", s.email, err)
		}
		if got := emailOf(t, pool, alice); got != s.want {
			t.Errorf("email after a token with %q = %q; want %q", s.email, got, s.want)
		}
	}
	if got := emailOf(t, pool, bob); got != bob+"@example.com" {
		t.Errorf("bob's email = %q; want unchanged", got)
	}
}
