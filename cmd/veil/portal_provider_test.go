package main

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
)

var providerAPIPath = regexp.MustCompile(`^/provider/apis/([0-9a-f-]{36})$`)

// providerAPIForm is a registration form as a provider fills it in.
func providerAPIForm(p page, t *testing.T, name, slug, upstream, routes string) url.Values {
	return url.Values{"csrf": {p.field(t, "csrf")}, "idem": {p.field(t, "idem")}, "name": {name}, "slug": {slug}, "upstream_url": {upstream},
		"version": {"1.0"}, "description": {"Forecasts by city"}, "docs_url": {""}, "visibility": {"public"}, "routes": {routes}, "health_check_path": {""}}
}

// TestPortalProviderRegistersEditsAndSubmitsAnAPI: a provider with no API
// is told so, registers one through the form (a bad upstream URL, slug or
// route line is shown next to its field with what was typed kept), edits
// it, submits it for approval and comments on the request, whose history
// shows both; a consumer gets the 403 page, and the provider cannot open
// another organization's API.
func TestPortalProviderRegistersEditsAndSubmitsAnAPI(t *testing.T) {
	pp := newPortalPlane(t)
	b := pp.browser()
	b.signIn("provider")

	list := b.get("/provider/apis")
	if list.status != http.StatusOK || !strings.Contains(list.body, "You have not registered an API yet") {
		t.Fatalf("/provider/apis: %d; want 200 with the empty state: %s", list.status, list.body)
	}
	slug := fmt.Sprintf("forecast-%d", time.Now().UnixNano()%1_000_000)

	bad := b.post("/provider/apis", providerAPIForm(list, t, "Portal Forecast", "Bad Slug!", "ftp://weather.example", "GET /forecast\nforecast"))
	for _, want := range []string{`id="api-upstream-error"`, `id="api-slug-error"`, `value="Portal Forecast"`, `value="ftp://weather.example"`} {
		if bad.status != http.StatusUnprocessableEntity || !strings.Contains(bad.body, want) {
			t.Fatalf("bad registration: %d; want 422 with %s: %s", bad.status, want, bad.body)
		}
	}
	badRoute := b.post("/provider/apis", providerAPIForm(bad, t, "Portal Forecast", slug, "http://127.0.0.1:9/v1", "GET /forecast\nforecast"))
	if badRoute.status != http.StatusUnprocessableEntity || !strings.Contains(badRoute.body, "line 2: must start with /") {
		t.Fatalf("bad route line: %d; want 422 naming line 2: %s", badRoute.status, badRoute.body)
	}

	created := b.post("/provider/apis", providerAPIForm(badRoute, t, "Portal Forecast", slug, "http://127.0.0.1:9/v1", "GET /forecast\n\nget,post /alerts/{city}\n"))
	m := providerAPIPath.FindStringSubmatch(created.header.Get("Location"))
	if created.status != http.StatusSeeOther || m == nil {
		t.Fatalf("register: %d %q; want 303 to the API's page: %s", created.status, created.header.Get("Location"), created.body)
	}
	apiID := m[1]
	prov := devPersonas()[1].Principal
	var api struct {
		Name   string `json:"name"`
		State  string `json:"state"`
		Routes []struct {
			Methods []string `json:"methods"`
			Path    string   `json:"path"`
		} `json:"routes"`
	}
	pp.api(prov, http.MethodGet, "/v1/apis/"+apiID, nil, &api)
	if api.State != "draft" || len(api.Routes) != 2 || strings.Join(api.Routes[1].Methods, ",") != "GET,POST" || api.Routes[1].Path != "/alerts/{city}" {
		t.Fatalf("registered API = %+v; want a draft with GET /forecast and GET,POST /alerts/{city}", api)
	}

	apiPage := b.get("/provider/apis/" + apiID)
	if apiPage.status != http.StatusOK || !strings.Contains(apiPage.body, "state-draft") || !strings.Contains(apiPage.body, "Submit for approval") {
		t.Fatalf("API page: %d; want the draft with its submit button: %s", apiPage.status, apiPage.body)
	}
	if list := b.get("/provider/apis"); !strings.Contains(list.body, `href="/provider/apis/`+apiID+`"`) {
		t.Errorf("/provider/apis does not list the API: %s", list.body)
	}

	csrf := apiPage.field(t, "csrf")
	edit := url.Values{"csrf": {csrf}, "name": {"Portal Forecast Pro"}, "slug": {slug}, "upstream_url": {"http://127.0.0.1:9/v2"},
		"description": {"Forecasts by city, hourly"}, "docs_url": {"https://docs.example.com/forecast"}, "visibility": {"public"},
		"routes": {"GET /forecast\nGET,POST /alerts/{city}"}, "health_check_path": {""}}
	badEdit := url.Values{}
	for k, v := range edit {
		badEdit[k] = v
	}
	badEdit.Set("docs_url", "not a url")
	if p := b.post("/provider/apis/"+apiID, badEdit); p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="edit-docs-error"`) || !strings.Contains(p.body, `value="not a url"`) {
		t.Errorf("bad edit: %d; want 422 with the error next to the docs URL: %s", p.status, p.body)
	}
	if p := b.post("/provider/apis/"+apiID, edit); p.status != http.StatusSeeOther {
		t.Fatalf("edit: %d %s", p.status, p.body)
	}
	var edited struct {
		Name        string `json:"name"`
		UpstreamURL string `json:"upstream_url"`
		DocsURL     string `json:"docs_url"`
	}
	pp.api(prov, http.MethodGet, "/v1/apis/"+apiID, nil, &edited)
	if edited.Name != "Portal Forecast Pro" || edited.UpstreamURL != "http://127.0.0.1:9/v2" || edited.DocsURL != "https://docs.example.com/forecast" {
		t.Errorf("edited API = %+v", edited)
	}

	pg := b.get("/provider/apis/" + apiID)
	submitted := b.post("/provider/apis/"+apiID+"/submit", url.Values{"csrf": {csrf}, "idem": {pg.field(t, "idem")}, "priority": {"high"}, "note": {"Ready for review"}})
	if submitted.status != http.StatusSeeOther {
		t.Fatalf("submit: %d %s", submitted.status, submitted.body)
	}
	pg = b.get("/provider/apis/" + apiID)
	for _, want := range []string{"state-pending_approval", `<span class="state state-pending">pending</span> · priority high`, "Ready for review", "Add a comment"} {
		if !strings.Contains(pg.body, want) {
			t.Errorf("after submission the API page lacks %q: %s", want, pg.body)
		}
	}
	if strings.Contains(pg.body, "Submit for approval") || strings.Contains(pg.body, `action="/provider/apis/`+apiID+`" `) {
		t.Errorf("an API under review still offers submission or editing")
	}
	approvalID := pg.field(t, "approval_id")
	empty := b.post("/provider/apis/"+apiID+"/comments", url.Values{"csrf": {csrf}, "idem": {pg.field(t, "idem")}, "approval_id": {approvalID}, "comment": {"  "}})
	if empty.status != http.StatusUnprocessableEntity || !strings.Contains(empty.body, `id="comment-error"`) {
		t.Fatalf("empty comment: %d; want 422 next to the comment: %s", empty.status, empty.body)
	}
	if p := b.post("/provider/apis/"+apiID+"/comments", url.Values{"csrf": {csrf}, "idem": {empty.field(t, "idem")}, "approval_id": {approvalID}, "comment": {"The upstream is up now."}}); p.status != http.StatusSeeOther {
		t.Fatalf("comment: %d %s", p.status, p.body)
	}
	if p := b.get("/provider/apis/" + apiID); !strings.Contains(p.body, "The upstream is up now.") || !strings.Contains(p.body, "pending_approval") {
		t.Errorf("the comment is not in the request's history: %s", p.body)
	}

	consumer := pp.browser()
	consumer.signIn("consumer")
	if p := consumer.get("/provider/apis"); p.status != http.StatusForbidden || !strings.Contains(p.body, "Not allowed") {
		t.Errorf("a consumer on /provider/apis: %d; want the 403 page", p.status)
	}
	if p := consumer.get("/provider/apis/" + apiID); p.status != http.StatusForbidden || strings.Contains(p.body, "127.0.0.1:9") {
		t.Errorf("a consumer on the provider's API page: %d; want the 403 page without the upstream", p.status)
	}

	// Another provider's APIs: a private draft is not found; a public
	// active one reads in the catalog, but is not this provider's to
	// manage.
	rival := identity.Principal{Subject: "rita", Org: "rival-weather", Role: identity.RoleProvider}
	var draft, live struct{ ID string }
	pp.api(rival, http.MethodPost, "/v1/apis", map[string]any{"name": "Rival", "slug": slug + "-rival", "upstream_url": "http://127.0.0.1:9/secret",
		"visibility": "private", "routes": []map[string]any{{"methods": []string{"GET"}, "path": "/x"}}}, &draft)
	pp.api(rival, http.MethodPost, "/v1/apis", map[string]any{"name": "Rival Live", "slug": slug + "-live", "upstream_url": "http://127.0.0.1:9/secret",
		"routes": []map[string]any{{"methods": []string{"GET"}, "path": "/x"}}}, &live)
	pp.providerExec("UPDATE apis SET state = 'active' WHERE id = $1", live.ID)
	if p := b.get("/provider/apis/" + draft.ID); p.status != http.StatusNotFound || strings.Contains(p.body, "/secret") {
		t.Errorf("another organization's private API: %d; want the 404 page showing nothing of it", p.status)
	}
	if p := b.get("/provider/apis/" + live.ID); p.status != http.StatusForbidden || strings.Contains(p.body, "/secret") {
		t.Errorf("another organization's public API: %d; want the 403 page showing nothing of it", p.status)
	}
	if p := b.post("/provider/apis/"+live.ID, edit); p.status != http.StatusForbidden {
		t.Errorf("editing another organization's API: %d; want 403", p.status)
	}
	if p := b.get("/provider/apis/" + live.ID + "/subscribers"); p.status != http.StatusForbidden && p.status != http.StatusNotFound {
		t.Errorf("another organization's subscribers: %d; want 403 or 404", p.status)
	}
}

// providerExec runs a statement on the plane's database, for states no route
// reaches in a test (an approved, registered API; a plan file's plan).
func (pp *portalPlane) providerExec(stmt string, args ...any) {
	pp.t.Helper()
	conn, err := pgx.Connect(pp.t.Context(), pp.pgURL)
	if err != nil {
		pp.t.Fatal(err)
	}
	defer conn.Close(pp.t.Context())
	if _, err := conn.Exec(pp.t.Context(), stmt, args...); err != nil {
		pp.t.Fatal(err)
	}
}

type providerTierJSON struct {
	UpTo       *decimal.Decimal `json:"up_to"`
	UnitPrice  decimal.Decimal  `json:"unit_price"`
	FlatAmount decimal.Decimal  `json:"flat_amount"`
}

type providerPlanJSON struct {
	Current struct {
		Version int `json:"version"`
		Terms   struct {
			Type    string `json:"type"`
			Charges []struct {
				Meter string             `json:"meter"`
				Model string             `json:"model"`
				Tiers []providerTierJSON `json:"tiers"`
			} `json:"charges"`
		} `json:"terms"`
	} `json:"current_version"`
}

// providerPlanForm is the plan editor as a provider fills it in: the terms, then
// charge rows c0 and c1 with five tier rows each, tiers[j] = {up_to,
// unit_price, flat_amount} of c0 (the rest left empty).
func providerPlanForm(p page, t *testing.T, tiers [][3]string) url.Values {
	f := url.Values{"csrf": {p.field(t, "csrf")}, "idem": {p.field(t, "idem")}, "name": {"Metered"}, "slug": {"metered"}, "description": {""},
		"status": {"active"}, "type": {"usage_based"}, "currency": {"USD"}, "interval": {"month"}, "base_fee": {"0"}, "trial_days": {"0"},
		"quota_requests": {""}, "rate_per_second": {"10"}, "rate_per_minute": {""}, "included_units": {"0"}}
	for c := range 2 {
		pre := fmt.Sprintf("c%d.", c)
		f.Set(pre+"meter", "")
		f.Set(pre+"model", "graduated")
		for _, k := range []string{"included_units", "unit_price", "package_size", "quota"} {
			f.Set(pre+k, "")
		}
		for j := range 5 {
			for k, name := range []string{"up_to", "unit_price", "flat_amount"} {
				v := ""
				if c == 0 && j < len(tiers) {
					v = tiers[j][k]
				}
				f.Set(fmt.Sprintf("%st%d.%s", pre, j, name), v)
			}
		}
	}
	f.Set("c0.meter", "calls")
	return f
}

// TestPortalProviderPlansWithTiers: a provider adds a meter, creates a
// usage-based plan whose graduated charge has two tiers (blank rows
// ignored) and reads back the exact decimal prices through the REST API;
// a tier that does not rise is shown next to the row typed; a new version
// starts from the current terms; a plan file's plan is read-only.
func TestPortalProviderPlansWithTiers(t *testing.T) {
	pp := newPortalPlane(t)
	apiID, starterID := pp.activeAPI("Portal Tiers")
	b := pp.browser()
	b.signIn("provider")

	apiPage := b.get("/provider/apis/" + apiID)
	csrf := apiPage.field(t, "csrf")
	if p := b.post("/provider/apis/"+apiID+"/meters", url.Values{"csrf": {csrf}, "idem": {apiPage.field(t, "idem")}, "slug": {"calls"}, "name": {"Calls"}, "aggregation": {"count"}, "field": {""}}); p.status != http.StatusSeeOther {
		t.Fatalf("add meter: %d %s", p.status, p.body)
	}

	editor := b.get("/provider/apis/" + apiID + "/plans/new")
	if editor.status != http.StatusOK || !strings.Contains(editor.body, `name="c1.t4.flat_amount"`) || !strings.Contains(editor.body, `<option value="calls">calls (Calls)</option>`) {
		t.Fatalf("plan editor: %d; want two charges of five tier rows and the meter offered: %s", editor.status, editor.body)
	}
	// Rows 0 and 2 typed, row 1 blank: the API's tiers[1] is the editor's
	// row 2.
	bad := b.post("/provider/apis/"+apiID+"/plans", providerPlanForm(editor, t, [][3]string{{"1000", "0.001", "0"}, {"", "", ""}, {"500", "0.0005", ""}}))
	if bad.status != http.StatusUnprocessableEntity || !strings.Contains(bad.body, `id="c0.t2.up_to-error"`) || !strings.Contains(bad.body, `value="500"`) {
		t.Fatalf("tiers that do not rise: %d; want 422 next to row 3's up to, typed values kept: %s", bad.status, bad.body)
	}
	created := b.post("/provider/apis/"+apiID+"/plans", providerPlanForm(bad, t, [][3]string{{"1000", "0.001", "0"}, {"", "", ""}, {"", "0.0005", "2.50"}}))
	loc := created.header.Get("Location")
	pm := regexp.MustCompile(`^/provider/plans/([0-9a-f-]{36})$`).FindStringSubmatch(loc)
	if created.status != http.StatusSeeOther || pm == nil {
		t.Fatalf("create plan: %d %q %s", created.status, loc, created.body)
	}
	var plan providerPlanJSON
	pp.api(devPersonas()[1].Principal, http.MethodGet, "/v1/plans/"+pm[1], nil, &plan)
	ch := plan.Current.Terms.Charges
	if plan.Current.Terms.Type != "usage_based" || len(ch) != 1 || ch[0].Meter != "calls" || ch[0].Model != "graduated" || len(ch[0].Tiers) != 2 {
		t.Fatalf("plan terms = %+v; want one graduated charge on calls with two tiers", plan.Current.Terms)
	}
	tiers := ch[0].Tiers
	if tiers[0].UpTo == nil || !tiers[0].UpTo.Equal(decimal.RequireFromString("1000")) || !tiers[0].UnitPrice.Equal(decimal.RequireFromString("0.001")) ||
		!tiers[0].FlatAmount.IsZero() || tiers[1].UpTo != nil || !tiers[1].UnitPrice.Equal(decimal.RequireFromString("0.0005")) ||
		!tiers[1].FlatAmount.Equal(decimal.RequireFromString("2.5")) {
		t.Errorf("tiers = %+v; want up to 1000 at 0.001, then at 0.0005 plus 2.50", tiers)
	}

	planPage := b.get(loc)
	if planPage.status != http.StatusOK || !strings.Contains(planPage.body, `name="c0.t0.up_to" value="1000"`) || !strings.Contains(planPage.body, "Save as version 2") {
		t.Fatalf("plan page: %d; want the editor filled with the current tiers: %s", planPage.status, planPage.body)
	}
	next := providerPlanForm(planPage, t, [][3]string{{"2000", "0.001", "0"}, {"", "0.0004", "0"}})
	if p := b.post(loc+"/versions", next); p.status != http.StatusSeeOther {
		t.Fatalf("new version: %d %s", p.status, p.body)
	}
	pp.api(devPersonas()[1].Principal, http.MethodGet, "/v1/plans/"+pm[1], nil, &plan)
	if plan.Current.Version != 2 || !plan.Current.Terms.Charges[0].Tiers[0].UpTo.Equal(decimal.RequireFromString("2000")) {
		t.Errorf("after a new version the plan is %+v; want version 2 up to 2000", plan.Current)
	}
	if p := b.get("/provider/apis/" + apiID); !strings.Contains(p.body, `href="/provider/plans/`+pm[1]+`"`) || !strings.Contains(p.body, "Starter") {
		t.Errorf("the API page does not list its plans: %s", p.body)
	}

	// A plan file's plan: shown, never offered for change.
	pp.providerExec("UPDATE plans SET source_file = 'plans/weather.yaml' WHERE id = $1", starterID)
	if p := b.get("/provider/plans/" + starterID); p.status != http.StatusOK || !strings.Contains(p.body, "plans/weather.yaml") ||
		!strings.Contains(p.body, "read-only here") || strings.Contains(p.body, `action="/provider/plans/`+starterID) {
		t.Errorf("a plan file's plan: %d; want it read-only with no form: %s", p.status, p.body)
	}
}

// TestPortalProviderPromotionsSubscribersAndCredits: a provider creates a
// promotion code (a bad value shown next to its field), ends it, sees a
// consumer who subscribed among the API's subscribers with their quota,
// gives a quota credit and records a usage correction.
func TestPortalProviderPromotionsSubscribersAndCredits(t *testing.T) {
	pp := newPortalPlane(t)
	apiID, planID := pp.activeAPI("Portal Subscribers")
	b := pp.browser()
	b.signIn("provider")

	promos := b.get("/provider/promotions")
	if promos.status != http.StatusOK || !strings.Contains(promos.body, "You have no promotion yet") || !strings.Contains(promos.body, `value="`+planID+`"`) {
		t.Fatalf("/provider/promotions: %d; want the empty state and the plan offered: %s", promos.status, promos.body)
	}
	form := url.Values{"csrf": {promos.field(t, "csrf")}, "idem": {promos.field(t, "idem")}, "code": {"SPRING25"}, "description": {"Spring sale"},
		"kind": {"percent_off"}, "value": {"250"}, "currency": {""}, "meter": {""}, "duration": {"repeating"}, "duration_periods": {"3"},
		"valid_until": {""}, "max_redemptions": {"100"}, "max_per_customer": {"1"}, "plan_ids": {planID}}
	bad := b.post("/provider/promotions", form)
	if bad.status != http.StatusUnprocessableEntity || !strings.Contains(bad.body, `id="promo-value-error"`) || !strings.Contains(bad.body, `value="SPRING25"`) {
		t.Fatalf("a 250%% promotion: %d; want 422 next to the value, the code kept: %s", bad.status, bad.body)
	}
	form.Set("value", "25")
	form.Set("idem", bad.field(t, "idem"))
	if p := b.post("/provider/promotions", form); p.status != http.StatusSeeOther {
		t.Fatalf("create promotion: %d %s", p.status, p.body)
	}
	promos = b.get("/provider/promotions")
	for _, want := range []string{"SPRING25", "25% off", "for 3 periods", "0 of 100", "Portal Subscribers · Starter", "state-active"} {
		if !strings.Contains(promos.body, want) {
			t.Errorf("promotions list lacks %q: %s", want, promos.body)
		}
	}

	// A consumer subscribes with the code.
	var sub struct{ ID string }
	pp.api(devPersonas()[0].Principal, http.MethodPost, "/v1/subscriptions", map[string]any{"plan_id": planID, "promotion_codes": []string{"SPRING25"}}, &sub)

	promoID := regexp.MustCompile(`action="/provider/promotions/([0-9a-f-]{36})/end"`).FindStringSubmatch(promos.body)
	if promoID == nil {
		t.Fatalf("no end button: %s", promos.body)
	}
	if p := b.post("/provider/promotions/"+promoID[1]+"/end", url.Values{"csrf": {promos.field(t, "csrf")}}); p.status != http.StatusSeeOther {
		t.Fatalf("end promotion: %d %s", p.status, p.body)
	}
	if p := b.get("/provider/promotions"); !strings.Contains(p.body, "ended") || strings.Contains(p.body, "/provider/promotions/"+promoID[1]+"/end") || !strings.Contains(p.body, "1 of 100") {
		t.Errorf("an ended promotion must show ended, with its redemption, and no end button: %s", p.body)
	}

	subs := b.get("/provider/apis/" + apiID + "/subscribers")
	if subs.status != http.StatusOK || !strings.Contains(subs.body, `href="/provider/subscriptions/`+sub.ID+`"`) || !strings.Contains(subs.body, "0 of 1000") {
		t.Fatalf("subscribers: %d; want the subscription with its quota: %s", subs.status, subs.body)
	}
	subPage := b.get("/provider/subscriptions/" + sub.ID)
	if subPage.status != http.StatusOK || !strings.Contains(subPage.body, "0 of 1000 calls this period; calls beyond it are refused") {
		t.Fatalf("subscriber page: %d %s", subPage.status, subPage.body)
	}
	csrf := subPage.field(t, "csrf")
	if p := b.post("/provider/subscriptions/"+sub.ID+"/credits", url.Values{"csrf": {csrf}, "idem": {subPage.field(t, "idem")}, "requests": {"many"}, "reason": {"outage"}}); p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="credit-requests-error"`) {
		t.Errorf("a credit of %q: %d; want 422 next to the field: %s", "many", p.status, p.body)
	}
	if p := b.post("/provider/subscriptions/"+sub.ID+"/credits", url.Values{"csrf": {csrf}, "idem": {subPage.field(t, "idem")}, "requests": {"500"}, "reason": {"Outage on the 3rd"}}); p.status != http.StatusSeeOther {
		t.Fatalf("credit: %d %s", p.status, p.body)
	}
	var q struct {
		Limit *int64 `json:"limit"`
	}
	pp.api(devPersonas()[0].Principal, http.MethodGet, "/v1/subscriptions/"+sub.ID+"/quota", nil, &q)
	if q.Limit == nil || *q.Limit != 1500 {
		t.Errorf("quota limit after a credit of 500 = %v; want 1500", q.Limit)
	}
	if p := b.get("/provider/subscriptions/" + sub.ID); !strings.Contains(p.body, "0 of 1500 calls this period") {
		t.Errorf("the subscriber page does not show the credited quota: %s", p.body)
	}

	fix := url.Values{"csrf": {csrf}, "idem": {subPage.field(t, "idem")}, "kind": {"amount"}, "amount": {"-5.00"}, "currency": {"USD"},
		"meter": {""}, "quantity": {""}, "billing_period_id": {""}, "reason": {""}}
	noReason := b.post("/provider/subscriptions/"+sub.ID+"/corrections", fix)
	if noReason.status != http.StatusUnprocessableEntity || !strings.Contains(noReason.body, `id="fix-reason-error"`) {
		t.Errorf("a correction without a reason: %d; want 422 next to the reason: %s", noReason.status, noReason.body)
	}
	fix.Set("reason", "Refund for the outage")
	fix.Set("idem", noReason.field(t, "idem"))
	if p := b.post("/provider/subscriptions/"+sub.ID+"/corrections", fix); p.status != http.StatusSeeOther {
		t.Fatalf("correction: %d %s", p.status, p.body)
	}
	if p := b.get("/provider/subscriptions/" + sub.ID); !strings.Contains(p.body, "Refund for the outage") || !strings.Contains(p.body, "-5 USD") {
		t.Errorf("the correction is not listed: %s", p.body)
	}

	other := pp.browser()
	other.signIn("other")
	if p := other.get("/provider/subscriptions/" + sub.ID); p.status != http.StatusForbidden {
		t.Errorf("a consumer on a provider's subscriber page: %d; want 403", p.status)
	}
}

// TestPortalProviderAnalytics: the analytics page offers its window and
// zone, tells a bad zone next to its field, and says so when the usage
// store cannot be read (this plane has no ClickHouse) rather than failing.
func TestPortalProviderAnalytics(t *testing.T) {
	pp := newPortalPlane(t)
	apiID, _ := pp.activeAPI("Portal Analytics")
	b := pp.browser()
	b.signIn("provider")
	p := b.get("/provider/analytics?days=7&tz=Europe/Paris")
	if p.status != http.StatusOK || !strings.Contains(p.body, `<option value="7" selected>`) || !strings.Contains(p.body, `value="Europe/Paris"`) ||
		!strings.Contains(p.body, `<option value="`+apiID+`">Portal Analytics</option>`) {
		t.Fatalf("analytics: %d; want the window, zone and APIs offered: %s", p.status, p.body)
	}
	if !strings.Contains(p.body, "Analytics cannot be read now") && !strings.Contains(p.body, "Calls by day") {
		t.Errorf("analytics shows neither figures nor why not: %s", p.body)
	}
	if p := b.get("/provider/analytics?tz=Mars/Olympus"); p.status != http.StatusBadRequest || !strings.Contains(p.body, `id="an-tz-error"`) {
		t.Errorf("a bad zone: %d; want 400 next to the zone: %s", p.status, p.body)
	}
	if p := b.get("/provider/analytics?api=" + apiID + "&days=90"); p.status != http.StatusOK || !strings.Contains(p.body, `<option value="`+apiID+`" selected>`) {
		t.Errorf("one API's analytics: %d %s", p.status, p.body)
	}
}
