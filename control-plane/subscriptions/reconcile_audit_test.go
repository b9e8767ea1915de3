package subscriptions_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
)

// TestReconcileKeysRequestedAuditsBeforeTheRecords: the entry of a
// requested key reconciliation is committed before the run rewrites a
// record, and a run whose entry cannot be written changes nothing, so the
// gateway's records are never changed by a request the audit log does not
// hold.
func TestReconcileKeysRequestedAuditsBeforeTheRecords(t *testing.T) {
	f := setup(t)
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin}
	if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Del().Key(enforcement.SubscriptionName(f.Sub.ID.String())).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	entries := func() int {
		var n int
		if err := f.Pool.QueryRow(f.Ctx, `SELECT count(*) FROM audit_log WHERE action = 'gateway.reconcile' AND target_id = 'keys'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// The audit insert fails: the missing record stays missing.
	if _, err := f.Pool.Exec(f.Ctx, `CREATE FUNCTION refuse_reconcile_audit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.action = 'gateway.reconcile' THEN RAISE EXCEPTION 'audit refused'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER refuse_reconcile_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_reconcile_audit()`); err != nil {
		t.Fatal(err)
	}
	if rep, err := f.Svc.ReconcileKeysRequested(f.Ctx, admin); err == nil {
		t.Fatalf("ReconcileKeysRequested() with the audit insert failing = %+v, nil; want an error", rep)
	}
	if _, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String()); !errors.Is(err, enforcement.ErrNotFound) {
		t.Errorf("subscription record after a run whose audit failed: %v; want %v (not rewritten)", err, enforcement.ErrNotFound)
	}
	if _, err := f.Pool.Exec(f.Ctx, `DROP TRIGGER refuse_reconcile_audit ON audit_log`); err != nil {
		t.Fatal(err)
	}

	rep, err := f.Svc.ReconcileKeysRequested(f.Ctx, admin)
	if err != nil || rep.SubscriptionsMissing != 1 || rep.Healed != 1 {
		t.Fatalf("ReconcileKeysRequested() = %+v, %v; want the missing subscription record healed", rep, err)
	}
	if _, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String()); err != nil {
		t.Errorf("subscription record after healing: %v", err)
	}
	if n := entries(); n != 1 {
		t.Errorf("audit entries of requested runs = %d; want 1", n)
	}
	var after []byte
	if err := f.Pool.QueryRow(f.Ctx, `SELECT after FROM audit_log WHERE action = 'gateway.reconcile.result' AND target_id = 'keys'`).Scan(&after); err != nil {
		t.Fatalf("the result of the requested run is not audited: %v", err)
	}
	var result subscriptions.ReconcileReport
	if err := json.Unmarshal(after, &result); err != nil || result.Healed != 1 || result.SubscriptionsMissing != 1 {
		t.Errorf("audited result = %s (%v); want the missing subscription record healed", after, err)
	}

	// The scheduled run is not a request: no entry.
	if _, err := f.Svc.ReconcileKeys(f.Ctx); err != nil {
		t.Fatal(err)
	}
	if n := entries(); n != 1 {
		t.Errorf("audit entries after a scheduled run = %d; want 1 (the request's)", n)
	}
}
