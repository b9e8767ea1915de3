// Package portaltest runs a real OpenID provider in process for the tests
// of the portal's sign-in, and signs a user in through it over HTTP as a
// browser would. The provider is zitadel's example OpenID provider
// (github.com/zitadel/oidc/v3, OpenID-certified), not a mock: the portal
// discovers it, exchanges codes with PKCE and verifies its signed ID
// tokens.
//
// Only tests import this package, so the veil binary never links the
// provider.
package portaltest

import (
	"bytes"
	"context"
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
)

// Password is every user's password at the provider's login form.
const Password = "verysecure"

// LoginPath is the provider's login form: GET shows it (its query's
// authRequestID names the sign-in), POST takes the fields id (that
// authRequestID), username and password.
const LoginPath = "/login/username"

// User is a user of the provider.
type User struct {
	// Username is what the login form takes. Required and unique.
	Username string
	// Subject is the ID token's sub. Empty means Username.
	Subject string
	// FirstName and LastName make the profile's name ("First Last"),
	// given_name and family_name.
	FirstName, LastName string
	Email               string
	EmailVerified       bool
	// Org and Role, when not empty, are the ID token's "org" and "role"
	// claims (identity.DefaultOrgClaim, identity.DefaultRoleClaim), the
	// claims the portal maps to a Veil organization and role.
	Org, Role string
	// Claims are more claims of the ID token, for instance the
	// organization and role under other names; they win over Org and
	// Role.
	Claims map[string]any
}

func (u User) subject() string {
	if u.Subject != "" {
		return u.Subject
	}
	return u.Username
}

// claims are the claims u adds to the provider's standard ones.
func (u User) claims() map[string]any {
	c := map[string]any{}
	if u.Org != "" {
		c[identity.DefaultOrgClaim] = u.Org
	}
	if u.Role != "" {
		c[identity.DefaultRoleClaim] = u.Role
	}
	for k, v := range u.Claims {
		c[k] = v
	}
	return c
}

// OP is a running OpenID provider with two clients: a confidential web
// client (ClientID, ClientSecret; client_secret_basic) and a public one
// (PublicClientID, PKCE alone).
type OP struct {
	ClientID       string
	ClientSecret   string
	PublicClientID string

	issuer string
	users  map[string]User // by username

	mu       sync.Mutex
	authReqs []url.Values // the queries of the authorization requests it got
}

// StartOP starts the provider on a free loopback port until the test ends.
// Its clients accept the redirect URLs given (the portal's
// <public URL>/auth/callback); users are who can sign in.
func StartOP(t testing.TB, redirectURLs []string, users ...User) *OP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("start OpenID provider: %v", err)
	}
	o := &OP{
		ClientID: "veil-portal", ClientSecret: "portal-secret", PublicClientID: "veil-portal-public",
		issuer: "http://" + ln.Addr().String() + "/",
		users:  map[string]User{},
	}
	for _, u := range users {
		if u.Username == "" || o.users[u.Username].Username != "" {
			t.Fatalf("StartOP: user %+v: want a unique non-empty Username", u)
		}
		o.users[u.Username] = u
	}
	clients := map[string]*storage.Client{
		o.ClientID:       storage.WebClient(o.ClientID, o.ClientSecret, redirectURLs...),
		o.PublicClientID: storage.NativeClient(o.PublicClientID, redirectURLs...),
	}
	st := claimsStorage{storage.NewStorageWithClients(userStore{o}, clients), o}
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

// Issuer is the provider's issuer URL, with a trailing slash, as its
// discovery document spells it (VEIL_OIDC_ISSUER).
func (o *OP) Issuer() string { return o.issuer }

// LastAuthRequest returns the query of the last authorization request the
// provider got, failing the test when there was none.
func (o *OP) LastAuthRequest(t testing.TB) url.Values {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.authReqs) == 0 {
		t.Fatal("the OpenID provider got no authorization request")
	}
	return o.authReqs[len(o.authReqs)-1]
}

// userStore serves o's users to the example storage.
type userStore struct{ o *OP }

func (s userStore) GetUserByID(id string) *storage.User {
	for _, u := range s.o.users {
		if u.subject() == id {
			return &storage.User{
				ID: id, Username: u.Username, Password: Password,
				FirstName: u.FirstName, LastName: u.LastName, Email: u.Email, EmailVerified: u.EmailVerified,
			}
		}
	}
	return nil
}

func (s userStore) GetUserByUsername(name string) *storage.User {
	if u, ok := s.o.users[name]; ok {
		return s.GetUserByID(u.subject())
	}
	return nil
}

func (s userStore) ExampleClientID() string { return s.o.ClientID }

// claimsStorage adds each user's claims to its ID tokens.
type claimsStorage struct {
	*storage.Storage
	o *OP
}

func (s claimsStorage) SetUserinfoFromRequest(ctx context.Context, ui *zoidc.UserInfo, r op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, r, scopes); err != nil {
		return err
	}
	for _, u := range s.o.users {
		if u.subject() == r.GetSubject() {
			for k, v := range u.claims() {
				ui.AppendClaims(k, v)
			}
		}
	}
	return nil
}

// SignIn signs username in at the portal at portalURL as a browser would,
// with client (whose cookie jar keeps the portal's cookies): it GETs
// /auth/login?return_to=returnTo, follows the redirects to the provider's
// login form, POSTs the form with the user's password and follows the
// redirects back through the portal's /auth/callback. It returns the last
// response, its body readable: on success the page returnTo at the
// portal, else the portal's error page. A client whose CheckRedirect stops
// at the callback gets the provider's redirect to it instead.
//
// SignIn fails the test when the portal does not send the browser to the
// provider's login form, or the provider refuses the user.
func SignIn(t testing.TB, client *http.Client, portalURL, username, returnTo string) *http.Response {
	t.Helper()
	start := strings.TrimSuffix(portalURL, "/") + "/auth/login"
	if returnTo != "" {
		start += "?return_to=" + url.QueryEscape(returnTo)
	}
	resp, body := do(t, client, http.MethodGet, start, nil)
	form := resp.Request.URL
	id := form.Query().Get("authRequestID")
	if resp.StatusCode != http.StatusOK || form.Path != LoginPath || id == "" {
		t.Fatalf("GET %s ended at %d %s (%.300s); want the OpenID provider's login form", start, resp.StatusCode, form, body)
	}
	login := *form
	login.RawQuery = ""
	resp, body = do(t, client, http.MethodPost, login.String(), url.Values{"id": {id}, "username": {username}, "password": {Password}})
	if resp.StatusCode == http.StatusOK && resp.Request.URL.Host == form.Host && resp.Request.URL.Path == LoginPath {
		t.Fatalf("the OpenID provider refused %q: %.300s", username, body)
	}
	return resp
}

// do sends a request (a form when form is not nil) and returns the
// response with its body read into memory and readable again.
func do(t testing.TB, c *http.Client, method, u string, form url.Values) (*http.Response, []byte) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: read the body: %v", method, u, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, b
}
