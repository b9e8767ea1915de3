package portal_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/portal"
	"github.com/veil-platform/veil/internal/testenv"
)

// authEnv is an Auth behind a test server with a public page (/), a
// protected page (/private, which answers the session's principal as
// JSON) and a protected action (POST /private/action).
type authEnv struct {
	auth    *portal.Auth
	srv     *httptest.Server
	clock   *testenv.Clock
	metrics *metrics.Set
	cfg     portal.AuthConfig

	mu    sync.Mutex
	fails []failure // what cfg.Fail was asked to render
	devs  []devRender
}

type failure struct {
	status        int
	title, detail string
}

type devRender struct {
	personas []portal.DevPersona
	selected string
	csrf     string
}

var (
	ada   = identity.Principal{Subject: "u-ada", Org: "acme", Role: identity.RoleProvider, Name: "Ada Lovelace", Email: "ada@example.com", EmailVerified: true}
	carol = identity.Principal{Subject: "u-carol", Org: "globex", Role: identity.RoleConsumer, Name: "Carol"}
)

// newAuthEnv starts the server, over https when tls; edit, when not nil,
// changes the config, knowing the server's URL, before NewAuth.
func newAuthEnv(t *testing.T, tls bool, edit func(srvURL string, cfg *portal.AuthConfig)) *authEnv {
	t.Helper()
	e := &authEnv{clock: testenv.NewClock(time.Now()), metrics: metrics.NewSet()}
	var h http.Handler = http.NotFoundHandler()
	ready := make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-ready; h.ServeHTTP(w, r) })
	if tls {
		e.srv = httptest.NewTLSServer(handler)
	} else {
		e.srv = httptest.NewServer(handler)
	}
	t.Cleanup(e.srv.Close)
	e.cfg = portal.AuthConfig{
		Pool:    testenv.Postgres(t),
		Logger:  testenv.Logger(t),
		Metrics: e.metrics,
		Secure:  tls,
		Now:     e.clock.Now,
		Fail: func(w http.ResponseWriter, r *http.Request, status int, title, detail string) {
			e.mu.Lock()
			e.fails = append(e.fails, failure{status, title, detail})
			e.mu.Unlock()
			http.Error(w, title+": "+detail, status)
		},
		RenderDev: func(w http.ResponseWriter, r *http.Request, personas []portal.DevPersona, selected, csrf string) {
			e.mu.Lock()
			e.devs = append(e.devs, devRender{personas, selected, csrf})
			e.mu.Unlock()
			fmt.Fprintf(w, "<form method=post action=/auth/dev><input name=csrf value=%q></form>", csrf)
		},
	}
	if edit != nil {
		edit(e.srv.URL, &e.cfg)
	}
	a, err := portal.NewAuth(t.Context(), e.cfg)
	if err != nil {
		close(ready)
		t.Fatalf("NewAuth = %v", err)
	}
	e.auth = a
	r := chi.NewRouter()
	r.Group(func(r chi.Router) {
		r.Use(a.Middleware)
		a.Routes(r)
		r.Get("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "home") })
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			r.MethodFunc(m, "/public-form", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "posted") })
		}
		r.Group(func(r chi.Router) {
			r.Use(a.Require)
			r.Get("/private", func(w http.ResponseWriter, r *http.Request) {
				s, ok := portal.SessionFrom(r.Context())
				if !ok {
					http.Error(w, "no session behind Require", http.StatusInternalServerError)
					return
				}
				_ = json.NewEncoder(w).Encode(s.Principal)
			})
			r.Post("/private/action", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "done") })
		})
	})
	h = r
	close(ready)
	return e
}

// client returns a browser-like client: a cookie jar, redirects followed.
func (e *authEnv) client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := *e.srv.Client()
	c.Jar = jar
	return &c
}

func (e *authEnv) lastFail(t *testing.T) failure {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.fails) == 0 {
		t.Fatal("Fail was not called; want an error page")
	}
	return e.fails[len(e.fails)-1]
}

func (e *authEnv) counter(name string) uint64 {
	return e.metrics.GetOrCreateCounter(name).Get()
}

// get fetches path with c and returns the status, final URL and body.
func get(t *testing.T, c *http.Client, u string) (int, *url.URL, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Request.URL, string(b)
}

// post sends a form with c and returns the status and body.
func post(t *testing.T, c *http.Client, u string, form url.Values, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// signedIn returns a client holding a session for p, and its CSRF token.
func (e *authEnv) signedIn(t *testing.T, p identity.Principal) (*http.Client, string) {
	t.Helper()
	cookie, s := portal.SignInForTest(t, e.auth, p)
	c := e.client(t)
	u, _ := url.Parse(e.srv.URL)
	c.Jar.SetCookies(u, []*http.Cookie{cookie})
	return c, s.CSRF
}

func principalOf(t *testing.T, body string) identity.Principal {
	t.Helper()
	var p identity.Principal
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return p
}

func TestRequireRedirectsToSignIn(t *testing.T) {
	e := newAuthEnv(t, false, nil)
	c := e.client(t)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(e.srv.URL + "/private?tab=keys")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/signin?return_to=%2Fprivate%3Ftab%3Dkeys" {
		t.Fatalf("GET /private without a session = %d Location %q; want 303 to /signin?return_to=%%2Fprivate%%3Ftab%%3Dkeys", resp.StatusCode, loc)
	}
	if v := resp.Header.Values("Vary"); !contains(v, "Cookie") {
		t.Errorf("Vary = %v; want Cookie", v)
	}

	c2, csrf := e.signedIn(t, ada)
	status, _, body := get(t, c2, e.srv.URL+"/private")
	if status != http.StatusOK || principalOf(t, body) != ada {
		t.Fatalf("GET /private signed in = %d %s; want 200 with %+v", status, body, ada)
	}
	// A POST without a session: refused (no token can match), not redirected.
	if status, _ := post(t, e.client(t), e.srv.URL+"/private/action", url.Values{"csrf": {csrf}}, nil); status != http.StatusForbidden {
		t.Fatalf("POST /private/action without a session = %d; want 403", status)
	}
}

func contains(vs []string, want string) bool {
	for _, v := range vs {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == want {
				return true
			}
		}
	}
	return false
}

func TestCacheHeaders(t *testing.T) {
	e := newAuthEnv(t, false, nil)
	resp, err := e.client(t).Get(e.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cc := resp.Header.Get("Cache-Control"); cc == "no-store" {
		t.Errorf("GET / without a session: Cache-Control = %q; want it left to the page", cc)
	}
	c, _ := e.signedIn(t, ada)
	resp, err = c.Get(e.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("GET / with a session: Cache-Control = %q; want no-store", cc)
	}
	if v := resp.Header.Values("Vary"); !contains(v, "Cookie") {
		t.Errorf("Vary = %v; want Cookie", v)
	}
}

func TestCSRF(t *testing.T) {
	e := newAuthEnv(t, false, nil)
	c, csrf := e.signedIn(t, ada)
	_, other := e.signedIn(t, carol)
	origin := e.srv.URL
	tests := []struct {
		name   string
		form   url.Values
		header http.Header
		status int
	}{
		{"no token", nil, nil, http.StatusForbidden},
		{"empty token", url.Values{"csrf": {""}}, nil, http.StatusForbidden},
		{"wrong token", url.Values{"csrf": {"x" + csrf[1:]}}, nil, http.StatusForbidden},
		{"another session's token", url.Values{"csrf": {other}}, nil, http.StatusForbidden},
		{"right token, foreign Origin", url.Values{"csrf": {csrf}}, http.Header{"Origin": {"https://evil.example"}}, http.StatusForbidden},
		{"right token, cross-site fetch", url.Values{"csrf": {csrf}}, http.Header{"Sec-Fetch-Site": {"cross-site"}}, http.StatusForbidden},
		{"right token, same-site fetch", url.Values{"csrf": {csrf}}, http.Header{"Sec-Fetch-Site": {"same-site"}}, http.StatusForbidden},
		{"right token in the form", url.Values{"csrf": {csrf}}, nil, http.StatusOK},
		{"right token, own Origin", url.Values{"csrf": {csrf}}, http.Header{"Origin": {origin}}, http.StatusOK},
		{"right token, same-origin fetch", url.Values{"csrf": {csrf}}, http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {origin}}, http.StatusOK},
		{"right token in the header", nil, http.Header{"X-Csrf-Token": {csrf}}, http.StatusOK},
		{"wrong header beats right form", url.Values{"csrf": {csrf}}, http.Header{"X-Csrf-Token": {other}}, http.StatusForbidden},
	}
	for _, tc := range tests {
		for _, path := range []string{"/private/action", "/public-form"} {
			before := e.counter("veil_portal_csrf_refusals_total")
			status, body := post(t, c, e.srv.URL+path, tc.form, tc.header)
			if status != tc.status {
				t.Errorf("%s: POST %s = %d %q; want %d", tc.name, path, status, body, tc.status)
				continue
			}
			if tc.status == http.StatusForbidden {
				if f := e.lastFail(t); f.status != http.StatusForbidden || !strings.Contains(f.detail, "reload the page") {
					t.Errorf("%s: Fail(%+v); want 403 telling to reload the page", tc.name, f)
				}
				if after := e.counter("veil_portal_csrf_refusals_total"); after != before+1 {
					t.Errorf("%s: csrf refusals %d -> %d; want +1", tc.name, before, after)
				}
			}
		}
	}
	// PUT, PATCH and DELETE are unsafe too.
	for _, m := range []string{http.MethodPut, http.MethodPatch, http.MethodDelete} {
		req, _ := http.NewRequestWithContext(t.Context(), m, e.srv.URL+"/public-form", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s without a token = %d; want 403", m, resp.StatusCode)
		}
	}
}

func TestLogoutEndsTheSession(t *testing.T) {
	e := newAuthEnv(t, false, nil)
	c, csrf := e.signedIn(t, ada)
	u, _ := url.Parse(e.srv.URL)
	old := c.Jar.Cookies(u)

	if status, _ := post(t, c, e.srv.URL+"/auth/logout", nil, nil); status != http.StatusForbidden {
		t.Fatalf("POST /auth/logout without the token = %d; want 403", status)
	}
	if status, _, _ := get(t, c, e.srv.URL+"/private"); status != http.StatusOK {
		t.Fatalf("after a refused logout GET /private = %d; want 200 (still signed in)", status)
	}
	status, body := post(t, c, e.srv.URL+"/auth/logout", url.Values{"csrf": {csrf}}, nil)
	if status != http.StatusOK || body != "home" {
		t.Fatalf("POST /auth/logout = %d %q; want redirected home", status, body)
	}
	if got := c.Jar.Cookies(u); len(got) != 0 {
		t.Errorf("cookies after logout = %v; want cleared", got)
	}
	if n := e.counter("veil_portal_signouts_total"); n != 1 {
		t.Errorf("signouts = %d; want 1", n)
	}
	// The old cookie, replayed, no longer works: the session is gone server-side.
	replay := e.client(t)
	replay.Jar.SetCookies(u, old)
	if _, final, _ := get(t, replay, e.srv.URL+"/private"); final.Path != "/signin" {
		t.Fatalf("GET /private with the signed-out cookie ended at %s; want /signin", final)
	}
	var n int
	if err := e.cfg.Pool.QueryRow(t.Context(), "SELECT count(*) FROM portal_sessions WHERE subject = $1", ada.Subject).Scan(&n); err != nil || n != 0 {
		t.Fatalf("sessions of %s after logout = %d, %v; want 0", ada.Subject, n, err)
	}
}

func TestSessionExpiry(t *testing.T) {
	tests := []struct {
		name  string
		steps []time.Duration // clock moves, each followed by a GET /private that must pass
		final time.Duration   // then this move, after which the session is gone
	}{
		// Used every 90 minutes, it lives until its absolute end of 12h.
		{"absolute", []time.Duration{90 * time.Minute, 90 * time.Minute, 90 * time.Minute, 90 * time.Minute, 90 * time.Minute, 90 * time.Minute, 90 * time.Minute, 90*time.Minute - time.Second}, time.Second},
		// Unused for 2h since its last use, it ends.
		{"idle", []time.Duration{time.Hour, 2*time.Hour - time.Second}, 2 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newAuthEnv(t, false, nil)
			c, _ := e.signedIn(t, ada)
			for i, d := range tc.steps {
				e.clock.Advance(d)
				if status, final, _ := get(t, c, e.srv.URL+"/private"); status != http.StatusOK || final.Path != "/private" {
					t.Fatalf("step %d (+%s): GET /private = %d at %s; want 200", i, d, status, final)
				}
			}
			e.clock.Advance(tc.final)
			u, _ := url.Parse(e.srv.URL)
			if _, final, _ := get(t, c, e.srv.URL+"/private"); final.Path != "/signin" {
				t.Fatalf("after expiry GET /private ended at %s; want /signin", final)
			}
			if got := c.Jar.Cookies(u); len(got) != 0 {
				t.Errorf("cookies after expiry = %v; want cleared", got)
			}
			var n int
			if err := e.cfg.Pool.QueryRow(t.Context(), "SELECT count(*) FROM portal_sessions").Scan(&n); err != nil || n != 0 {
				t.Fatalf("sessions after expiry = %d, %v; want 0 (deleted)", n, err)
			}
		})
	}
}
