package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/portal"
	"github.com/veil-platform/veil/internal/testenv"
)

const portalTestSecret = "portal-test-secret-0123456789abcdef"

// portalPlane is the control plane, wired as veil dev wires it (its
// development sign-in included), on a fresh database.
type portalPlane struct {
	t     *testing.T
	url   string
	pgURL string
}

func newPortalPlane(t *testing.T) *portalPlane {
	t.Helper()
	return newPortalPlaneWith(t, nil)
}

// newPortalPlaneWith is newPortalPlane with adjust applied to the flags
// before the control plane starts.
func newPortalPlaneWith(t *testing.T, adjust func(*controlPlaneFlags)) *portalPlane {
	t.Helper()
	pgURL := testenv.MigratedPostgresURL(t)
	_, redisDB := testenv.RedisDB(t)
	var cp controlPlaneFlags
	f := newFlags("control-plane", "", io.Discard)
	cp.register(f, true)
	if err := f.Parse([]string{"--control-plane-addr", "127.0.0.1:0", "--redis-db", strconv.Itoa(redisDB), "--kafka-brokers", "",
		"--jwt-secret", portalTestSecret, "--gateway-admin-url", "http://127.0.0.1:1", "--gateway-url", "http://127.0.0.1:1", "--upstream-allow-cidrs", "127.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
	cp.metricsAddr = ""
	cp.portal.dev = append(devPersonas(), portal.DevPersona{Key: "other", Label: "Olga, consumer at other-travel",
		Principal: identity.Principal{Subject: "olga", Org: "other-travel", Role: identity.RoleConsumer}})
	if adjust != nil {
		adjust(&cp)
	}
	plane, err := newControlPlane(t.Context(), cp, pgURL, testenv.Logger(t), metrics.NewSet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plane.close)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- plane.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("control plane: %v", err)
		}
	})
	return &portalPlane{t: t, url: "http://" + plane.addr().String(), pgURL: pgURL}
}

// api calls the REST API as p with a bearer token and decodes a 2xx
// answer into out.
func (pp *portalPlane) api(p identity.Principal, method, path string, in, out any) {
	pp.t.Helper()
	tok, err := identity.Mint([]byte(portalTestSecret), identity.DefaultIssuer, identity.DefaultAudience, p, time.Hour, time.Now())
	if err != nil {
		pp.t.Fatal(err)
	}
	b, _ := json.Marshal(in)
	req, _ := http.NewRequestWithContext(pp.t.Context(), method, pp.url+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		pp.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		pp.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			pp.t.Fatal(err)
		}
	}
}

// activeAPI registers an API with one plan as the demo's provider and
// makes it active (as an approval and a gateway registration would).
func (pp *portalPlane) activeAPI(name string) (apiID, planID string) {
	pp.t.Helper()
	prov := devPersonas()[1].Principal
	slug := fmt.Sprintf("portal-%d", time.Now().UnixNano())
	var api struct{ ID string }
	pp.api(prov, http.MethodPost, "/v1/apis", map[string]any{"name": name, "slug": slug, "upstream_url": "http://127.0.0.1:9/v1",
		"version": "1.0", "routes": []map[string]any{{"methods": []string{"GET"}, "path": "/forecast"}}}, &api)
	var plan struct{ ID string }
	pp.api(prov, http.MethodPost, "/v1/apis/"+api.ID+"/plans", map[string]any{"name": "Starter", "slug": "starter", "status": "active",
		"terms": map[string]any{"type": "subscription", "currency": "USD", "base_fee": "9.00", "quota_requests": 1000, "quota_hard": true}}, &plan)
	conn, err := pgx.Connect(pp.t.Context(), pp.pgURL)
	if err != nil {
		pp.t.Fatal(err)
	}
	defer conn.Close(pp.t.Context())
	if _, err := conn.Exec(pp.t.Context(), "UPDATE apis SET state = 'active' WHERE id = $1", api.ID); err != nil {
		pp.t.Fatal(err)
	}
	return api.ID, plan.ID
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (pp *portalPlane) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: pp.t, base: pp.url, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(method, path string, form url.Values) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequestWithContext(b.t.Context(), method, b.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", b.base)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

func (b *browser) get(path string) page { return b.do(http.MethodGet, path, nil) }

func (b *browser) post(path string, form url.Values) page { return b.do(http.MethodPost, path, form) }

// field is the value of the first hidden input named name on p.
func (p page) field(t *testing.T, name string) string {
	t.Helper()
	m := regexp.MustCompile(`name="` + regexp.QuoteMeta(name) + `" value="([^"]*)"`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no field %s on the page: %s", name, p.body)
	}
	return m[1]
}

// signIn signs b in as the development persona key.
func (b *browser) signIn(key string) {
	b.t.Helper()
	form := b.get("/auth/dev?persona=" + key)
	if form.status != http.StatusOK {
		b.t.Fatalf("development sign-in form: %d %s", form.status, form.body)
	}
	done := b.post("/auth/dev", url.Values{"persona": {key}, "csrf": {form.field(b.t, "csrf")}})
	if done.status != http.StatusSeeOther {
		b.t.Fatalf("development sign-in: %d %s", done.status, done.body)
	}
}

// TestPortalConsumerSubscribesAndIssuesAKey: a consumer finds an API in the
// catalog, is told a bad promotion code next to its field, subscribes,
// issues a key whose plaintext shows once (never cached, never again, not
// even to the same form sent twice), and revokes it; another organization
// sees none of it, a signed-out browser is sent to sign in, and a form
// without its CSRF token is refused.
func TestPortalConsumerSubscribesAndIssuesAKey(t *testing.T) {
	pp := newPortalPlane(t)
	apiID, planID := pp.activeAPI("Portal Weather")

	anon := pp.browser()
	if p := anon.get("/subscriptions"); p.status != http.StatusSeeOther || p.header.Get("Location") != "/signin?return_to=%2Fsubscriptions" {
		t.Errorf("signed out: %d %q; want 303 to /signin?return_to=%%2Fsubscriptions", p.status, p.header.Get("Location"))
	}

	b := pp.browser()
	b.signIn("consumer")
	catalog := b.get("/catalog")
	if catalog.status != http.StatusOK || !strings.Contains(catalog.body, "Portal Weather") {
		t.Fatalf("catalog: %d, want the API listed: %s", catalog.status, catalog.body)
	}
	if csp := catalog.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("catalog CSP = %q; want scripts from this origin only", csp)
	}
	apiPage := b.get("/catalog/" + apiID)
	if !strings.Contains(apiPage.body, "9.00 USD") || !strings.Contains(apiPage.body, "1000 calls per period, then refused") {
		t.Errorf("API page does not show the plan's price and quota: %s", apiPage.body)
	}
	csrf := apiPage.field(t, "csrf")

	bad := b.post("/catalog/"+apiID+"/subscribe", url.Values{"csrf": {csrf}, "idem": {apiPage.field(t, "idem")}, "plan_id": {planID}, "promotion_code": {"NO-SUCH-CODE"}})
	if bad.status/100 != 4 || !strings.Contains(bad.body, `class="field-error"`) || !strings.Contains(bad.body, `value="NO-SUCH-CODE"`) {
		t.Fatalf("bad promotion code: %d; want a 4xx with the error next to the field and the code kept: %s", bad.status, bad.body)
	}
	sub := b.post("/catalog/"+apiID+"/subscribe", url.Values{"csrf": {csrf}, "idem": {bad.field(t, "idem")}, "plan_id": {planID}})
	subPath := sub.header.Get("Location")
	if sub.status != http.StatusSeeOther || !regexp.MustCompile(`^/subscriptions/[0-9a-f-]{36}$`).MatchString(subPath) {
		t.Fatalf("subscribe: %d %q %s", sub.status, subPath, sub.body)
	}
	subPage := b.get(subPath)
	if !strings.Contains(subPage.body, "0 of 1000 calls this period") {
		t.Errorf("subscription page does not show the quota: %s", subPage.body)
	}
	if list := b.get("/subscriptions"); !strings.Contains(list.body, subPath) {
		t.Errorf("subscriptions list does not link %s", subPath)
	}

	noCSRF := b.post(subPath+"/keys", url.Values{"name": {"forged"}})
	if noCSRF.status != http.StatusForbidden {
		t.Errorf("key form without csrf: %d; want 403", noCSRF.status)
	}
	form := url.Values{"csrf": {csrf}, "idem": {subPage.field(t, "idem")}, "name": {"ci"}}
	issued := b.post(subPath+"/keys", form)
	key := regexp.MustCompile(`<code id="issued-key">(veil_live_[A-Za-z0-9]{39})</code>`).FindStringSubmatch(issued.body)
	if issued.status != http.StatusCreated || key == nil {
		t.Fatalf("issue key: %d; want 201 with the plaintext: %s", issued.status, issued.body)
	}
	if cc := issued.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("the page with the plaintext has Cache-Control %q; want no-store", cc)
	}
	again := b.post(subPath+"/keys", form)
	if again.status != http.StatusConflict || strings.Contains(again.body, key[1]) {
		t.Errorf("the same form sent again: %d; want 409 without the plaintext", again.status)
	}
	after := b.get(subPath)
	if strings.Contains(after.body, key[1]) || !strings.Contains(after.body, key[1][:14]+"…") {
		t.Errorf("the subscription page later must show the key masked, never its plaintext: %s", after.body)
	}

	other := pp.browser()
	other.signIn("other")
	if p := other.get(subPath); p.status != http.StatusNotFound || strings.Contains(p.body, key[1][:14]) {
		t.Errorf("another organization's subscription: %d; want 404 showing nothing of it", p.status)
	}

	keyID := regexp.MustCompile(`action="/keys/([0-9a-f-]{36})/revoke"`).FindStringSubmatch(after.body)
	if keyID == nil {
		t.Fatalf("no revoke button: %s", after.body)
	}
	revoked := b.post("/keys/"+keyID[1]+"/revoke", url.Values{"csrf": {csrf}})
	if revoked.status != http.StatusSeeOther || revoked.header.Get("Location") != subPath {
		t.Fatalf("revoke: %d %q", revoked.status, revoked.header.Get("Location"))
	}
	if p := b.get(subPath); !strings.Contains(p.body, `state-revoked`) {
		t.Errorf("the key does not show revoked: %s", p.body)
	}
}

// TestPortalRefusesLargeBodiesAndListings: a page request's body is
// bounded before anything parses it, and the assets are files, never a
// directory listing.
func TestPortalRefusesLargeBodiesAndListings(t *testing.T) {
	pp := newPortalPlane(t)
	b := pp.browser()
	b.signIn("consumer")
	big := url.Values{"csrf": {"x"}, "name": {strings.Repeat("a", 200<<10)}}
	if p := b.post("/subscriptions/00000000-0000-4000-8000-000000000000/keys", big); p.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a 200 KiB form: %d; want 413", p.status)
	}
	for _, path := range []string{"/assets/", "/assets/vendor/"} {
		if p := b.get(path); p.status != http.StatusNotFound {
			t.Errorf("GET %s: %d; want 404, not a listing", path, p.status)
		}
	}
	if p := b.get("/assets/portal.css"); p.status != http.StatusOK {
		t.Errorf("GET /assets/portal.css: %d", p.status)
	}
}
