package httpapi_test

import (
	"testing"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments"
)

// authzPayment is authzInvoice's open invoice collected by the manual
// provider (a transfer awaited), and marked paid by its issuer when paid.
func authzPayment(paid bool) func(*testing.T, *authzCase) {
	return func(t *testing.T, c *authzCase) {
		t.Helper()
		authzInvoice(billing.StatusOpen)(t, c)
		ctx, pays := t.Context(), c.e.Payments
		issuer, customer, inv := mustUUID(t, c.owner.orgID), mustUUID(t, c.seller.orgID), mustUUID(t, c.id)
		if err := pays.SetSettings(ctx, issuer, payments.Settings{Provider: "manual"}); err != nil {
			t.Fatal(err)
		}
		if _, err := pays.EnsureCustomer(ctx, customer, "manual"); err != nil {
			t.Fatal(err)
		}
		if _, err := pays.Collect(ctx, inv); err != nil {
			t.Fatalf("collect: %v", err)
		}
		if paid {
			owner := identity.Actor{Subject: c.owner.subject, Role: identity.RoleProvider, OrgID: issuer}
			if _, err := pays.MarkPaidManually(ctx, owner, inv, "TRX-"+c.id); err != nil {
				t.Fatalf("mark paid: %v", err)
			}
		}
	}
}

// authzPaymentRows: an invoice's payment is seen by its parties, refunded
// and marked paid by its issuer's providers and admins; a payment method
// is set up by any member for its own organization; payment settings are
// the admins'. The Stripe webhook takes no token: without a valid
// signature every caller gets 400 and nothing changes.
func authzPaymentRows() []authzRow {
	see := authzWant{{401, 401}, {200, 404}, {200, 404}, {200, 200}}
	orgFixture := func(_ *testing.T, c *authzCase) { c.id = c.owner.orgID }
	return []authzRow{
		{route: "GET /v1/invoices/{id}/payment", fixture: authzPayment(false), want: see},
		{
			// Marked paid by hand, so refunded to the credit balance: the
			// provider took nothing it could give back.
			route: "POST /v1/invoices/{id}/refunds", fixture: authzPayment(true),
			body: func(*authzCase) any {
				return map[string]any{"amount": "1.00", "reason": "outage", "destination": "credit_balance"}
			},
			want: authzWant{{401, 401}, {404, 404}, {201, 404}, {201, 201}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM payment_refunds WHERE invoice_id = $1`, c.id)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("POST refunds = %d; refunds = %d; want %d", status, n, want)
				}
			},
		},
		{
			route: "POST /v1/invoices/{id}/payment/mark-paid", fixture: authzPayment(false),
			body:  func(*authzCase) any { return map[string]any{"reference": "TRX-1"} },
			want:  authzWant{{401, 401}, {404, 404}, {200, 404}, {200, 200}},
			check: authzInvoiceStatus(billing.StatusPaid, billing.StatusOpen),
		},
		{
			// Pay now of a transfer awaited: allowed to the customer's
			// members and the issuer's providers, and refused as under
			// way; a consumer member of the issuer charges nobody.
			route: "POST /v1/invoices/{id}/payment/retry", fixture: authzPayment(false),
			want: authzWant{{401, 401}, {404, 404}, {409, 404}, {409, 409}},
		},
		{
			route: "POST /v1/billing/payment-methods/setup",
			body:  func(*authzCase) any { return map[string]any{"provider": "manual"} },
			want:  authzWant{{401, 401}, {200, 200}, {200, 200}, {200, 200}},
		},
		{
			route: "PUT /v1/admin/organizations/{id}/payment-settings", fixture: orgFixture,
			body: func(*authzCase) any { return map[string]any{"provider": "manual"} },
			want: authzWant{{401, 401}, {403, 403}, {403, 403}, {200, 200}},
			check: func(t *testing.T, c *authzCase, status int, _ []byte) {
				n := c.count(t, `SELECT count(*) FROM payment_settings WHERE issuer_id = $1`, c.id)
				if want := map[bool]int{true: 1, false: 0}[authzOK(status)]; n != want {
					t.Errorf("PUT payment-settings = %d; settings = %d; want %d", status, n, want)
				}
			},
		},
		{
			route: "POST /v1/billing/stripe/webhook",
			body: func(*authzCase) any {
				return map[string]any{"id": "evt_1", "object": "event", "type": "payment_intent.succeeded"}
			},
			want: authzWant{{400, 400}, {400, 400}, {400, 400}, {400, 400}},
		},
	}
}
