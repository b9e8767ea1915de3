package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/google/uuid"
)

// exerciseBudgets drives budgets through the contract: acme's consumer
// (cons) subscribes to a plan of globex (other) and budgets it and all of
// acme's USD spending; globex, the subscription's provider, finds none of
// them; an admin lists acme's.
func exerciseBudgets(t *testing.T, e *testEnv, c *contract, prov, cons, other, admin string) {
	t.Helper()
	missing := uuid.NewString()
	var api, plan, sub struct{ ID string }
	c.call(http.StatusCreated, "POST", "/v1/apis", other, map[string]any{
		"name": "Budgeted", "slug": "budgeted", "upstream_url": "http://127.0.0.1:9/v1", "visibility": "public",
	}).decode(&api)
	forceState(t, e, api.ID, "active")
	c.call(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/plans", other, map[string]any{
		"name": "Basic", "slug": "basic", "status": "active", "terms": map[string]any{"currency": "USD", "base_fee": "10"},
	}).decode(&plan)
	c.call(http.StatusCreated, "POST", "/v1/subscriptions", cons, map[string]any{"plan_id": plan.ID}).decode(&sub)

	var b, org struct {
		ID         string
		Currency   string
		Thresholds []int
	}
	r := c.call(http.StatusCreated, "POST", "/v1/budgets", cons, map[string]any{"subscription_id": sub.ID, "amount": "250.50", "hard": true})
	r.decode(&b)
	if r.Header.Get("Location") != "/v1/budgets/"+b.ID || b.Currency != "USD" || len(b.Thresholds) != 3 {
		t.Errorf("createBudget = Location %q, %+v; want the plan's USD and the default thresholds", r.Header.Get("Location"), b)
	}
	c.call(http.StatusCreated, "POST", "/v1/budgets", prov, map[string]any{"currency": "USD", "amount": 1000, "thresholds": []int{90, 150}},
		"Idempotency-Key", "org-budget").decode(&org)
	for _, p := range []struct {
		reply reply
		typ   string
	}{
		{c.call(http.StatusConflict, "POST", "/v1/budgets", cons, map[string]any{"subscription_id": sub.ID, "amount": "5"}), "budget-exists"},
		{c.call(http.StatusNotFound, "POST", "/v1/budgets", other, map[string]any{"subscription_id": sub.ID, "amount": "5"}), "not-found"},
		{c.call(http.StatusUnprocessableEntity, "POST", "/v1/budgets", cons, map[string]any{"currency": "USD", "amount": "5", "hard": true}), "validation"},
		{c.call(http.StatusUnprocessableEntity, "POST", "/v1/budgets", cons, map[string]any{"subscription_id": sub.ID, "currency": "EUR", "amount": "5"}), "currency-mismatch"},
		{c.call(http.StatusUnprocessableEntity, "POST", "/v1/budgets", cons, map[string]any{"subscription_id": sub.ID, "currency": "EUR", "amount": "5", "hard": true}), "currency-mismatch"},
		{c.refused(http.StatusUnprocessableEntity, "POST", "/v1/budgets", cons, map[string]any{"currency": "EUR", "amount": "0", "thresholds": []int{0}}), "validation"},
		{c.refused(http.StatusBadRequest, "POST", "/v1/budgets", cons, map[string]any{"currency": "EUR", "amount": "5", "name": "x"}), "malformed-json"},
	} {
		if p.reply.problem() != p.typ {
			t.Errorf("%s = %s; want %s", p.reply.what, p.reply.problem(), p.typ)
		}
	}
	c.pages("/v1/budgets", "limit=1", cons)
	c.call(http.StatusOK, "GET", "/v1/budgets?organization_id="+e.orgOf(cons), admin, nil)
	c.call(http.StatusNotFound, "GET", "/v1/budgets?organization_id="+e.orgOf(cons), other, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/budgets?organization_id=nope", cons, nil)
	c.call(http.StatusOK, "GET", "/v1/budgets/"+b.ID, cons, nil)
	c.call(http.StatusNotFound, "GET", "/v1/budgets/"+b.ID, other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/budgets/"+missing, cons, nil)
	c.call(http.StatusOK, "PUT", "/v1/budgets/"+b.ID, cons, map[string]any{"amount": "300", "thresholds": []int{100}, "hard": true})
	// A change of the amount alone keeps the thresholds and the block.
	var raised struct {
		Amount     string
		Thresholds []int
		Hard       bool
	}
	c.call(http.StatusOK, "PUT", "/v1/budgets/"+b.ID, cons, map[string]any{"amount": "350"}).decode(&raised)
	if raised.Amount != "350" || !raised.Hard || len(raised.Thresholds) != 1 || raised.Thresholds[0] != 100 {
		t.Errorf("updateBudget with the amount only = %+v; want 350, thresholds [100], still hard", raised)
	}
	c.call(http.StatusOK, "PUT", "/v1/budgets/"+org.ID, admin, map[string]any{"amount": "2000"}, "Idempotency-Key", "org-raise")
	c.call(http.StatusUnprocessableEntity, "PUT", "/v1/budgets/"+org.ID, cons, map[string]any{"amount": "2000", "hard": true})
	if p := c.call(http.StatusUnprocessableEntity, "PUT", "/v1/budgets/"+org.ID, cons, map[string]any{"amount": "2000", "currency": "EUR"}).problem(); p != "currency-mismatch" {
		t.Errorf("updateBudget changing the currency = %s; want currency-mismatch", p)
	}
	c.call(http.StatusOK, "PUT", "/v1/budgets/"+org.ID, cons, map[string]any{"amount": "2000", "currency": "USD"})

	// The subscription's plan moves to EUR: the hard USD budget is not
	// enforced, and no change may keep it hard.
	var enforcedAnswer struct {
		Enforced          *bool  `json:"enforced"`
		NotEnforcedReason string `json:"not_enforced_reason"`
	}
	c.call(http.StatusOK, "GET", "/v1/budgets/"+b.ID, cons, nil).decode(&enforcedAnswer)
	if enforcedAnswer.Enforced == nil || !*enforcedAnswer.Enforced || enforcedAnswer.NotEnforcedReason != "" {
		t.Errorf("getBudget of a hard budget = %+v; want enforced true, no reason", enforcedAnswer)
	}
	if _, err := e.Pool.Exec(t.Context(), `WITH v AS (
			INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
			SELECT plan_id, version + 1, type, 'EUR', created_by FROM plan_versions
			WHERE id = (SELECT plan_version_id FROM subscriptions WHERE id = $1) RETURNING id)
		UPDATE subscriptions SET plan_version_id = (SELECT id FROM v) WHERE id = $1`, sub.ID); err != nil {
		t.Fatal(err)
	}
	c.call(http.StatusOK, "GET", "/v1/budgets/"+b.ID, cons, nil).decode(&enforcedAnswer)
	if enforcedAnswer.Enforced == nil || *enforcedAnswer.Enforced || enforcedAnswer.NotEnforcedReason != "the budget is in USD, the plan version in EUR" {
		t.Errorf("getBudget after the plan moved to EUR = %+v; want enforced false with the reason", enforcedAnswer)
	}
	for _, body := range []map[string]any{{"amount": "400"}, {"amount": "400", "hard": true}} {
		if p := c.call(http.StatusUnprocessableEntity, "PUT", "/v1/budgets/"+b.ID, cons, body).problem(); p != "currency-mismatch" {
			t.Errorf("updateBudget %v keeping it hard after the plan moved to EUR = %s; want currency-mismatch", body, p)
		}
	}
	c.call(http.StatusOK, "PUT", "/v1/budgets/"+b.ID, cons, map[string]any{"amount": "400", "hard": false})
	if p := c.call(http.StatusUnprocessableEntity, "PUT", "/v1/budgets/"+b.ID, cons, map[string]any{"amount": "400", "hard": true}).problem(); p != "currency-mismatch" {
		t.Errorf("updateBudget making it hard after the plan moved to EUR = %s; want currency-mismatch", p)
	}
	c.call(http.StatusNotFound, "PUT", "/v1/budgets/"+b.ID, other, map[string]any{"amount": "1"})
	c.call(http.StatusNotFound, "DELETE", "/v1/budgets/"+b.ID, other, nil)
	c.call(http.StatusNoContent, "DELETE", "/v1/budgets/"+b.ID, cons, nil)
	c.call(http.StatusNotFound, "DELETE", "/v1/budgets/"+b.ID, cons, nil)
}
