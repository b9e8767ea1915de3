package keys_test

import (
	"errors"
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/subscriptions/subscriptionstest"
)

// TestAdminKeySanctions: a key an admin suspended is resumed by an admin
// only, one the consumer suspended by the consumer too; an admin may
// suspend and revoke another organization's key but never gets a new
// plaintext of it.
func TestAdminKeySanctions(t *testing.T) {
	f := subscriptionstest.Setup(t)
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin, OrgID: f.Org("platform", "admin-user", "admin@example.test")}
	k := f.Key(keys.Settings{}, true)

	if _, err := f.Keys.Act(f.Ctx, admin, k.ID, keys.ActionSuspend, "abuse report"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Keys.Act(f.Ctx, f.Consumer, k.ID, keys.ActionResume, ""); !errors.Is(err, keys.ErrAdminSuspended) {
		t.Fatalf("consumer resumes an admin's suspension = %v; want ErrAdminSuspended", err)
	}
	if got := f.Get(k.ID); got.State != keys.StateSuspended {
		t.Fatalf("key after the refused resume = %s; want suspended", got.State)
	}
	if _, err := f.Keys.Act(f.Ctx, admin, k.ID, keys.ActionResume, "cleared"); err != nil {
		t.Fatalf("admin resumes = %v", err)
	}
	if _, err := f.Keys.Act(f.Ctx, f.Consumer, k.ID, keys.ActionSuspend, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Keys.Act(f.Ctx, f.Consumer, k.ID, keys.ActionResume, ""); err != nil {
		t.Fatalf("consumer resumes its own suspension = %v", err)
	}

	if _, err := f.Keys.CreateKey(f.Ctx, admin, f.Sub.ID, keys.Settings{}); !errors.Is(err, keys.ErrAdminPlaintext) {
		t.Fatalf("admin issues a key of another organization = %v; want ErrAdminPlaintext", err)
	}
	if _, err := f.Keys.Rotate(f.Ctx, admin, k.ID, keys.RotateInput{}); !errors.Is(err, keys.ErrAdminPlaintext) {
		t.Fatalf("admin rotates a key of another organization = %v; want ErrAdminPlaintext", err)
	}
	var successors int
	if err := f.Pool.QueryRow(f.Ctx, `SELECT count(*) FROM api_keys WHERE subscription_id = $1`, f.Sub.ID).Scan(&successors); err != nil || successors != 1 {
		t.Fatalf("keys of the subscription = %d, %v; want 1 (nothing issued)", successors, err)
	}
	if _, err := f.Keys.Act(f.Ctx, admin, k.ID, keys.ActionRevoke, "leaked"); err != nil {
		t.Fatalf("admin revokes = %v", err)
	}
}

// TestNewKeyCannotEscapeAdminSuspension: while a key an admin suspended
// stands, its organization issues no other key on the subscription;
// rotating a key that works still works, and once the organization gives
// the suspended key up (revokes it) it may issue again.
func TestNewKeyCannotEscapeAdminSuspension(t *testing.T) {
	f := subscriptionstest.Setup(t)
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin, OrgID: f.Org("platform", "admin-user", "admin@example.test")}
	suspended := f.Key(keys.Settings{Name: "leaked"}, true)
	working := f.Key(keys.Settings{Name: "other"}, true)
	if _, err := f.Keys.Act(f.Ctx, admin, suspended.ID, keys.ActionSuspend, "abuse report"); err != nil {
		t.Fatal(err)
	}

	if _, err := f.Keys.CreateKey(f.Ctx, f.Consumer, f.Sub.ID, keys.Settings{}); !errors.Is(err, keys.ErrAdminSuspended) {
		t.Fatalf("CreateKey beside an admin's suspension = %v; want ErrAdminSuspended", err)
	}
	if _, err := f.Keys.Rotate(f.Ctx, f.Consumer, working.ID, keys.RotateInput{}); err != nil {
		t.Fatalf("Rotate of a working key beside an admin's suspension = %v; want the successor", err)
	}

	if _, err := f.Keys.Act(f.Ctx, f.Consumer, suspended.ID, keys.ActionRevoke, "giving it up"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Keys.CreateKey(f.Ctx, f.Consumer, f.Sub.ID, keys.Settings{}); err != nil {
		t.Fatalf("CreateKey once the suspended key is revoked = %v; want a key", err)
	}
}

// TestAdminSanctionsConsumerSuspension: an admin suspending a key its
// organization suspended already succeeds and makes the suspension the
// admin's, audited; the organization can then no longer resume it.
func TestAdminSanctionsConsumerSuspension(t *testing.T) {
	f := subscriptionstest.Setup(t)
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin, OrgID: f.Org("platform", "admin-user", "admin@example.test")}
	k := f.Key(keys.Settings{}, true)
	if _, err := f.Keys.Act(f.Ctx, f.Consumer, k.ID, keys.ActionSuspend, ""); err != nil {
		t.Fatal(err)
	}
	audited := f.AuditCount(k.ID, "key.transition.suspended")

	got, err := f.Keys.Act(f.Ctx, admin, k.ID, keys.ActionSuspend, "abuse report")
	if err != nil {
		t.Fatalf("admin suspends a suspended key = %v; want the key", err)
	}
	if got.State != keys.StateSuspended {
		t.Fatalf("admin suspends a suspended key = state %s; want suspended", got.State)
	}
	if n := f.AuditCount(k.ID, "key.transition.suspended"); n != audited+1 {
		t.Fatalf("suspension audit entries = %d; want %d", n, audited+1)
	}
	if _, err := f.Keys.Act(f.Ctx, f.Consumer, k.ID, keys.ActionResume, ""); !errors.Is(err, keys.ErrAdminSuspended) {
		t.Fatalf("consumer resumes after the admin's suspension = %v; want ErrAdminSuspended", err)
	}
	if _, err := f.Keys.CreateKey(f.Ctx, f.Consumer, f.Sub.ID, keys.Settings{}); !errors.Is(err, keys.ErrAdminSuspended) {
		t.Fatalf("CreateKey after the admin's suspension = %v; want ErrAdminSuspended", err)
	}
	if _, err := f.Keys.Act(f.Ctx, admin, k.ID, keys.ActionResume, "cleared"); err != nil {
		t.Fatalf("admin resumes = %v", err)
	}
}
