package main

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/internal/testenv"
)

// newConsumerPlane is newPortalPlane with webhook endpoints allowed on
// loopback (the tests' receivers) and, with usage, a fresh, migrated
// ClickHouse database behind its usage reads (analytics, preview) and a
// writer of usage into it.
func newConsumerPlane(t *testing.T, usage bool) (*portalPlane, *usageWriter) {
	t.Helper()
	var writer *usageWriter
	var chAddr, chDB string
	if usage {
		var conn driver.Conn
		conn, chAddr, chDB = testenv.ClickHouseDB(t)
		writer = &usageWriter{t: t, conn: conn}
	}
	pp := newPortalPlaneWith(t, func(cp *controlPlaneFlags) {
		cp.clickhouseAddr, cp.clickhouseDB = chAddr, chDB
		cp.webhookPrivate = true
	})
	return pp, writer
}

// usageWriter writes gateway calls into usage_events as the processors
// would.
type usageWriter struct {
	t    *testing.T
	conn driver.Conn
	n    int
}

// call is one gateway call of a subscription's key.
type call struct {
	at      time.Time
	status  uint16
	latency uint32
	units   string
}

func (u *usageWriter) write(subID, apiID, keyID string, calls []call) {
	u.t.Helper()
	batch, err := u.conn.PrepareBatch(u.t.Context(), `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
		status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		u.t.Fatalf("prepare usage insert: %v", err)
	}
	for _, c := range calls {
		u.n++
		if err := batch.Append(fmt.Sprintf("ev-%d", u.n), "/gateway", "veil.api.request", subID, c.at.UTC(), apiID, keyID, "GET", "/forecast", "/forecast",
			c.status, c.latency, uint64(10), uint64(100), decimal.RequireFromString(c.units), c.at.UTC(), int32(0), int64(u.n)); err != nil {
			u.t.Fatalf("append usage event: %v", err)
		}
	}
	if err := batch.Send(); err != nil {
		u.t.Fatalf("insert usage events: %v", err)
	}
}

// consumerSubscription subscribes the browser's consumer to apiID's plan
// through the portal and answers the subscription's id.
func consumerSubscription(t *testing.T, b *browser, apiID, planID string) string {
	t.Helper()
	apiPage := b.get("/catalog/" + apiID)
	sub := b.post("/catalog/"+apiID+"/subscribe", url.Values{"csrf": {apiPage.field(t, "csrf")}, "idem": {apiPage.field(t, "idem")}, "plan_id": {planID}})
	m := regexp.MustCompile(`^/subscriptions/([0-9a-f-]{36})$`).FindStringSubmatch(sub.header.Get("Location"))
	if sub.status != http.StatusSeeOther || m == nil {
		t.Fatalf("subscribe: %d %q %s", sub.status, sub.header.Get("Location"), sub.body)
	}
	return m[1]
}

// dataIsland decodes the chart data block id of a page.
func dataIsland(t *testing.T, p page, id string) (out struct {
	X      []int64 `json:"x"`
	Series []struct {
		Label  string    `json:"label"`
		Values []float64 `json:"values"`
	} `json:"series"`
}) {
	t.Helper()
	m := regexp.MustCompile(`<script type="application/json" id="` + id + `">([^<]*)</script>`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no data block %s on the page: %s", id, p.body)
	}
	if err := json.Unmarshal([]byte(m[1]), &out); err != nil {
		t.Fatalf("data block %s is not JSON: %v: %s", id, err, m[1])
	}
	if !strings.Contains(p.body, `data-chart="`+id+`"`) {
		t.Errorf("no figure draws the data block %s", id)
	}
	return out
}

// byDate is a chart series keyed by the UTC date of its x.
func byDate(x []int64, values []float64) map[string]float64 {
	out := map[string]float64{}
	for i, s := range x {
		out[time.Unix(s, 0).UTC().Format(time.DateOnly)] = values[i]
	}
	return out
}

// TestPortalConsumerUsage: the usage page of a subscription charts the
// calls, units, status classes and latency by day of what the gateway
// recorded, lists the routes and status classes, narrows to one key,
// shows the preview of the period, says what is wrong with a time zone
// next to its field, and is another organization's 404.
func TestPortalConsumerUsage(t *testing.T) {
	pp, usage := newConsumerPlane(t, true)
	apiID, planID := pp.activeAPI("Usage Weather")
	b := pp.browser()
	b.signIn("consumer")
	subID := consumerSubscription(t, b, apiID, planID)
	sam := devPersonas()[0].Principal
	var k1, k2 struct{ ID string }
	pp.api(sam, http.MethodPost, "/v1/subscriptions/"+subID+"/keys", map[string]any{"name": "one"}, &k1)
	pp.api(sam, http.MethodPost, "/v1/subscriptions/"+subID+"/keys", map[string]any{"name": "two"}, &k2)

	now := time.Now().UTC()
	today := now.Add(-2 * time.Minute)
	yesterday := today.Add(-24 * time.Hour)
	usage.write(subID, apiID, k1.ID, []call{
		{yesterday, 200, 10, "1.5"}, {yesterday, 200, 10, "1"},
		{today, 200, 40, "2"}, {today, 404, 40, "0"}, {today, 503, 40, "1"},
	})
	usage.write(subID, apiID, k2.ID, []call{{today, 200, 40, "4.25"}})

	page := b.get("/subscriptions/" + subID + "/usage?days=7&tz=UTC")
	if page.status != http.StatusOK {
		t.Fatalf("usage page: %d %s", page.status, page.body)
	}
	calls := dataIsland(t, page, "chart-calls")
	if len(calls.X) != 7 || len(calls.Series) != 1 {
		t.Fatalf("calls chart has %d days and %d series; want 7 days, 1 series", len(calls.X), len(calls.Series))
	}
	dToday, dYesterday := today.Format(time.DateOnly), yesterday.Format(time.DateOnly)
	got := byDate(calls.X, calls.Series[0].Values)
	if got[dToday] != 4 || got[dYesterday] != 2 {
		t.Errorf("calls by day = %v; want 4 on %s and 2 on %s", got, dToday, dYesterday)
	}
	units := dataIsland(t, page, "chart-units")
	if got := byDate(units.X, units.Series[0].Values); got[dToday] != 7.25 || got[dYesterday] != 2.5 {
		t.Errorf("units by day = %v; want 7.25 on %s and 2.5 on %s", got, dToday, dYesterday)
	}
	classes := dataIsland(t, page, "chart-classes")
	if len(classes.Series) != 3 {
		t.Fatalf("status class chart has %d series; want 3", len(classes.Series))
	}
	ok, c4, c5 := byDate(classes.X, classes.Series[0].Values), byDate(classes.X, classes.Series[1].Values), byDate(classes.X, classes.Series[2].Values)
	if ok[dToday] != 2 || c4[dToday] != 1 || c5[dToday] != 1 || ok[dYesterday] != 2 {
		t.Errorf("status classes on %s = %v, %v, %v; want 2 answered, one 4xx, one 5xx", dToday, ok[dToday], c4[dToday], c5[dToday])
	}
	latency := dataIsland(t, page, "chart-latency")
	if len(latency.Series) != 3 || byDate(latency.X, latency.Series[0].Values)[dYesterday] != 10 || byDate(latency.X, latency.Series[2].Values)[dToday] != 40 {
		t.Errorf("latency chart = %+v; want p50 10 ms on %s and p99 40 ms on %s", latency, dYesterday, dToday)
	}
	// The plan prices no usage: the cost by day is there, and nothing.
	cost := dataIsland(t, page, "chart-cost")
	for i, v := range cost.Series[0].Values {
		if v != 0 || len(cost.X) != 7 {
			t.Errorf("cost on day %d = %v of %d days; want 0 on each of 7 days", i, v, len(cost.X))
		}
	}
	for _, want := range []string{"<code>GET /forecast</code>", "<td>2xx</td><td>4</td>", "<td>4xx</td><td>1</td>", "<td>5xx</td><td>1</td>", "Cost so far"} {
		if !strings.Contains(page.body, want) {
			t.Errorf("usage page lacks %q", want)
		}
	}
	if strings.Contains(page.body, "style=") || strings.Contains(page.body, "onclick") {
		t.Errorf("usage page has inline style or script")
	}

	one := b.get("/subscriptions/" + subID + "/usage?days=30&tz=Europe/Paris&key_id=" + k2.ID)
	c := dataIsland(t, one, "chart-calls")
	if len(c.X) != 30 {
		t.Errorf("30-day window has %d days", len(c.X))
	}
	var sum float64
	for _, v := range c.Series[0].Values {
		sum += v
	}
	if sum != 1 || !strings.Contains(one.body, `<option value="`+k2.ID+`" selected>`) {
		t.Errorf("one key's calls = %v; want 1, with the key selected", sum)
	}

	bad := b.get("/subscriptions/" + subID + "/usage?tz=Mars/Olympus")
	if bad.status != http.StatusBadRequest || !strings.Contains(bad.body, `id="usage-tz-error"`) || !strings.Contains(bad.body, `value="Mars/Olympus"`) {
		t.Errorf("bad time zone: %d; want 400 with the error next to the field: %s", bad.status, bad.body)
	}

	other := pp.browser()
	other.signIn("other")
	if p := other.get("/subscriptions/" + subID + "/usage"); p.status != http.StatusNotFound || strings.Contains(p.body, "Usage Weather") {
		t.Errorf("another organization's usage page: %d; want 404 showing nothing of it", p.status)
	}
}

// TestPortalConsumerBudgets: a budget set through the form is the API's
// with its exact amount and thresholds; a threshold the API refuses is
// shown next to its field with what was sent; the budget is changed and
// deleted; another organization's budget page is the 404 page.
func TestPortalConsumerBudgets(t *testing.T) {
	pp := newPortalPlane(t)
	apiID, planID := pp.activeAPI("Budget Weather")
	b := pp.browser()
	b.signIn("consumer")
	subID := consumerSubscription(t, b, apiID, planID)
	sam := devPersonas()[0].Principal

	empty := b.get("/budgets")
	if empty.status != http.StatusOK || !strings.Contains(empty.body, "No budget yet") || !strings.Contains(empty.body, `<option value="`+subID+`">Budget Weather`) {
		t.Fatalf("budgets page: %d; want the empty state and the subscription offered: %s", empty.status, empty.body)
	}
	csrf := empty.field(t, "csrf")
	bad := b.post("/budgets", url.Values{"csrf": {csrf}, "idem": {empty.field(t, "idem")}, "scope": {subID}, "amount": {"25.50"}, "thresholds": {"0, 80"}})
	if bad.status != http.StatusUnprocessableEntity || !strings.Contains(bad.body, `id="budget-thresholds-error"`) || !strings.Contains(bad.body, `value="0, 80"`) {
		t.Fatalf("bad threshold: %d; want 422 with the error next to the field and the values kept: %s", bad.status, bad.body)
	}
	words := b.post("/budgets", url.Values{"csrf": {csrf}, "idem": {bad.field(t, "idem")}, "scope": {subID}, "amount": {"25.50"}, "thresholds": {"half"}})
	if words.status != http.StatusUnprocessableEntity || !strings.Contains(words.body, `id="budget-thresholds-error"`) {
		t.Errorf("thresholds that are no numbers: %d; want 422 next to the field", words.status)
	}
	made := b.post("/budgets", url.Values{"csrf": {csrf}, "idem": {bad.field(t, "idem")}, "scope": {subID}, "amount": {"25.50"},
		"thresholds": {"40, 90, 120"}, "hard": {"on"}})
	if made.status != http.StatusSeeOther || made.header.Get("Location") != "/budgets" {
		t.Fatalf("create budget: %d %q %s", made.status, made.header.Get("Location"), made.body)
	}
	var list struct {
		Data []struct {
			ID             string
			SubscriptionID *string `json:"subscription_id"`
			Currency       string
			Amount         decimal.Decimal
			Thresholds     []int
			Hard           bool
		}
	}
	pp.api(sam, http.MethodGet, "/v1/budgets", nil, &list)
	if len(list.Data) != 1 {
		t.Fatalf("budgets = %+v; want one", list.Data)
	}
	got := list.Data[0]
	if got.SubscriptionID == nil || *got.SubscriptionID != subID || !got.Amount.Equal(decimal.RequireFromString("25.50")) ||
		fmt.Sprint(got.Thresholds) != "[40 90 120]" || !got.Hard || got.Currency != "USD" {
		t.Errorf("budget = %+v; want 25.50 USD on %s, thresholds [40 90 120], hard", got, subID)
	}
	listed := b.get("/budgets")
	if !strings.Contains(listed.body, "25.5 USD") || !strings.Contains(listed.body, "40, 90, 120 %") || !strings.Contains(listed.body, "Budget Weather") {
		t.Errorf("budgets page does not list the budget: %s", listed.body)
	}

	edit := b.get("/budgets/" + got.ID)
	if edit.status != http.StatusOK || !strings.Contains(edit.body, `value="40, 90, 120"`) {
		t.Fatalf("budget page: %d %s", edit.status, edit.body)
	}
	changed := b.post("/budgets/"+got.ID, url.Values{"csrf": {csrf}, "amount": {"30"}, "thresholds": {"75"}})
	if changed.status != http.StatusSeeOther {
		t.Fatalf("change budget: %d %s", changed.status, changed.body)
	}
	pp.api(sam, http.MethodGet, "/v1/budgets", nil, &list)
	if g := list.Data[0]; !g.Amount.Equal(decimal.NewFromInt(30)) || fmt.Sprint(g.Thresholds) != "[75]" || g.Hard {
		t.Errorf("changed budget = %+v; want 30, [75], soft", g)
	}

	other := pp.browser()
	other.signIn("other")
	if p := other.get("/budgets/" + got.ID); p.status != http.StatusNotFound {
		t.Errorf("another organization's budget page: %d; want 404", p.status)
	}
	if p := other.post("/budgets/"+got.ID+"/delete", url.Values{"csrf": {other.get("/budgets").field(t, "csrf")}}); p.status != http.StatusNotFound {
		t.Errorf("another organization deletes the budget: %d; want 404", p.status)
	}

	gone := b.post("/budgets/"+got.ID+"/delete", url.Values{"csrf": {csrf}})
	if gone.status != http.StatusSeeOther {
		t.Fatalf("delete budget: %d %s", gone.status, gone.body)
	}
	if p := b.get("/budgets"); !strings.Contains(p.body, "No budget yet") {
		t.Errorf("the deleted budget is still listed")
	}

	org := b.post("/budgets", url.Values{"csrf": {csrf}, "idem": {listed.field(t, "idem")}, "scope": {"organization"}, "amount": {"100"}, "currency": {"eur"}})
	if org.status != http.StatusSeeOther {
		t.Fatalf("organization-wide budget: %d %s", org.status, org.body)
	}
	if p := b.get("/budgets"); !strings.Contains(p.body, "All subscriptions") || !strings.Contains(p.body, "100 EUR") {
		t.Errorf("the organization-wide budget is not listed: %s", p.body)
	}
}

// closedPeriodInvoice bills a month before subscription subID's current
// period, as the billing cycle does once a period closes, and answers the
// invoice's id.
func closedPeriodInvoice(t *testing.T, pgURL, subID string) string {
	t.Helper()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var end time.Time
	var version uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT current_period_start, plan_version_id FROM subscriptions WHERE id = $1`, subID).Scan(&end, &version); err != nil {
		t.Fatal(err)
	}
	start := end.AddDate(0, -1, 0)
	var period uuid.UUID
	if err := pool.QueryRow(ctx, `INSERT INTO billing_periods (subscription_id, period_start, period_end, state, closed_at)
		VALUES ($1, $2, $3, 'closed', $3) RETURNING id`, subID, start, end).Scan(&period); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO usage_snapshots (billing_period_id) VALUES ($1)`, period); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'active', $3, 'sam')`, subID, version, start); err != nil {
		t.Fatal(err)
	}
	svc, err := billing.New(billing.Config{Pool: pool, Now: func() time.Time { return end.Add(2 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RunCycle(ctx); err != nil {
		t.Fatal(err)
	}
	var id string
	if err := pool.QueryRow(ctx, `SELECT id FROM invoices WHERE billing_period_id = $1 AND number IS NOT NULL`, period).Scan(&id); err != nil {
		t.Fatalf("no finalized invoice of the closed period: %v", err)
	}
	return id
}

// TestPortalConsumerBilling: an invoice is listed, shown with its lines,
// and its PDF downloads through the portal; the billing profile is set
// through its form (a bad country next to its field); card setup without
// a payment provider says so; another organization's invoice and its PDF
// are the 404 page.
func TestPortalConsumerBilling(t *testing.T) {
	pp := newPortalPlane(t)
	apiID, planID := pp.activeAPI("Billed Weather")
	b := pp.browser()
	b.signIn("consumer")

	empty := b.get("/billing")
	if empty.status != http.StatusOK || !strings.Contains(empty.body, "No invoice yet") || !strings.Contains(empty.body, "No billing profile yet") {
		t.Fatalf("billing page: %d; want the empty states: %s", empty.status, empty.body)
	}
	subID := consumerSubscription(t, b, apiID, planID)
	invoiceID := closedPeriodInvoice(t, pp.pgURL, subID)

	list := b.get("/billing")
	if !strings.Contains(list.body, `href="/billing/invoices/`+invoiceID+`"`) || !strings.Contains(list.body, "9.00 USD") {
		t.Errorf("billing page does not list the invoice of 9.00 USD: %s", list.body)
	}
	inv := b.get("/billing/invoices/" + invoiceID)
	if inv.status != http.StatusOK || !strings.Contains(inv.body, "<td>9.00</td>") || !strings.Contains(inv.body, `href="/billing/invoices/`+invoiceID+`/pdf"`) {
		t.Errorf("invoice page: %d; want its line of 9.00 and the PDF link: %s", inv.status, inv.body)
	}
	pdf := b.get("/billing/invoices/" + invoiceID + "/pdf")
	if pdf.status != http.StatusOK || pdf.header.Get("Content-Type") != "application/pdf" || !strings.HasPrefix(pdf.body, "%PDF") {
		t.Errorf("invoice PDF: %d %q, starts %q; want 200 application/pdf, %%PDF", pdf.status, pdf.header.Get("Content-Type"), pdf.body[:min(8, len(pdf.body))])
	}
	if cd := pdf.header.Get("Content-Disposition"); !strings.Contains(cd, ".pdf") {
		t.Errorf("invoice PDF Content-Disposition = %q; want the file name", cd)
	}

	csrf := list.field(t, "csrf")
	badProfile := b.post("/billing/profile", url.Values{"csrf": {csrf}, "legal_name": {"Demo Travel GmbH"}, "country": {"Germany"}, "email": {"billing@demo-travel.example"}})
	if badProfile.status != http.StatusUnprocessableEntity || !strings.Contains(badProfile.body, `id="profile-country-error"`) || !strings.Contains(badProfile.body, `value="Demo Travel GmbH"`) {
		t.Errorf("bad country: %d; want 422 next to the field with the values kept: %s", badProfile.status, badProfile.body)
	}
	saved := b.post("/billing/profile", url.Values{"csrf": {csrf}, "legal_name": {"Demo Travel GmbH"}, "address_line1": {"Hauptstr. 1"},
		"postal_code": {"10115"}, "city": {"Berlin"}, "country": {"de"}, "email": {"billing@demo-travel.example"}})
	if saved.status != http.StatusSeeOther {
		t.Fatalf("save profile: %d %s", saved.status, saved.body)
	}
	if p := b.get("/billing"); !strings.Contains(p.body, "Demo Travel GmbH") || !strings.Contains(p.body, "10115 Berlin") {
		t.Errorf("billing page does not show the profile: %s", p.body)
	}
	setup := b.post("/billing/payment-methods/setup", url.Values{"csrf": {csrf}, "idem": {list.field(t, "idem")}, "provider": {"stripe"}})
	if setup.status/100 != 4 || !strings.Contains(setup.body, `role="alert"`) {
		t.Errorf("card setup without a payment provider: %d; want a 4xx saying so: %s", setup.status, setup.body)
	}

	other := pp.browser()
	other.signIn("other")
	for _, path := range []string{"/billing/invoices/" + invoiceID, "/billing/invoices/" + invoiceID + "/pdf"} {
		if p := other.get(path); p.status != http.StatusNotFound || strings.HasPrefix(p.body, "%PDF") || strings.Contains(p.body, "Billed Weather") {
			t.Errorf("another organization's %s: %d; want the 404 page", path, p.status)
		}
	}
	if p := other.get("/billing"); strings.Contains(p.body, invoiceID) {
		t.Errorf("another organization's billing page lists the invoice")
	}
}

// TestPortalConsumerWebhooks: an endpoint is created with the event types
// checked, its signing secret shown once (no-store) and never again; it
// is disabled, enabled and given a new secret; its deliveries list with
// their attempts; providers have the page too; another organization's
// endpoint is the 404 page.
func TestPortalConsumerWebhooks(t *testing.T) {
	pp, _ := newConsumerPlane(t, false)
	received := make(chan string, 16)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case received <- r.Header.Get("webhook-id"):
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	hookURL := receiver.URL + "/veil"
	b := pp.browser()
	b.signIn("consumer")
	empty := b.get("/webhooks")
	if empty.status != http.StatusOK || !strings.Contains(empty.body, "No endpoint yet") || !strings.Contains(empty.body, `value="key.created"`) {
		t.Fatalf("webhooks page: %d; want the empty state and the event types: %s", empty.status, empty.body)
	}
	csrf := empty.field(t, "csrf")
	bad := b.post("/webhooks", url.Values{"csrf": {csrf}, "idem": {empty.field(t, "idem")}, "url": {"ftp://" + strings.TrimPrefix(hookURL, "http://")}, "event_types": {"key.created"}})
	if bad.status != http.StatusUnprocessableEntity || !strings.Contains(bad.body, `id="webhook-url-error"`) || !strings.Contains(bad.body, `value="key.created" checked`) {
		t.Errorf("bad URL: %d; want 422 next to the field with the event types kept: %s", bad.status, bad.body)
	}
	made := b.post("/webhooks", url.Values{"csrf": {csrf}, "idem": {bad.field(t, "idem")}, "url": {hookURL},
		"description": {"ops"}, "event_types": {"key.created", "invoice.finalized"}})
	secretPattern := regexp.MustCompile(`<code id="webhook-secret">(whsec_[A-Za-z0-9+/=]+)</code>`)
	secret := secretPattern.FindStringSubmatch(html.UnescapeString(made.body))
	if made.status != http.StatusCreated || secret == nil {
		t.Fatalf("create endpoint: %d; want 201 with the secret: %s", made.status, made.body)
	}
	if cc := made.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("the page with the secret has Cache-Control %q; want no-store", cc)
	}
	epID := regexp.MustCompile(`href="/webhooks/([0-9a-f-]{36})"`).FindStringSubmatch(made.body)
	if epID == nil {
		t.Fatalf("no link to the endpoint: %s", made.body)
	}
	listed := b.get("/webhooks")
	if strings.Contains(html.UnescapeString(listed.body), secret[1]) || !strings.Contains(listed.body, "key.created, invoice.finalized") {
		t.Errorf("the list must show the endpoint's events and never its secret: %s", listed.body)
	}

	// An event of a type it takes: a key issued.
	apiID, planID := pp.activeAPI("Hooked Weather")
	subID := consumerSubscription(t, b, apiID, planID)
	pp.api(devPersonas()[0].Principal, http.MethodPost, "/v1/subscriptions/"+subID+"/keys", map[string]any{"name": "hooked"}, nil)
	select {
	case <-received:
	case <-time.After(30 * time.Second):
		t.Fatal("the receiver got no delivery of key.created in 30 s")
	}
	ep := b.get("/webhooks/" + epID[1])
	if ep.status != http.StatusOK || !strings.Contains(ep.body, hookURL) || strings.Contains(html.UnescapeString(ep.body), secret[1]) {
		t.Fatalf("endpoint page: %d %s", ep.status, ep.body)
	}
	delivery := regexp.MustCompile(`href="/webhooks/` + epID[1] + `/deliveries/([0-9a-f-]{36})"><code>key.created</code>`).FindStringSubmatch(ep.body)
	if delivery == nil {
		t.Fatalf("the endpoint page does not list the key.created delivery: %s", ep.body)
	}
	// The attempt is recorded once the receiver answered.
	var d page
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		d = b.get("/webhooks/" + epID[1] + "/deliveries/" + delivery[1])
		if strings.Contains(d.body, "<td>204</td>") || time.Now().After(deadline) {
			break
		}
	}
	if d.status != http.StatusOK || !strings.Contains(d.body, "<td>204</td>") || !strings.Contains(d.body, "state-succeeded") ||
		!strings.Contains(html.UnescapeString(d.body), `"type": "key.created"`) {
		t.Errorf("delivery page: %d; want its attempt answered 204 and its payload: %s", d.status, d.body)
	}
	if p := b.post("/webhooks/"+epID[1]+"/deliveries/"+delivery[1]+"/redeliver", url.Values{"csrf": {csrf}, "idem": {ep.field(t, "idem")}}); p.status != http.StatusSeeOther && p.status/100 != 4 {
		t.Errorf("redeliver: %d %s", p.status, p.body)
	}

	if p := b.post("/webhooks/"+epID[1]+"/disable", url.Values{"csrf": {csrf}}); p.status != http.StatusSeeOther {
		t.Fatalf("disable: %d %s", p.status, p.body)
	}
	if p := b.get("/webhooks/" + epID[1]); !strings.Contains(p.body, "state-suspended\">disabled") || !strings.Contains(p.body, "/enable\"") {
		t.Errorf("the endpoint does not show disabled with an enable button")
	}
	rotated := b.post("/webhooks/"+epID[1]+"/rotate-secret", url.Values{"csrf": {csrf}, "idem": {ep.field(t, "idem")}})
	second := secretPattern.FindStringSubmatch(html.UnescapeString(rotated.body))
	if rotated.status != http.StatusOK || second == nil || second[1] == secret[1] || rotated.header.Get("Cache-Control") != "no-store" {
		t.Errorf("rotate secret: %d, no-store %q; want a new secret shown once", rotated.status, rotated.header.Get("Cache-Control"))
	}

	provider := pp.browser()
	provider.signIn("provider")
	if p := provider.get("/webhooks"); p.status != http.StatusOK || strings.Contains(p.body, hookURL) {
		t.Errorf("provider's webhooks page: %d; want 200 without the consumer's endpoint", p.status)
	}
	other := pp.browser()
	other.signIn("other")
	if p := other.get("/webhooks/" + epID[1]); p.status != http.StatusNotFound || strings.Contains(p.body, hookURL) {
		t.Errorf("another organization's endpoint: %d; want 404", p.status)
	}
	if p := other.get("/webhooks/" + epID[1] + "/deliveries/" + delivery[1]); p.status != http.StatusNotFound {
		t.Errorf("another organization's delivery: %d; want 404", p.status)
	}

	if p := b.post("/webhooks/"+epID[1]+"/delete", url.Values{"csrf": {csrf}}); p.status != http.StatusSeeOther {
		t.Fatalf("delete: %d %s", p.status, p.body)
	}
	if p := b.get("/webhooks"); !strings.Contains(p.body, "No endpoint yet") {
		t.Errorf("the deleted endpoint is still listed")
	}
}
