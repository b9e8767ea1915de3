package drift

import (
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
)

// TestCheckRequestedAuditsWithTheStoredRun: a requested run's audit entry
// and its stored report commit together; when either insert fails, neither
// is kept, so the audit log and the stored runs cannot disagree.
func TestCheckRequestedAuditsWithTheStoredRun(t *testing.T) {
	f := newFixture(t)
	admin := identity.Actor{Subject: "admin-user", Role: identity.RoleAdmin}
	count := func(sql string) int {
		t.Helper()
		var n int
		if err := f.pool.QueryRow(f.ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	entries := func() int { return count(`SELECT count(*) FROM audit_log WHERE action = 'usage.reconcile'`) }
	runs := func() int { return count(`SELECT count(*) FROM usage_reconcile_runs`) }
	// Either insert refused by a trigger: the other row is not kept.
	for _, c := range []struct {
		table, when, insert string
		other               func() int
		otherName           string
	}{
		{"audit_log", "WHEN (NEW.action = 'usage.reconcile')", "audit", runs, "stored runs"},
		{"usage_reconcile_runs", "", "run", entries, "audit entries"},
	} {
		if _, err := f.pool.Exec(f.ctx, `CREATE OR REPLACE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN RAISE EXCEPTION 'insert refused'; END $$;
			CREATE TRIGGER refuse_insert BEFORE INSERT ON `+c.table+` FOR EACH ROW `+c.when+` EXECUTE FUNCTION refuse_insert()`); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.CheckRequested(f.ctx, admin); err == nil {
			t.Errorf("CheckRequested() with the %s insert failing = nil; want an error", c.insert)
		}
		if n := c.other(); n != 0 {
			t.Errorf("%s after the %s insert failed = %d; want 0", c.otherName, c.insert, n)
		}
		if _, err := f.pool.Exec(f.ctx, `DROP TRIGGER refuse_insert ON `+c.table); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := f.svc.CheckRequested(f.ctx, admin); err != nil {
		t.Fatalf("CheckRequested() = %v", err)
	}
	if e, r := entries(), runs(); e != 1 || r != 1 {
		t.Errorf("after a requested run: %d audit entries, %d stored runs; want 1 and 1", e, r)
	}
	// The scheduled run is not a request: a stored run, no entry.
	f.run()
	if e, r := entries(), runs(); e != 1 || r != 2 {
		t.Errorf("after a scheduled run: %d audit entries, %d stored runs; want 1 and 2", e, r)
	}
}
