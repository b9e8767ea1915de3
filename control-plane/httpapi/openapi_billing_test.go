package httpapi_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/ledongthuc/pdf"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/identity"
)

// billingFixture is an active API of acme with a plan version of a 10 EUR
// base fee, and hooli's subscriptions to it, each with a closed and
// snapshotted January, as the billing cycle leaves them.
type billingFixture struct {
	t       *testing.T
	e       *testEnv
	api     uuid.UUID
	version uuid.UUID
	buyer   uuid.UUID
}

func newBillingFixture(t *testing.T, e *testEnv, c *contract, prov, buyer string) *billingFixture {
	t.Helper()
	f := &billingFixture{t: t, e: e}
	var api struct{ ID string }
	c.call(http.StatusCreated, "POST", "/v1/apis", prov, weather("billed")).decode(&api)
	forceState(t, e, api.ID, "active")
	f.api = uuid.MustParse(api.ID)
	var me struct {
		OrganizationID string `json:"organization_id"`
	}
	c.call(http.StatusOK, "GET", "/v1/me", buyer, nil).decode(&me)
	f.buyer = uuid.MustParse(me.OrganizationID)
	var plan uuid.UUID
	f.scan(&plan, `INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Billed', 'billed', 'active') RETURNING id`, f.api)
	f.scan(&f.version, `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, net_days, created_by)
		VALUES ($1, 1, 'subscription', 'EUR', 10, 14, 'alice') RETURNING id`, plan)
	return f
}

func (f *billingFixture) scan(dst any, sql string, args ...any) {
	f.t.Helper()
	if err := f.e.Pool.QueryRow(f.t.Context(), sql, args...).Scan(dst); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

// closedPeriod subscribes the buyer and closes its January with an empty
// snapshot; it returns the subscription. The buyer may hold one live
// subscription to the API: all but the live one are canceled at the
// period's end.
func (f *billingFixture) closedPeriod(live bool) uuid.UUID {
	f.t.Helper()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	end := start.AddDate(0, 1, 0)
	var sub, period uuid.UUID
	status, canceled := "canceled", &end
	if live {
		status, canceled = "active", nil
	}
	f.scan(&sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status, canceled_at,
		current_period_start, current_period_end) VALUES ($1, 'hank', $2, $3, $4, $5, $6, $7) RETURNING id`,
		f.buyer, f.api, f.version, status, canceled, end, end.AddDate(0, 1, 0))
	f.scan(&period, `INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'active', $3, 'hank') RETURNING subscription_id`, sub, f.version, start)
	f.scan(&period, `INSERT INTO billing_periods (subscription_id, period_start, period_end, state, closed_at)
		VALUES ($1, $2, $3, 'closed', $3) RETURNING id`, sub, start, end)
	f.scan(&period, `INSERT INTO usage_snapshots (billing_period_id) VALUES ($1) RETURNING billing_period_id`, period)
	return sub
}

// exerciseBilling drives the billing routes through the contract: acme's
// provider (prov) issues invoices to hooli (buyer); acme's consumer (cons)
// and globex's provider (other) see none of hooli's.
func exerciseBilling(t *testing.T, e *testEnv, c *contract, prov, cons, other, admin string) {
	t.Helper()
	buyer := e.token("hooli", "hank", identity.RoleConsumer)
	f := newBillingFixture(t, e, c, prov, buyer)
	missing := uuid.NewString()
	var acme struct {
		OrganizationID string `json:"organization_id"`
	}
	c.call(http.StatusOK, "GET", "/v1/me", prov, nil).decode(&acme)
	hooli := f.buyer.String()

	// Profiles, settings and tax rules before any invoice cites them.
	profile := "/v1/organizations/" + hooli + "/billing-profile"
	c.call(http.StatusNotFound, "GET", profile, buyer, nil)
	c.call(http.StatusOK, "PUT", profile, buyer, map[string]any{"legal_name": "Hooli <Inc>", "address_line1": "1 Main St", "city": "Palo Alto",
		"postal_code": "94301", "country": "US", "region": "CA", "email": "ap@hooli.example"})
	c.call(http.StatusOK, "GET", profile, buyer, nil)
	c.call(http.StatusNotFound, "GET", profile, other, nil)
	c.call(http.StatusUnprocessableEntity, "PUT", profile, buyer, map[string]any{"legal_name": "H", "country": "XX", "email": "nope"})
	settings := "/v1/organizations/" + acme.OrganizationID + "/billing-settings"
	c.call(http.StatusOK, "GET", settings, prov, nil)
	c.call(http.StatusOK, "PUT", settings, prov, map[string]any{"invoice_prefix": "acme"})
	c.call(http.StatusForbidden, "PUT", settings, prov, map[string]any{"platform_fee_percent": "50"})
	c.call(http.StatusNotFound, "GET", settings, other, nil)
	c.call(http.StatusOK, "PUT", "/v1/admin/organizations/"+acme.OrganizationID+"/billing-settings", admin, map[string]any{"platform_fee_percent": "2.5"})
	rules := "/v1/organizations/" + acme.OrganizationID + "/tax-rules"
	var usRule, deRule struct{ ID string }
	c.call(http.StatusCreated, "POST", rules, prov, map[string]any{"country": "US", "region": "CA", "name": "Sales tax", "rate_percent": "7.25",
		"effective_from": "2025-01-01T00:00:00Z"}).decode(&usRule)
	c.call(http.StatusConflict, "POST", rules, prov, map[string]any{"country": "US", "region": "CA", "rate_percent": "8", "effective_from": "2025-01-01T00:00:00Z"})
	c.call(http.StatusCreated, "POST", rules, prov, map[string]any{"country": "DE", "rate_percent": "19", "inclusive": true}).decode(&deRule)
	c.call(http.StatusForbidden, "POST", rules, cons, map[string]any{"country": "FR", "rate_percent": "20"})
	c.call(http.StatusUnprocessableEntity, "POST", rules, prov, map[string]any{"country": "ZZ", "rate_percent": "120"})
	c.call(http.StatusOK, "GET", rules, prov, nil)
	c.call(http.StatusNotFound, "GET", rules, other, nil)
	c.call(http.StatusNoContent, "DELETE", rules+"/"+deRule.ID, prov, nil)
	c.call(http.StatusNotFound, "DELETE", rules+"/"+deRule.ID, prov, nil)

	// Three January invoices, built as the billing job builds them.
	subs := []uuid.UUID{f.closedPeriod(false), f.closedPeriod(false), f.closedPeriod(true)}
	// Drafts under review: the routes finalize them.
	svc, err := billing.New(billing.Config{Pool: e.Pool, Review: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := svc.BuildDrafts(t.Context(), 10); err != nil || n != 3 {
		t.Fatalf("BuildDrafts = %d, %v; want 3", n, err)
	}
	var drafts struct {
		Data []struct {
			ID, Status, Total string
		}
		NextCursor string `json:"next_cursor"`
	}
	c.call(http.StatusOK, "GET", "/v1/invoices?status=draft&limit=2", buyer, nil).decode(&drafts)
	if len(drafts.Data) != 2 || drafts.NextCursor == "" || drafts.Data[0].Total != "10.73" {
		t.Fatalf("listInvoices = %+v; want 2 drafts of 10.73 (10.00 + 7.25%% tax) and a next page", drafts)
	}
	c.call(http.StatusOK, "GET", "/v1/invoices?cursor="+drafts.NextCursor, buyer, nil)
	c.call(http.StatusOK, "GET", "/v1/invoices?subscription_id="+subs[0].String()+"&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z", prov, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/invoices?status=late", buyer, nil)
	c.call(http.StatusUnprocessableEntity, "GET", "/v1/invoices?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", buyer, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/invoices?subscription_id=x&limit=1000", buyer, nil)
	c.call(http.StatusBadRequest, "GET", "/v1/invoices?cursor=nope", buyer, nil)
	var others struct{ Data []any }
	c.call(http.StatusOK, "GET", "/v1/invoices", other, nil).decode(&others)
	if len(others.Data) != 0 {
		t.Errorf("listInvoices as globex = %d invoices; want none", len(others.Data))
	}
	id := func(sub uuid.UUID) string {
		var inv uuid.UUID
		f.scan(&inv, `SELECT id FROM invoices WHERE subscription_id = $1`, sub)
		return inv.String()
	}
	a, b, d := "/v1/invoices/"+id(subs[0]), "/v1/invoices/"+id(subs[1]), "/v1/invoices/"+id(subs[2])
	c.call(http.StatusOK, "GET", a, buyer, nil)
	c.call(http.StatusNotFound, "GET", a, other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/invoices/"+missing, prov, nil)

	// Finalizing, and the state changes after it.
	c.call(http.StatusForbidden, "POST", a+"/finalize", buyer, nil)
	var fin struct{ Number string }
	c.call(http.StatusOK, "POST", a+"/finalize", prov, nil).decode(&fin)
	if !strings.HasPrefix(fin.Number, "ACME-") {
		t.Errorf("finalizeInvoice number = %q; want ACME-…", fin.Number)
	}
	c.call(http.StatusConflict, "POST", a+"/finalize", prov, nil)
	c.call(http.StatusNotFound, "POST", a+"/finalize", other, nil)
	c.call(http.StatusOK, "POST", b+"/finalize", admin, nil)
	c.call(http.StatusOK, "POST", d+"/finalize", prov, nil, "Idempotency-Key", "finalize-d")
	pdf := c.call(http.StatusOK, "GET", a+"/pdf", buyer, nil)
	if !bytes.HasPrefix(pdf.Body, []byte("%PDF-")) || pdf.Header.Get("Content-Type") != "application/pdf" {
		t.Fatalf("getInvoicePDF = %s, %q…; want application/pdf", pdf.Header.Get("Content-Type"), pdf.Body[:min(8, len(pdf.Body))])
	}
	if text := pdfText(t, pdf.Body); !strings.Contains(text, fin.Number) || !strings.Contains(text, "10.73 EUR") || !strings.Contains(text, "Hooli <Inc>") {
		t.Errorf("getInvoicePDF's text lacks the number %s, the total 10.73 EUR or the customer:\n%s", fin.Number, text)
	}
	c.call(http.StatusNotFound, "GET", a+"/pdf", other, nil)
	html := c.call(http.StatusOK, "GET", a+"/html", prov, nil)
	if !strings.Contains(string(html.Body), "Hooli &lt;Inc&gt;") || !strings.Contains(string(html.Body), fin.Number) {
		t.Errorf("getInvoiceHTML lacks the escaped customer or the number")
	}
	c.call(http.StatusNotFound, "GET", a+"/html", other, nil)
	c.call(http.StatusForbidden, "POST", a+"/void", buyer, nil)
	c.call(http.StatusOK, "POST", a+"/void", prov, nil)
	c.call(http.StatusConflict, "POST", a+"/void", prov, nil)
	c.call(http.StatusForbidden, "POST", "/v1/admin/invoices/"+id(subs[1])+"/mark-paid", prov, nil)
	c.call(http.StatusOK, "POST", "/v1/admin/invoices/"+id(subs[1])+"/mark-paid", admin, nil)
	c.call(http.StatusConflict, "POST", "/v1/admin/invoices/"+id(subs[1])+"/mark-paid", admin, nil)
	c.call(http.StatusNotFound, "POST", "/v1/admin/invoices/"+missing+"/mark-paid", admin, nil)
	c.call(http.StatusOK, "POST", d+"/mark-uncollectible", prov, nil)
	c.call(http.StatusConflict, "POST", d+"/mark-uncollectible", prov, nil)
	c.call(http.StatusForbidden, "POST", b+"/mark-uncollectible", buyer, nil)
	c.call(http.StatusNotFound, "POST", b+"/void", other, nil)
	// The US rule taxed finalized invoices: it is ended, not deleted.
	c.call(http.StatusOK, "DELETE", rules+"/"+usRule.ID, prov, nil)

	// The preview needs ClickHouse, which this control plane runs without.
	preview := "/v1/subscriptions/" + subs[2].String() + "/preview"
	c.call(http.StatusServiceUnavailable, "GET", preview, buyer, nil)
	c.call(http.StatusNotFound, "GET", preview, other, nil)

	// Corrections, credits and revenue.
	adjustments := "/v1/subscriptions/" + subs[2].String() + "/adjustments"
	c.call(http.StatusCreated, "POST", adjustments, prov, map[string]any{"amount": "-1.50", "currency": "EUR", "reason": "outage credit"})
	c.call(http.StatusForbidden, "POST", adjustments, buyer, map[string]any{"amount": "-1.50", "currency": "EUR", "reason": "mine"})
	c.call(http.StatusNotFound, "POST", adjustments, other, map[string]any{"amount": "1.00", "currency": "EUR", "reason": "x"})
	c.call(http.StatusUnprocessableEntity, "POST", adjustments, prov, map[string]any{"amount": "1.001", "currency": "EUR", "reason": "x"})
	c.call(http.StatusOK, "GET", adjustments, buyer, nil)
	c.call(http.StatusNotFound, "GET", adjustments, other, nil)
	c.call(http.StatusCreated, "POST", "/v1/credits", prov, map[string]any{"customer_id": hooli, "currency": "EUR", "amount": "5.00", "reason": "sorry"})
	c.call(http.StatusNotFound, "POST", "/v1/credits", other, map[string]any{"customer_id": hooli, "currency": "EUR", "amount": "5.00", "reason": "x"})
	c.call(http.StatusUnprocessableEntity, "POST", "/v1/credits", prov, map[string]any{"customer_id": hooli, "currency": "EUR", "amount": "-5", "reason": "x"})
	c.call(http.StatusOK, "GET", "/v1/credits", buyer, nil)
	c.call(http.StatusOK, "GET", "/v1/credits?issuer_id="+acme.OrganizationID+"&customer_id="+hooli, admin, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/credits?issuer_id=acme", admin, nil)
	c.call(http.StatusOK, "GET", "/v1/credits/ledger?issuer_id="+acme.OrganizationID+"&limit=1", buyer, nil)
	c.call(http.StatusOK, "GET", "/v1/credits/ledger?customer_id="+hooli, prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/credits/ledger?issuer_id="+acme.OrganizationID+"&customer_id="+hooli, other, nil)
	c.call(http.StatusBadRequest, "GET", "/v1/credits/ledger?customer_id="+hooli+"&cursor=x", prov, nil)
	c.call(http.StatusOK, "GET", "/v1/revenue?from=2026-01-01T00:00:00Z", prov, nil)
	c.call(http.StatusForbidden, "GET", "/v1/revenue", cons, nil)
	c.call(http.StatusUnprocessableEntity, "GET", "/v1/revenue", admin, nil)
	c.call(http.StatusUnprocessableEntity, "GET", "/v1/revenue?from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", prov, nil)
	c.call(http.StatusOK, "GET", "/v1/revenue?issuer_id="+acme.OrganizationID, admin, nil)
}

// pdfText extracts a PDF's text, as a reader of the file would.
func pdfText(t *testing.T, b []byte) string {
	t.Helper()
	r, err := pdf.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("read pdf: %v", err)
	}
	plain, err := r.GetPlainText()
	if err != nil {
		t.Fatalf("extract pdf text: %v", err)
	}
	out, err := io.ReadAll(plain)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
