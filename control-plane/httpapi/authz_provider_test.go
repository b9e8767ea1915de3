package httpapi_test

import (
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/catalog"
)

// authzSubscribedAPI makes an active public API of the owner's
// organization and, on the foreign side, subscribes the caller's
// organization to it: a subscriber of an API must not see its provider's
// analytics (other consumers' organizations and usage).
func authzSubscribedAPI(t *testing.T, c *authzCase) {
	t.Helper()
	authzAPI(catalog.StateActive, catalog.VisibilityPublic)(t, c)
	c.apiID = c.id
	if c.own || c.caller.orgID == "" {
		return
	}
	scan := func(sql string, args ...any) string {
		t.Helper()
		var id string
		if err := c.e.Pool.QueryRow(t.Context(), sql, args...).Scan(&id); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return id
	}
	plan := scan(`INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Free', 'free', 'active') RETURNING id::text`, c.apiID)
	version := scan(`INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, created_by)
		VALUES ($1, 1, 'subscription', 'USD', 0, 'owner') RETURNING id::text`, plan)
	start := time.Now().UTC().Truncate(time.Hour)
	c.subID = scan(`INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'caller', $2, $3, $4, $5) RETURNING id::text`, c.caller.orgID, c.apiID, version, start, start.AddDate(0, 1, 0))
}

// authzProviderAnalyticsRows: an API's analytics, and its organization's,
// are that organization's members' and the admins'; a foreign caller (on
// the API route a subscriber of the API) finds nothing. This control plane
// runs without ClickHouse, so those who may see get 503. The overview is
// the admins' alone and answers 200 even so: each part degrades.
func authzProviderAnalyticsRows() []authzRow {
	see := authzWant{{401, 401}, {503, 404}, {503, 404}, {503, 503}}
	return []authzRow{
		{route: "GET /v1/apis/{id}/analytics", fixture: authzSubscribedAPI, want: see},
		{
			route: "GET /v1/providers/{id}/analytics",
			fixture: func(t *testing.T, c *authzCase) {
				authzSubscribedAPI(t, c)
				c.id = c.owner.orgID
			},
			want: see,
		},
		{route: "GET /v1/admin/overview", want: authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}}},
	}
}
