package caddyveil

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
)

// TestGatewayNamesTheBudgetBlock: a subscription blocked because its hard
// budget is used up is refused 429 budget-exceeded (a hard quota's block
// stays quota-exhausted), until the budget is raised: the record write
// lifts the block and calls pass again.
func TestGatewayNamesTheBudgetBlock(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := t.Context()
	now := time.Now()
	budget := func(amount string) *enforcement.Budget {
		// The base fee alone is 1.00: a budget of 1.00 is used up at once.
		return &enforcement.Budget{Amount: decimal.RequireFromString(amount), Currency: "USD", BaseFee: decimal.NewFromInt(1)}
	}
	rec := enforcement.SubscriptionRecord{
		ID: uuid.NewString(), APIID: testAPI, PlanID: "plan_test", Status: enforcement.SubscriptionActive,
		PeriodStart: now.Add(-24 * time.Hour), PeriodEnd: now.Add(time.Hour), QuotaRequests: -1,
		Budget: budget("1.00"), Version: 1,
	}
	if _, err := f.store.PutSubscription(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if st, err := f.store.EnforceBudget(ctx, rec.ID, metering.BudgetCost); err != nil || !st.Blocked {
		t.Fatalf("EnforceBudget = %+v, %v; want blocked", st, err)
	}
	key, _ := newKey(t, f.store, enforcement.KeyRecord{SubscriptionID: rec.ID})

	res := f.do(t, "GET", "/weather/forecast/paris", key, viaBearer)
	f.checkRefused(t, res, http.StatusTooManyRequests, "budget-exceeded")
	if ra := res.header.Get("Retry-After"); ra == "" {
		t.Error("Retry-After missing: the block lasts until the period's end")
	}

	// A hard quota's block of a subscription with a budget it has not
	// used up is the quota's.
	quotaSub := rec
	quotaSub.ID, quotaSub.Budget = uuid.NewString(), budget("50")
	if _, err := f.store.PutSubscription(ctx, quotaSub); err != nil {
		t.Fatal(err)
	}
	if err := f.store.PutBlock(ctx, quotaSub.ID, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	quotaKey, _ := newKey(t, f.store, enforcement.KeyRecord{SubscriptionID: quotaSub.ID})
	f.checkRefused(t, f.do(t, "GET", "/weather/forecast/paris", quotaKey, viaBearer), http.StatusTooManyRequests, "quota-exhausted")

	// Raised: the record's write lifts the block, and the gateway's cached
	// copy goes with it.
	rec.Budget, rec.Version = budget("2.00"), 2
	if _, err := f.store.PutSubscription(ctx, rec); err != nil {
		t.Fatal(err)
	}
	testenv.Deadline(t, 5*time.Second, func() error {
		if res := f.do(t, "GET", "/weather/forecast/paris", key, viaBearer); res.status != http.StatusOK {
			return fmt.Errorf("status %d after the raise; want 200", res.status)
		}
		return nil
	})
}
