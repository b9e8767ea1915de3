package httpapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stripe/stripe-go/v85/webhook"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// exercisePayments drives the payments routes against the document: acme
// collects through Stripe (the fake), initech sets up a card that Stripe's
// webhook makes its default, pays an invoice that acme refunds in part,
// and a second invoice is marked paid by hand.
func exercisePayments(t *testing.T, e *testEnv, c *contract, prov, other, admin string) {
	t.Helper()
	ctx := t.Context()
	buyer := e.token("initech", "ivy", identity.RoleConsumer)
	acme, initech := e.orgOf(prov), e.orgOf(buyer)

	settings := "/v1/admin/organizations/" + acme + "/payment-settings"
	c.call(http.StatusOK, "PUT", settings, admin, map[string]any{"provider": "stripe", "retry_days": []int{1, 2}, "grace_days": 3})
	c.call(http.StatusForbidden, "PUT", settings, prov, map[string]any{"provider": "stripe"})
	c.refused(http.StatusUnprocessableEntity, "PUT", settings, admin, map[string]any{"provider": "paypal"})
	// The bound the database holds: more days of grace are refused, never a 500.
	c.refused(http.StatusUnprocessableEntity, "PUT", settings, admin, map[string]any{"provider": "stripe", "grace_days": payments.MaxGraceDays + 1})
	c.call(http.StatusOK, "PUT", settings, admin, map[string]any{"provider": "stripe", "grace_days": payments.MaxGraceDays})
	c.call(http.StatusNotFound, "PUT", "/v1/admin/organizations/"+uuid.NewString()+"/payment-settings", admin, map[string]any{"provider": "stripe"})

	setup := c.call(http.StatusOK, "POST", "/v1/billing/payment-methods/setup", buyer, nil)
	if setup.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("setupPaymentMethod Cache-Control = %q; want no-store", setup.Header.Get("Cache-Control"))
	}
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/billing/payment-methods/setup", buyer, map[string]any{"provider": "paypal"})
	var cus string
	if err := e.Pool.QueryRow(ctx, `SELECT provider_customer_id FROM payment_customers WHERE customer_id = $1`, initech).Scan(&cus); err != nil {
		t.Fatalf("initech's Stripe customer: %v", err)
	}

	hook := "/v1/billing/stripe/webhook"
	signed := func(payload []byte) string {
		return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: testWebhookSecret, Timestamp: time.Now()}).Header
	}
	attached := stripeEvent(t, "evt_contract_setup", "setup_intent.succeeded", map[string]any{"id": "seti_1", "object": "setup_intent",
		"metadata": map[string]any{stripepay.SetupMetadataKey: "payment_method"},
		"customer": cus, "status": "succeeded", "payment_method": stripetest.PMProcessing})
	c.call(http.StatusOK, "POST", hook, "", attached, "Stripe-Signature", signed(attached))
	c.call(http.StatusBadRequest, "POST", hook, "", attached, "Stripe-Signature", "t=1,v1=00")

	inv := e.openInvoice(acme, initech, "12.50")
	if _, err := e.Payments.Collect(ctx, uuid.MustParse(inv)); err != nil {
		t.Fatalf("collect: %v", err)
	}
	var pay struct {
		Attempts []struct {
			ProviderPaymentID string `json:"provider_payment_id"`
		}
	}
	c.call(http.StatusOK, "GET", "/v1/invoices/"+inv+"/payment", buyer, nil).decode(&pay)
	c.call(http.StatusNotFound, "GET", "/v1/invoices/"+inv+"/payment", other, nil)
	if len(pay.Attempts) != 1 || pay.Attempts[0].ProviderPaymentID == "" {
		t.Fatalf("getInvoicePayment attempts = %+v; want one at Stripe", pay.Attempts)
	}
	e.Stripe.SetPaymentIntentStatus(pay.Attempts[0].ProviderPaymentID, "succeeded")
	succeeded := stripeEvent(t, "evt_contract_pi", "payment_intent.succeeded", map[string]any{"id": pay.Attempts[0].ProviderPaymentID,
		"object": "payment_intent", "amount": 1250, "currency": "eur", "customer": cus, "status": "succeeded"})
	c.call(http.StatusOK, "POST", hook, "", succeeded, "Stripe-Signature", signed(succeeded))

	refunds := "/v1/invoices/" + inv + "/refunds"
	c.call(http.StatusCreated, "POST", refunds, prov, map[string]any{"amount": "2.50", "reason": "outage"})
	c.call(http.StatusConflict, "POST", refunds, prov, map[string]any{"amount": "100.00"})
	c.call(http.StatusForbidden, "POST", refunds, buyer, map[string]any{"amount": "1.00"})
	c.call(http.StatusNotFound, "POST", refunds, other, map[string]any{"amount": "1.00"})

	second := e.openInvoice(acme, initech, "5.00")
	if _, err := e.Payments.Collect(ctx, uuid.MustParse(second)); err != nil {
		t.Fatalf("collect: %v", err)
	}
	markPaid := "/v1/invoices/" + second + "/payment/mark-paid"
	c.refused(http.StatusUnprocessableEntity, "POST", markPaid, prov, map[string]any{"reference": ""})
	c.call(http.StatusForbidden, "POST", markPaid, buyer, map[string]any{"reference": "TRX-9"})
	c.call(http.StatusOK, "POST", markPaid, prov, map[string]any{"reference": "TRX-9"})
	c.call(http.StatusConflict, "POST", markPaid, prov, map[string]any{"reference": "TRX-9"})

	declined := e.openInvoice(acme, initech, "7.00")
	setPM := func(pm string) {
		if _, err := e.Pool.Exec(ctx, `UPDATE payment_customers SET default_pm_id = $2 WHERE customer_id = $1`, initech, pm); err != nil {
			t.Fatal(err)
		}
	}
	setPM(stripetest.PMDeclined)
	if _, err := e.Payments.Collect(ctx, uuid.MustParse(declined)); err != nil {
		t.Fatalf("collect: %v", err)
	}
	setPM(stripetest.PMProcessing)
	retry := "/v1/invoices/" + declined + "/payment/retry"
	c.call(http.StatusNotFound, "POST", retry, other, nil)
	c.call(http.StatusOK, "POST", retry, buyer, nil)
	c.call(http.StatusConflict, "POST", "/v1/invoices/"+second+"/payment/retry", buyer, nil)
}
