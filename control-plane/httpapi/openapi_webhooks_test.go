package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/schemas"
)

// webhookHeaders are the headers every delivery carries (webhooks.Header*).
var webhookHeaders = []string{webhooks.HeaderID, webhooks.HeaderTimestamp, webhooks.HeaderSignature}

// TestOpenAPIWebhooksCoverEventTypes: the document's webhooks section has
// one entry per event type Publish accepts, and none for another type;
// each is a POST of its type's envelope, with the signature headers and
// the answers that acknowledge and that retry.
func TestOpenAPIWebhooksCoverEventTypes(t *testing.T) {
	s := loadSpec(t)
	hooks, ok := s.raw["webhooks"].(map[string]any)
	if !ok {
		t.Fatal("schemas/openapi.json has no webhooks section")
	}
	known := map[string]bool{}
	for _, typ := range webhooks.EventTypes {
		known[typ] = true
		entry, ok := hooks[typ].(map[string]any)
		if !ok {
			t.Errorf("webhooks[%q] is missing", typ)
			continue
		}
		op, ok := entry["post"].(map[string]any)
		if !ok || len(entry) != 1 {
			t.Errorf("webhooks[%q] = %v; want one post operation", typ, keysOf(entry))
			continue
		}
		schema, err := resolvePointer(op, "#/requestBody/content/application~1json/schema")
		if err != nil {
			t.Errorf("webhooks[%q] has no JSON request body: %v", typ, err)
			continue
		}
		if got, _ := resolvePointer(schema, "#/properties/type/const"); got != typ {
			t.Errorf("webhooks[%q] body type const = %v; want %q", typ, got, typ)
		}
		if _, err := resolvePointer(schema, "#/properties/data/$ref"); err != nil {
			t.Errorf("webhooks[%q] body does not describe its data with a schema: %v", typ, err)
		}
		var headers []string
		params, _ := op["parameters"].([]any)
		for _, p := range params {
			if ref, ok := p.(map[string]any)["$ref"].(string); ok {
				if p, err := resolvePointer(s.raw, ref); err == nil {
					if m := p.(map[string]any); m["in"] == "header" && m["required"] == true {
						headers = append(headers, m["name"].(string))
					}
				}
			}
		}
		if sort.Strings(headers); !slices.Equal(headers, []string{webhooks.HeaderID, webhooks.HeaderSignature, webhooks.HeaderTimestamp}) {
			t.Errorf("webhooks[%q] required headers = %v; want %v", typ, headers, webhookHeaders)
		}
		responses, _ := op["responses"].(map[string]any)
		if responses["2XX"] == nil || responses["default"] == nil {
			t.Errorf("webhooks[%q] responses = %v; want 2XX (acknowledged) and default (retried)", typ, keysOf(responses))
		}
	}
	for typ := range hooks {
		if !known[typ] {
			t.Errorf("webhooks[%q] describes no event type Publish accepts", typ)
		}
	}
	enum, _ := resolvePointer(s.raw, "#/components/schemas/EventType/enum")
	var types []string
	for _, v := range enum.([]any) {
		types = append(types, v.(string))
	}
	if !slices.Equal(types, webhooks.EventTypes) {
		t.Errorf("EventType enum = %v; want webhooks.EventTypes %v", types, webhooks.EventTypes)
	}
}

func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// webhookSchemas compiles the request body schema of every entry of the
// document's webhooks section, with format assertions (uuid, date-time).
func webhookSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemas.OpenAPI))
	if err != nil {
		t.Fatalf("decode schemas/openapi.json: %v", err)
	}
	const url = "https://veil.dev/openapi.json"
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]*jsonschema.Schema{}
	for _, typ := range webhooks.EventTypes {
		s, err := c.Compile(url + "#/webhooks/" + typ + "/post/requestBody/content/application~1json/schema")
		if err != nil {
			t.Fatalf("compile the %s webhook's schema: %v", typ, err)
		}
		out[typ] = s
	}
	return out
}

// TestOpenAPIWebhookPayloadsMatch drives the API through the changes that
// publish events, with endpoints of every organization subscribed to every
// type, and validates each payload recorded for delivery against the
// document's schema of its type. The data objects the document describes
// refuse members it does not name, so a payload that gains, loses or
// retypes a member fails here until the document follows.
func TestOpenAPIWebhookPayloadsMatch(t *testing.T) {
	w := promotionsWorld(t)
	e := w.e
	admin := e.token("veil-ops", "root", identity.RoleAdmin)
	for _, tok := range []string{w.provider, w.buyer} {
		e.must(http.StatusCreated, "POST", "/v1/webhooks", tok, map[string]any{"url": "http://127.0.0.1:9/hooks", "event_types": []string{"*"}}, nil)
	}

	// APIs and their review.
	var api, appr struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis", w.provider, weather("hooked"), &api)
	e.must(http.StatusOK, "PATCH", "/v1/apis/"+api.ID, w.provider, map[string]any{"description": "Hooked forecasts."}, nil)
	e.must(http.StatusOK, "POST", "/v1/apis/"+api.ID+"/signing-secret/rotate", w.provider, nil, nil)
	e.must(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/submit", w.provider, map[string]any{"priority": "high", "note": "ready"}, &appr)
	e.must(http.StatusCreated, "POST", "/v1/approvals/"+appr.ID+"/comments", w.provider, map[string]any{"comment": "Docs are up."}, nil)
	e.must(http.StatusOK, "POST", "/v1/admin/approvals/"+appr.ID+"/escalate", admin, nil, nil)
	e.must(http.StatusOK, "POST", "/v1/admin/approvals/"+appr.ID+"/approve", admin, map[string]any{"reason": "Looks good."}, nil)
	forceState(t, e, api.ID, "failed")
	e.must(http.StatusAccepted, "POST", "/v1/admin/apis/"+api.ID+"/retry", admin, map[string]any{"reason": "Upstream fixed."}, nil)
	var doomed struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis", w.provider, weather("doomed"), &doomed)
	e.must(http.StatusNoContent, "DELETE", "/v1/apis/"+doomed.ID, w.provider, nil, nil)

	// Plans.
	quota := map[string]any{"currency": "USD", "quota_requests": 1000, "quota_hard": true}
	basic := w.plan(t, w.apiID, "hooked-basic", "active", quota)
	e.must(http.StatusOK, "PATCH", "/v1/plans/"+basic, w.provider, map[string]any{"description": "With a quota."}, nil)
	e.must(http.StatusCreated, "POST", "/v1/plans/"+basic+"/versions", w.provider, map[string]any{"terms": quota}, nil)
	pro := w.plan(t, w.apiID, "hooked-pro", "active", map[string]any{"currency": "USD", "quota_requests": 5000})

	// Promotions.
	var promo struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/promotions", w.provider, map[string]any{"code": "HOOKED", "kind": "percent_off", "value": "10", "stackable": true}, &promo)
	e.must(http.StatusOK, "PATCH", "/v1/promotions/"+promo.ID, w.provider, map[string]any{"description": "Ten percent off."}, nil)

	// Subscriptions, quotas and keys.
	var sub struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/subscriptions", w.buyer, map[string]any{"plan_id": basic}, &sub)
	w.subID = sub.ID
	e.must(http.StatusCreated, "POST", "/v1/subscriptions/"+sub.ID+"/promotions", w.buyer, map[string]any{"code": "HOOKED"}, nil)
	e.must(http.StatusOK, "DELETE", "/v1/subscriptions/"+sub.ID+"/promotions/"+promo.ID, w.buyer, nil, nil)
	e.must(http.StatusCreated, "POST", "/v1/subscriptions/"+sub.ID+"/quota/credits", w.provider, map[string]any{"requests": 50, "reason": "Outage."}, nil)
	key := w.activeKey(t, map[string]any{"name": "ci"})
	e.must(http.StatusOK, "PATCH", "/v1/keys/"+key, w.buyer, map[string]any{"name": "ci-2", "rate_per_second": 5}, nil)
	e.must(http.StatusOK, "POST", "/v1/keys/"+key+"/suspend", w.buyer, map[string]any{"reason": "Leaked?"}, nil)
	e.must(http.StatusOK, "POST", "/v1/keys/"+key+"/resume", w.buyer, nil, nil)
	e.must(http.StatusCreated, "POST", "/v1/keys/"+key+"/rotate", w.buyer, map[string]any{"grace_seconds": 0}, nil)
	other := w.key(t, map[string]any{"name": "spare"})["id"].(string)
	e.must(http.StatusOK, "POST", "/v1/keys/"+other+"/revoke", w.buyer, map[string]any{"reason": "Not needed."}, nil)
	doomedKey := w.key(t, map[string]any{"name": "doomed"})["id"].(string)
	e.must(http.StatusNoContent, "DELETE", "/v1/keys/"+doomedKey, w.buyer, nil, nil)
	e.must(http.StatusOK, "POST", "/v1/subscriptions/"+sub.ID+"/plan", w.buyer, map[string]any{"plan_id": pro}, nil)
	e.must(http.StatusOK, "POST", "/v1/admin/subscriptions/"+sub.ID+"/suspend", admin, map[string]any{"reason": "Abuse report."}, nil)
	e.must(http.StatusOK, "POST", "/v1/admin/subscriptions/"+sub.ID+"/resume", admin, nil, nil)
	e.must(http.StatusOK, "POST", "/v1/subscriptions/"+sub.ID+"/cancel", w.buyer, map[string]any{"at_period_end": true}, nil)
	e.must(http.StatusOK, "POST", "/v1/subscriptions/"+sub.ID+"/cancel", w.buyer, nil, nil)

	// Invoices and payments, as the contract test drives them.
	exercisePayments(t, e, newContract(t, e.Server.URL), w.provider, w.outsider, admin)

	// Every payload recorded for delivery, against its type's schema.
	compiled := webhookSchemas(t)
	rows, err := e.Pool.Query(t.Context(), `SELECT event_type, payload::text FROM webhook_deliveries ORDER BY created_at, id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[string]int{}
	for rows.Next() {
		var typ, payload string
		if err := rows.Scan(&typ, &payload); err != nil {
			t.Fatal(err)
		}
		seen[typ]++
		s := compiled[typ]
		if s == nil {
			t.Errorf("a %s delivery has no schema in the document", typ)
			continue
		}
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(payload))
		if err != nil {
			t.Fatalf("decode the %s payload %s: %v", typ, payload, err)
		}
		if err := s.Validate(inst); err != nil {
			t.Errorf("the %s payload does not match webhooks[%q] of schemas/openapi.json: %v\n\tpayload: %.1500s", typ, typ, err, payload)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// The types this flow publishes; the others are checked by the
	// document alone.
	want := []string{
		"api.created", "api.updated", "api.deleted", "api.state_changed",
		"approval.submitted", "approval.decided", "approval.escalated", "approval.commented",
		"plan.created", "plan.updated", "plan.version_created",
		"promotion.created", "promotion.updated", "promotion.redeemed", "promotion.ended",
		"subscription.created", "subscription.updated", "subscription.plan_changed",
		"subscription.suspended", "subscription.active", "subscription.canceled", "quota.adjusted",
		"key.created", "key.updated", "key.deleted", "key.activated", "key.suspended", "key.revoked", "key.rotated",
		"invoice.paid", "payment.succeeded", "payment.failed", "payment.refunded",
	}
	for _, typ := range want {
		if seen[typ] == 0 {
			t.Errorf("no %s payload was published; want one to validate", typ)
		}
	}
	t.Logf("validated payloads by type: %v", seen)
	paymentsAsREST(t, e, admin)
}

// paymentsAsREST: a payment.* webhook's data is the payment as the REST
// API answers it, with the organizations it is between. Compared for
// the payments the flow leaves succeeded, each of which it last changed
// by a change it announced (a refund, a payment marked paid).
func paymentsAsREST(t *testing.T, e *testEnv, admin string) {
	t.Helper()
	rows, err := e.Pool.Query(t.Context(), `
		SELECT DISTINCT ON (p.id) p.invoice_id::text, p.issuer_id::text, p.customer_id::text, d.event_type, (d.payload->'data')::text
		FROM webhook_deliveries d JOIN payments p ON p.id::text = d.payload->'data'->>'id'
		WHERE d.event_type LIKE 'payment.%' AND p.status = 'succeeded'
		ORDER BY p.id, d.created_at DESC, d.id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	compared := 0
	for rows.Next() {
		var invoice, issuer, customer, typ, payload string
		if err := rows.Scan(&invoice, &issuer, &customer, &typ, &payload); err != nil {
			t.Fatal(err)
		}
		var data, rest map[string]any
		if err := json.Unmarshal([]byte(payload), &data); err != nil {
			t.Fatalf("decode the %s data %s: %v", typ, payload, err)
		}
		if data["issuer_id"] != issuer || data["customer_id"] != customer {
			t.Errorf("%s data issuer_id, customer_id = %v, %v; want %s, %s", typ, data["issuer_id"], data["customer_id"], issuer, customer)
		}
		delete(data, "issuer_id")
		delete(data, "customer_id")
		e.must(http.StatusOK, "GET", "/v1/invoices/"+invoice+"/payment", admin, nil, &rest)
		if !reflect.DeepEqual(data, rest) {
			t.Errorf("the last %s data of invoice %s without its organizations = %s; want GET /v1/invoices/%s/payment = %v",
				typ, invoice, payload, invoice, rest)
		}
		compared++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if compared < 2 {
		t.Errorf("compared %d payments' webhooks with the REST API; want the flow's refunded and marked paid ones", compared)
	}
}

// TestOpenAPIWebhookPaymentRefusesDrift: the document's payment.* schema
// accepts the payment as the REST API renders it, with its organizations,
// and refuses a payload that gains, loses, renames or retypes a member,
// at the top or in an attempt: such a drift fails
// TestOpenAPIWebhookPayloadsMatch instead of going out undescribed.
func TestOpenAPIWebhookPaymentRefusesDrift(t *testing.T) {
	t.Parallel()
	schema := webhookSchemas(t)["payment.succeeded"]
	valid := func() map[string]any {
		return map[string]any{"type": "payment.succeeded", "timestamp": "2026-12-08T10:00:00.123456789Z", "data": map[string]any{
			"id": "0b9c7a52-3c1e-4a57-9d7e-3f0d2a6f1e01", "invoice_id": "0b9c7a52-3c1e-4a57-9d7e-3f0d2a6f1e02",
			"issuer_id": "0b9c7a52-3c1e-4a57-9d7e-3f0d2a6f1e03", "customer_id": "0b9c7a52-3c1e-4a57-9d7e-3f0d2a6f1e04",
			"provider": "stripe", "status": "succeeded", "currency": "EUR",
			"amount": "12.50", "amount_refunded": "0.00", "amount_disputed_lost": "0.00",
			"attempts": []any{map[string]any{"attempt_no": 1, "status": "succeeded", "provider_payment_id": "pi_1",
				"failure_code": "", "decline_code": "", "failure_message": "", "reference": "",
				"created_at": "2026-12-08T09:59:58.5Z", "finished_at": "2026-12-08T10:00:00Z"}},
			"next_attempt_at": nil, "succeeded_at": "2026-12-08T10:00:00.123456Z", "attention_reason": nil,
		}}
	}
	validate := func(payload map[string]any) error {
		b, err := json.Marshal(payload)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return schema.Validate(inst)
	}
	if err := validate(valid()); err != nil {
		t.Fatalf("the REST API's payment with its organizations does not match webhooks[payment.succeeded]: %v", err)
	}
	attempt := func(d map[string]any) map[string]any { return d["attempts"].([]any)[0].(map[string]any) }
	for _, tc := range []struct {
		name  string
		drift func(d map[string]any)
	}{
		{"a member gained", func(d map[string]any) { d["fee"] = "0.30" }},
		{"a member lost", func(d map[string]any) { delete(d, "amount_refunded") }},
		{"an organization lost", func(d map[string]any) { delete(d, "customer_id") }},
		{"a Go field name", func(d map[string]any) { d["ID"] = d["id"]; delete(d, "id") }},
		{"an amount as a number", func(d map[string]any) { d["amount"] = 12.5 }},
		{"an amount in minor units", func(d map[string]any) { d["amount"] = map[string]any{"Minor": 1250, "Currency": "EUR"} }},
		{"the attempts as a count", func(d map[string]any) { d["attempts"] = 1 }},
		{"an attempt's member gained", func(d map[string]any) { attempt(d)["card_last4"] = "4242" }},
		{"an attempt's member lost", func(d map[string]any) { delete(attempt(d), "failure_code") }},
		{"a time as a number", func(d map[string]any) { d["succeeded_at"] = 1796724000 }},
	} {
		payload := valid()
		tc.drift(payload["data"].(map[string]any))
		if validate(payload) == nil {
			t.Errorf("webhooks[payment.succeeded] accepts a payment with %s; want it refused", tc.name)
		}
	}
}
