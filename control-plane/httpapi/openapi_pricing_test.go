package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/google/uuid"
)

// exercisePricing drives meters, plan versions and quotes through the
// contract: acme's provider (prov) meters an active public API and prices
// a hybrid plan of it; initech's consumer (cons) and globex's provider
// (other) read and quote it.
func exercisePricing(t *testing.T, e *testEnv, c *contract, prov, cons, other, admin string) {
	t.Helper()
	missing := uuid.NewString()
	var api struct{ ID string }
	c.call(http.StatusCreated, "POST", "/v1/apis", prov, weather("metered")).decode(&api)
	forceState(t, e, api.ID, "active")
	meters := "/v1/apis/" + api.ID + "/meters"

	var calls, spare struct{ ID string }
	c.call(http.StatusCreated, "POST", meters, prov, map[string]any{"slug": "calls", "name": "Calls", "aggregation": "count",
		"filter": map[string]any{"methods": []string{"GET"}, "routes": []string{"/forecast/{city}"}, "status_classes": []string{"2xx"}}}).decode(&calls)
	c.call(http.StatusCreated, "POST", meters, admin, map[string]any{"slug": "units", "aggregation": "sum", "field": "units"}, "Idempotency-Key", "meter-units")
	c.call(http.StatusCreated, "POST", meters, prov, map[string]any{"slug": "spare", "aggregation": "unique_count", "field": "key_id"}).decode(&spare)
	for _, p := range []struct {
		reply reply
		typ   string
	}{
		{c.call(http.StatusConflict, "POST", meters, prov, map[string]any{"slug": "calls", "aggregation": "count"}), "slug-taken"},
		{c.call(http.StatusForbidden, "POST", meters, cons, map[string]any{"slug": "mine", "aggregation": "count"}), "forbidden"},
		{c.call(http.StatusNotFound, "POST", "/v1/apis/"+missing+"/meters", prov, map[string]any{"slug": "x", "aggregation": "count"}), "not-found"},
		{c.call(http.StatusUnprocessableEntity, "POST", meters, prov, map[string]any{"slug": "bytes", "aggregation": "sum"}), "validation"},
		{c.refused(http.StatusUnprocessableEntity, "POST", meters, prov, map[string]any{"slug": "Bad Slug", "aggregation": "count"}), "validation"},
		{c.refused(http.StatusBadRequest, "POST", meters, prov, map[string]any{"slug": "x", "aggregation": "count", "description": "no"}), "malformed-json"},
	} {
		if got := p.reply.problem(); got != p.typ {
			t.Errorf("%s = %s; want %s", p.reply.what, got, p.typ)
		}
	}
	c.call(http.StatusOK, "GET", meters, other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/apis/"+missing+"/meters", prov, nil)
	c.call(http.StatusOK, "GET", "/v1/meters/"+calls.ID, cons, nil)
	c.call(http.StatusNotFound, "GET", "/v1/meters/"+missing, prov, nil)
	c.call(http.StatusOK, "PATCH", "/v1/meters/"+calls.ID, prov, map[string]any{"name": "Forecast calls", "filter": map[string]any{"methods": []string{"GET", "HEAD"}}})
	c.call(http.StatusForbidden, "PATCH", "/v1/meters/"+calls.ID, other, map[string]any{"name": "Mine"})
	c.call(http.StatusNotFound, "PATCH", "/v1/meters/"+missing, prov, map[string]any{"name": "Mine"})
	c.call(http.StatusUnprocessableEntity, "PATCH", "/v1/meters/"+calls.ID, prov, map[string]any{"aggregation": "max"})

	// A hybrid plan charging both meters.
	var plan struct {
		ID      string
		Current struct{ ID string } `json:"current_version"`
	}
	c.call(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/plans", prov, map[string]any{"name": "Metered", "slug": "metered", "terms": map[string]any{
		"type": "hybrid", "currency": "EUR", "base_fee": "20", "charges": []any{
			map[string]any{"meter": "calls", "model": "graduated", "included_units": "100", "tiers": []any{
				map[string]any{"up_to": "1000", "unit_price": "0.01", "flat_amount": "1"}, map[string]any{"up_to": nil, "unit_price": "0.005"}}, "quota": "100000", "quota_hard": true},
			map[string]any{"meter": "units", "model": "package", "package_size": 50, "unit_price": "2.5"},
		}}}).decode(&plan)
	c.call(http.StatusOK, "GET", "/v1/plans/"+plan.ID+"/versions", other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/plans/"+missing+"/versions", prov, nil)
	c.call(http.StatusOK, "GET", "/v1/plan-versions/"+plan.Current.ID, cons, nil)
	c.call(http.StatusNotFound, "GET", "/v1/plan-versions/"+missing, cons, nil)
	quote := "/v1/plans/" + plan.ID + "/quote"
	var q struct{ Total string }
	c.call(http.StatusOK, "POST", quote, cons, map[string]any{"usage": map[string]string{"calls": "2100", "units": "51"}, "promotion_codes": []string{}, "version": 1}).decode(&q)
	// Billable calls 2100 − 100 = 2000: 1000 × 0.01 + 1 = 11, 1000 × 0.005 = 5;
	// units: ceil(51 / 50) = 2 packages × 2.5 = 5; with the base fee of 20: 41.00.
	if q.Total != "41.00" {
		t.Errorf("quotePlan total = %s; want 41.00", q.Total)
	}
	c.call(http.StatusOK, "POST", quote, other, map[string]any{}, "Idempotency-Key", "quote-empty")
	c.call(http.StatusUnprocessableEntity, "POST", quote, cons, map[string]any{"usage": map[string]string{"bytes": "1"}})
	c.call(http.StatusUnprocessableEntity, "POST", quote, cons, map[string]any{"version": 7})
	c.refused(http.StatusUnprocessableEntity, "POST", quote, cons, map[string]any{"usage": map[string]string{"calls": "-1"}})
	c.refused(http.StatusBadRequest, "POST", quote, cons, map[string]any{"usage": map[string]any{"calls": 1}})
	c.call(http.StatusNotFound, "POST", "/v1/plans/"+missing+"/quote", cons, map[string]any{})

	// Deleting: a charged meter stays.
	if got := c.call(http.StatusConflict, "DELETE", "/v1/meters/"+calls.ID, prov, nil).problem(); got != "meter-in-use" {
		t.Errorf("deleteMeter of a charged meter = %s; want meter-in-use", got)
	}
	c.call(http.StatusForbidden, "DELETE", "/v1/meters/"+spare.ID, cons, nil)
	c.call(http.StatusNoContent, "DELETE", "/v1/meters/"+spare.ID, prov, nil)
	c.call(http.StatusNotFound, "DELETE", "/v1/meters/"+spare.ID, prov, nil)

	// A plan a file manages is read-only here.
	if _, err := e.Pool.Exec(t.Context(), `UPDATE plans SET source_file = 'metered.yaml' WHERE id = $1`, plan.ID); err != nil {
		t.Fatal(err)
	}
	for _, r := range []reply{
		c.call(http.StatusConflict, "PATCH", "/v1/plans/"+plan.ID, prov, map[string]any{"name": "Renamed"}),
		c.call(http.StatusConflict, "POST", "/v1/plans/"+plan.ID+"/versions", prov, map[string]any{"terms": map[string]any{"currency": "EUR"}}),
		c.call(http.StatusConflict, "PATCH", "/v1/meters/"+calls.ID, prov, map[string]any{"name": "Renamed"}),
	} {
		if got := r.problem(); got != "file-managed" {
			t.Errorf("%s = %s; want file-managed", r.what, got)
		}
	}
}
