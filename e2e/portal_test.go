package e2e

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/portal/portaltest"
	"github.com/veil-platform/veil/internal/testenv"
)

// portalConsumer signs in to the portal in the portal's tests: a consumer
// at e2e-travel, known to the OpenID provider the tests start.
var portalConsumer = portaltest.User{
	Username: "sam", Subject: "sam-e2e", FirstName: "Sam", LastName: "Traveller",
	Email: "sam@e2e-travel.example", EmailVerified: true, Org: "e2e-travel", Role: "consumer",
}

// portalEnv is a control plane whose portal signs users in with an OpenID
// provider run in process, and an API in its catalog: active, with one
// plan. The browser tests' screenshots show them.
type portalEnv struct {
	cp   *controlPlane
	op   *portaltest.OP
	api  client.API
	plan client.Plan
}

// newPortalEnv starts the provider and the control plane, the control
// plane's address chosen first: the provider must know its callback,
// <VEIL_PUBLIC_URL>/auth/callback. A provider registers an API (the
// upstream answers its health check) and an admin approves it until it is
// active.
func newPortalEnv(t *testing.T) *portalEnv {
	t.Helper()
	e := newCPEnv(t)
	o := e.options(4)
	o.addr = testenv.FreeLoopbackAddr(t)
	public := "http://" + o.addr
	op := portaltest.StartOP(t, []string{public + "/auth/callback"}, portalConsumer)
	o.env = []string{
		"VEIL_OIDC_ISSUER=" + op.Issuer(), "VEIL_OIDC_CLIENT_ID=" + op.ClientID, "VEIL_OIDC_CLIENT_SECRET=" + op.ClientSecret,
		"VEIL_PUBLIC_URL=" + public,
	}
	cp := e.startControlPlane(t, o)

	ctx := t.Context()
	prov, admin := providerToken(t), adminToken(t)
	created, err := cp.CreateAPIWithResponse(ctx, nil, client.APIInput{
		Name: "Travel Search", Slug: "travel", UpstreamUrl: e.upstream.srv.URL + "/v1", Version: client.Ptr("2.1"),
		Description: client.Ptr("Flights, trains and hotels in one search, with live prices and seats."),
		Routes: &[]client.Route{
			{Methods: []client.RouteMethods{client.RouteMethodsGET}, Path: "/flights"},
			{Methods: []client.RouteMethods{client.RouteMethodsGET}, Path: "/hotels"},
			{Methods: []client.RouteMethods{client.RouteMethodsPOST}, Path: "/bookings"},
		},
		HealthCheckPath: client.Ptr("/health"), DocsUrl: client.Ptr("https://docs.example.com/travel"),
	}, client.Bearer(prov))
	expect(t, http.StatusCreated, created, err)
	apiID := created.JSON201.Id
	submitted, err := cp.SubmitAPIWithResponse(ctx, apiID, nil, client.SubmitInput{}, client.Bearer(prov))
	expect(t, http.StatusCreated, submitted, err)
	approve(t, cp, admin, submitted.JSON201.Id, client.DecisionInput{})
	api := waitState(t, cp, prov, apiID, "active", 30*time.Second, "failed")
	plan, err := cp.CreatePlanWithResponse(ctx, apiID, nil, client.PlanInput{
		Name: "Explorer", Slug: "explorer", Description: client.Ptr("For trips planned by hand."),
		Terms: client.TermsInput{Type: client.Ptr(client.PlanTypeSubscription), Currency: "USD", BaseFee: "9",
			QuotaRequests: client.Ptr[int64](10000), QuotaHard: client.Ptr(true)},
	}, client.Bearer(prov))
	expect(t, http.StatusCreated, plan, err)
	if plan.JSON201.Status != client.PlanStatusActive {
		t.Fatalf("new plan status = %s; want active", plan.JSON201.Status)
	}
	return &portalEnv{cp: cp, op: op, api: api, plan: *plan.JSON201}
}

// browserClient is an HTTP client with a cookie jar, following redirects.
func browserClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Transport: http.DefaultTransport}
}

// setCookieRecorder records the Set-Cookie headers of the responses to
// path.
type setCookieRecorder struct {
	base http.RoundTripper
	path string
	mu   sync.Mutex
	got  []string
}

func (r *setCookieRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err == nil && req.URL.Path == r.path {
		r.mu.Lock()
		r.got = append(r.got, resp.Header.Values("Set-Cookie")...)
		r.mu.Unlock()
	}
	return resp, err
}

// getPage GETs path with c and returns the response, its body read.
func getPage(t *testing.T, c *http.Client, base, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read the body: %v", path, err)
	}
	return resp, string(b)
}

// checkCSP fails the test unless resp carries a Content-Security-Policy
// whose scripts come from this origin only: script-src without
// 'unsafe-inline' or 'unsafe-eval', and default-src 'none'.
func checkCSP(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	csp := resp.Header.Get("Content-Security-Policy")
	directives := map[string]string{}
	for _, d := range strings.Split(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	script, ok := directives["script-src"]
	if !ok || strings.Contains(script, "'unsafe-inline'") || strings.Contains(script, "'unsafe-eval'") {
		t.Errorf("%s: Content-Security-Policy %q; want a script-src without 'unsafe-inline' or 'unsafe-eval'", what, csp)
	}
	if directives["default-src"] != "'none'" {
		t.Errorf("%s: Content-Security-Policy %q; want default-src 'none'", what, csp)
	}
}

// csrfField finds the sign-out form's CSRF token in a page.
var csrfField = regexp.MustCompile(`<form method="post" action="/auth/logout">\s*<input type="hidden" name="csrf" value="([^"]+)">`)

// TestPortalSignInAndCatalog signs a consumer in to the portal through the
// OpenID provider, browses the catalog, and signs out.
func TestPortalSignInAndCatalog(t *testing.T) {
	env := newPortalEnv(t)
	base := env.cp.URL

	t.Run("signed out, a page sends to the sign-in", func(t *testing.T) {
		c := browserClient(t)
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, _ := getPage(t, c, base, "/catalog")
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/signin?return_to=%2Fcatalog" {
			t.Fatalf("GET /catalog without a session = %d Location %q; want 303 to /signin?return_to=%%2Fcatalog", resp.StatusCode, loc)
		}
		checkCSP(t, "GET /catalog without a session", resp)
	})

	c := browserClient(t)
	rec := &setCookieRecorder{base: c.Transport, path: "/auth/callback"}
	c.Transport = rec
	resp := portaltest.SignIn(t, c, base, portalConsumer.Username, "/catalog")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != base+"/catalog" {
		t.Fatalf("sign-in ended at %d %s (%.500s); want 200 at %s/catalog", resp.StatusCode, resp.Request.URL, body, base)
	}

	t.Run("the session cookie", func(t *testing.T) {
		var session string
		for _, sc := range rec.got {
			if strings.HasPrefix(sc, "veil_session=") {
				session = sc
			}
		}
		if session == "" {
			t.Fatalf("callback Set-Cookie = %q; want veil_session (http public URL: no __Host- prefix)", rec.got)
		}
		for _, attr := range []string{"Path=/", "HttpOnly", "SameSite=Lax"} {
			if !strings.Contains(session, "; "+attr) {
				t.Errorf("session cookie %q lacks %s", session, attr)
			}
		}
	})

	t.Run("catalog", func(t *testing.T) {
		resp, body := getPage(t, c, base, "/catalog")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, env.api.Name) || !strings.Contains(body, `href="/catalog/`+env.api.Id.String()+`"`) {
			t.Fatalf("GET /catalog = %d (%.800s); want 200 listing %q linking /catalog/%s", resp.StatusCode, body, env.api.Name, env.api.Id)
		}
		if !strings.Contains(body, portalConsumer.FirstName+" "+portalConsumer.LastName) || !strings.Contains(body, portalConsumer.Org+" · consumer") {
			t.Errorf("GET /catalog does not name the signed-in user %s %s of %s (%.800s)", portalConsumer.FirstName, portalConsumer.LastName, portalConsumer.Org, body)
		}
		checkCSP(t, "GET /catalog", resp)
	})

	t.Run("an API's page", func(t *testing.T) {
		resp, body := getPage(t, c, base, "/catalog/"+env.api.Id.String())
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<h1>"+env.api.Name+"</h1>") {
			t.Fatalf("GET /catalog/%s = %d (%.800s); want 200 with the API's name", env.api.Id, resp.StatusCode, body)
		}
		_, plans, ok := strings.Cut(body, "<h2>Plans</h2>")
		if !ok || !strings.Contains(plans, "<h3>"+env.plan.Name+"</h3>") || !strings.Contains(plans, "9.00 USD") {
			t.Errorf("GET /catalog/%s: plans section %.800q; want the plan %s at 9.00 USD", env.api.Id, plans, env.plan.Name)
		}
		checkCSP(t, "GET /catalog/{id}", resp)
		if resp, _ := getPage(t, c, base, "/catalog/"+uuid.NewString()); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /catalog/<unknown id> = %d; want 404", resp.StatusCode)
		}
	})

	t.Run("the other pages' policies", func(t *testing.T) {
		for _, p := range []string{"/", "/docs", "/signin", "/no-such-page"} {
			resp, _ := getPage(t, c, base, p)
			checkCSP(t, "GET "+p, resp)
		}
	})

	t.Run("sign out", func(t *testing.T) {
		_, home := getPage(t, c, base, "/")
		m := csrfField.FindStringSubmatch(home)
		if m == nil {
			t.Fatalf("GET / signed in has no sign-out form with a CSRF token (%.800s)", home)
		}
		u, _ := url.Parse(base)
		old := c.Jar.Cookies(u)

		logout := func(form url.Values) (*http.Response, string) {
			t.Helper()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/auth/logout", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("POST /auth/logout: %v", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, string(b)
		}
		if resp, body := logout(url.Values{}); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST /auth/logout without the csrf field = %d (%.300s); want 403", resp.StatusCode, body)
		}
		if resp, _ := getPage(t, c, base, "/catalog"); resp.Request.URL.Path != "/catalog" {
			t.Fatalf("after a refused sign-out GET /catalog ended at %s; want still signed in", resp.Request.URL)
		}
		if resp, body := logout(url.Values{"csrf": {m[1]}}); resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" || strings.Contains(body, `action="/auth/logout"`) {
			t.Fatalf("POST /auth/logout = %d at %s; want signed out at /", resp.StatusCode, resp.Request.URL)
		}
		for _, ck := range c.Jar.Cookies(u) {
			if ck.Name == "veil_session" {
				t.Errorf("cookies after sign-out = %v; want veil_session cleared", c.Jar.Cookies(u))
			}
		}
		// The old cookie, replayed, no longer works.
		replay := browserClient(t)
		replay.Jar.SetCookies(u, old)
		if resp, _ := getPage(t, replay, base, "/catalog"); resp.Request.URL.Path != "/signin" || resp.Request.URL.Query().Get("return_to") != "/catalog" {
			t.Fatalf("GET /catalog with the signed-out cookie ended at %s; want /signin?return_to=%%2Fcatalog", resp.Request.URL)
		}
	})
}
