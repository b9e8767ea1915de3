package httpapi_test

import "testing"

// authzAnalyticsRows: a subscription's and a key's analytics and the
// subscription's export are seen by whoever sees the subscription (its
// organization's members, its API's organization's, admins); an API's
// export by its own organization's members and admins only, never by a
// subscriber. The matrix's control plane has no ClickHouse, so those who
// may call get 503 (usage-unavailable), everyone else 404;
// TestAnalyticsRefusals and TestExportRefusals check the API's provider
// and a subscriber with ClickHouse.
func authzAnalyticsRows() []authzRow {
	see := authzWant{{401, 401}, {503, 404}, {503, 404}, {503, 503}}
	window := func(*authzCase) string { return "from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z" }
	return []authzRow{
		{route: "GET /v1/subscriptions/{id}/analytics", fixture: authzSubscription, want: see},
		{route: "GET /v1/keys/{id}/analytics", fixture: authzKey("pending"), want: see},
		{route: "GET /v1/subscriptions/{id}/usage/export", fixture: authzSubscription, query: window, want: see},
		{
			// The owner's organization subscribes to the API: a
			// subscriber, not its provider.
			route: "GET /v1/apis/{id}/usage/export",
			fixture: func(t *testing.T, c *authzCase) {
				authzSubscription(t, c)
				c.id = c.apiID
			},
			query: window,
			want:  authzWant{{401, 401}, {404, 404}, {404, 404}, {503, 503}},
		},
	}
}
