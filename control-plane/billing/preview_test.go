package billing

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// The preview prices the current period as its invoice will: the base fee
// prorated at the plan change, each part's usage by its version, counted
// up to now only; other organizations do not find it.
func TestPreviewCurrentPeriod(t *testing.T) {
	t.Parallel()
	f := periodSetup(t)
	now := time.Date(2026, 11, 16, 0, 0, 0, 0, time.UTC)
	f.svc.now = func() time.Time { return now }
	start, end := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	sub := f.subscribe(start, start, end, nil)
	change := time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)
	f.changePlan(sub, f.v2, change)
	f.events(sub, get(start.Add(4*24*time.Hour), "2"), get(start.Add(5*24*time.Hour), "2"), get(start.Add(6*24*time.Hour), "2"),
		get(change.Add(time.Hour), "1"), get(change.Add(2*time.Hour), "1"),
		get(now.Add(time.Hour), "100")) // after now: not in the preview

	var customer uuid.UUID
	if err := f.pool.QueryRow(t.Context(), `SELECT organization_id FROM subscriptions WHERE id = $1`, sub).Scan(&customer); err != nil {
		t.Fatal(err)
	}
	inv, err := f.svc.Preview(t.Context(), identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: customer}, sub)
	if err != nil {
		t.Fatalf("Preview: %v", err)
	}
	// 10 base − 10×20/30 (6.67) + 30×20/30 (20.00); v1: 3 calls × 0.01 +
	// 6 units × 0.5; v2: 2 calls × 0.005, 2 units × 0.4, 2 gets × 0.001.
	if want := dec("27.17"); !inv.Total.Equal(want) || !inv.AmountDue.Equal(want) || inv.Status != StatusDraft || inv.Number != nil {
		t.Errorf("Preview() total %s, due %s, status %s; want 27.17 draft without number; lines %+v", inv.Total, inv.AmountDue, inv.Status, inv.Lines)
	}
	other := testenv.Org(t, f.pool, "other-"+testenv.Suffix())
	if _, err := f.svc.Preview(t.Context(), identity.Actor{Subject: "o", Role: identity.RoleConsumer, OrgID: other}, sub); !errors.Is(err, ErrSubscriptionNotFound) {
		t.Errorf("Preview by another organization = %v; want ErrSubscriptionNotFound", err)
	}
}
