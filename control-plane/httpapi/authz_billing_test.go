package httpapi_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
)

// authzInvoice makes the owner's organization the issuer of an invoice in
// status (draft or open): an active API of it with a 10 USD plan, a
// subscription of a third organization (c.seller, here the customer) and
// its January closed with an empty snapshot, the draft of that period,
// finalized by the billing job's actor when open. c.id is the invoice,
// c.subID the subscription.
func authzInvoice(status string) func(*testing.T, *authzCase) {
	return func(t *testing.T, c *authzCase) {
		t.Helper()
		authzAPI(catalog.StateActive, catalog.VisibilityPublic)(t, c)
		c.apiID = c.id
		c.seller = authzNewMember(t, c.e, fmt.Sprintf("org-%d-buyer", c.n), fmt.Sprintf("buyer-%d", c.n), identity.RoleConsumer)
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		end := start.AddDate(0, 1, 0)
		scan := func(sql string, args ...any) string {
			t.Helper()
			var id string
			if err := c.e.Pool.QueryRow(t.Context(), sql, args...).Scan(&id); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			return id
		}
		plan := scan(`INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Billed', 'billed', 'active') RETURNING id::text`, c.apiID)
		version := scan(`INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, created_by)
			VALUES ($1, 1, 'subscription', 'USD', 10, 'owner') RETURNING id::text`, plan)
		c.subID = scan(`INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
			VALUES ($1, 'buyer', $2, $3, $4, $5) RETURNING id::text`, c.seller.orgID, c.apiID, version, end, end.AddDate(0, 1, 0))
		scan(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
			VALUES ($1, $2, 'active', $3, 'buyer') RETURNING subscription_id::text`, c.subID, version, start)
		period := scan(`INSERT INTO billing_periods (subscription_id, period_start, period_end, state, closed_at)
			VALUES ($1, $2, $3, 'closed', $3) RETURNING id::text`, c.subID, start, end)
		scan(`INSERT INTO usage_snapshots (billing_period_id) VALUES ($1) RETURNING id::text`, period)
		c.id = scan(`INSERT INTO invoices (issuer_id, customer_id, subscription_id, billing_period_id, currency, period_start, period_end)
			VALUES ($1, $2, $3, $4, 'USD', $5, $6) RETURNING id::text`, c.owner.orgID, c.seller.orgID, c.subID, period, start, end)
		svc, err := billing.New(billing.Config{Pool: c.e.Pool})
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.RecomputeDraft(t.Context(), mustUUID(t, c.id)); err != nil {
			t.Fatalf("recompute the draft: %v", err)
		}
		if status == billing.StatusOpen {
			if _, err := svc.Finalize(t.Context(), identity.System, mustUUID(t, c.id)); err != nil {
				t.Fatalf("finalize: %v", err)
			}
		}
	}
}

// authzInvoiceStatus checks that the invoice is in done exactly when the
// call succeeded, else still in before.
func authzInvoiceStatus(done, before string) func(*testing.T, *authzCase, int, []byte) {
	return func(t *testing.T, c *authzCase, status int, _ []byte) {
		var got string
		if err := c.e.Pool.QueryRow(t.Context(), `SELECT status::text FROM invoices WHERE id = $1`, c.id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]string{true: done, false: before}[authzOK(status)]; got != want {
			t.Errorf("invoice status after %d = %s; want %s", status, got, want)
		}
	}
}

// authzBillingRows: an invoice is its issuer's and its customer's (the
// fixture's caller sits in the issuer's organization; the customer's side
// is exerciseBilling's, in the contract test); a foreign organization finds nothing,
// admins everything. Changes of an invoice are its issuer's providers'
// and the admins'. Organizations' billing profiles, settings and tax rules
// are their members'.
func authzBillingRows() []authzRow {
	see := authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}}
	change := authzWant{{401, 401}, {404, 404}, {200, 404}, {200, 200}}
	orgID := func(c *authzCase) { c.id = c.owner.orgID }
	orgFixture := func(_ *testing.T, c *authzCase) { orgID(c) }
	return []authzRow{
		{
			route: "GET /v1/invoices", fixture: authzInvoice(billing.StatusDraft),
			// An admin's first page would hold other cases' invoices.
			query: func(c *authzCase) string { return "subscription_id=" + c.subID },
			want:  authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, b []byte) {
				if authzOK(status) && authzListed(t, b, "id", c.id) != (c.own || c.admin()) {
					t.Errorf("GET /v1/invoices (%s) lists the invoice: %t", authzSide(c), !(c.own || c.admin()))
				}
			},
		},
		{route: "GET /v1/invoices/{id}", fixture: authzInvoice(billing.StatusOpen), want: see, check: authzSameID},
		{route: "GET /v1/invoices/{id}/pdf", fixture: authzInvoice(billing.StatusOpen), want: see},
		{route: "GET /v1/invoices/{id}/html", fixture: authzInvoice(billing.StatusOpen), want: see},
		{
			route: "POST /v1/invoices/{id}/finalize", fixture: authzInvoice(billing.StatusDraft), want: change,
			check: authzInvoiceStatus(billing.StatusOpen, billing.StatusDraft),
		},
		{
			route: "POST /v1/invoices/{id}/void", fixture: authzInvoice(billing.StatusOpen), want: change,
			check: authzInvoiceStatus(billing.StatusVoid, billing.StatusOpen),
		},
		{
			route: "POST /v1/invoices/{id}/mark-uncollectible", fixture: authzInvoice(billing.StatusOpen), want: change,
			check: authzInvoiceStatus(billing.StatusUncollectible, billing.StatusOpen),
		},
		{
			route: "POST /v1/admin/invoices/{id}/mark-paid", fixture: authzInvoice(billing.StatusOpen),
			want:  authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: authzInvoiceStatus(billing.StatusPaid, billing.StatusOpen),
		},
		{
			// The route is the parties' and the admins'; this control plane
			// runs without ClickHouse, so those who may see get 503.
			route: "GET /v1/subscriptions/{id}/preview",
			fixture: func(t *testing.T, c *authzCase) {
				authzInvoice(billing.StatusOpen)(t, c)
				c.id = c.subID
			},
			want: authzWant{{401, 401}, {503, 404}, {503, 404}, {503, 503}},
		},
		{
			route: "GET /v1/subscriptions/{id}/adjustments",
			fixture: func(t *testing.T, c *authzCase) {
				authzInvoice(billing.StatusOpen)(t, c)
				c.id = c.subID
			},
			want: authzWant{{401, 401}, {404, 404}, {200, 404}, {200, 200}},
		},
		{
			route: "POST /v1/subscriptions/{id}/adjustments",
			fixture: func(t *testing.T, c *authzCase) {
				authzInvoice(billing.StatusOpen)(t, c)
				c.id = c.subID
			},
			body: func(*authzCase) any { return map[string]any{"amount": "-2.00", "currency": "USD", "reason": "outage"} },
			want: authzWant{{401, 401}, {404, 404}, {201, 404}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM billing_adjustments WHERE subscription_id = $1`, c.subID)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("POST adjustments = %d; adjustments = %d; want %d", status, n, want)
				}
			},
		},
		{route: "GET /v1/credits", fixture: authzInvoice(billing.StatusOpen), want: authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}}},
		{
			route: "POST /v1/credits", fixture: authzInvoice(billing.StatusOpen),
			body: func(c *authzCase) any {
				return map[string]any{"issuer_id": c.owner.orgID, "customer_id": c.seller.orgID, "currency": "USD", "amount": "5.00", "reason": "sorry"}
			},
			want: authzWant{{401, 401}, {404, 404}, {201, 404}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM credit_ledger WHERE issuer_id = $1 AND kind = 'goodwill'`, c.owner.orgID)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("POST /v1/credits = %d; grants = %d; want %d", status, n, want)
				}
			},
		},
		{
			route: "GET /v1/credits/ledger", fixture: authzInvoice(billing.StatusOpen),
			query: func(c *authzCase) string { return "issuer_id=" + c.owner.orgID + "&customer_id=" + c.seller.orgID },
			want:  see,
		},
		{route: "GET /v1/organizations/{id}/billing-profile", fixture: func(t *testing.T, c *authzCase) {
			orgID(c)
			authzMust(t, c.e, http.StatusOK, "PUT", "/v1/organizations/"+c.id+"/billing-profile", c.owner.token, authzProfile(), nil)
		}, want: see},
		{
			route: "PUT /v1/organizations/{id}/billing-profile", fixture: orgFixture, body: func(*authzCase) any { return authzProfile() },
			want: see,
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM billing_profiles WHERE organization_id = $1`, c.id)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("PUT billing-profile = %d; profiles = %d; want %d", status, n, want)
				}
			},
		},
		{route: "GET /v1/organizations/{id}/billing-settings", fixture: orgFixture, want: see},
		{
			route: "PUT /v1/organizations/{id}/billing-settings", fixture: orgFixture,
			body: func(*authzCase) any { return map[string]any{"invoice_prefix": "OWN"} },
			want: authzWant{{401, 401}, {403, 404}, {200, 404}, {200, 200}},
		},
		{
			route: "PUT /v1/admin/organizations/{id}/billing-settings", fixture: orgFixture,
			body: func(*authzCase) any { return map[string]any{"platform_fee_percent": "3"} },
			want: authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
		},
		{route: "GET /v1/organizations/{id}/tax-rules", fixture: orgFixture, want: see},
		{
			route: "POST /v1/organizations/{id}/tax-rules", fixture: orgFixture,
			body: func(*authzCase) any { return map[string]any{"country": "DE", "rate_percent": "19"} },
			want: authzWant{{401, 401}, {403, 404}, {201, 404}, {201, 201}},
		},
		{
			route: "DELETE /v1/organizations/{id}/tax-rules/{rule}",
			fixture: func(t *testing.T, c *authzCase) {
				orgID(c)
				var r struct{ ID string }
				authzMust(t, c.e, http.StatusCreated, "POST", "/v1/organizations/"+c.id+"/tax-rules", c.owner.token,
					map[string]any{"country": "FR", "rate_percent": "20"}, &r)
				c.delivery = r.ID
			},
			want: authzWant{{401, 401}, {403, 404}, {204, 404}, {204, 204}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				if gone := c.count(t, `SELECT count(*) FROM tax_rules WHERE id = $1`, c.delivery) == 0; gone != authzOK(status) {
					t.Errorf("DELETE tax rule = %d; deleted: %t", status, gone)
				}
			},
		},
		{
			route: "GET /v1/revenue", fixture: orgFixture,
			query: func(c *authzCase) string { return "issuer_id=" + c.owner.orgID },
			want:  authzWant{{401, 401}, {403, 404}, {200, 404}, {200, 200}},
		},
	}
}

func mustUUID(t *testing.T, s string) uuid.UUID {
	t.Helper()
	id, err := uuid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func authzProfile() map[string]any {
	return map[string]any{"legal_name": "Owner GmbH", "address_line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115",
		"country": "DE", "email": "billing@owner.example"}
}
