package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v85/webhook"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// stripeEvent renders a Stripe event around object, as Stripe sends it.
func stripeEvent(t *testing.T, id, typ string, object map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": stripepay.APIVersion, "created": time.Now().Unix(),
		"livemode": false, "type": typ, "data": map[string]any{"object": object}, "pending_webhooks": 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// postWebhook delivers payload to the Stripe webhook endpoint, signed
// with secret as Stripe signs it.
func (e *testEnv) postWebhook(payload []byte, secret string) (int, []byte) {
	e.t.Helper()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: time.Now()})
	req, err := http.NewRequestWithContext(e.t.Context(), "POST", e.Server.URL+"/v1/billing/stripe/webhook", bytes.NewReader(payload))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// orgOf makes the token's organization known and returns its id.
func (e *testEnv) orgOf(tok string) string {
	e.t.Helper()
	var me struct {
		OrganizationID string `json:"organization_id"`
	}
	e.must(http.StatusOK, "GET", "/v1/me", tok, nil, &me)
	return me.OrganizationID
}

// openInvoice makes an open invoice of amount EUR from issuer to
// customer, as finalization leaves it.
func (e *testEnv) openInvoice(issuer, customer, amount string) string {
	e.t.Helper()
	ctx := e.t.Context()
	var id string
	slug := "paid-" + testenv.Suffix()
	err := e.Pool.QueryRow(ctx, `WITH a AS (
			INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
			VALUES ($1, $3, $3, 'https://upstream.example', 'v1', 'prov') RETURNING id),
		p AS (INSERT INTO plans (api_id, name, slug) SELECT id, 'Pro', 'pro' FROM a RETURNING id),
		v AS (INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, net_days, created_by)
			SELECT id, 1, 'subscription', 'EUR', 10, 30, 'prov' FROM p RETURNING id),
		s AS (INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
			SELECT $2, 'cust', a.id, v.id, now(), now() + interval '1 month' FROM a, v RETURNING id)
		INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end,
			subtotal, total, amount_due, finalized_at, due_at)
		SELECT $1, $2, s.id, 'open', 'INV-' || $3, 'EUR', now() - interval '1 month', now(), $4::numeric, $4::numeric, $4::numeric, now(), now()
		FROM s RETURNING id::text`, issuer, customer, slug, amount).Scan(&id)
	if err != nil {
		e.t.Fatalf("make an open invoice: %v", err)
	}
	return id
}

func (e *testEnv) invoiceStatus(id string) string {
	e.t.Helper()
	var st string
	if err := e.Pool.QueryRow(e.t.Context(), `SELECT status::text FROM invoices WHERE id = $1`, id).Scan(&st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// A consumer sets up a card (its Stripe customer made, the client secret
// answered and kept nowhere), Stripe's setup_intent.succeeded makes it the
// default; the payments cycle collects an invoice with it, the parties
// read the payment, a badly signed success changes nothing, a signed one
// pays the invoice once however often it is delivered, and the issuer
// refunds part then the rest, never more.
func TestPaymentWebhookRoundTrip(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	prov := e.token("acme", "alice", identity.RoleProvider)
	cons := e.token("hooli", "carol", identity.RoleConsumer)
	other := e.token("globex", "dave", identity.RoleProvider)
	admin := e.token("veil-ops", "root", identity.RoleAdmin)
	issuer, customer := e.orgOf(prov), e.orgOf(cons)
	e.orgOf(other)

	e.must(http.StatusOK, "PUT", "/v1/admin/organizations/"+issuer+"/payment-settings", admin, map[string]any{"provider": "stripe"}, nil)
	if st, b := e.do("PUT", "/v1/admin/organizations/"+issuer+"/payment-settings", prov, map[string]any{"provider": "stripe"}); st != http.StatusForbidden {
		t.Errorf("payment settings by a provider = %d %s; want 403", st, b)
	}

	req, _ := http.NewRequestWithContext(t.Context(), "POST", e.Server.URL+"/v1/billing/payment-methods/setup", nil)
	req.Header.Set("Authorization", "Bearer "+cons)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var setup struct{ Provider, SetupID, ClientSecret string }
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_ = json.Unmarshal(body, &struct {
		Provider     *string `json:"provider"`
		SetupID      *string `json:"setup_id"`
		ClientSecret *string `json:"client_secret"`
	}{&setup.Provider, &setup.SetupID, &setup.ClientSecret})
	if resp.StatusCode != http.StatusOK || setup.ClientSecret == "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("setup = %d %s, Cache-Control %q; want 200 with a client secret, no-store", resp.StatusCode, body, resp.Header.Get("Cache-Control"))
	}
	var cus string
	if err := e.Pool.QueryRow(t.Context(), `SELECT provider_customer_id FROM payment_customers WHERE customer_id = $1 AND provider = 'stripe'`,
		customer).Scan(&cus); err != nil {
		t.Fatalf("Stripe customer of the consumer: %v", err)
	}
	var stored int
	if err := e.Pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM payment_customers c WHERE c::text LIKE '%' || $1 || '%')
		+ (SELECT count(*) FROM audit_log l WHERE l::text LIKE '%' || $1 || '%')`, setup.ClientSecret).Scan(&stored); err != nil || stored != 0 {
		t.Errorf("the client secret is stored in %d rows (%v); want none", stored, err)
	}

	attached := stripeEvent(t, "evt_setup_1", "setup_intent.succeeded", map[string]any{"id": "seti_1", "object": "setup_intent",
		"metadata": map[string]any{stripepay.SetupMetadataKey: "payment_method"},
		"customer": cus, "status": "succeeded", "payment_method": map[string]any{"id": stripetest.PMProcessing, "object": "payment_method",
			"type": "card", "card": map[string]any{"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}}})
	for range 2 {
		if st, b := e.postWebhook(attached, testWebhookSecret); st != http.StatusOK {
			t.Fatalf("setup_intent.succeeded = %d %s; want 200", st, b)
		}
	}
	var pm, last4 string
	if err := e.Pool.QueryRow(t.Context(), `SELECT default_pm_id, pm_last4 FROM payment_customers WHERE customer_id = $1`, customer).Scan(&pm, &last4); err != nil ||
		pm != stripetest.PMProcessing || last4 != "4242" {
		t.Errorf("default payment method = %s %s (%v); want %s ending 4242", pm, last4, err, stripetest.PMProcessing)
	}

	inv := e.openInvoice(issuer, customer, "12.50")
	if _, err := e.Payments.RunCycle(t.Context()); err != nil {
		t.Fatalf("payments cycle: %v", err)
	}
	var pay struct {
		Status   string
		Amount   string
		Attempts []struct {
			ProviderPaymentID string `json:"provider_payment_id"`
		}
	}
	e.must(http.StatusOK, "GET", "/v1/invoices/"+inv+"/payment", cons, nil, &pay)
	if pay.Status != "processing" || pay.Amount != "12.50" || len(pay.Attempts) != 1 || pay.Attempts[0].ProviderPaymentID == "" {
		t.Fatalf("payment = %+v; want processing, 12.50, one attempt at Stripe", pay)
	}
	e.must(http.StatusNotFound, "GET", "/v1/invoices/"+inv+"/payment", other, nil, nil)

	succeeded := stripeEvent(t, "evt_pi_1", "payment_intent.succeeded", map[string]any{"id": pay.Attempts[0].ProviderPaymentID,
		"object": "payment_intent", "amount": 1250, "currency": "eur", "customer": cus, "status": "succeeded",
		"metadata": map[string]any{"veil_invoice_id": inv}})
	if st, b := e.postWebhook(succeeded, "whsec_wrong"); st != http.StatusBadRequest || !strings.Contains(string(b), "invalid-webhook") {
		t.Errorf("badly signed webhook = %d %s; want 400 invalid-webhook", st, b)
	}
	if st := e.invoiceStatus(inv); st != "open" {
		t.Fatalf("invoice after a badly signed webhook = %s; want open", st)
	}
	// Stripe sends the event once the payment has succeeded there.
	e.Stripe.SetPaymentIntentStatus(pay.Attempts[0].ProviderPaymentID, "succeeded")
	for range 2 {
		if st, b := e.postWebhook(succeeded, testWebhookSecret); st != http.StatusOK {
			t.Fatalf("payment_intent.succeeded = %d %s; want 200", st, b)
		}
	}
	if st := e.invoiceStatus(inv); st != "paid" {
		t.Fatalf("invoice after payment_intent.succeeded = %s; want paid", st)
	}
	var events int
	_ = e.Pool.QueryRow(t.Context(), `SELECT count(*) FROM provider_events WHERE event_id = 'evt_pi_1'`).Scan(&events)
	if events != 1 {
		t.Errorf("evt_pi_1 recorded %d times; want once", events)
	}

	refunds := "/v1/invoices/" + inv + "/refunds"
	e.must(http.StatusForbidden, "POST", refunds, cons, map[string]any{"amount": "1.00"}, nil)
	e.must(http.StatusNotFound, "POST", refunds, other, map[string]any{"amount": "1.00"}, nil)
	var rf struct{ Amount, Status string }
	e.must(http.StatusCreated, "POST", refunds, prov, map[string]any{"amount": "5.00", "reason": "outage"}, &rf)
	if rf.Amount != "5.00" || rf.Status != "succeeded" {
		t.Errorf("refund = %+v; want 5.00", rf)
	}
	if st, b := e.do("POST", refunds, prov, map[string]any{"amount": "10.00"}); st != http.StatusConflict || !strings.Contains(string(b), "over-refund") {
		t.Errorf("refund above what is left = %d %s; want 409 over-refund", st, b)
	}
	e.must(http.StatusCreated, "POST", refunds, prov, nil, &rf)
	if rf.Amount != "7.50" || rf.Status != "succeeded" {
		t.Errorf("refund of the rest = %+v; want 7.50", rf)
	}
}

// An invoice paid by transfer is marked paid by its issuer with the
// transfer's reference, the answer showing the attempt; its customer may
// not, another organization finds nothing. Retry days not ascending are
// refused.
func TestPaymentMarkPaid(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	prov := e.token("acme", "alice", identity.RoleProvider)
	cons := e.token("hooli", "carol", identity.RoleConsumer)
	other := e.token("globex", "dave", identity.RoleProvider)
	admin := e.token("veil-ops", "root", identity.RoleAdmin)
	issuer, customer := e.orgOf(prov), e.orgOf(cons)
	e.must(http.StatusUnprocessableEntity, "PUT", "/v1/admin/organizations/"+issuer+"/payment-settings", admin,
		map[string]any{"provider": "manual", "retry_days": []int{3, 1}, "grace_days": 5}, nil)
	e.must(http.StatusOK, "PUT", "/v1/admin/organizations/"+issuer+"/payment-settings", admin,
		map[string]any{"provider": "manual", "retry_days": []int{2}, "grace_days": 5}, nil)
	inv := e.openInvoice(issuer, customer, "30.00")
	if _, err := e.Payments.RunCycle(t.Context()); err != nil {
		t.Fatalf("payments cycle: %v", err)
	}
	path := "/v1/invoices/" + inv + "/payment/mark-paid"
	e.must(http.StatusForbidden, "POST", path, cons, map[string]any{"reference": "TRX-1"}, nil)
	e.must(http.StatusNotFound, "POST", path, other, map[string]any{"reference": "TRX-1"}, nil)
	e.must(http.StatusUnprocessableEntity, "POST", path, prov, map[string]any{"reference": ""}, nil)
	if st := e.invoiceStatus(inv); st != "open" {
		t.Fatalf("invoice after refused calls = %s; want open", st)
	}
	var pay struct {
		Status   string
		Attempts []struct{ Status string }
	}
	e.must(http.StatusOK, "POST", path, prov, map[string]any{"reference": "TRX-1"}, &pay)
	if pay.Status != "succeeded" || e.invoiceStatus(inv) != "paid" {
		t.Errorf("mark paid = %+v, invoice %s; want succeeded and paid", pay, e.invoiceStatus(inv))
	}
	// The answer shows the attempt that paid it.
	if n := len(pay.Attempts); n == 0 || pay.Attempts[n-1].Status != "succeeded" {
		t.Errorf("mark paid's attempts = %+v; want the last one succeeded", pay.Attempts)
	}
	e.must(http.StatusConflict, "POST", path, prov, map[string]any{"reference": "TRX-1"}, nil)
}
