package httpapi_test

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// authzPayoutRows: the payouts statement is its issuer's providers' and
// the admins'; the issuer's consumers are forbidden, others find nothing.
func authzPayoutRows() []authzRow {
	return []authzRow{{
		route:   "GET /v1/payouts",
		fixture: func(_ *testing.T, c *authzCase) { c.id = c.owner.orgID },
		query:   func(c *authzCase) string { return "issuer_id=" + c.owner.orgID + "&month=2026-11" },
		want:    authzWant{{401, 401}, {403, 404}, {200, 404}, {200, 200}},
	}}
}

// exercisePayouts reads acme's statement of this month, which
// exercisePayments filled (a payment at Stripe refunded in part, one
// marked paid by hand by acme's provider: paid to the issuer, not
// collected), as JSON and CSV, against the document.
func exercisePayouts(t *testing.T, e *testEnv, c *contract, prov, cons, other, admin string) {
	t.Helper()
	acme := e.orgOf(prov)
	month := time.Now().UTC().Format("2006-01")
	var p struct {
		Totals []struct {
			Currency  string `json:"currency"`
			Payments  int    `json:"payments"`
			Refunds   int    `json:"refunds"`
			Collected string `json:"collected"`
			Refunded  string `json:"refunded"`
			ToIssuerN int    `json:"paid_to_issuer_payments"`
			ToIssuer  string `json:"paid_to_issuer"`
		} `json:"totals"`
	}
	c.call(http.StatusOK, "GET", "/v1/payouts?month="+month, prov, nil).decode(&p)
	if len(p.Totals) != 1 || p.Totals[0].Payments != 1 || p.Totals[0].Collected != "12.50" || p.Totals[0].Refunded != "2.50" ||
		p.Totals[0].ToIssuerN != 1 || p.Totals[0].ToIssuer != "5.00" {
		t.Errorf("getPayouts totals = %+v; want EUR 12.50 collected from 1 payment, 2.50 refunded, 5.00 paid to the issuer", p.Totals)
	}
	if got := c.call(http.StatusOK, "GET", "/v1/payouts?format=csv&month="+month, prov, nil); !strings.HasPrefix(got.Header.Get("Content-Type"), "text/csv") {
		t.Errorf("getPayouts?format=csv Content-Type = %q; want text/csv", got.Header.Get("Content-Type"))
	}
	c.call(http.StatusOK, "GET", "/v1/payouts?month="+month, prov, nil, "Accept", "text/csv")
	c.call(http.StatusOK, "GET", "/v1/payouts?format=json&issuer_id="+acme+"&month="+month, admin, nil)
	c.call(http.StatusForbidden, "GET", "/v1/payouts?month="+month, cons, nil)
	c.call(http.StatusNotFound, "GET", "/v1/payouts?issuer_id="+acme+"&month="+month, other, nil)
	c.call(http.StatusUnprocessableEntity, "GET", "/v1/payouts?month="+month, admin, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/payouts?month=2026-13", prov, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/payouts", prov, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/payouts?month="+month+"&format=xlsx", prov, nil)
}

// payoutGet sends a GET with the given headers and returns the answer's
// status, content type and body.
func payoutGet(t *testing.T, e *testEnv, path, tok string, header ...string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", e.Server.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// TestPayoutsRoute: the statement as JSON and as CSV (asked by format or
// Accept) tells the same totals, a provider's id that reads as a formula
// stays text, and another organization's provider finds nothing.
func TestPayoutsRoute(t *testing.T) {
	e := newTestEnv(t)
	ctx := t.Context()
	prov := e.token("payout-acme", "alice", identity.RoleProvider)
	buyer := e.token("payout-initech", "ivy", identity.RoleConsumer)
	other := e.token("payout-globex", "dave", identity.RoleProvider)
	acme, initech := e.orgOf(prov), e.orgOf(buyer)
	e.orgOf(other)
	if _, err := e.Pool.Exec(ctx, `INSERT INTO issuer_settings (organization_id, platform_fee_percent) VALUES ($1, 10)`, acme); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	invoices := []string{e.openInvoice(acme, initech, "12.34"), e.openInvoice(acme, initech, "0.05"), taxedInvoice(t, e, acme, initech)}
	for _, inv := range invoices {
		_, err := e.Pool.Exec(ctx, `WITH p AS (
				INSERT INTO payments (invoice_id, issuer_id, customer_id, provider, amount, currency, status, succeeded_at)
				SELECT id, issuer_id, customer_id, 'stripe', (amount_due * 100)::bigint, currency, 'succeeded', $2 FROM invoices WHERE id = $1
				RETURNING id, invoice_id, amount)
			INSERT INTO payment_refunds (payment_id, invoice_id, amount, currency, actor, idempotency_key, provider_refund_id, status, updated_at,
				succeeded_at)
			SELECT id, invoice_id, 1, 'EUR', 'alice', 'veil-refund-' || gen_random_uuid(), '@SUM(A1)' || gen_random_uuid(), 'succeeded', $2, $2
			FROM p WHERE amount > 100`, inv, at)
		if err != nil {
			t.Fatal(err)
		}
	}
	path := "/v1/payouts?month=2026-11"
	status, _, body := payoutGet(t, e, path, prov)
	var p struct {
		Totals []map[string]any `json:"totals"`
	}
	if err := json.Unmarshal(body, &p); status != http.StatusOK || err != nil || len(p.Totals) != 1 {
		t.Fatalf("GET %s = %d %s; want one currency's total", path, status, body)
	}
	// 12.34, 0.05 and 121.00 (21.00 of it tax) collected, 0.01 of two
	// refunded; 10%: 1.234 → 1.23, 0.005 → 0.01 and 10.00 of the 100.00
	// without tax, rounded per payment.
	want := map[string]any{"currency": "EUR", "payments": 3.0, "refunds": 2.0, "disputes": 0.0, "collected": "133.39",
		"refunded": "0.02", "disputes_lost": "0.00", "platform_fee": "11.24", "owed": "122.13", "credit_refunds": 0.0,
		"refunded_to_credit": "0.00"}
	for k, v := range want {
		if p.Totals[0][k] != v {
			t.Errorf("GET %s total %s = %v; want %v", path, k, p.Totals[0][k], v)
		}
	}
	for _, ask := range [][]string{{path + "&format=csv"}, {path, "Accept", "application/xml, text/csv;q=0.9, application/json;q=0.5"}} {
		status, ctype, body := payoutGet(t, e, ask[0], prov, ask[1:]...)
		if status != http.StatusOK || !strings.HasPrefix(ctype, "text/csv") {
			t.Fatalf("GET %v = %d %s; want CSV", ask, status, ctype)
		}
		rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		fee, last := decimal.Zero, rows[len(rows)-1]
		for _, r := range rows[1 : len(rows)-1] {
			if r[2] == "payment" {
				fee = fee.Add(decimal.RequireFromString(r[15]))
			}
			if r[2] == "refund" && !strings.HasPrefix(r[8], "'@SUM(A1)") {
				t.Errorf("CSV refund reference = %q; want it quoted", r[8])
			}
		}
		if last[2] != "total" || last[15] != "11.24" || !fee.Equal(decimal.RequireFromString("11.24")) || last[16] != "133.39" || last[19] != "122.13" {
			t.Errorf("GET %v CSV rows %q; want the JSON's totals", ask, rows)
		}
	}
	if status, ctype, _ := payoutGet(t, e, path, prov, "Accept", "text/csv;q=0, application/json"); !strings.HasPrefix(ctype, "application/json") {
		t.Errorf("GET %s refusing CSV = %d %s; want JSON", path, status, ctype)
	}
	if status, _, _ := payoutGet(t, e, path+"&issuer_id="+acme, other); status != http.StatusNotFound {
		t.Errorf("GET %s as another organization's provider = %d; want 404", path, status)
	}
	// The revenue statement of the same invoices (each of its own API, so
	// one line each) charges the same fee.
	now := time.Now().UTC()
	var rev struct {
		Totals []struct {
			PlatformFee string `json:"platform_fee"`
		} `json:"totals"`
	}
	e.must(http.StatusOK, "GET", "/v1/revenue?from="+now.Add(-time.Hour).Format(time.RFC3339)+"&to="+now.Add(time.Hour).Format(time.RFC3339),
		prov, nil, &rev)
	if len(rev.Totals) != 1 || rev.Totals[0].PlatformFee != "11.24" {
		t.Errorf("revenue statement of the invoices paid = %+v; want the payouts' fee, 11.24", rev.Totals)
	}
}

// taxedInvoice makes an open invoice of 100.00 and 21.00 tax from issuer
// to customer, as finalization leaves it.
func taxedInvoice(t *testing.T, e *testEnv, issuer, customer string) string {
	t.Helper()
	var id string
	slug := "taxed-" + testenv.Suffix()
	err := e.Pool.QueryRow(t.Context(), `WITH a AS (
			INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
			VALUES ($1, $3, $3, 'https://upstream.example', 'v1', 'prov') RETURNING id),
		p AS (INSERT INTO plans (api_id, name, slug) SELECT id, 'Pro', 'pro' FROM a RETURNING id),
		v AS (INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, net_days, created_by)
			SELECT id, 1, 'subscription', 'EUR', 100, 30, 'prov' FROM p RETURNING id),
		s AS (INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
			SELECT $2, 'cust', a.id, v.id, now(), now() + interval '1 month' FROM a, v RETURNING id)
		INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end,
			subtotal, tax, total, amount_due, finalized_at, due_at)
		SELECT $1, $2, s.id, 'open', 'INV-' || $3, 'EUR', now() - interval '1 month', now(), 100, 21, 121, 121, now(), now()
		FROM s RETURNING id::text`, issuer, customer, slug).Scan(&id)
	if err != nil {
		t.Fatalf("make a taxed invoice: %v", err)
	}
	return id
}
