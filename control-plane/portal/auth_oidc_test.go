package portal_test

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/portal"
	"github.com/veil-platform/veil/control-plane/portal/portaltest"
)

// opUsers: ada has Veil claims, nobody none, owner an unknown role,
// tenant its claims under other names.
var opUsers = []portaltest.User{
	{Username: "ada", Subject: "u-ada", FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com", EmailVerified: true, Org: "acme", Role: "provider"},
	{Username: "nobody", Subject: "u-nobody", FirstName: "No", LastName: "Body", Email: "nobody@example.com"},
	{Username: "owner", Subject: "u-owner", FirstName: "O", LastName: "Wner", Org: "acme", Role: "owner"},
	{Username: "tenant", Subject: "u-tenant", FirstName: "Ten", LastName: "Ant", Claims: map[string]any{"https://veil.example/org": "globex", "https://veil.example/role": "consumer"}},
}

// adaPrincipal is what ada's ID token maps to.
var adaPrincipal = identity.Principal{Subject: "u-ada", Org: "acme", Role: identity.RoleProvider, Name: "Ada Lovelace", Email: "ada@example.com", EmailVerified: true}

// newOIDCEnv starts a provider and a portal that signs in with it; edit,
// when not nil, changes the portal's OIDC configuration.
func newOIDCEnv(t *testing.T, tls bool, edit func(*portal.OIDCConfig, *portaltest.OP)) (*authEnv, *portaltest.OP) {
	t.Helper()
	var o *portaltest.OP
	e := newAuthEnv(t, tls, func(srvURL string, cfg *portal.AuthConfig) {
		o = portaltest.StartOP(t, []string{srvURL + "/auth/callback"}, opUsers...)
		cfg.OIDC = &portal.OIDCConfig{
			Issuer: o.Issuer(), ClientID: o.ClientID, ClientSecret: o.ClientSecret, RedirectURL: srvURL + "/auth/callback",
		}
		if edit != nil {
			edit(cfg.OIDC, o)
		}
	})
	return e, o
}

// signIn signs user in through the provider, with return_to=returnTo when
// not empty, and returns the status, final URL and body.
func signIn(t *testing.T, c *http.Client, e *authEnv, user, returnTo string) (status int, final *url.URL, body string) {
	t.Helper()
	resp := portaltest.SignIn(t, c, e.srv.URL, user, returnTo)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Request.URL, string(b)
}

// callbackURL signs user in at the provider, but does not follow the
// provider's redirect back to the portal: it returns the callback URL.
func callbackURL(t *testing.T, c *http.Client, e *authEnv, o *portaltest.OP, user, returnTo string) *url.URL {
	t.Helper()
	cc := *c
	cc.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		if r.URL.Path == "/auth/callback" && !strings.HasPrefix(r.URL.String(), o.Issuer()) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp := portaltest.SignIn(t, &cc, e.srv.URL, user, returnTo)
	resp.Body.Close()
	callback, err := resp.Location()
	if resp.StatusCode != http.StatusFound || err != nil || callback.Path != "/auth/callback" {
		t.Fatalf("the provider answered the login with %d %v; want a redirect to the portal's callback", resp.StatusCode, callback)
	}
	return callback
}

// cookieRecorder records the Set-Cookie headers of responses to path.
type cookieRecorder struct {
	base http.RoundTripper
	path string
	mu   sync.Mutex
	got  []string
}

func (r *cookieRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err == nil && req.URL.Path == r.path {
		r.mu.Lock()
		r.got = append(r.got, resp.Header.Values("Set-Cookie")...)
		r.mu.Unlock()
	}
	return resp, err
}

func TestOIDCSignIn(t *testing.T) {
	e, o := newOIDCEnv(t, true, nil)
	c := e.client(t)
	rec := &cookieRecorder{base: c.Transport, path: "/auth/callback"}
	c.Transport = rec

	status, final, body := signIn(t, c, e, "ada", "/private")
	q := o.LastAuthRequest(t)
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 {
		t.Errorf("authorization request code_challenge_method=%q code_challenge=%q; want S256 and a 43-character challenge", q.Get("code_challenge_method"), q.Get("code_challenge"))
	}
	for _, k := range []string{"state", "nonce"} {
		if len(q.Get(k)) < 43 {
			t.Errorf("authorization request %s = %q; want 32 random bytes", k, q.Get(k))
		}
	}
	if q.Get("client_id") != o.ClientID || q.Get("response_type") != "code" || q.Get("scope") != "openid profile email" {
		t.Errorf("authorization request = %v; want client %s, response_type code, scope openid profile email", q, o.ClientID)
	}

	if status != http.StatusOK || final.Path != "/private" || !strings.HasPrefix(final.String(), e.srv.URL) {
		t.Fatalf("after the provider's login: %d at %s (%.300s); want 200 at the portal's /private", status, final, body)
	}
	if got := principalOf(t, body); got != adaPrincipal {
		t.Fatalf("SessionFrom(...).Principal = %+v; want %+v", got, adaPrincipal)
	}

	var sessionCookie string
	for _, sc := range rec.got {
		if strings.HasPrefix(sc, "__Host-veil_session=") {
			sessionCookie = sc
		}
	}
	if sessionCookie == "" {
		t.Fatalf("callback Set-Cookie = %q; want __Host-veil_session", rec.got)
	}
	for _, attr := range []string{"Path=/", "Max-Age=43200", "HttpOnly", "Secure", "SameSite=Lax"} {
		if !strings.Contains(sessionCookie, "; "+attr) {
			t.Errorf("session cookie %q lacks %s", sessionCookie, attr)
		}
	}
	if strings.Contains(sessionCookie, "Domain=") {
		t.Errorf("session cookie %q has a Domain; want none", sessionCookie)
	}
	// Only the value's hash is stored.
	value := strings.TrimPrefix(strings.SplitN(sessionCookie, ";", 2)[0], "__Host-veil_session=")
	sum := sha256.Sum256([]byte(value))
	var n int
	if err := e.cfg.Pool.QueryRow(t.Context(), "SELECT count(*) FROM portal_sessions WHERE id_hash = $1 AND method = 'oidc'", sum[:]).Scan(&n); err != nil || n != 1 {
		t.Fatalf("sessions stored under the cookie value's SHA-256 = %d, %v; want 1", n, err)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(value); err != nil || len(raw) != 32 {
		t.Errorf("cookie value %q: want 32 bytes base64url", value)
	}
	if got := e.counter(`veil_portal_signins_total{method="oidc",result="ok"}`); got != 1 {
		t.Errorf("signins ok = %d; want 1", got)
	}
	// The pending sign-in is gone.
	if err := e.cfg.Pool.QueryRow(t.Context(), "SELECT count(*) FROM portal_logins").Scan(&n); err != nil || n != 0 {
		t.Errorf("pending sign-ins after the callback = %d, %v; want 0", n, err)
	}
}

func TestOIDCPublicClient(t *testing.T) {
	e, _ := newOIDCEnv(t, false, func(c *portal.OIDCConfig, o *portaltest.OP) {
		c.ClientID, c.ClientSecret = o.PublicClientID, ""
	})
	c := e.client(t)
	status, final, body := signIn(t, c, e, "ada", "/private")
	if status != http.StatusOK || final.Path != "/private" || principalOf(t, body) != adaPrincipal {
		t.Fatalf("public client sign-in: %d at %s %q; want 200 at /private as %+v", status, final, body, adaPrincipal)
	}
	u, _ := url.Parse(e.srv.URL)
	if cs := c.Jar.Cookies(u); len(cs) == 0 || !hasCookie(cs, "veil_session") {
		t.Errorf("cookies = %v; want veil_session (no __Host- prefix without Secure)", cs)
	}
}

func hasCookie(cs []*http.Cookie, name string) bool {
	for _, c := range cs {
		if c.Name == name {
			return true
		}
	}
	return false
}

func TestOIDCCustomClaimNames(t *testing.T) {
	e, _ := newOIDCEnv(t, false, func(c *portal.OIDCConfig, _ *portaltest.OP) {
		c.OrgClaim, c.RoleClaim = "https://veil.example/org", "https://veil.example/role"
	})
	c := e.client(t)
	status, final, body := signIn(t, c, e, "tenant", "/private")
	want := identity.Principal{Subject: "u-tenant", Org: "globex", Role: identity.RoleConsumer, Name: "Ten Ant"}
	if status != http.StatusOK || final.Path != "/private" || principalOf(t, body) != want {
		t.Fatalf("sign-in with custom claim names: %d at %s %q; want 200 at /private as %+v", status, final, body, want)
	}
}

func TestOIDCStateRefused(t *testing.T) {
	e, o := newOIDCEnv(t, false, nil)

	t.Run("replay", func(t *testing.T) {
		c := e.client(t)
		callback := callbackURL(t, c, e, o, "ada", "/private")
		if status, final, _ := get(t, c, callback.String()); status != http.StatusOK || final.Path != "/private" {
			t.Fatalf("first callback: %d at %s; want signed in at /private", status, final)
		}
		if status, _, _ := get(t, c, callback.String()); status != http.StatusBadRequest {
			t.Fatalf("replayed callback = %d; want 400", status)
		}
		if f := e.lastFail(t); !strings.Contains(f.detail, "expired or was already used") {
			t.Errorf("replay: Fail(%+v); want it to say the sign-in was used", f)
		}
	})
	t.Run("wrong state", func(t *testing.T) {
		c := e.client(t)
		callback := callbackURL(t, c, e, o, "ada", "")
		q := callback.Query()
		q.Set("state", "A"+q.Get("state")[1:])
		callback.RawQuery = q.Encode()
		if status, _, _ := get(t, c, callback.String()); status != http.StatusBadRequest {
			t.Fatalf("callback with a wrong state = %d; want 400", status)
		}
		q.Del("state")
		callback.RawQuery = q.Encode()
		if status, _, _ := get(t, c, callback.String()); status != http.StatusBadRequest {
			t.Fatalf("callback without a state = %d; want 400", status)
		}
	})
	t.Run("another browser", func(t *testing.T) {
		c := e.client(t)
		callback := callbackURL(t, c, e, o, "ada", "")
		victim := e.client(t)
		if status, _, _ := get(t, victim, callback.String()); status != http.StatusBadRequest {
			t.Fatalf("callback in a browser that did not start the sign-in = %d; want 400", status)
		}
		// It used the state up: the right browser cannot finish either.
		if status, _, _ := get(t, c, callback.String()); status != http.StatusBadRequest {
			t.Fatalf("callback after a foreign attempt = %d; want 400", status)
		}
	})
	t.Run("expired", func(t *testing.T) {
		c := e.client(t)
		callback := callbackURL(t, c, e, o, "ada", "")
		e.clock.Advance(10*time.Minute + time.Second)
		defer e.clock.Advance(-10*time.Minute - time.Second)
		if status, _, _ := get(t, c, callback.String()); status != http.StatusBadRequest {
			t.Fatalf("callback after 10 minutes = %d; want 400", status)
		}
	})
	if got := e.counter(`veil_portal_signins_total{method="oidc",result="refused"}`); got < 5 {
		t.Errorf("signins refused = %d; want at least 5", got)
	}
}

func TestOIDCClaimsRefused(t *testing.T) {
	e, _ := newOIDCEnv(t, false, nil)
	for _, user := range []string{"nobody", "owner"} {
		c := e.client(t)
		status, _, _ := signIn(t, c, e, user, "/private")
		if status != http.StatusForbidden {
			t.Fatalf("%s: sign-in = %d; want 403", user, status)
		}
		if f := e.lastFail(t); !strings.Contains(f.detail, `"org"`) || !strings.Contains(f.detail, `"role"`) {
			t.Errorf("%s: Fail(%+v); want it to name the org and role claims", user, f)
		}
		u, _ := url.Parse(e.srv.URL)
		if hasCookie(c.Jar.Cookies(u), "veil_session") {
			t.Errorf("%s: a session cookie was set", user)
		}
	}
	var n int
	if err := e.cfg.Pool.QueryRow(t.Context(), "SELECT count(*) FROM portal_sessions").Scan(&n); err != nil || n != 0 {
		t.Fatalf("sessions = %d, %v; want 0", n, err)
	}
}

func TestOIDCReturnTo(t *testing.T) {
	e, _ := newOIDCEnv(t, false, nil)
	tests := []struct{ returnTo, want string }{
		{"/private?tab=keys", "/private?tab=keys"},
		{"", "/"},
		{"//evil.example", "/"},
		{"//evil.example/private", "/"},
		{"https://evil.example", "/"},
		{"https://evil.example/private", "/"},
		{`/\evil.example`, "/"},
		{`\\evil.example`, "/"},
		{"javascript:alert(1)", "/"},
		{"private", "/"},
		{"/\tprivate", "/"},
	}
	for _, tc := range tests {
		c := e.client(t)
		status, final, _ := signIn(t, c, e, "ada", tc.returnTo)
		if got := final.RequestURI(); status != http.StatusOK || !strings.HasPrefix(final.String(), e.srv.URL+"/") || got != tc.want {
			t.Errorf("return_to %q: ended at %d %s; want 200 at the portal's %s", tc.returnTo, status, final, tc.want)
		}
	}
}

func TestOIDCProviderError(t *testing.T) {
	e, o := newOIDCEnv(t, false, nil)
	c := e.client(t)
	if status, final, body := get(t, c, e.srv.URL+"/auth/login"); status != http.StatusOK || final.Path != portaltest.LoginPath || !strings.HasPrefix(final.String(), o.Issuer()) {
		t.Fatalf("GET /auth/login ended at %d %s (%.300s); want the provider's login form", status, final, body)
	}
	state := o.LastAuthRequest(t).Get("state")
	q := url.Values{"error": {"access_denied"}, "error_description": {"The user said no"}, "state": {state}}
	if status, _, _ := get(t, c, e.srv.URL+"/auth/callback?"+q.Encode()); status != http.StatusUnauthorized {
		t.Fatalf("callback with error=access_denied = %d; want 401", status)
	}
	if f := e.lastFail(t); !strings.Contains(f.detail, "access_denied") || !strings.Contains(f.detail, "The user said no") {
		t.Errorf("Fail(%+v); want the provider's error and description", f)
	}
	q.Set("error", "invalid_scope")
	if status, _, _ := get(t, c, e.srv.URL+"/auth/callback?"+q.Encode()); status != http.StatusBadRequest {
		t.Fatalf("callback with error=invalid_scope = %d; want 400", status)
	}
}

func TestOIDCOff(t *testing.T) {
	e := newAuthEnv(t, false, nil)
	for _, p := range []string{"/auth/login", "/auth/callback?code=x&state=y"} {
		if status, _, _ := get(t, e.client(t), e.srv.URL+p); status != http.StatusNotFound {
			t.Errorf("GET %s without OIDC = %d; want 404", p, status)
		}
	}
}

// The provider is down when the portal starts: sign-in answers 503, then
// works once the provider is up.
func TestOIDCProviderDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: discovery fails
	e := newAuthEnv(t, false, func(srvURL string, cfg *portal.AuthConfig) {
		cfg.OIDC = &portal.OIDCConfig{Issuer: "http://" + addr + "/", ClientID: "veil-portal", RedirectURL: srvURL + "/auth/callback"}
	})
	if status, _, _ := get(t, e.client(t), e.srv.URL+"/auth/login"); status != http.StatusServiceUnavailable {
		t.Fatalf("GET /auth/login with the provider down = %d; want 503", status)
	}
}
