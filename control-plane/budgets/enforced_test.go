package budgets_test

import (
	"testing"

	"github.com/veil-platform/veil/control-plane/budgets"
)

// TestHardBudgetEnforcedFlag: a hard subscription budget answers whether
// the gateway enforces it, false once the subscription's plan moved to
// another currency (the gateway then leaves it out of the record); a soft
// one answers nothing.
func TestHardBudgetEnforcedFlag(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	hard := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("100"), Hard: true})
	if hard.Enforced == nil || !*hard.Enforced {
		t.Fatalf("created hard budget: enforced %v; want true", hard.Enforced)
	}
	if _, err := f.pool.Exec(f.ctx, `WITH v AS (
			INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
			SELECT plan_id, version + 1, type, 'EUR', created_by FROM plan_versions
			WHERE id = (SELECT plan_version_id FROM subscriptions WHERE id = $1) RETURNING id)
		UPDATE subscriptions SET plan_version_id = (SELECT id FROM v) WHERE id = $1`, sub); err != nil {
		t.Fatal(err)
	}
	got, err := f.svc.Get(f.ctx, c.actor, hard.ID)
	if err != nil || got.Enforced == nil || *got.Enforced {
		t.Fatalf("after the plan moved to EUR: Get = %+v, %v; want enforced false", got, err)
	}
	list, _, err := f.svc.List(f.ctx, c.actor, c.orgID, "", 10)
	if err != nil || len(list) != 1 || list[0].Enforced == nil || *list[0].Enforced {
		t.Fatalf("List = %+v, %v; want the budget with enforced false", list, err)
	}
	soft := f.budget(c, budgets.Input{Amount: amount("50"), Currency: "USD"})
	if soft.Enforced != nil {
		t.Errorf("an organization-wide soft budget: enforced %v; want absent", *soft.Enforced)
	}
}
