package budgets_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/budgets"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/validation"
)

// TestCreateValidation: amounts, currencies, thresholds and the hard flag
// are checked field by field.
func TestCreateValidation(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	many := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	for _, tc := range []struct {
		name  string
		in    budgets.Input
		field string
	}{
		{"no amount", budgets.Input{SubscriptionID: &sub}, "amount"},
		{"zero", budgets.Input{SubscriptionID: &sub, Amount: amount("0")}, "amount"},
		{"negative", budgets.Input{SubscriptionID: &sub, Amount: amount("-5")}, "amount"},
		{"too large", budgets.Input{SubscriptionID: &sub, Amount: amount("1000000000000")}, "amount"},
		{"7 decimals", budgets.Input{SubscriptionID: &sub, Amount: amount("1.0000001")}, "amount"},
		{"huge exponent", budgets.Input{SubscriptionID: &sub, Amount: amount("1e40")}, "amount"},
		{"threshold 0", budgets.Input{SubscriptionID: &sub, Amount: amount("5"), Thresholds: []int{0}}, "thresholds"},
		{"threshold 1001", budgets.Input{SubscriptionID: &sub, Amount: amount("5"), Thresholds: []int{1001}}, "thresholds"},
		{"duplicate", budgets.Input{SubscriptionID: &sub, Amount: amount("5"), Thresholds: []int{80, 50, 80}}, "thresholds"},
		{"11 thresholds", budgets.Input{SubscriptionID: &sub, Amount: amount("5"), Thresholds: many}, "thresholds"},
		{"no thresholds", budgets.Input{SubscriptionID: &sub, Amount: amount("5"), Thresholds: []int{}}, "thresholds"},
		{"org-wide without currency", budgets.Input{Amount: amount("5")}, "currency"},
		{"unknown currency", budgets.Input{Amount: amount("5"), Currency: "XYZ"}, "currency"},
		{"lower case currency", budgets.Input{Amount: amount("5"), Currency: "usd"}, "currency"},
		{"hard org-wide", budgets.Input{Amount: amount("5"), Currency: "USD", Hard: true}, "hard"},
		{"organization with a subscription", budgets.Input{SubscriptionID: &sub, OrganizationID: &c.orgID, Amount: amount("5")}, "organization_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.Create(f.ctx, c.actor, tc.in)
			var v *validation.Error
			if !errors.As(err, &v) || !slices.ContainsFunc(v.Fields, func(fe validation.Field) bool { return fe.Field == tc.field }) {
				t.Fatalf("Create = %v; want a validation error on %s", err, tc.field)
			}
		})
	}
	for _, hard := range []bool{false, true} {
		if _, err := f.svc.Create(f.ctx, c.actor, budgets.Input{SubscriptionID: &sub, Amount: amount("5"), Currency: "EUR", Hard: hard}); !errors.Is(err, budgets.ErrCurrencyMismatch) {
			t.Errorf("Create in EUR on a USD subscription (hard %v) = %v; want ErrCurrencyMismatch", hard, err)
		}
	}
	var n int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM budgets`).Scan(&n); err != nil || n != 0 {
		t.Errorf("budgets after refusals = %d (%v); want 0", n, err)
	}
}

// TestOwnership: another organization's budgets and subscriptions are not
// found, whatever the caller's role; admins see and change them; one
// budget per subscription and per organization and currency.
func TestOwnership(t *testing.T) {
	f := newFixture(t)
	c, other := f.consumer(), f.consumer()
	sub := f.subscribe(c, "USD")
	b := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("100"), Thresholds: []int{100, 50}})
	if !slices.Equal(b.Thresholds, []int{50, 100}) {
		t.Errorf("thresholds = %v; want them sorted", b.Thresholds)
	}
	provider := identity.Actor{Subject: "p", Role: identity.RoleProvider, OrgID: other.orgID}
	for _, a := range []identity.Actor{other.actor, provider} {
		if _, err := f.svc.Get(f.ctx, a, b.ID); !errors.Is(err, budgets.ErrNotFound) {
			t.Errorf("Get by %s of another organization = %v; want not found", a.Role, err)
		}
		if _, err := f.svc.Change(f.ctx, a, b.ID, budgets.Update{Amount: amount("1")}); !errors.Is(err, budgets.ErrNotFound) {
			t.Errorf("Change by another organization = %v; want not found", err)
		}
		if err := f.svc.Delete(f.ctx, a, b.ID); !errors.Is(err, budgets.ErrNotFound) {
			t.Errorf("Delete by another organization = %v; want not found", err)
		}
		if _, err := f.svc.Create(f.ctx, a, budgets.Input{SubscriptionID: &sub, Amount: amount("1")}); !errors.Is(err, budgets.ErrSubscriptionNotFound) {
			t.Errorf("Create on another organization's subscription = %v; want not found", err)
		}
		if _, err := f.svc.Create(f.ctx, a, budgets.Input{OrganizationID: &c.orgID, Currency: "USD", Amount: amount("1")}); !errors.Is(err, budgets.ErrNotFound) {
			t.Errorf("Create for another organization = %v; want not found", err)
		}
		if _, _, err := f.svc.List(f.ctx, a, c.orgID, "", 0); !errors.Is(err, budgets.ErrNotFound) {
			t.Errorf("List of another organization = %v; want not found", err)
		}
		if list, _, err := f.svc.List(f.ctx, a, uuid.Nil, "", 0); err != nil || len(list) != 0 {
			t.Errorf("List of its own = %v, %v; want none", list, err)
		}
	}
	elsewhere := identity.Actor{Subject: "admin", Role: identity.RoleAdmin, OrgID: uuid.New()}
	if got, err := f.svc.Get(f.ctx, elsewhere, b.ID); err != nil || got.ID != b.ID {
		t.Errorf("Get by an admin = %v, %v", got, err)
	}
	if _, err := f.svc.Create(f.ctx, c.actor, budgets.Input{SubscriptionID: &sub, Amount: amount("5")}); !errors.Is(err, budgets.ErrExists) {
		t.Errorf("a second budget of the subscription = %v; want ErrExists", err)
	}
	f.budget(c, budgets.Input{Currency: "USD", Amount: amount("5")})
	if _, err := f.svc.Create(f.ctx, c.actor, budgets.Input{Currency: "USD", Amount: amount("6")}); !errors.Is(err, budgets.ErrExists) {
		t.Errorf("a second organization-wide USD budget = %v; want ErrExists", err)
	}
	f.budget(c, budgets.Input{Currency: "EUR", Amount: amount("5")})
	admin := identity.Actor{Subject: "admin", Role: identity.RoleAdmin}
	if _, err := f.svc.Create(f.ctx, admin, budgets.Input{OrganizationID: &other.orgID, Currency: "USD", Amount: amount("5")}); err != nil {
		t.Errorf("an admin's budget for an organization = %v", err)
	}
	list, _, err := f.svc.List(f.ctx, c.actor, uuid.Nil, "", 2)
	if err != nil || len(list) != 2 || list[0].ID != b.ID {
		t.Fatalf("List page of 2 = %+v, %v", list, err)
	}
	var entries int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM audit_log WHERE action = 'budget.create' AND actor = $1 AND organization_id = $2`,
		c.actor.Subject, c.orgID).Scan(&entries); err != nil || entries != 3 {
		t.Errorf("audit entries of the creates = %d (%v); want 3", entries, err)
	}
}

// TestHardBudgetSyncsRecord: creating, changing the amount or flag of, and
// deleting a hard budget each rewrite the subscription's gateway record;
// a soft budget's changes do not.
func TestHardBudgetSyncsRecord(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	b := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("100")})
	steps := []struct {
		in   budgets.Update
		want int
	}{
		{budgets.Update{Amount: amount("120")}, 0},                  // soft: no record change
		{budgets.Update{Amount: amount("120"), Hard: ptr(true)}, 1}, // made hard
		{budgets.Update{Amount: amount("120"), Hard: ptr(true), Thresholds: []int{90}}, 1},
		{budgets.Update{Amount: amount("150"), Hard: ptr(true)}, 2},  // amount of a hard one
		{budgets.Update{Amount: amount("150"), Hard: ptr(false)}, 3}, // made soft
	}
	for i, s := range steps {
		if _, err := f.svc.Change(f.ctx, c.actor, b.ID, s.in); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := f.records.calls(); got != s.want {
			t.Fatalf("step %d: record syncs = %d; want %d", i, got, s.want)
		}
	}
	if _, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount("150"), Hard: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Delete(f.ctx, c.actor, b.ID); err != nil {
		t.Fatal(err)
	}
	if got := f.records.calls(); got != 5 || f.records.subs[4] != sub {
		t.Errorf("record syncs = %v; want 5, the last of %s", f.records.subs, sub)
	}
	hard := f.subscribe(c, "USD")
	f.budget(c, budgets.Input{SubscriptionID: &hard, Amount: amount("1"), Hard: true})
	if got := f.records.calls(); got != 6 {
		t.Errorf("record syncs after creating a hard budget = %d; want 6", got)
	}
	org := f.budget(c, budgets.Input{Currency: "USD", Amount: amount("1")})
	if _, err := f.svc.Change(f.ctx, c.actor, org.ID, budgets.Update{Amount: amount("2"), Hard: ptr(true)}); err == nil {
		t.Error("an organization-wide budget made hard; want a validation error")
	}
}

// TestChangeKeepsLeftOut: a change that gives only the amount keeps the
// thresholds and the hard flag, so raising a hard budget does not lift
// its block; a change that gives them sets them.
func TestChangeKeepsLeftOut(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	b := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("100"), Thresholds: []int{90}, Hard: true})
	got, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount("400")})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Hard || !slices.Equal(got.Thresholds, []int{90}) || !got.Amount.Equal(*amount("400")) {
		t.Fatalf("after changing the amount only: %+v; want hard, thresholds [90], amount 400", got)
	}
	if read, err := f.svc.Get(f.ctx, c.actor, b.ID); err != nil || !read.Hard || !slices.Equal(read.Thresholds, []int{90}) {
		t.Fatalf("read back: %+v, %v; want hard with thresholds [90]", read, err)
	}
	if f.records.calls() != 2 {
		t.Errorf("record syncs = %d; want 2 (created hard, hard amount changed)", f.records.calls())
	}
	got, err = f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount("400"), Thresholds: []int{100, 50}, Hard: ptr(false)})
	if err != nil {
		t.Fatal(err)
	}
	if got.Hard || !slices.Equal(got.Thresholds, []int{50, 100}) {
		t.Errorf("after setting both: %+v; want soft, thresholds [50 100]", got)
	}
	if _, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount("400"), Thresholds: []int{}}); err == nil {
		t.Error("empty thresholds accepted; want a validation error")
	}
}
