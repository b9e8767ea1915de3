package httpapi_test

import (
	"net/http"
	"testing"
)

// authzBudget makes the owner's organization subscribe (authzSubscription)
// and budget that subscription; c.id is the budget.
func authzBudget(t *testing.T, c *authzCase) {
	t.Helper()
	authzSubscription(t, c)
	var b struct{ ID string }
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/budgets", c.owner.token, map[string]any{"subscription_id": c.subID, "amount": "100"}, &b)
	c.id = b.ID
}

// authzBudgetCount checks that the budget's organization holds want
// budgets, one when ok and none otherwise, say.
func authzBudgetCount(route string, ok, refused int) func(*testing.T, *authzCase, int, []byte) {
	return func(t *testing.T, c *authzCase, status int, _ []byte) {
		n := c.count(t, `SELECT count(*) FROM budgets WHERE organization_id = $1`, c.owner.orgID)
		if want := map[bool]int{true: ok, false: refused}[authzOK(status)]; n != want {
			t.Errorf("%s = %d; budgets = %d, want %d", route, status, n, want)
		}
	}
}

// authzBudgetRows: an organization's budgets are its members' (any role)
// and the admins'; anyone else, the provider of the budgeted
// subscription's API among them, finds none.
func authzBudgetRows() []authzRow {
	members := authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}}
	return []authzRow{
		{
			route: "GET /v1/budgets", fixture: authzBudget,
			query: func(c *authzCase) string { return "organization_id=" + c.owner.orgID },
			want:  members,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && !authzListed(t, b, "id", c.id) {
					t.Errorf("GET /v1/budgets (%s) does not list the budget", authzSide(c))
				}
			},
		},
		{
			route: "POST /v1/budgets", fixture: authzSubscription,
			body: func(c *authzCase) any {
				return map[string]any{"subscription_id": c.subID, "amount": "50", "hard": true}
			},
			want:  authzWant{{401, 401}, {201, 404}, {201, 404}, {201, 201}},
			check: authzBudgetCount("POST /v1/budgets", 1, 0),
		},
		{route: "GET /v1/budgets/{id}", fixture: authzBudget, want: members, check: authzSameID},
		{
			route: "PUT /v1/budgets/{id}", fixture: authzBudget,
			body: func(*authzCase) any { return map[string]any{"amount": "75.5", "thresholds": []int{100}} },
			want: members,
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM budgets WHERE id = $1 AND amount = 75.5`, c.id)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("PUT /v1/budgets/{id} = %d; changed %d, want %d", status, n, want)
				}
			},
		},
		{
			route: "DELETE /v1/budgets/{id}", fixture: authzBudget,
			want:  authzWant{{401, 401}, {204, 404}, {204, 404}, {204, 204}},
			check: authzBudgetCount("DELETE /v1/budgets/{id}", 0, 1),
		},
	}
}
