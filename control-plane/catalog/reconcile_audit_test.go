package catalog_test

import (
	"encoding/json"
	"testing"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/internal/gatewayroute"
)

// TestReconcileRequestedAuditsBeforeTheGateway: the entry of a requested
// reconciliation is committed before the run changes the gateway, and a
// run whose entry cannot be written changes nothing, so the gateway is
// never changed by a request the audit log does not hold.
func TestReconcileRequestedAuditsBeforeTheGateway(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	missing := e.active("audited")
	e.gw.set(func(g *fakeGateway) {
		delete(g.routes, catalog.RouteID(missing.ID))
		g.foreign[catalog.RoutePrefix+"stale"] = true
		g.puts, g.deletes = nil, nil
	})
	entries := func() int {
		return e.count(`SELECT count(*) FROM audit_log WHERE action = 'gateway.reconcile' AND target_id = 'apis'`)
	}

	// The audit insert fails: nothing is put or deleted.
	if _, err := e.pool.Exec(ctx, `CREATE FUNCTION refuse_reconcile_audit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.action = 'gateway.reconcile' THEN RAISE EXCEPTION 'audit refused'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER refuse_reconcile_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_reconcile_audit()`); err != nil {
		t.Fatal(err)
	}
	if rep, err := e.svc.ReconcileRequested(ctx, e.admin); err == nil {
		t.Fatalf("ReconcileRequested() with the audit insert failing = %+v, nil; want an error", rep)
	}
	if puts, deletes := e.gw.calls(); len(puts) != 0 || len(deletes) != 0 {
		t.Errorf("ReconcileRequested() with the audit insert failing called the gateway: puts %v, deletes %v; want none", puts, deletes)
	}
	if _, err := e.pool.Exec(ctx, `DROP TRIGGER refuse_reconcile_audit ON audit_log`); err != nil {
		t.Fatal(err)
	}

	// The entry is visible to every gateway call the run makes.
	seenAtPut := -1
	e.gw.set(func(g *fakeGateway) {
		g.onPut = func(gatewayroute.Route) { seenAtPut = entries() }
	})
	rep, err := e.svc.ReconcileRequested(ctx, e.admin)
	if err != nil || rep.Missing != 1 || rep.Orphans != 1 || rep.Healed != 2 {
		t.Fatalf("ReconcileRequested() = %+v, %v; want 1 missing and 1 orphan, both healed", rep, err)
	}
	if seenAtPut != 1 {
		t.Errorf("audit entries of the request when the gateway was changed = %d; want 1", seenAtPut)
	}
	var after []byte
	if err := e.pool.QueryRow(ctx, `SELECT actor, after FROM audit_log WHERE action = 'gateway.reconcile'`).Scan(new(string), &after); err != nil {
		t.Fatal(err)
	}
	var found catalog.ReconcileReport
	if err := json.Unmarshal(after, &found); err != nil || found.Missing != 1 || found.Orphans != 1 || found.Healed != 0 {
		t.Errorf("audited drift = %s (%v); want the drift found before healing: 1 missing, 1 orphan, none healed yet", after, err)
	}
	if err := e.pool.QueryRow(ctx, `SELECT after FROM audit_log WHERE action = 'gateway.reconcile.result' AND target_id = 'apis'`).Scan(&after); err != nil {
		t.Fatalf("the result of the requested run is not audited: %v", err)
	}
	var result catalog.ReconcileReport
	if err := json.Unmarshal(after, &result); err != nil || result.Healed != 2 || len(result.Unhealed) != 0 {
		t.Errorf("audited result = %s (%v); want both heals", after, err)
	}

	// The scheduled run is not a request: no entry.
	if _, err := e.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if n := entries(); n != 1 {
		t.Errorf("audit entries after a scheduled run = %d; want 1 (the request's)", n)
	}
}
