package portal_test

import (
	"context"
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

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/portal"
)

// testOP is zitadel's example OpenID provider, certified and real, run in
// process. Its users sign in at /login/username with the password
// "verysecure"; claims adds claims to a user's ID token.
type testOP struct {
	issuer string

	mu       sync.Mutex
	authReqs []url.Values // the queries of the authorization requests it got
}

const (
	opPassword     = "verysecure"
	opClientID     = "veil-portal"
	opClientSecret = "portal-secret"
	opPublicClient = "veil-portal-public"
)

// opUsers: ada has Veil claims, nobody none, owner an unknown role,
// tenant its claims under other names.
var opUsers = map[string]struct {
	user   storage.User
	claims map[string]any
}{
	"ada":    {storage.User{ID: "u-ada", FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com", EmailVerified: true}, map[string]any{"org": "acme", "role": "provider"}},
	"nobody": {storage.User{ID: "u-nobody", FirstName: "No", LastName: "Body", Email: "nobody@example.com"}, nil},
	"owner":  {storage.User{ID: "u-owner", FirstName: "O", LastName: "Wner"}, map[string]any{"org": "acme", "role": "owner"}},
	"tenant": {storage.User{ID: "u-tenant", FirstName: "Ten", LastName: "Ant"}, map[string]any{"https://veil.example/org": "globex", "https://veil.example/role": "consumer"}},
}

// adaPrincipal is what ada's ID token maps to.
var adaPrincipal = identity.Principal{Subject: "u-ada", Org: "acme", Role: identity.RoleProvider, Name: "Ada Lovelace", Email: "ada@example.com", EmailVerified: true}

type opUserStore struct{}

func (opUserStore) GetUserByID(id string) *storage.User {
	for name, u := range opUsers {
		if u.user.ID == id {
			user := u.user
			user.Username, user.Password = name, opPassword
			return &user
		}
	}
	return nil
}

func (s opUserStore) GetUserByUsername(name string) *storage.User {
	if u, ok := opUsers[name]; ok {
		return s.GetUserByID(u.user.ID)
	}
	return nil
}

func (opUserStore) ExampleClientID() string { return opClientID }

// claimsStorage adds opUsers' claims to ID tokens.
type claimsStorage struct{ *storage.Storage }

func (s claimsStorage) SetUserinfoFromRequest(ctx context.Context, ui *zoidc.UserInfo, r op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, r, scopes); err != nil {
		return err
	}
	for _, u := range opUsers {
		if u.user.ID == r.GetSubject() {
			for k, v := range u.claims {
				ui.AppendClaims(k, v)
			}
		}
	}
	return nil
}

// startOP starts the provider on a free loopback port, with a confidential
// client and a public one, both redirecting to redirectURL.
func startOP(t *testing.T, redirectURL string) *testOP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &testOP{issuer: "http://" + ln.Addr().String() + "/"}
	clients := map[string]*storage.Client{
		opClientID:     storage.WebClient(opClientID, opClientSecret, redirectURL),
		opPublicClient: storage.NativeClient(opPublicClient, redirectURL),
	}
	st := claimsStorage{storage.NewStorageWithClients(opUserStore{}, clients)}
	h := exampleop.SetupServer(o.issuer, st, nil, false)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/auth" {
			o.mu.Lock()
			o.authReqs = append(o.authReqs, r.URL.Query())
			o.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return o
}

func (o *testOP) lastAuthRequest(t *testing.T) url.Values {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.authReqs) == 0 {
		t.Fatal("the provider got no authorization request")
	}
	return o.authReqs[len(o.authReqs)-1]
}

// newOIDCEnv starts a provider and a portal that signs in with it.
func newOIDCEnv(t *testing.T, tls bool, edit func(*portal.OIDCConfig)) (*authEnv, *testOP) {
	t.Helper()
	var o *testOP
	e := newAuthEnv(t, tls, func(srvURL string, cfg *portal.AuthConfig) {
		o = startOP(t, srvURL+"/auth/callback")
		cfg.OIDC = &portal.OIDCConfig{
			Issuer: o.issuer, ClientID: opClientID, ClientSecret: opClientSecret, RedirectURL: srvURL + "/auth/callback",
		}
		if edit != nil {
			edit(cfg.OIDC)
		}
	})
	return e, o
}

// toProvider starts a sign-in at the portal and follows it to the
// provider's login form; it returns the form's auth request id.
func (o *testOP) toProvider(t *testing.T, c *http.Client, start string) string {
	t.Helper()
	status, final, body := get(t, c, start)
	if status != http.StatusOK || final.Path != "/login/username" || !strings.HasPrefix(final.String(), o.issuer) {
		t.Fatalf("GET %s ended at %d %s (%.300s); want the provider's login form", start, status, final, body)
	}
	id := final.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("login form URL %s has no authRequestID", final)
	}
	return id
}

// login submits the provider's login form. With stop, the client does
// not follow the provider's redirect to the portal's callback: login
// returns the callback URL instead of following it.
func (o *testOP) login(t *testing.T, c *http.Client, id, user string, stop bool) (status int, final *url.URL, body string) {
	t.Helper()
	form := url.Values{"id": {id}, "username": {user}, "password": {opPassword}}
	if !stop {
		return postFollow(t, c, o.issuer+"login/username", form)
	}
	cc := *c
	var callback *url.URL
	cc.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		if r.URL.Path == "/auth/callback" && !strings.HasPrefix(r.URL.String(), o.issuer) {
			callback = r.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	postFollow(t, &cc, o.issuer+"login/username", form)
	if callback == nil {
		t.Fatal("the provider did not redirect to the portal's callback")
	}
	return 0, callback, ""
}

func postFollow(t *testing.T, c *http.Client, u string, form url.Values) (int, *url.URL, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Request.URL, string(b)
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

	id := o.toProvider(t, c, e.srv.URL+"/auth/login?return_to=/private")
	q := o.lastAuthRequest(t)
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 {
		t.Errorf("authorization request code_challenge_method=%q code_challenge=%q; want S256 and a 43-character challenge", q.Get("code_challenge_method"), q.Get("code_challenge"))
	}
	for _, k := range []string{"state", "nonce"} {
		if len(q.Get(k)) < 43 {
			t.Errorf("authorization request %s = %q; want 32 random bytes", k, q.Get(k))
		}
	}
	if q.Get("client_id") != opClientID || q.Get("response_type") != "code" || q.Get("scope") != "openid profile email" {
		t.Errorf("authorization request = %v; want client %s, response_type code, scope openid profile email", q, opClientID)
	}

	status, final, body := o.login(t, c, id, "ada", false)
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
	e, o := newOIDCEnv(t, false, func(c *portal.OIDCConfig) {
		c.ClientID, c.ClientSecret = opPublicClient, ""
	})
	c := e.client(t)
	id := o.toProvider(t, c, e.srv.URL+"/auth/login?return_to=/private")
	status, final, body := o.login(t, c, id, "ada", false)
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
	e, o := newOIDCEnv(t, false, func(c *portal.OIDCConfig) {
		c.OrgClaim, c.RoleClaim = "https://veil.example/org", "https://veil.example/role"
	})
	c := e.client(t)
	id := o.toProvider(t, c, e.srv.URL+"/auth/login?return_to=/private")
	status, final, body := o.login(t, c, id, "tenant", false)
	want := identity.Principal{Subject: "u-tenant", Org: "globex", Role: identity.RoleConsumer, Name: "Ten Ant"}
	if status != http.StatusOK || final.Path != "/private" || principalOf(t, body) != want {
		t.Fatalf("sign-in with custom claim names: %d at %s %q; want 200 at /private as %+v", status, final, body, want)
	}
}

func TestOIDCStateRefused(t *testing.T) {
	e, o := newOIDCEnv(t, false, nil)

	t.Run("replay", func(t *testing.T) {
		c := e.client(t)
		_, callback, _ := o.login(t, c, o.toProvider(t, c, e.srv.URL+"/auth/login?return_to=/private"), "ada", true)
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
		_, callback, _ := o.login(t, c, o.toProvider(t, c, e.srv.URL+"/auth/login"), "ada", true)
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
		_, callback, _ := o.login(t, c, o.toProvider(t, c, e.srv.URL+"/auth/login"), "ada", true)
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
		_, callback, _ := o.login(t, c, o.toProvider(t, c, e.srv.URL+"/auth/login"), "ada", true)
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
	e, o := newOIDCEnv(t, false, nil)
	for _, user := range []string{"nobody", "owner"} {
		c := e.client(t)
		status, _, _ := o.login(t, c, o.toProvider(t, c, e.srv.URL+"/auth/login?return_to=/private"), user, false)
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
	e, o := newOIDCEnv(t, false, nil)
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
		id := o.toProvider(t, c, e.srv.URL+"/auth/login?return_to="+url.QueryEscape(tc.returnTo))
		status, final, _ := o.login(t, c, id, "ada", false)
		if got := final.RequestURI(); status != http.StatusOK || !strings.HasPrefix(final.String(), e.srv.URL+"/") || got != tc.want {
			t.Errorf("return_to %q: ended at %d %s; want 200 at the portal's %s", tc.returnTo, status, final, tc.want)
		}
	}
}

func TestOIDCProviderError(t *testing.T) {
	e, o := newOIDCEnv(t, false, nil)
	c := e.client(t)
	o.toProvider(t, c, e.srv.URL+"/auth/login")
	state := o.lastAuthRequest(t).Get("state")
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
		cfg.OIDC = &portal.OIDCConfig{Issuer: "http://" + addr + "/", ClientID: opClientID, RedirectURL: srvURL + "/auth/callback"}
	})
	if status, _, _ := get(t, e.client(t), e.srv.URL+"/auth/login"); status != http.StatusServiceUnavailable {
		t.Fatalf("GET /auth/login with the provider down = %d; want 503", status)
	}
}
