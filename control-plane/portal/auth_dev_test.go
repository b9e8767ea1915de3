package portal_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/portal"
)

var personas = []portal.DevPersona{
	{Key: "ada", Label: "Ada (provider at acme)", Principal: ada},
	{Key: "carol", Label: "Carol (consumer at globex)", Principal: carol},
}

func withPersonas(_ string, cfg *portal.AuthConfig) { cfg.Dev = personas }

// devForm GETs the development sign-in form and returns the token
// RenderDev was given.
func (e *authEnv) devForm(t *testing.T, c *http.Client, query string) string {
	t.Helper()
	status, _, body := get(t, c, e.srv.URL+"/auth/dev?"+query)
	if status != http.StatusOK {
		t.Fatalf("GET /auth/dev?%s = %d %q; want 200", query, status, body)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.devs) == 0 {
		t.Fatal("RenderDev not called")
	}
	return e.devs[len(e.devs)-1].csrf
}

func TestDevSignIn(t *testing.T) {
	for _, secure := range []bool{false, true} {
		e := newAuthEnv(t, secure, withPersonas)
		c := e.client(t)
		token := e.devForm(t, c, "persona=carol&return_to=/private")
		e.mu.Lock()
		got := e.devs[len(e.devs)-1]
		e.mu.Unlock()
		if got.selected != "carol" || len(got.personas) != 2 || got.personas[1].Key != "carol" || len(got.csrf) != 43 {
			t.Fatalf("RenderDev(%+v); want both personas, carol selected, a 43-character token", got)
		}
		// GET changed nothing: no session yet.
		if _, final, _ := get(t, c, e.srv.URL+"/private"); final.Path != "/signin" {
			t.Fatalf("after GET /auth/dev: GET /private ended at %s; want /signin", final)
		}
		status, body := post(t, c, e.srv.URL+"/auth/dev", url.Values{"csrf": {token}, "persona": {"carol"}}, http.Header{"Origin": {e.srv.URL}})
		if status != http.StatusOK || principalOf(t, body) != carol {
			t.Fatalf("secure=%v: POST /auth/dev = %d %q; want redirected to /private as %+v", secure, status, body, carol)
		}
		u, _ := url.Parse(e.srv.URL)
		name := "veil_session"
		if secure {
			name = "__Host-veil_session"
		}
		if !hasCookie(c.Jar.Cookies(u), name) {
			t.Errorf("secure=%v: cookies %v; want %s", secure, c.Jar.Cookies(u), name)
		}
		if n := e.counter(`veil_portal_signins_total{method="dev",result="ok"}`); n != 1 {
			t.Errorf("dev signins ok = %d; want 1", n)
		}
		// The token was single use.
		if status, _ := post(t, c, e.srv.URL+"/auth/dev", url.Values{"csrf": {token}, "persona": {"ada"}}, nil); status != http.StatusForbidden {
			t.Errorf("secure=%v: POST /auth/dev with a used token = %d; want 403", secure, status)
		}
	}
}

func TestDevSignInRefused(t *testing.T) {
	e := newAuthEnv(t, false, withPersonas)
	tests := []struct {
		name   string
		send   func(t *testing.T) int
		status int
	}{
		{"no token", func(t *testing.T) int {
			c := e.client(t)
			e.devForm(t, c, "")
			s, _ := post(t, c, e.srv.URL+"/auth/dev", url.Values{"persona": {"ada"}}, nil)
			return s
		}, http.StatusForbidden},
		{"wrong token", func(t *testing.T) int {
			c := e.client(t)
			tok := e.devForm(t, c, "")
			s, _ := post(t, c, e.srv.URL+"/auth/dev", url.Values{"csrf": {"A" + tok[1:]}, "persona": {"ada"}}, nil)
			return s
		}, http.StatusForbidden},
		{"token from another browser", func(t *testing.T) int {
			tok := e.devForm(t, e.client(t), "")
			s, _ := post(t, e.client(t), e.srv.URL+"/auth/dev", url.Values{"csrf": {tok}, "persona": {"ada"}}, nil)
			return s
		}, http.StatusForbidden},
		{"foreign origin", func(t *testing.T) int {
			c := e.client(t)
			tok := e.devForm(t, c, "")
			s, _ := post(t, c, e.srv.URL+"/auth/dev", url.Values{"csrf": {tok}, "persona": {"ada"}}, http.Header{"Origin": {"https://evil.example"}})
			return s
		}, http.StatusForbidden},
		{"unknown persona", func(t *testing.T) int {
			c := e.client(t)
			tok := e.devForm(t, c, "")
			s, _ := post(t, c, e.srv.URL+"/auth/dev", url.Values{"csrf": {tok}, "persona": {"mallory"}}, nil)
			return s
		}, http.StatusBadRequest},
		{"unknown persona in the link", func(t *testing.T) int {
			s, _, _ := get(t, e.client(t), e.srv.URL+"/auth/dev?persona=mallory")
			return s
		}, http.StatusNotFound},
		{"expired form", func(t *testing.T) int {
			c := e.client(t)
			tok := e.devForm(t, c, "")
			e.clock.Advance(11 * time.Minute)
			defer e.clock.Advance(-11 * time.Minute)
			s, _ := post(t, c, e.srv.URL+"/auth/dev", url.Values{"csrf": {tok}, "persona": {"ada"}}, nil)
			return s
		}, http.StatusForbidden},
	}
	for _, tc := range tests {
		if got := tc.send(t); got != tc.status {
			t.Errorf("%s: status %d; want %d", tc.name, got, tc.status)
		}
	}
	var n int
	if err := e.cfg.Pool.QueryRow(t.Context(), "SELECT count(*) FROM portal_sessions").Scan(&n); err != nil || n != 0 {
		t.Fatalf("sessions = %d, %v; want 0", n, err)
	}
}

func TestDevSignInOff(t *testing.T) {
	e := newAuthEnv(t, false, nil)
	if s, _, _ := get(t, e.client(t), e.srv.URL+"/auth/dev?persona=ada"); s != http.StatusNotFound {
		t.Errorf("GET /auth/dev without personas = %d; want 404", s)
	}
	if s, _ := post(t, e.client(t), e.srv.URL+"/auth/dev", url.Values{"csrf": {"x"}, "persona": {"ada"}}, nil); s != http.StatusNotFound {
		t.Errorf("POST /auth/dev without personas = %d; want 404", s)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.devs) != 0 {
		t.Errorf("RenderDev called %d times; want never", len(e.devs))
	}
}

func TestNewAuthRefuses(t *testing.T) {
	e := newAuthEnv(t, false, nil)
	base := e.cfg
	tests := []struct {
		name string
		edit func(*portal.AuthConfig)
	}{
		{"no pool", func(c *portal.AuthConfig) { c.Pool = nil }},
		{"dev without RenderDev", func(c *portal.AuthConfig) { c.Dev, c.RenderDev = personas, nil }},
		{"duplicate persona", func(c *portal.AuthConfig) { c.Dev = append(append([]portal.DevPersona{}, personas...), personas[0]) }},
		{"invalid persona", func(c *portal.AuthConfig) {
			p := personas[0]
			p.Principal.Org = "Not A Slug"
			c.Dev = []portal.DevPersona{p}
		}},
		{"OIDC without issuer", func(c *portal.AuthConfig) {
			c.OIDC = &portal.OIDCConfig{ClientID: "x", RedirectURL: "https://veil.example/auth/callback"}
		}},
		{"OIDC relative redirect", func(c *portal.AuthConfig) {
			c.OIDC = &portal.OIDCConfig{Issuer: "https://idp.example", ClientID: "x", RedirectURL: "/auth/callback"}
		}},
	}
	for _, tc := range tests {
		cfg := base
		tc.edit(&cfg)
		if _, err := portal.NewAuth(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "new auth") {
			t.Errorf("%s: NewAuth = %v; want an error", tc.name, err)
		}
	}
}
