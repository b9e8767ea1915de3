package accounts_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/accounts"
	"github.com/veil-platform/veil/internal/testenv"
)

func setup(t *testing.T) (*pgxpool.Pool, *accounts.Directory) {
	t.Helper()
	pool := testenv.Postgres(t)
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
	id := accounts.Identity{Org: "acme-" + sfx, Subject: alice, Role: "consumer", Email: alice + "@old.example", EmailVerified: true}

	steps := []struct {
		email, want string
	}{
		{alice + "@old.example", alice + "@old.example"},
		{alice + "@new.example", alice + "@new.example"},
		{"", alice + "@new.example"},                   // no email claim: keep the known one
		{bob + "@example.com", alice + "@new.example"}, // bob's address: not taken over
		{alice + "@newer.example", alice + "@newer.example"},
	}
	if _, err := dir.Resolve(ctx, accounts.Identity{Org: id.Org, Subject: bob, Role: "consumer", Email: bob + "@example.com", EmailVerified: true}); err != nil {
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

// TestEmailCannotBeSquatted: an unverified email claim is never stored, so
// nobody takes an address before its owner signs in or moves their own to
// it; the owner's first sign-in works whoever claimed the address first,
// and a verified address another user holds is not taken over either.
func TestEmailCannotBeSquatted(t *testing.T) {
	pool, dir := setup(t)
	ctx := t.Context()
	sfx := testenv.Suffix()
	org := "acme-" + sfx
	mallory, victim, late := "mallory-"+sfx, "victim-"+sfx, "late-"+sfx
	target := "Victim-" + sfx + "@example.com"

	steps := []struct {
		who     string
		email   string
		checked bool
		want    string
	}{
		// An unverified claim of a free address on a first sign-in: the placeholder.
		{mallory, target, false, mallory + "@users.invalid"},
		// Nor on a later one, and case does not matter.
		{mallory, strings.ToLower(target), false, mallory + "@users.invalid"},
		// The owner signs in for the first time and gets the address.
		{victim, target, true, target},
		// Another user's verified address: kept out, the sign-in still works.
		{mallory, target, true, mallory + "@users.invalid"},
		{late, strings.ToUpper(target), true, late + "@users.invalid"},
		// The owner's next verified address is adopted.
		{victim, victim + "@new.example", true, victim + "@new.example"},
		// An unverified change is not.
		{victim, victim + "@unchecked.example", false, victim + "@new.example"},
	}
	for _, s := range steps {
		id := accounts.Identity{Org: org, Subject: s.who, Role: "consumer", Email: s.email, EmailVerified: s.checked}
		if _, err := dir.Resolve(ctx, id); err != nil {
			t.Fatalf("Resolve(%s, email %q verified %v) = %v; want nil", s.who, s.email, s.checked, err)
		}
		if got := emailOf(t, pool, s.who); got != s.want {
			t.Errorf("email of %s after a token with %q verified %v = %q; want %q", s.who, s.email, s.checked, got, s.want)
		}
	}
}

// TestFirstSignInsRacingForAnAddress: users signing in for the first time
// at once (each in an organization of its own, so that nothing else
// serializes them), all with the same verified address, all get in; one of
// them holds the address.
func TestFirstSignInsRacingForAnAddress(t *testing.T) {
	pool, dir := setup(t)
	ctx := t.Context()
	sfx := testenv.Suffix()
	email := "shared-" + sfx + "@example.com"
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := dir.Resolve(ctx, accounts.Identity{Org: fmt.Sprintf("org-%d-%s", i, sfx), Subject: fmt.Sprintf("racer-%d-%s", i, sfx),
				Role: "consumer", Email: email, EmailVerified: true})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Resolve of a racing first sign-in = %v; want nil", err)
		}
	}
	var holders int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE lower(email) = lower($1)`, email).Scan(&holders); err != nil {
		t.Fatal(err)
	}
	if holders != 1 {
		t.Fatalf("users holding %s = %d; want 1", email, holders)
	}
}
