package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/veil-platform/veil/control-plane/catalog"
)

// authzPricingRows are the rows of meters, plan versions and quotes.
//
// Meters follow their API: whoever sees the API reads them, a provider of
// its organization (or an admin) changes them, others who can see the API
// are forbidden. The fixtures are on a private draft API, so a foreign
// caller sees nothing. Plan versions and quotes follow their plan: a draft
// plan is its organization's and the admins'.
func authzPricingRows() []authzRow {
	draftPlan := authzPlan(catalog.StateActive, catalog.VisibilityPublic, "draft")
	read := authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}}
	// A fixture's meter is named Calls until a change renames or deletes it.
	meterLeft := func(route string) func(*testing.T, *authzCase, int, []byte) {
		return func(t *testing.T, c *authzCase, status int, _ []byte) {
			changed := c.count(t, `SELECT count(*) FROM meters WHERE id = $1 AND name = 'Calls'`, c.id) == 0
			if changed != authzOK(status) {
				t.Errorf("%s = %d; meter changed: %t", route, status, changed)
			}
		}
	}
	return []authzRow{
		{
			route: "GET /v1/apis/{id}/meters",
			fixture: func(t *testing.T, c *authzCase) {
				authzMeter(t, c)
				c.id = c.apiID
			},
			want: read,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && !authzListed(t, b, "slug", "calls") {
					t.Errorf("GET /v1/apis/{id}/meters = %s; want the fixture's meter", b)
				}
			},
		},
		{
			route:   "POST /v1/apis/{id}/meters",
			fixture: authzAPI(catalog.StateDraft, catalog.VisibilityPrivate),
			body:    func(*authzCase) any { return map[string]any{"slug": "calls", "aggregation": "count"} },
			want:    authzWant{{401, 401}, {403, 404}, {201, 404}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				got := c.count(t, `SELECT count(*) FROM meters WHERE api_id = $1`, c.id)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; got != want {
					t.Errorf("POST /v1/apis/{id}/meters = %d; meters = %d; want %d", status, got, want)
				}
			},
		},
		{
			route:   "GET /v1/meters/{id}",
			fixture: authzMeter,
			want:    read,
			check:   authzSameID,
		},
		{
			route:   "PATCH /v1/meters/{id}",
			fixture: authzMeter,
			body:    func(*authzCase) any { return map[string]any{"name": "Renamed"} },
			want:    authzWant{{401, 401}, {403, 404}, {200, 404}, {200, 200}},
			check:   meterLeft("PATCH /v1/meters/{id}"),
		},
		{
			route:   "DELETE /v1/meters/{id}",
			fixture: authzMeter,
			want:    authzWant{{401, 401}, {403, 404}, {204, 404}, {204, 204}},
			check:   meterLeft("DELETE /v1/meters/{id}"),
		},
		{
			route:   "GET /v1/plans/{id}/versions",
			fixture: draftPlan,
			want:    read,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && !authzListed(t, b, "plan_id", c.planID) {
					t.Errorf("GET /v1/plans/{id}/versions = %s; want the plan's version", b)
				}
			},
		},
		{
			route: "GET /v1/plan-versions/{id}",
			fixture: func(t *testing.T, c *authzCase) {
				draftPlan(t, c)
				if err := c.e.Pool.QueryRow(t.Context(), `SELECT id::text FROM plan_versions WHERE plan_id = $1`, c.planID).Scan(&c.id); err != nil {
					t.Fatal(err)
				}
			},
			want:  read,
			check: authzSameID,
		},
		{
			// A quote stores nothing, so nothing is audited.
			route:     "POST /v1/plans/{id}/quote",
			fixture:   draftPlan,
			body:      func(*authzCase) any { return map[string]any{"usage": map[string]string{}} },
			want:      read,
			unaudited: true,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if m := authzJSON(t, b); authzOK(status) && (m["total"] != "10.00" || m["plan_id"] != c.planID) {
					t.Errorf("POST /v1/plans/{id}/quote = %s; want the base fee of 10.00", b)
				}
			},
		},
	}
}

// authzMeter makes a private draft API of the owner's organization with a
// meter calls (name Calls); c.id is the meter, c.apiID the API.
func authzMeter(t *testing.T, c *authzCase) {
	t.Helper()
	authzAPI(catalog.StateDraft, catalog.VisibilityPrivate)(t, c)
	c.apiID = c.id
	var m struct{ ID string }
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/apis/"+c.apiID+"/meters", c.owner.token,
		map[string]any{"slug": "calls", "name": "Calls", "aggregation": "count"}, &m)
	c.id = m.ID
}
