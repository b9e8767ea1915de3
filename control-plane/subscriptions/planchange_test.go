package subscriptions_test

import (
	"errors"
	"testing"

	"github.com/veil-platform/veil/control-plane/subscriptions"
)

// TestChangePlanLimitPerPeriod: a subscription changes plans at most
// MaxPlanChangesPerPeriod times in a billing period; the next change is
// refused with ErrPlanChangeLimit and leaves it on its plan, unrecorded.
func TestChangePlanLimitPerPeriod(t *testing.T) {
	f := setup(t)
	other, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Other", Slug: "other", Terms: subscriptions.Terms{Currency: "USD"},
	})
	if err != nil {
		t.Fatal(err)
	}
	plans := []subscriptions.Plan{other, f.Plan}
	for i := range subscriptions.MaxPlanChangesPerPeriod {
		if _, err := f.Svc.ChangePlan(f.Ctx, f.Consumer, f.Sub.ID, subscriptions.ChangePlanInput{PlanID: plans[i%2].ID}); err != nil {
			t.Fatalf("ChangePlan %d = %v", i+1, err)
		}
	}
	next := plans[subscriptions.MaxPlanChangesPerPeriod%2]
	sub, err := f.Svc.ChangePlan(f.Ctx, f.Consumer, f.Sub.ID, subscriptions.ChangePlanInput{PlanID: next.ID})
	if !errors.Is(err, subscriptions.ErrPlanChangeLimit) {
		t.Fatalf("ChangePlan %d = %+v, %v; want ErrPlanChangeLimit", subscriptions.MaxPlanChangesPerPeriod+1, sub, err)
	}
	got, err := f.Svc.GetSubscription(f.Ctx, f.Consumer, f.Sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.PlanID == next.ID {
		t.Errorf("after the refused change the subscription is on %s; want it kept on its plan", got.PlanID)
	}
	var changes int
	if err := f.Pool.QueryRow(f.Ctx, `SELECT count(*) FROM subscription_history WHERE subscription_id = $1 AND reason = 'plan changed'`,
		f.Sub.ID).Scan(&changes); err != nil || changes != subscriptions.MaxPlanChangesPerPeriod {
		t.Fatalf("plan changes recorded = %d, %v; want %d", changes, err, subscriptions.MaxPlanChangesPerPeriod)
	}
}
