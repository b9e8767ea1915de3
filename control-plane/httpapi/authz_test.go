package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/ingesttokens"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/problem"
)

// The authorization matrix calls every route of the REST API as every role,
// on a target that belongs to the caller's own organization and on one that
// belongs to a foreign organization, and checks the status and, where it is
// cheap, that the answer tells the truth: a refusal changed nothing, a
// success did what it says.
//
// Every case gets organizations and users of its own, so that lists and
// the audit log hold only what the case made and cases cannot disturb one
// another.

// Roles index the rows of authzWant, in this order.
const (
	authzAnonymous = iota
	authzConsumer
	authzProvider
	authzAdmin
)

var (
	authzRoleNames = [...]string{"anonymous", "consumer", "provider", "admin"}
	authzRoles     = [...]identity.Role{"", identity.RoleConsumer, identity.RoleProvider, identity.RoleAdmin}
)

// authzWant is the expected status per role (anonymous, consumer,
// provider, admin), each as {own organization, foreign organization}.
type authzWant [4][2]int

// authzRow is the row of one route.
type authzRow struct {
	// route is "METHOD pattern", as httpapi.Routes lists it.
	route string
	// fixture makes the target in the owner's organization; it sets the
	// case's id (and delivery), which fill the route's {id} ({delivery}).
	fixture func(t *testing.T, c *authzCase)
	// query and body, when set, give the query string (without "?") and
	// the JSON body.
	query func(c *authzCase) string
	body  func(c *authzCase) any
	want  authzWant
	// check verifies what the answer did: a refusal changed nothing, a
	// success made the change it reports.
	check func(t *testing.T, c *authzCase, status int, body []byte)
	// unaudited marks a change that leaves no audit entry.
	unaudited bool
}

// authzMember is one user of one organization.
type authzMember struct {
	token, subject, org, orgID string
}

// authzCase is one call of the matrix.
type authzCase struct {
	e      *testEnv
	n      int
	role   int
	own    bool
	caller authzMember // the one calling (no token when anonymous)
	owner  authzMember // a provider of the organization the target belongs to
	slug   string      // slug of the fixture's API
	// The targets the fixture made: id fills {id} in the route, delivery
	// {delivery}; apiID is the API behind an approval request, a plan or a
	// subscription; secret is an endpoint's signing secret; planID, subID
	// and keyID are the plan, subscription and key a fixture made.
	id, delivery, apiID, secret string
	planID, subID, keyID        string
	// otherPlanID is a second active plan of the subscription's API.
	otherPlanID string
	// seller is a provider of the organization whose API the owner's
	// organization subscribes to.
	seller authzMember
}

func (c *authzCase) admin() bool { return c.role == authzAdmin }

func TestAuthorizationMatrix(t *testing.T) {
	e := newAuthzEnv(t)
	routes, err := httpapi.Routes(e.Handler)
	if err != nil {
		t.Fatal(err)
	}
	rows := authzRows()
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.route] {
			t.Errorf("the matrix has two rows for %s", r.route)
		}
		seen[r.route] = true
		if !slices.Contains(routes, r.route) {
			t.Errorf("the matrix has a row for %s, which httpapi.Routes does not list", r.route)
		}
	}
	for _, r := range routes {
		if !seen[r] {
			t.Errorf("route %s has no row in the authorization matrix; add one", r)
		}
	}
	n := 0
	for _, row := range rows {
		for role := range authzRoleNames {
			for side, own := range []bool{true, false} {
				n++
				c := &authzCase{e: e, n: n, role: role, own: own}
				name := row.route + "/" + authzRoleNames[role] + "/" + map[bool]string{true: "own", false: "foreign"}[own]
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					c.run(t, row, row.want[role][side])
				})
			}
		}
	}
}

// run makes the case's members and fixture, calls the route and checks the
// answer.
func (c *authzCase) run(t *testing.T, row authzRow, want int) {
	c.owner = authzNewMember(t, c.e, fmt.Sprintf("org-%d", c.n), fmt.Sprintf("owner-%d", c.n), identity.RoleProvider)
	org := c.owner.org
	if !c.own {
		org = fmt.Sprintf("org-%d-caller", c.n)
	}
	if c.role == authzAnonymous {
		c.caller = authzMember{org: org}
	} else {
		c.caller = authzNewMember(t, c.e, org, fmt.Sprintf("caller-%d", c.n), authzRoles[c.role])
	}
	c.slug = fmt.Sprintf("api-%d", c.n)
	if row.fixture != nil {
		row.fixture(t, c)
	}
	method, pattern, _ := strings.Cut(row.route, " ")
	// {rule} (a tax rule under its organization) and {promotion_id} (a
	// promotion redeemed on a subscription) are a second id, as
	// {delivery} is.
	path := strings.NewReplacer("{id}", c.id, "{delivery}", c.delivery, "{rule}", c.delivery, "{promotion_id}", c.delivery).Replace(pattern)
	if row.query != nil {
		path += "?" + row.query(c)
	}
	var body any
	if row.body != nil {
		body = row.body(c)
	}
	status, b, h := authzDo(t, c.e, method, path, c.caller.token, body)
	if status != want {
		t.Errorf("%s %s as %s = %d %s; want %d", method, path, authzRoleNames[c.role], status, b, want)
	}
	if status >= 400 {
		if ct := h.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s %s = %d with Content-Type %q; want application/problem+json", method, path, status, ct)
		} else if p := authzJSON(t, b); p["status"] != float64(status) {
			t.Errorf("%s %s = %d with problem status %v; want the same", method, path, status, p["status"])
		}
		if c.role != authzAnonymous {
			if got := c.count(t, `SELECT count(*) FROM audit_log WHERE actor = $1`, c.caller.subject); got != 0 {
				t.Errorf("%s %s refused with %d, yet the audit log holds %d entries by the caller; want 0", method, path, status, got)
			}
		}
	}
	if method != http.MethodGet && status != http.StatusMultiStatus && authzOK(status) && c.role != authzAnonymous && !row.unaudited {
		if got := c.count(t, `SELECT count(*) FROM audit_log WHERE actor = $1`, c.caller.subject); got == 0 {
			t.Errorf("%s %s = %d, yet the audit log holds no entry by the caller; want the change audited", method, path, status)
		}
	}
	if row.check != nil {
		row.check(t, c, status, b)
	}
}

// authzRows is the matrix. Each row lists, for anonymous, consumer,
// provider and admin callers, {own organization, foreign organization}.
func authzRows() []authzRow {
	draft := authzAPI(catalog.StateDraft, catalog.VisibilityPrivate)
	return append([]authzRow{
		{
			route: "GET /openapi.json",
			want:  authzWant{{200, 200}, {200, 200}, {200, 200}, {200, 200}},
		},
		{
			route: "GET /v1/me",
			want:  authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if !authzOK(status) {
					return
				}
				m := authzJSON(t, b)
				if m["organization"] != c.caller.org || m["organization_id"] != c.caller.orgID || m["role"] != authzRoleNames[c.role] {
					t.Errorf("GET /v1/me = %s; want organization %s (%s), role %s", b, c.caller.org, c.caller.orgID, authzRoleNames[c.role])
				}
			},
		},
		{
			route:   "GET /v1/apis",
			fixture: draft,
			query:   func(c *authzCase) string { return "q=" + c.slug },
			want:    authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if !authzOK(status) {
					return
				}
				if got, want := authzListed(t, b, "id", c.id), c.own || c.admin(); got != want {
					t.Errorf("GET /v1/apis lists the %s private draft API: %t; want %t", authzSide(c), got, want)
				}
			},
		},
		{
			route: "POST /v1/apis",
			body:  func(c *authzCase) any { return authzAPIBody(c.slug, catalog.VisibilityPublic) },
			want:  authzWant{{401, 401}, {403, 403}, {201, 201}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				n := c.count(t, `SELECT count(*) FROM apis WHERE slug = $1`, c.slug)
				if !authzOK(status) {
					if n != 0 {
						t.Errorf("POST /v1/apis refused with %d, yet the API exists", status)
					}
					return
				}
				if got := authzJSON(t, b)["organization_id"]; n != 1 || got != c.caller.orgID {
					t.Errorf("POST /v1/apis made %d APIs of organization %v; want 1 of the caller's %s", n, got, c.caller.orgID)
				}
			},
		},
		{
			// A public API: everyone reads it, only its organization and
			// admins with its upstream and health path.
			route:   "GET /v1/apis/{id}",
			fixture: authzAPI(catalog.StateActive, catalog.VisibilityPublic),
			want:    authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				authzSameID(t, c, status, b)
				if !authzOK(status) {
					return
				}
				m := authzJSON(t, b)
				_, hasUpstream := m["upstream_url"]
				_, hasHealth := m["health_check_path"]
				if want := c.own || c.admin(); hasUpstream != want || hasHealth != want {
					t.Errorf("GET /v1/apis/{id} (%s) = %s; want upstream_url and health_check_path: %t", authzSide(c), b, want)
				}
				if _, ok := m["signing_secret"]; ok {
					t.Errorf("GET /v1/apis/{id} = %s; want no signing_secret", b)
				}
			},
		},
		{
			route:   "POST /v1/apis/{id}/signing-secret/rotate",
			fixture: authzAPI(catalog.StateActive, catalog.VisibilityPublic),
			// Only the owning organization's providers and admins: an
			// admin of another organization would see the new secret.
			want: authzWant{{401, 401}, {403, 403}, {200, 403}, {200, 403}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				var secret string
				if err := c.e.Pool.QueryRow(t.Context(), `SELECT secret FROM api_signing_secrets WHERE api_id = $1`, c.id).Scan(&secret); err != nil {
					t.Fatal(err)
				}
				if !authzOK(status) {
					if strings.Contains(string(b), secret) {
						t.Errorf("refused rotation answered the secret: %s", b)
					}
					return
				}
				// The fixture's secret was never shown, so it needs no overlap.
				if m := authzJSON(t, b); m["signing_secret"] != secret || m["api_id"] != c.id || m["previous_valid_until"] != nil {
					t.Errorf("POST /v1/apis/{id}/signing-secret/rotate = %s; want the stored new secret, no overlap", b)
				}
			},
		},
		{
			route:   "PATCH /v1/apis/{id}",
			fixture: draft,
			body:    func(*authzCase) any { return map[string]any{"name": "Renamed"} },
			want:    authzWant{{401, 401}, {403, 404}, {200, 404}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				renamed := c.count(t, `SELECT count(*) FROM apis WHERE id = $1 AND name = 'Renamed'`, c.id) == 1
				if renamed != authzOK(status) {
					t.Errorf("PATCH /v1/apis/{id} = %d; API renamed: %t", status, renamed)
				}
			},
		},
		{
			route:   "DELETE /v1/apis/{id}",
			fixture: draft,
			want:    authzWant{{401, 401}, {403, 404}, {204, 404}, {204, 204}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				if exists := c.count(t, `SELECT count(*) FROM apis WHERE id = $1`, c.id) == 1; exists == authzOK(status) {
					t.Errorf("DELETE /v1/apis/{id} = %d; API still there: %t", status, exists)
				}
			},
		},
		{
			// A public API's versions name its upstreams: its own
			// organization's and the admins' only.
			route:   "GET /v1/apis/{id}/versions",
			fixture: authzAPI(catalog.StateActive, catalog.VisibilityPublic),
			want:    authzWant{{401, 401}, {200, 403}, {200, 403}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && !authzListed(t, b, "api_id", c.id) {
					t.Errorf("GET /v1/apis/{id}/versions = %s; want the API's first version", b)
				}
			},
		},
		{
			route:   "POST /v1/apis/{id}/versions",
			fixture: draft,
			body: func(*authzCase) any {
				return map[string]any{"version": "2", "upstream_url": "http://127.0.0.1:9/v2"}
			},
			want: authzWant{{401, 401}, {403, 404}, {201, 404}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				got := c.count(t, `SELECT count(*) FROM api_versions WHERE api_id = $1`, c.id)
				if want := map[bool]int{true: 2, false: 1}[authzOK(status)]; got != want {
					t.Errorf("POST /v1/apis/{id}/versions = %d; versions = %d; want %d", status, got, want)
				}
			},
		},
		{
			route:   "GET /v1/apis/{id}/transitions",
			fixture: authzAPI(catalog.StateRejected, catalog.VisibilityPrivate),
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}},
		},
		{
			route:   "POST /v1/apis/{id}/submit",
			fixture: draft,
			want:    authzWant{{401, 401}, {403, 404}, {201, 404}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				c.wantState(t, status, catalog.StatePendingApproval, catalog.StateDraft)
				got := c.count(t, `SELECT count(*) FROM approval_requests WHERE api_id = $1`, c.id)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; got != want {
					t.Errorf("POST /v1/apis/{id}/submit = %d; approval requests = %d; want %d", status, got, want)
				}
			},
		},
		{
			route:   "POST /v1/apis/{id}/deprecate",
			fixture: authzAPI(catalog.StateActive, catalog.VisibilityPublic),
			want:    authzWant{{401, 401}, {403, 403}, {200, 403}, {200, 200}},
			check:   authzStateCheck(catalog.StateDeprecated, catalog.StateActive),
		},
		{
			route:   "POST /v1/apis/{id}/retire",
			fixture: authzAPI(catalog.StateActive, catalog.VisibilityPublic),
			want:    authzWant{{401, 401}, {403, 403}, {200, 403}, {200, 200}},
			check:   authzStateCheck(catalog.StateRetired, catalog.StateActive),
		},
		{
			route:   "POST /v1/apis/{id}/revise",
			fixture: authzAPI(catalog.StateRejected, catalog.VisibilityPublic),
			want:    authzWant{{401, 401}, {403, 404}, {200, 404}, {200, 200}},
			check:   authzStateCheck(catalog.StateDraft, catalog.StateRejected),
		},
		{
			route:   "GET /v1/approvals/{id}",
			fixture: authzApproval,
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}},
			check:   authzSameID,
		},
		{
			// A consumer of the submitting organization reads the request
			// but may not comment: forbidden, since it sees the request.
			route:   "POST /v1/approvals/{id}/comments",
			fixture: authzApproval,
			body:    authzComment,
			want:    authzWant{{401, 401}, {403, 404}, {201, 404}, {201, 201}},
			check:   authzCommentCheck,
		},
		{
			route: "GET /v1/webhooks/event-types",
			want:  authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
		},
		{
			route:   "GET /v1/webhooks",
			fixture: authzEndpoint,
			want:    authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if !authzOK(status) {
					return
				}
				if got := authzListed(t, b, "id", c.id); got != c.own {
					t.Errorf("GET /v1/webhooks lists the %s endpoint: %t; want %t", authzSide(c), got, c.own)
				}
			},
		},
		{
			route: "POST /v1/webhooks",
			body:  func(*authzCase) any { return authzEndpointBody() },
			want:  authzWant{{401, 401}, {201, 201}, {201, 201}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) {
					if got := authzJSON(t, b)["organization_id"]; got != c.caller.orgID {
						t.Errorf("POST /v1/webhooks made an endpoint of organization %v; want the caller's %s", got, c.caller.orgID)
					}
				}
			},
		},
		{
			route:   "GET /v1/webhooks/{id}",
			fixture: authzEndpoint,
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 404}},
			check:   authzSameID,
		},
		{
			route:   "PATCH /v1/webhooks/{id}",
			fixture: authzEndpoint,
			body:    func(*authzCase) any { return map[string]any{"description": "changed"} },
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 404}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				changed := c.count(t, `SELECT count(*) FROM webhook_endpoints WHERE id = $1 AND description = 'changed'`, c.id) == 1
				if changed != authzOK(status) {
					t.Errorf("PATCH /v1/webhooks/{id} = %d; endpoint changed: %t", status, changed)
				}
			},
		},
		{
			route:   "DELETE /v1/webhooks/{id}",
			fixture: authzEndpoint,
			want:    authzWant{{401, 401}, {204, 404}, {204, 404}, {204, 404}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				if exists := c.count(t, `SELECT count(*) FROM webhook_endpoints WHERE id = $1`, c.id) == 1; exists == authzOK(status) {
					t.Errorf("DELETE /v1/webhooks/{id} = %d; endpoint still there: %t", status, exists)
				}
			},
		},
		{
			route:   "POST /v1/webhooks/{id}/rotate-secret",
			fixture: authzEndpoint,
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 404}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				rotated := c.count(t, `SELECT count(*) FROM webhook_endpoints WHERE id = $1 AND secret <> $2`, c.id, c.secret) == 1
				if rotated != authzOK(status) {
					t.Errorf("POST /v1/webhooks/{id}/rotate-secret = %d; secret changed: %t", status, rotated)
				}
			},
		},
		{
			route:   "GET /v1/webhooks/{id}/deliveries",
			fixture: authzDelivery,
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 404}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && !authzListed(t, b, "id", c.delivery) {
					t.Errorf("GET /v1/webhooks/{id}/deliveries = %s; want delivery %s", b, c.delivery)
				}
			},
		},
		{
			route:   "GET /v1/webhooks/{id}/deliveries/{delivery}",
			fixture: authzDelivery,
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 404}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && authzJSON(t, b)["id"] != c.delivery {
					t.Errorf("GET /v1/webhooks/{id}/deliveries/{delivery} = %s; want delivery %s", b, c.delivery)
				}
			},
		},
		{
			route:   "POST /v1/webhooks/{id}/deliveries/{delivery}/redeliver",
			fixture: authzDelivery,
			want:    authzWant{{401, 401}, {202, 404}, {202, 404}, {202, 404}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && authzJSON(t, b)["id"] != c.delivery {
					t.Errorf("POST .../redeliver = %s; want delivery %s", b, c.delivery)
				}
			},
		},
		{
			// Admins may narrow the log to any organization; for everyone
			// else the parameter is ignored and the log is their own.
			route:   "GET /v1/audit",
			fixture: draft,
			query:   func(c *authzCase) string { return "organization_id=" + c.owner.orgID },
			want:    authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if !authzOK(status) {
					return
				}
				org := c.caller.orgID
				if c.admin() {
					org = c.owner.orgID
				}
				var page struct {
					Data []struct {
						OrganizationID string `json:"organization_id"`
						Action         string
					}
				}
				authzDecode(t, b, &page)
				for _, x := range page.Data {
					if x.OrganizationID != org {
						t.Errorf("GET /v1/audit as %s shows %s of organization %s; want only %s", authzRoleNames[c.role], x.Action, x.OrganizationID, org)
					}
				}
				if (c.own || c.admin()) && len(page.Data) == 0 {
					t.Errorf("GET /v1/audit as %s shows nothing; want the %s organization's api.create", authzRoleNames[c.role], authzSide(c))
				}
			},
		},
		{
			route:   "POST /v1/admin/apis/{id}/suspend",
			fixture: authzAPI(catalog.StateActive, catalog.VisibilityPublic),
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check:   authzStateCheck(catalog.StateSuspended, catalog.StateActive),
		},
		{
			route:   "POST /v1/admin/apis/{id}/resume",
			fixture: authzAPI(catalog.StateSuspended, catalog.VisibilityPublic),
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {202, 202}},
			check:   authzStateCheck(catalog.StateApproved, catalog.StateSuspended),
		},
		{
			route:   "POST /v1/admin/apis/{id}/retry",
			fixture: authzAPI(catalog.StateFailed, catalog.VisibilityPublic),
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {202, 202}},
			check:   authzStateCheck(catalog.StateApproved, catalog.StateFailed),
		},
		{
			route:   "GET /v1/admin/approvals",
			fixture: authzApproval,
			query:   func(c *authzCase) string { return "api_id=" + c.apiID },
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && !authzListed(t, b, "id", c.id) {
					t.Errorf("GET /v1/admin/approvals = %s; want request %s", b, c.id)
				}
			},
		},
		{
			route:   "GET /v1/admin/approvals/stats",
			fixture: authzApproval,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
		},
		{
			// 207 either way: each item carries its own status, 403
			// self-approval for the admin's own organization.
			route:   "POST /v1/admin/approvals/bulk",
			fixture: authzApproval,
			body:    func(c *authzCase) any { return map[string]any{"ids": []string{c.id}, "action": "approve"} },
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {207, 207}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				approved := authzOK(status) && !c.own
				if authzOK(status) {
					var out struct {
						Results []struct {
							Status  int
							Problem map[string]any
						}
					}
					authzDecode(t, b, &out)
					want := map[bool]int{true: 403, false: 200}[c.own]
					if len(out.Results) != 1 || out.Results[0].Status != want {
						t.Fatalf("bulk approve = %s; want one result with status %d", b, want)
					}
					if c.own && out.Results[0].Problem["type"] != problem.TypeBase+"self-approval" {
						t.Errorf("bulk approve of the admin's own organization = %s; want problem self-approval", b)
					}
				}
				c.wantApproval(t, approved, catalog.ApprovalApproved, catalog.StateApproved)
			},
		},
		{
			route:   "GET /v1/admin/approvals/{id}",
			fixture: authzApproval,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check:   authzSameID,
		},
		{
			route:   "POST /v1/admin/approvals/{id}/approve",
			fixture: authzApproval,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {403, 200}},
			check:   authzDecisionCheck(catalog.ApprovalApproved, catalog.StateApproved),
		},
		{
			route:   "POST /v1/admin/approvals/{id}/reject",
			fixture: authzApproval,
			body:    authzReason,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {403, 200}},
			check:   authzDecisionCheck(catalog.ApprovalRejected, catalog.StateRejected),
		},
		{
			route:   "POST /v1/admin/approvals/{id}/escalate",
			fixture: authzApproval,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {403, 200}},
			check:   authzDecisionCheck(catalog.ApprovalEscalated, catalog.StatePendingApproval),
		},
		{
			route:   "POST /v1/admin/approvals/{id}/request-changes",
			fixture: authzApproval,
			body:    authzReason,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {403, 200}},
			check:   authzDecisionCheck(catalog.ApprovalChangesRequested, catalog.StateDraft),
		},
		{
			route:   "POST /v1/admin/approvals/{id}/comments",
			fixture: authzApproval,
			body:    authzComment,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {201, 201}},
			check:   authzCommentCheck,
		},
		{
			// Reconciliation heals the gateway from the database; it
			// changes no record that the audit log tracks.
			route:     "POST /v1/admin/reconcile/apis",
			unaudited: true,
			want:      authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: func(t *testing.T, _ *authzCase, status int, b []byte) {
				if _, found := authzJSON(t, b)["checked"]; authzOK(status) && !found {
					t.Errorf("POST /v1/admin/reconcile/apis = %s; want a reconcile report", b)
				}
			},
		},
		// Ingest tokens are platform-wide: admins only, whatever the
		// organization.
		{
			route: "GET /v1/admin/ingest-tokens",
			want:  authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
		},
		{
			route: "POST /v1/admin/ingest-tokens",
			body: func(c *authzCase) any {
				return map[string]any{"name": c.slug, "sources": []string{"/billing/" + c.slug}}
			},
			want: authzWant{{401, 401}, {403, 403}, {403, 403}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM ingest_tokens WHERE name = $1`, c.slug)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("POST /v1/admin/ingest-tokens = %d; %d tokens named %s exist, want %d", status, n, c.slug, want)
				}
			},
		},
		{
			route:   "DELETE /v1/admin/ingest-tokens/{id}",
			fixture: authzIngestToken,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM ingest_tokens WHERE id = $1 AND revoked_at IS NOT NULL`, c.id)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("DELETE /v1/admin/ingest-tokens/%s = %d; revoked %d, want %d", c.id, status, n, want)
				}
			},
		},
	}, append(append(append(authzSubscriptionRows(), authzPricingRows()...), authzBillingRows()...), append(append(append(authzPaymentRows(), authzPayoutRows()...), authzBudgetRows()...), append(authzAnalyticsRows(), authzProviderAnalyticsRows()...)...)...)...)
}

// authzIngestToken issues an ingest token as the platform would.
func authzIngestToken(t *testing.T, c *authzCase) {
	tok, err := ingesttokens.New(c.e.Pool).Create(t.Context(), identity.Actor{Subject: "fixture", Role: identity.RoleAdmin},
		ingesttokens.CreateInput{Name: c.slug, Sources: []string{"/billing/" + c.slug}})
	if err != nil {
		t.Fatal(err)
	}
	c.id = tok.ID.String()
}

// authzSubscriptionRows are the rows of plans, subscriptions and keys.
//
// Plans follow their API: its organization's members see every plan,
// everyone else the active plans of the public catalog; a provider of the
// API's organization (or an admin) changes them, and others who can see
// the API are forbidden. A subscription and its keys are seen by members
// of the subscribing organization, of the API's organization and by
// admins, and changed by members of the subscribing organization (any
// role) and admins. In these rows the owner's organization subscribes to
// a third organization's API, so a foreign caller is a stranger to both;
// TestAuthorizationSubscriptionParties covers the API's organization.
func authzSubscriptionRows() []authzRow {
	activePlan := authzPlan(catalog.StateActive, catalog.VisibilityPublic, "active")
	draftPlan := authzPlan(catalog.StateActive, catalog.VisibilityPublic, "draft")
	own := authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}}
	return []authzRow{
		{
			route: "GET /v1/apis/{id}/plans",
			fixture: func(t *testing.T, c *authzCase) {
				draftPlan(t, c)
				c.id = c.apiID
			},
			want: authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if got, want := authzListed(t, b, "id", c.planID), c.own || c.admin(); authzOK(status) && got != want {
					t.Errorf("GET /v1/apis/{id}/plans lists the %s draft plan: %t; want %t", authzSide(c), got, want)
				}
			},
		},
		{
			route:   "POST /v1/apis/{id}/plans",
			fixture: authzAPI(catalog.StateDraft, catalog.VisibilityPrivate),
			body:    func(*authzCase) any { return authzPlanBody("extra", "active") },
			want:    authzWant{{401, 401}, {403, 404}, {201, 404}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				got := c.count(t, `SELECT count(*) FROM plans WHERE api_id = $1`, c.id)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; got != want {
					t.Errorf("POST /v1/apis/{id}/plans = %d; plans = %d; want %d", status, got, want)
				}
			},
		},
		{
			// A draft plan is its organization's: not found for others.
			route:   "GET /v1/plans/{id}",
			fixture: draftPlan,
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}},
			check:   authzSameID,
		},
		{
			route:   "PATCH /v1/plans/{id}",
			fixture: activePlan,
			body:    func(*authzCase) any { return map[string]any{"name": "Renamed"} },
			want:    authzWant{{401, 401}, {403, 403}, {200, 403}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				renamed := c.count(t, `SELECT count(*) FROM plans WHERE id = $1 AND name = 'Renamed'`, c.id) == 1
				if renamed != authzOK(status) {
					t.Errorf("PATCH /v1/plans/{id} = %d; plan renamed: %t", status, renamed)
				}
			},
		},
		{
			route:   "POST /v1/plans/{id}/versions",
			fixture: activePlan,
			body: func(*authzCase) any {
				return map[string]any{"terms": map[string]any{"currency": "EUR", "base_fee": "5"}}
			},
			want: authzWant{{401, 401}, {403, 403}, {201, 403}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				got := c.count(t, `SELECT count(*) FROM plan_versions WHERE plan_id = $1`, c.id)
				if want := map[bool]int{true: 2, false: 1}[authzOK(status)]; got != want {
					t.Errorf("POST /v1/plans/{id}/versions = %d; versions = %d; want %d", status, got, want)
				}
			},
		},
		{
			route:   "GET /v1/subscriptions",
			fixture: authzSubscription,
			query:   func(c *authzCase) string { return "api_id=" + c.apiID },
			want:    authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if got, want := authzListed(t, b, "id", c.subID), c.own || c.admin(); authzOK(status) && got != want {
					t.Errorf("GET /v1/subscriptions lists the %s subscription: %t; want %t", authzSide(c), got, want)
				}
			},
		},
		{
			// The plan is of a private API of the owner's organization:
			// its members (any role) may subscribe, others do not see it.
			route:   "POST /v1/subscriptions",
			fixture: authzPlan(catalog.StateActive, catalog.VisibilityPrivate, "active"),
			body:    func(c *authzCase) any { return map[string]any{"plan_id": c.id} },
			want:    authzWant{{401, 401}, {201, 404}, {201, 404}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				got := c.count(t, `SELECT count(*) FROM subscriptions WHERE api_id = $1`, c.apiID)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; got != want {
					t.Errorf("POST /v1/subscriptions = %d; subscriptions = %d; want %d", status, got, want)
				}
				if org := authzJSON(t, b)["organization_id"]; authzOK(status) && org != c.caller.orgID {
					t.Errorf("POST /v1/subscriptions subscribed organization %v; want the caller's %s", org, c.caller.orgID)
				}
			},
		},
		{
			route:   "GET /v1/subscriptions/{id}",
			fixture: authzSubscription,
			want:    own,
			check:   authzSameID,
		},
		{
			route:   "POST /v1/subscriptions/{id}/cancel",
			fixture: authzSubscription,
			want:    own,
			check:   authzSubStatusCheck("canceled", "active"),
		},
		{
			route:   "GET /v1/subscriptions/{id}/usage",
			fixture: authzSubscription,
			want:    own,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if got := authzJSON(t, b)["subject"]; authzOK(status) && got != c.subID {
					t.Errorf("GET /v1/subscriptions/{id}/usage = %s; want the usage of %s", b, c.subID)
				}
			},
		},
		{
			route: "POST /v1/subscriptions/{id}/plan",
			fixture: func(t *testing.T, c *authzCase) {
				authzSubscription(t, c)
				var p struct{ ID string }
				authzMust(t, c.e, http.StatusCreated, "POST", "/v1/apis/"+c.apiID+"/plans", c.seller.token, authzPlanBody("pro", "active"), &p)
				c.otherPlanID = p.ID
			},
			body: func(c *authzCase) any { return map[string]any{"plan_id": c.otherPlanID} },
			want: own,
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				moved := c.count(t, `SELECT count(*) FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id
					WHERE s.id = $1 AND v.plan_id = $2`, c.subID, c.otherPlanID) == 1
				if moved != authzOK(status) {
					t.Errorf("POST /v1/subscriptions/{id}/plan = %d; moved to the other plan: %t", status, moved)
				}
			},
		},
		{
			route:   "GET /v1/subscriptions/{id}/quota",
			fixture: authzSubscription,
			want:    own,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if got := authzJSON(t, b)["subscription_id"]; authzOK(status) && got != c.subID {
					t.Errorf("GET /v1/subscriptions/{id}/quota = %s; want the quota of %s", b, c.subID)
				}
			},
		},
		{
			// A promotion is its organization's: its members list it, admins
			// list every organization's.
			route:   "GET /v1/promotions",
			fixture: authzPromotion,
			want:    authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if !authzOK(status) {
					return
				}
				if got, want := authzListed(t, b, "id", c.id), c.own || c.admin(); got != want {
					t.Errorf("GET /v1/promotions lists the %s promotion: %t; want %t", authzSide(c), got, want)
				}
			},
		},
		{
			route: "POST /v1/promotions",
			body: func(c *authzCase) any {
				return map[string]any{"code": fmt.Sprintf("CODE-%d", c.n), "kind": "percent_off", "value": "10"}
			},
			want: authzWant{{401, 401}, {403, 403}, {201, 201}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM promotions p JOIN organizations o ON o.id = p.organization_id
					WHERE p.code = $1 AND o.id::text = $2`, fmt.Sprintf("CODE-%d", c.n), c.caller.orgID)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("POST /v1/promotions = %d; promotions of the caller's organization = %d, want %d", status, n, want)
				}
			},
		},
		{
			route:   "GET /v1/promotions/{id}",
			fixture: authzPromotion,
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}},
			check:   authzSameID,
		},
		{
			// Its organization's providers change it; its consumers see it
			// but may not.
			route:   "PATCH /v1/promotions/{id}",
			fixture: authzPromotion,
			body:    func(*authzCase) any { return map[string]any{"description": "changed"} },
			want:    authzWant{{401, 401}, {403, 404}, {200, 404}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				changed := c.count(t, `SELECT count(*) FROM promotions WHERE id = $1 AND description = 'changed'`, c.id) == 1
				if changed != authzOK(status) {
					t.Errorf("PATCH /v1/promotions/{id} = %d; changed: %t", status, changed)
				}
			},
		},
		{
			// The subscriber's organization (any role) and admins see the
			// redemptions; others do not find the subscription.
			route:   "GET /v1/subscriptions/{id}/promotions",
			fixture: authzRedeemed,
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && !authzListed(t, b, "code", "SPRING") {
					t.Errorf("GET /v1/subscriptions/{id}/promotions = %s; want the SPRING redemption", b)
				}
			},
		},
		{
			// The subscriber's organization redeems, whatever the role.
			route:   "POST /v1/subscriptions/{id}/promotions",
			fixture: authzRedeemable,
			body:    func(*authzCase) any { return map[string]any{"code": "spring"} },
			want:    authzWant{{401, 401}, {201, 404}, {201, 404}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM promotion_redemptions WHERE subscription_id = $1`, c.subID)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("POST /v1/subscriptions/{id}/promotions = %d; redemptions = %d, want %d", status, n, want)
				}
			},
		},
		{
			// The subscriber's organization ends a redemption, whatever the
			// role; the API's provider may not.
			route: "DELETE /v1/subscriptions/{id}/promotions/{promotion_id}",
			fixture: func(t *testing.T, c *authzCase) {
				authzRedeemed(t, c)
				if err := c.e.Pool.QueryRow(t.Context(), `SELECT promotion_id::text FROM promotion_redemptions WHERE subscription_id = $1`, c.subID).Scan(&c.delivery); err != nil {
					t.Fatal(err)
				}
			},
			want: authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				ended := c.count(t, `SELECT count(*) FROM promotion_redemptions WHERE subscription_id = $1 AND ended_at IS NOT NULL`, c.subID) == 1
				if ended != authzOK(status) {
					t.Errorf("DELETE /v1/subscriptions/{id}/promotions/{promotion_id} = %d; ended: %t", status, ended)
				}
			},
		},
		{
			// Quota adjustments are the provider's (and admins'): the
			// subscriber sees its subscription but may not credit itself.
			route:   "POST /v1/subscriptions/{id}/quota/credits",
			fixture: authzSubscription,
			body:    func(*authzCase) any { return map[string]any{"requests": 100, "reason": "goodwill"} },
			want:    authzWant{{401, 401}, {403, 404}, {403, 404}, {201, 201}},
			check:   authzAdjusted("credit"),
		},
		{
			route:   "POST /v1/subscriptions/{id}/quota/reset",
			fixture: authzSubscription,
			body:    func(*authzCase) any { return map[string]any{"reason": "support ticket"} },
			want:    authzWant{{401, 401}, {403, 404}, {403, 404}, {201, 201}},
			check:   authzAdjusted("reset"),
		},
		{
			route: "GET /v1/subscriptions/{id}/keys",
			fixture: func(t *testing.T, c *authzCase) {
				authzKey("pending")(t, c)
				c.id = c.subID
			},
			want: own,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && !authzListed(t, b, "id", c.keyID) {
					t.Errorf("GET /v1/subscriptions/{id}/keys = %s; want key %s", b, c.keyID)
				}
			},
		},
		{
			// A new key's plaintext is shown to its own organization only:
			// an admin of another organization is refused.
			route:   "POST /v1/subscriptions/{id}/keys",
			fixture: authzSubscription,
			body:    func(*authzCase) any { return map[string]any{"name": "matrix"} },
			want:    authzWant{{401, 401}, {201, 404}, {201, 404}, {201, 403}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				got := c.count(t, `SELECT count(*) FROM api_keys WHERE subscription_id = $1`, c.subID)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; got != want {
					t.Errorf("POST /v1/subscriptions/{id}/keys = %d; keys = %d; want %d", status, got, want)
				}
				if _, shown := authzJSON(t, b)["key"]; shown != authzOK(status) {
					t.Errorf("POST /v1/subscriptions/{id}/keys = %d %s; want the plaintext exactly when issued", status, b)
				}
			},
		},
		{
			route:   "GET /v1/keys/{id}",
			fixture: authzKey("active"),
			want:    own,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				authzSameID(t, c, status, b)
				if _, shown := authzJSON(t, b)["key"]; shown {
					t.Errorf("GET /v1/keys/{id} = %s; want no plaintext", b)
				}
			},
		},
		{
			route:   "PATCH /v1/keys/{id}",
			fixture: authzKey("pending"),
			body:    func(*authzCase) any { return map[string]any{"name": "Renamed"} },
			want:    own,
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				renamed := c.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND name = 'Renamed'`, c.id) == 1
				if renamed != authzOK(status) {
					t.Errorf("PATCH /v1/keys/{id} = %d; key renamed: %t", status, renamed)
				}
			},
		},
		{
			route:   "DELETE /v1/keys/{id}",
			fixture: authzKey("active"),
			want:    authzWant{{401, 401}, {204, 404}, {204, 404}, {204, 204}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				if exists := c.count(t, `SELECT count(*) FROM api_keys WHERE id = $1`, c.id) == 1; exists == authzOK(status) {
					t.Errorf("DELETE /v1/keys/{id} = %d; key still there: %t", status, exists)
				}
			},
		},
		{
			route:   "POST /v1/keys/{id}/suspend",
			fixture: authzKey("active"),
			want:    own,
			check:   authzKeyStateCheck("suspended", "active"),
		},
		{
			route:   "POST /v1/keys/{id}/resume",
			fixture: authzKey("suspended"),
			want:    own,
			check:   authzKeyStateCheck("active", "suspended"),
		},
		{
			route:   "POST /v1/keys/{id}/revoke",
			fixture: authzKey("active"),
			body:    authzReason,
			want:    own,
			check:   authzKeyStateCheck("revoked", "active"),
		},
		{
			// As for issuing: no admin gets another organization's new
			// plaintext.
			route:   "POST /v1/keys/{id}/rotate",
			fixture: authzKey("active"),
			want:    authzWant{{401, 401}, {201, 404}, {201, 404}, {201, 403}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				got := c.count(t, `SELECT count(*) FROM api_keys WHERE rotated_from = $1`, c.id)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; got != want {
					t.Errorf("POST /v1/keys/{id}/rotate = %d; successors = %d; want %d", status, got, want)
				}
			},
		},
		{
			// The sealed plaintext is for the subscribing organization
			// only: an admin of another organization, who may change the
			// key, is still forbidden to reveal it.
			route:   "POST /v1/keys/{id}/reveal",
			fixture: authzSealedKey,
			want:    authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 403}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				sealed := c.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND sealed_key IS NOT NULL`, c.id) == 1
				if sealed == authzOK(status) {
					t.Errorf("POST /v1/keys/{id}/reveal = %d; sealed copy still there: %t", status, sealed)
				}
				if _, shown := authzJSON(t, b)["key"]; shown != authzOK(status) {
					t.Errorf("POST /v1/keys/{id}/reveal = %d %s; want the plaintext exactly when revealed", status, b)
				}
			},
		},
		{
			route:   "GET /v1/keys/{id}/events",
			fixture: authzKey("pending"),
			want:    own,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && !authzListed(t, b, "action", "key.create") {
					t.Errorf("GET /v1/keys/{id}/events = %s; want key.create", b)
				}
			},
		},
		{
			route:   "GET /v1/keys/{id}/usage",
			fixture: authzKey("pending"),
			want:    own,
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if got := authzJSON(t, b)["key_id"]; authzOK(status) && got != c.keyID {
					t.Errorf("GET /v1/keys/{id}/usage = %s; want the usage of key %s", b, c.keyID)
				}
			},
		},
		{
			route:   "POST /v1/admin/subscriptions/{id}/suspend",
			fixture: authzSubscription,
			body:    authzReason,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check:   authzSubStatusCheck("suspended", "active"),
		},
		{
			route: "POST /v1/admin/subscriptions/{id}/resume",
			fixture: func(t *testing.T, c *authzCase) {
				authzSubscription(t, c)
				if _, err := c.e.Subs.SetStatus(t.Context(), identity.System, uuid.MustParse(c.subID), subscriptions.StatusSuspended, "fixture"); err != nil {
					t.Fatal(err)
				}
			},
			want:  authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: authzSubStatusCheck("active", "suspended"),
		},
		{
			// The subscription was canceled while suspended, which holds
			// its organization and API until an admin releases it.
			route: "POST /v1/admin/subscriptions/{id}/release",
			fixture: func(t *testing.T, c *authzCase) {
				authzSubscription(t, c)
				id := uuid.MustParse(c.subID)
				if _, err := c.e.Subs.SetStatus(t.Context(), identity.System, id, subscriptions.StatusSuspended, "fixture"); err != nil {
					t.Fatal(err)
				}
				if _, err := c.e.Subs.SetStatus(t.Context(), identity.System, id, subscriptions.StatusCanceled, "fixture"); err != nil {
					t.Fatal(err)
				}
			},
			body: authzReason,
			want: authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				released := c.count(t, `SELECT count(*) FROM subscriptions WHERE id = $1 AND hold_released_at IS NOT NULL`, c.subID) == 1
				if released != authzOK(status) {
					t.Errorf("POST /v1/admin/subscriptions/{id}/release = %d; hold released: %t", status, released)
				}
			},
		},
		{
			route: "GET /v1/admin/reconcile/usage",
			fixture: func(t *testing.T, c *authzCase) {
				if _, err := c.e.Drift.Check(t.Context()); err != nil {
					t.Fatal(err)
				}
			},
			want: authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: func(t *testing.T, _ *authzCase, status int, b []byte) {
				if _, found := authzJSON(t, b)["checked"]; authzOK(status) && !found {
					t.Errorf("GET /v1/admin/reconcile/usage = %s; want a usage reconcile report", b)
				}
			},
		},
		{
			route:   "POST /v1/admin/reconcile/usage",
			fixture: authzSubscription,
			want:    authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: func(t *testing.T, _ *authzCase, status int, b []byte) {
				if _, found := authzJSON(t, b)["checked"]; authzOK(status) && !found {
					t.Errorf("POST /v1/admin/reconcile/usage = %s; want a usage reconcile report", b)
				}
			},
		},
		{
			// The matrix's plan directory is empty: the reload applies
			// nothing, so nothing is audited.
			route:     "POST /v1/admin/pricing/reload",
			unaudited: true,
			want:      authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: func(t *testing.T, _ *authzCase, status int, b []byte) {
				if _, found := authzJSON(t, b)["applied"]; authzOK(status) && !found {
					t.Errorf("POST /v1/admin/pricing/reload = %s; want a reload report", b)
				}
			},
		},
		{
			// Like the APIs' reconciliation, it heals the gateway's records
			// from the database and changes no audited record.
			route:     "POST /v1/admin/reconcile/keys",
			fixture:   authzKey("pending"),
			unaudited: true,
			want:      authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: func(t *testing.T, _ *authzCase, status int, b []byte) {
				if _, found := authzJSON(t, b)["keys_checked"]; authzOK(status) && !found {
					t.Errorf("POST /v1/admin/reconcile/keys = %s; want a reconcile report", b)
				}
			},
		},
	}
}

// TestAuthorizationSubscriptionParties checks, for one subscription and
// its key, what each party may do: the API's organization (provider and
// consumer alike) sees the subscription, its keys and their usage but may
// change none of them (403), a stranger sees nothing (404). Plans follow
// their API: visible to all when the API is public and active, writable
// only by the API's providers.
func TestAuthorizationSubscriptionParties(t *testing.T) {
	e := newAuthzEnv(t)
	c := &authzCase{e: e, n: 1 << 20, slug: "parties"}
	c.owner = authzNewMember(t, e, "parties-buyer", "parties-buyer", identity.RoleProvider)
	authzKey("active")(t, c)
	buyerConsumer := authzNewMember(t, e, c.owner.org, "parties-buyer-consumer", identity.RoleConsumer)
	sellerConsumer := authzNewMember(t, e, c.seller.org, "parties-seller-consumer", identity.RoleConsumer)
	stranger := authzNewMember(t, e, "parties-stranger", "parties-stranger", identity.RoleProvider)
	// A plan of a private API of the seller's: nobody else sees it.
	var private, privatePlan struct{ ID string }
	authzMust(t, e, http.StatusCreated, "POST", "/v1/apis", c.seller.token, authzAPIBody("parties-private", catalog.VisibilityPrivate), &private)
	if _, err := e.Pool.Exec(t.Context(), `UPDATE apis SET state = 'active' WHERE id = $1`, private.ID); err != nil {
		t.Fatal(err)
	}
	authzMust(t, e, http.StatusCreated, "POST", "/v1/apis/"+private.ID+"/plans", c.seller.token, authzPlanBody("basic", "active"), &privatePlan)

	type call struct {
		method, path string
		body         any
	}
	sub, key := "/v1/subscriptions/"+c.subID, "/v1/keys/"+c.keyID
	reads := []call{{"GET", sub, nil}, {"GET", sub + "/usage", nil}, {"GET", sub + "/keys", nil}, {"GET", key, nil},
		{"GET", key + "/events", nil}, {"GET", key + "/usage", nil}}
	writes := []call{{"POST", sub + "/cancel", nil}, {"POST", sub + "/keys", map[string]any{}}, {"PATCH", key, map[string]any{"name": "theirs"}},
		{"DELETE", key, nil}, {"POST", key + "/suspend", nil}, {"POST", key + "/resume", nil}, {"POST", key + "/revoke", nil},
		{"POST", key + "/rotate", nil}, {"POST", key + "/reveal", nil}}
	planReads := func(api, plan string) []call {
		return []call{{"GET", "/v1/apis/" + api + "/plans", nil}, {"GET", "/v1/plans/" + plan, nil}}
	}
	planWrites := func(api, plan string) []call {
		return []call{{"POST", "/v1/apis/" + api + "/plans", authzPlanBody("theirs", "active")}, {"PATCH", "/v1/plans/" + plan, map[string]any{"name": "Theirs"}},
			{"POST", "/v1/plans/" + plan + "/versions", map[string]any{"terms": map[string]any{"currency": "USD"}}}}
	}
	// Only what the parties do below counts: the fixture was audited.
	var since int64
	if err := e.Pool.QueryRow(t.Context(), `SELECT coalesce(max(id), 0) FROM audit_log`).Scan(&since); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name            string
		m               authzMember
		read, write     int // 0: not tried
		public, private int // plan reads; plan writes are forbidden or not found likewise
	}{
		{"a consumer of the subscribing organization", buyerConsumer, 200, 0, 200, 404},
		{"the API's provider", c.seller, 200, 403, 200, 200},
		{"a consumer of the API's organization", sellerConsumer, 200, 403, 200, 200},
		{"a provider of another organization", stranger, 404, 404, 200, 404},
	} {
		t.Run(p.name, func(t *testing.T) {
			try := func(calls []call, want int) {
				t.Helper()
				for _, x := range calls {
					if status, b, _ := authzDo(t, e, x.method, x.path, p.m.token, x.body); status != want {
						t.Errorf("%s %s as %s = %d %s; want %d", x.method, x.path, p.name, status, b, want)
					}
				}
			}
			try(reads, p.read)
			if p.write != 0 {
				try(writes, p.write)
			}
			try(planReads(c.apiID, c.planID), p.public)
			try(planReads(private.ID, privatePlan.ID), p.private)
			if p.m.subject != c.seller.subject && p.m.subject != buyerConsumer.subject {
				try(planWrites(c.apiID, c.planID), 403)
				try(planWrites(private.ID, privatePlan.ID), map[int]int{200: 403, 404: 404}[p.private])
			}
			if n := c.count(t, `SELECT count(*) FROM audit_log WHERE actor = $1 AND id > $2`, p.m.subject, since); n != 0 {
				t.Errorf("%s changed nothing, yet the audit log holds %d entries by them", p.name, n)
			}
		})
	}
	if n := c.count(t, `SELECT count(*) FROM api_keys k JOIN subscriptions s ON s.id = k.subscription_id
		WHERE k.id = $1 AND k.state = 'active' AND k.name = 'fixture' AND s.status = 'active'`, c.keyID); n != 1 {
		t.Errorf("after the refused changes the key or its subscription changed")
	}
}

// TestAuthorizationVisibility checks who sees an API of another
// organization, by state and visibility: consumers and providers of other
// organizations see the public ones the gateway serves (active, deprecated);
// a write on an API one sees is forbidden, on one one does not see not found.
func TestAuthorizationVisibility(t *testing.T) {
	e := newAuthzEnv(t)
	for i, tc := range []struct {
		state     catalog.State
		vis       catalog.Visibility
		consumers bool // whether members of other organizations see it
	}{
		{catalog.StateActive, catalog.VisibilityPublic, true},
		{catalog.StateDeprecated, catalog.VisibilityPublic, true},
		{catalog.StateActive, catalog.VisibilityPrivate, false},
		{catalog.StateDeprecated, catalog.VisibilityPrivate, false},
		{catalog.StateDraft, catalog.VisibilityPublic, false},
		{catalog.StatePendingApproval, catalog.VisibilityPublic, false},
		{catalog.StateApproved, catalog.VisibilityPublic, false},
		{catalog.StateRejected, catalog.VisibilityPublic, false},
		{catalog.StateFailed, catalog.VisibilityPublic, false},
		{catalog.StateSuspended, catalog.VisibilityPublic, false},
		{catalog.StateRetired, catalog.VisibilityPublic, false},
	} {
		t.Run(string(tc.vis)+"/"+string(tc.state), func(t *testing.T) {
			t.Parallel()
			c := &authzCase{e: e, n: i, slug: fmt.Sprintf("vis-%d", i)}
			c.owner = authzNewMember(t, e, fmt.Sprintf("vis-owner-%d", i), fmt.Sprintf("vis-owner-%d", i), identity.RoleProvider)
			authzAPI(tc.state, tc.vis)(t, c)
			callers := []struct {
				m         authzMember
				see, edit bool
			}{
				{authzNewMember(t, e, fmt.Sprintf("vis-other-%d", i), fmt.Sprintf("vis-consumer-%d", i), identity.RoleConsumer), tc.consumers, false},
				{authzNewMember(t, e, fmt.Sprintf("vis-other-%d", i), fmt.Sprintf("vis-provider-%d", i), identity.RoleProvider), tc.consumers, false},
				{authzNewMember(t, e, c.owner.org, fmt.Sprintf("vis-own-consumer-%d", i), identity.RoleConsumer), true, false},
				{authzNewMember(t, e, fmt.Sprintf("vis-other-%d", i), fmt.Sprintf("vis-admin-%d", i), identity.RoleAdmin), true, true},
			}
			for _, x := range callers {
				who := x.m.subject + " of " + x.m.org
				status, b, _ := authzDo(t, e, "GET", "/v1/apis/"+c.id, x.m.token, nil)
				if want := map[bool]int{true: 200, false: 404}[x.see]; status != want {
					t.Errorf("GET /v1/apis/{id} as %s = %d %s; want %d", who, status, b, want)
				}
				status, b, _ = authzDo(t, e, "GET", "/v1/apis?q="+c.slug, x.m.token, nil)
				if status != 200 || authzListed(t, b, "id", c.id) != x.see {
					t.Errorf("GET /v1/apis as %s = %d %s; want 200 listing the API: %t", who, status, b, x.see)
				}
				status, b, _ = authzDo(t, e, "PATCH", "/v1/apis/"+c.id, x.m.token, map[string]any{"description": "by " + x.m.subject})
				want := 404
				switch {
				case x.edit && tc.state != catalog.StateDraft && tc.state != catalog.StateRejected:
					// Admins may change it, but what the catalog shows was
					// reviewed: only in draft or rejected, like the gateway
					// fields, and never once retired.
					want = 409
				case x.edit:
					want = 200
				case x.see:
					want = 403
				}
				if status != want {
					t.Errorf("PATCH /v1/apis/{id} as %s = %d %s; want %d", who, status, b, want)
				}
			}
		})
	}
}

// newAuthzEnv is newTestEnv with the gateway's admin API in memory, so that
// reconciliation answers; no other route reaches the gateway.
func newAuthzEnv(t *testing.T) *testEnv {
	t.Helper()
	return newTestEnvWith(t, func(cfg *httpapi.Config) {
		jobs, err := river.NewClient(riverpgxv5.New(cfg.Pool), &river.Config{Logger: cfg.Logger})
		if err != nil {
			t.Fatal(err)
		}
		cat, err := catalog.New(catalog.Config{
			Pool: cfg.Pool, Jobs: jobs, Gateway: &authzGateway{routes: map[string]gatewayroute.Route{}},
			Publisher: cfg.Webhooks, Logger: cfg.Logger, GatewayURL: "http://127.0.0.1:1", Egress: loopbackEgress(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Catalog = cat
	})
}

// authzGateway keeps routes in memory.
type authzGateway struct {
	mu     sync.Mutex
	routes map[string]gatewayroute.Route
}

func (g *authzGateway) Put(_ context.Context, r gatewayroute.Route) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.routes[r.ID] = r
	return nil
}

func (g *authzGateway) Delete(_ context.Context, id string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.routes, id)
	return nil
}

func (g *authzGateway) List(_ context.Context, prefix string) ([]gatewayroute.Route, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := []gatewayroute.Route{}
	for id, r := range g.routes {
		if strings.HasPrefix(id, prefix) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (g *authzGateway) IDs(ctx context.Context, prefix string) ([]string, error) {
	rs, _ := g.List(ctx, prefix)
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out, nil
}

var _ catalog.Gateway = (*authzGateway)(nil)

// authzNewMember mints a token for subject in org with role and makes one
// request with it, which provisions the organization and the user.
func authzNewMember(t *testing.T, e *testEnv, org, subject string, role identity.Role) authzMember {
	t.Helper()
	tok, err := identity.Mint([]byte(testSecret), identity.DefaultIssuer, identity.DefaultAudience,
		identity.Principal{Subject: subject, Org: org, Role: role}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var me struct {
		OrganizationID string `json:"organization_id"`
	}
	authzMust(t, e, http.StatusOK, "GET", "/v1/me", tok, nil, &me)
	return authzMember{token: tok, subject: subject, org: org, orgID: me.OrganizationID}
}

// authzDo sends a request (tok may be empty) and returns the status, body
// and header of the answer.
func authzDo(t *testing.T, e *testEnv, method, path, tok string, body any) (int, []byte, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.Server.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b, resp.Header
}

// authzMust is authzDo that fails the test unless the status is want,
// decoding the body into out when out is not nil.
func authzMust(t *testing.T, e *testEnv, want int, method, path, tok string, body, out any) {
	t.Helper()
	status, b, _ := authzDo(t, e, method, path, tok, body)
	if status != want {
		t.Fatalf("%s %s = %d %s; want %d", method, path, status, b, want)
	}
	if out != nil {
		authzDecode(t, b, out)
	}
}

func authzDecode(t *testing.T, b []byte, out any) {
	t.Helper()
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

func authzJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	authzDecode(t, b, &m)
	return m
}

// authzListed reports whether the list envelope b holds an item whose
// field is value.
func authzListed(t *testing.T, b []byte, field, value string) bool {
	t.Helper()
	var page struct{ Data []map[string]any }
	authzDecode(t, b, &page)
	for _, x := range page.Data {
		if x[field] == value {
			return true
		}
	}
	return false
}

func authzOK(status int) bool { return status >= 200 && status <= 299 }

func authzSide(c *authzCase) string {
	if c.own {
		return "own"
	}
	return "foreign"
}

func (c *authzCase) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := c.e.Pool.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (c *authzCase) apiState(t *testing.T, id string) catalog.State {
	t.Helper()
	var s catalog.State
	if err := c.e.Pool.QueryRow(t.Context(), `SELECT state FROM apis WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatalf("state of api %s: %v", id, err)
	}
	return s
}

// wantState checks the fixture's API is in done after a success and still
// in before after a refusal.
func (c *authzCase) wantState(t *testing.T, status int, done, before catalog.State) {
	t.Helper()
	want := before
	if authzOK(status) {
		want = done
	}
	if got := c.apiState(t, c.id); got != want {
		t.Errorf("after %d the API is %s; want %s", status, got, want)
	}
}

// wantApproval checks the fixture's request and its API: decided as status
// with the API in state when decided, else still pending.
func (c *authzCase) wantApproval(t *testing.T, decided bool, status catalog.ApprovalStatus, state catalog.State) {
	t.Helper()
	if !decided {
		status, state = catalog.ApprovalPending, catalog.StatePendingApproval
	}
	var got catalog.ApprovalStatus
	if err := c.e.Pool.QueryRow(t.Context(), `SELECT status FROM approval_requests WHERE id = $1`, c.id).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != status {
		t.Errorf("approval request is %s; want %s", got, status)
	}
	if s := c.apiState(t, c.apiID); s != state {
		t.Errorf("the API under review is %s; want %s", s, state)
	}
}

func authzStateCheck(done, before catalog.State) func(*testing.T, *authzCase, int, []byte) {
	return func(t *testing.T, c *authzCase, status int, _ []byte) { c.wantState(t, status, done, before) }
}

func authzDecisionCheck(status catalog.ApprovalStatus, state catalog.State) func(*testing.T, *authzCase, int, []byte) {
	return func(t *testing.T, c *authzCase, got int, b []byte) {
		c.wantApproval(t, authzOK(got), status, state)
		if c.admin() && c.own {
			if typ := authzJSON(t, b)["type"]; typ != problem.TypeBase+"self-approval" {
				t.Errorf("decision on the admin's own organization = %d %s; want problem self-approval", got, b)
			}
		}
	}
}

func authzSameID(t *testing.T, c *authzCase, status int, b []byte) {
	t.Helper()
	if got := authzJSON(t, b)["id"]; authzOK(status) && got != c.id {
		t.Errorf("answer = %s; want id %s", b, c.id)
	}
}

func authzCommentCheck(t *testing.T, c *authzCase, status int, _ []byte) {
	t.Helper()
	got := c.count(t, `SELECT count(*) FROM approval_events WHERE approval_id = $1 AND action = 'comment'`, c.id)
	if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; got != want {
		t.Errorf("after %d the request has %d comments; want %d", status, got, want)
	}
}

func authzComment(*authzCase) any {
	return map[string]any{"comment": "please document the rate limits"}
}

func authzReason(*authzCase) any { return map[string]any{"reason": "the upstream has no health check"} }

func authzAPIBody(slug string, vis catalog.Visibility) map[string]any {
	return map[string]any{"name": "Weather", "slug": slug, "upstream_url": "http://127.0.0.1:9/v1", "visibility": vis}
}

func authzEndpointBody() map[string]any {
	return map[string]any{"url": "http://127.0.0.1:9/hook", "event_types": []string{"api.created"}}
}

// authzAPI makes an API of the owner's organization in state (set directly:
// the gateway jobs do not run here).
func authzAPI(state catalog.State, vis catalog.Visibility) func(*testing.T, *authzCase) {
	return func(t *testing.T, c *authzCase) {
		t.Helper()
		var a struct{ ID string }
		authzMust(t, c.e, http.StatusCreated, "POST", "/v1/apis", c.owner.token, authzAPIBody(c.slug, vis), &a)
		c.id = a.ID
		if state == catalog.StateDraft {
			return
		}
		// With the record of an approval, as a reviewed API has: retry and
		// resume register from it.
		if _, err := c.e.Pool.Exec(t.Context(), `UPDATE apis SET state = $2, approved_snapshot = jsonb_build_object('slug', slug,
			'upstream_url', upstream_url, 'routes', routes, 'health_check_path', health_check_path) WHERE id = $1`, a.ID, state); err != nil {
			t.Fatal(err)
		}
	}
}

// authzApproval makes an open approval request for a public API of the
// owner's organization.
func authzApproval(t *testing.T, c *authzCase) {
	t.Helper()
	authzAPI(catalog.StateDraft, catalog.VisibilityPublic)(t, c)
	c.apiID = c.id
	var r struct{ ID string }
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/apis/"+c.apiID+"/submit", c.owner.token, nil, &r)
	c.id = r.ID
}

// authzEndpoint makes a webhook endpoint of the owner's organization,
// subscribed to api.created.
func authzEndpoint(t *testing.T, c *authzCase) {
	t.Helper()
	var ep struct{ ID, Secret string }
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/webhooks", c.owner.token, authzEndpointBody(), &ep)
	c.id, c.secret = ep.ID, ep.Secret
}

// authzDelivery makes an endpoint and a delivery to it, by creating an API
// of the owner's organization.
func authzDelivery(t *testing.T, c *authzCase) {
	t.Helper()
	authzEndpoint(t, c)
	endpoint := c.id
	authzAPI(catalog.StateDraft, catalog.VisibilityPublic)(t, c)
	c.id = endpoint
	if err := c.e.Pool.QueryRow(t.Context(), `SELECT id::text FROM webhook_deliveries WHERE endpoint_id = $1`, endpoint).Scan(&c.delivery); err != nil {
		t.Fatalf("find the delivery of api.created: %v", err)
	}
}

func authzPlanBody(slug, status string) map[string]any {
	return map[string]any{"name": "Basic", "slug": slug, "status": status, "terms": map[string]any{"currency": "USD", "base_fee": "10"}}
}

// authzPlan makes an API of the owner's organization in state, with a plan
// in status; c.id and c.planID are the plan, c.apiID the API.
func authzPlan(state catalog.State, vis catalog.Visibility, status string) func(*testing.T, *authzCase) {
	return func(t *testing.T, c *authzCase) {
		t.Helper()
		authzAPI(state, vis)(t, c)
		c.apiID = c.id
		var p struct{ ID string }
		authzMust(t, c.e, http.StatusCreated, "POST", "/v1/apis/"+c.apiID+"/plans", c.owner.token, authzPlanBody("basic", status), &p)
		c.id, c.planID = p.ID, p.ID
	}
}

// authzSubscription makes the owner's organization subscribe to an active
// public API of a third organization (c.seller's); c.id and c.subID are
// the subscription, c.apiID and c.planID the API and its plan.
func authzSubscription(t *testing.T, c *authzCase) {
	t.Helper()
	c.seller = authzNewMember(t, c.e, fmt.Sprintf("org-%d-seller", c.n), fmt.Sprintf("seller-%d", c.n), identity.RoleProvider)
	var api, plan, sub struct{ ID string }
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/apis", c.seller.token, authzAPIBody(c.slug+"-sold", catalog.VisibilityPublic), &api)
	if _, err := c.e.Pool.Exec(t.Context(), `UPDATE apis SET state = 'active' WHERE id = $1`, api.ID); err != nil {
		t.Fatal(err)
	}
	body := authzPlanBody("basic", "active")
	body["terms"].(map[string]any)["quota_requests"] = 1000
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/plans", c.seller.token, body, &plan)
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/subscriptions", c.owner.token, map[string]any{"plan_id": plan.ID}, &sub)
	c.apiID, c.planID, c.subID, c.id = api.ID, plan.ID, sub.ID, sub.ID
}

// authzPromotion makes a promotion of the owner's organization; c.id is
// the promotion.
func authzPromotion(t *testing.T, c *authzCase) {
	t.Helper()
	var p struct{ ID string }
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/promotions", c.owner.token,
		map[string]any{"code": "OWNED", "kind": "amount_off", "value": "5", "currency": "USD"}, &p)
	c.id = p.ID
}

// authzRedeemable is authzSubscription with a stackable promotion SPRING
// of the seller's organization.
func authzRedeemable(t *testing.T, c *authzCase) {
	t.Helper()
	authzSubscription(t, c)
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/promotions", c.seller.token,
		map[string]any{"code": "SPRING", "kind": "percent_off", "value": "15", "stackable": true}, nil)
}

// authzRedeemed is authzRedeemable with SPRING redeemed by the owner.
func authzRedeemed(t *testing.T, c *authzCase) {
	t.Helper()
	authzRedeemable(t, c)
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/subscriptions/"+c.subID+"/promotions", c.owner.token, map[string]any{"code": "SPRING"}, nil)
}

// authzAdjusted checks that a quota adjustment of kind was recorded
// exactly when the call succeeded.
func authzAdjusted(kind string) func(t *testing.T, c *authzCase, status int, _ []byte) {
	return func(t *testing.T, c *authzCase, status int, _ []byte) {
		got := c.count(t, `SELECT count(*) FROM quota_adjustments WHERE subscription_id = $1 AND kind = $2`, c.subID, kind)
		if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; got != want {
			t.Errorf("quota %s = %d; adjustments = %d; want %d", kind, status, got, want)
		}
	}
}

// authzKey makes a key of the owner's subscription in state (pending,
// active as its sync job would make it, or suspended); c.id and c.keyID
// are the key.
func authzKey(state string) func(*testing.T, *authzCase) {
	return func(t *testing.T, c *authzCase) {
		t.Helper()
		authzSubscription(t, c)
		var k struct{ ID string }
		authzMust(t, c.e, http.StatusCreated, "POST", "/v1/subscriptions/"+c.subID+"/keys", c.owner.token, map[string]any{"name": "fixture"}, &k)
		c.id, c.keyID = k.ID, k.ID
		if state == "pending" {
			return
		}
		if err := c.e.Subs.Keys().SyncKey(t.Context(), uuid.MustParse(k.ID)); err != nil {
			t.Fatal(err)
		}
		if state == "suspended" {
			authzMust(t, c.e, http.StatusOK, "POST", "/v1/keys/"+k.ID+"/suspend", c.owner.token, nil, nil)
		}
	}
}

// authzSealedKey makes a key of the owner's subscription that rotates
// automatically, and runs the rotation; c.id and c.keyID are the sealed
// successor.
func authzSealedKey(t *testing.T, c *authzCase) {
	t.Helper()
	authzSubscription(t, c)
	var k struct{ ID string }
	authzMust(t, c.e, http.StatusCreated, "POST", "/v1/subscriptions/"+c.subID+"/keys", c.owner.token,
		map[string]any{"auto_rotate": true, "rotate_every_days": 1}, &k)
	c.id = sealedSuccessor(t, c.e, k.ID)
	c.keyID = c.id
}

func authzKeyStateCheck(done, before string) func(*testing.T, *authzCase, int, []byte) {
	return func(t *testing.T, c *authzCase, status int, _ []byte) {
		t.Helper()
		want := map[bool]string{true: done, false: before}[authzOK(status)]
		if got := c.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND state = $2::key_state`, c.keyID, want); got != 1 {
			t.Errorf("after %d the key is not %s", status, want)
		}
	}
}

func authzSubStatusCheck(done, before string) func(*testing.T, *authzCase, int, []byte) {
	return func(t *testing.T, c *authzCase, status int, _ []byte) {
		t.Helper()
		want := map[bool]string{true: done, false: before}[authzOK(status)]
		if got := c.count(t, `SELECT count(*) FROM subscriptions WHERE id = $1 AND status = $2::subscription_status`, c.subID, want); got != 1 {
			t.Errorf("after %d the subscription is not %s", status, want)
		}
	}
}
