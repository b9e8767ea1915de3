package subscriptions_test

import (
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/budgets"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/testenv"
)

func TestHardBudgetUnenforceable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		budget, version, want string
	}{
		{"USD", "USD", ""},
		{"JPY", "JPY", ""},
		{"USD", "EUR", "the budget is in USD, the plan version in EUR"},
		{"XTS", "XTS", "the plan version's currency, XTS, is no longer priced"},
		{"USD", "XTS", "the plan version's currency, XTS, is no longer priced"},
	} {
		if got := subscriptions.HardBudgetUnenforceable(tc.budget, tc.version); got != tc.want {
			t.Errorf("HardBudgetUnenforceable(%s, %s) = %q; want %q", tc.budget, tc.version, got, tc.want)
		}
	}
}

// TestHardBudgetAfterACurrencyChange: a plan change to another currency
// than a hard budget's leaves the budget out of the gateway record, and
// the budget's answer says so (enforced false, with the reason), by the
// same rule; a change back puts it in again.
func TestHardBudgetAfterACurrencyChange(t *testing.T) {
	f := setup(t)
	usd := meteredPlan(t, f, "usd", "0.5", 0)
	eur, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Euro", Slug: "euro", Terms: subscriptions.Terms{Currency: "EUR", BaseFee: decimal.NewFromInt(1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	consumer := identity.Actor{Subject: "budget-eur", Role: identity.RoleConsumer, OrgID: f.Org("budget-eur", "budget-eur", "eur@example.test")}
	sub, err := f.Svc.Subscribe(f.Ctx, consumer, subscriptions.SubscribeInput{PlanID: usd.ID})
	if err != nil {
		t.Fatal(err)
	}
	bs, err := budgets.New(budgets.Config{Pool: f.Pool, Records: f.Svc, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	amount := decimal.NewFromInt(10)
	b, err := bs.Create(f.Ctx, consumer, budgets.Input{SubscriptionID: &sub.ID, Amount: &amount, Hard: true})
	if err != nil {
		t.Fatal(err)
	}
	check := func(step string, enforced bool, why string) {
		t.Helper()
		if err := f.Svc.SyncSubscription(f.Ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
		rec, err := f.Store.GetSubscription(f.Ctx, sub.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		if (rec.Budget != nil) != enforced {
			t.Errorf("%s: record budget %+v; want one %v", step, rec.Budget, enforced)
		}
		got, err := bs.Get(f.Ctx, consumer, b.ID)
		if err != nil || got.Enforced == nil || *got.Enforced != enforced || got.NotEnforcedReason != why {
			t.Errorf("%s: Get = %+v, %v; want enforced %v, reason %q", step, got, err, enforced, why)
		}
	}
	check("in USD", true, "")
	f.Clock.Advance(time.Hour)
	if _, err := f.Svc.ChangePlan(f.Ctx, consumer, sub.ID, subscriptions.ChangePlanInput{PlanID: eur.ID}); err != nil {
		t.Fatal(err)
	}
	check("after the change to EUR", false, "the budget is in USD, the plan version in EUR")
	f.Clock.Advance(time.Hour)
	if _, err := f.Svc.ChangePlan(f.Ctx, consumer, sub.ID, subscriptions.ChangePlanInput{PlanID: usd.ID}); err != nil {
		t.Fatal(err)
	}
	check("back in USD", true, "")
}
