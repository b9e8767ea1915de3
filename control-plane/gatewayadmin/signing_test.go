package gatewayadmin_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/originsig"
	"github.com/veil-platform/veil/internal/testenv"
)

// signedRequest is what a verifying upstream saw of one request.
type signedRequest struct {
	method, path, query, apiID, signature string
	at                                    time.Time
}

// verifyingUpstream records each request's signature, the path as it came
// over the wire (what the upstream verifies) and when it arrived.
func verifyingUpstream(t *testing.T) (*httptest.Server, func() []signedRequest) {
	t.Helper()
	var (
		mu  sync.Mutex
		got []signedRequest
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, signedRequest{method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery, apiID: r.Header.Get(gatewayroute.APIHeader),
			signature: r.Header.Get(originsig.Header), at: time.Now()})
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv, func() []signedRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]signedRequest(nil), got...)
	}
}

// send makes one request through the gateway with a forged signature of
// the client's own, retrying a connection a config swap closed.
func send(t *testing.T, method, url, forged string) {
	t.Helper()
	testenv.Deadline(t, 5*time.Second, func() error {
		req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(originsig.Header, forged)
		resp, err := fresh.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s = %d; want 200 from the upstream", method, url, resp.StatusCode)
		}
		return nil
	})
}

// TestSignedThroughTheGateway: every request the real gateway proxies
// carries a Veil-Signature that the upstream verifies, over the path the
// upstream receives; what a client sends under that name never arrives;
// a stale or forged signature fails; a rotation changes the key, with the
// previous one still signing during its overlap.
func TestSignedThroughTheGateway(t *testing.T) {
	e := setup(t)
	up, requests := verifyingUpstream(t)
	const apiID = "6a1f7f0e-5a8c-4c1e-9c39-1f0f5b2b8a11"
	secret := originsig.NewSecret()
	r := gatewayroute.Route{
		ID: routeID(t), PathPrefix: "/signed", Upstream: up.URL + "/v1",
		Headers: map[string]string{gatewayroute.APIHeader: apiID},
		Signing: &gatewayroute.Signing{APIID: apiID, Secret: secret},
	}
	if err := e.c.Put(t.Context(), r); err != nil {
		t.Fatalf("Put(signed route) = %v", err)
	}
	got, err := e.c.Get(t.Context(), r.ID)
	if err != nil || got.Signing == nil || *got.Signing != *r.Signing {
		t.Fatalf("Get(signed route) = %v, %v; want the signing it was put with", got.Signing, err)
	}
	forged := originsig.Sign(time.Now(), "GET", "/v1/items", "", apiID, originsig.NewSecret())
	tests := []struct{ method, path, upstreamPath string }{
		{"GET", "/signed/items?page=2", "/v1/items"},
		{"GET", "/signed/items?q=a%20b&q=%3F", "/v1/items"},
		{"GET", "/signed", "/v1"},
		{"POST", "/signed/items/a%20b", "/v1/items/a%20b"},
		{"DELETE", "/signed/items/a%2Fb", ""}, // whatever the rewrite makes of it, it is what is signed
		{"GET", "/SIGNED/Items", "/v1/Items"},
	}
	for i, tt := range tests {
		send(t, tt.method, e.gw.URL+tt.path, forged)
		seen := requests()
		if len(seen) != i+1 {
			t.Fatalf("upstream got %d requests; want %d", len(seen), i+1)
		}
		s := seen[i]
		if (tt.upstreamPath != "" && s.path != tt.upstreamPath) || s.apiID != apiID {
			t.Errorf("%s %s reached the upstream as %s with api %q; want %s, %s", tt.method, tt.path, s.path, s.apiID, tt.upstreamPath, apiID)
		}
		if s.signature == forged {
			t.Errorf("%s %s: the client's Veil-Signature reached the upstream", tt.method, tt.path)
		}
		if err := originsig.Verify(s.signature, secret, s.method, s.path, s.query, s.apiID, s.at); err != nil {
			t.Errorf("%s %s: upstream Verify(%q) = %v; want nil", tt.method, tt.path, s.signature, err)
		}
		// The same header replayed after the window, or checked with
		// another secret, another method or path, fails.
		if err := originsig.Verify(s.signature, secret, s.method, s.path, s.query, s.apiID, s.at.Add(originsig.Tolerance+2*time.Second)); !errors.Is(err, originsig.ErrStale) {
			t.Errorf("%s %s: Verify(replayed later) = %v; want ErrStale", tt.method, tt.path, err)
		}
		if err := originsig.Verify(s.signature, originsig.NewSecret(), s.method, s.path, s.query, s.apiID, s.at); !errors.Is(err, originsig.ErrMismatch) {
			t.Errorf("%s %s: Verify(other secret) = %v; want ErrMismatch", tt.method, tt.path, err)
		}
		if err := originsig.Verify(s.signature, secret, s.method, s.path+"x", s.query, s.apiID, s.at); !errors.Is(err, originsig.ErrMismatch) {
			t.Errorf("%s %s: Verify(other path) = %v; want ErrMismatch", tt.method, tt.path, err)
		}
		if err := originsig.Verify(s.signature, secret, s.method, s.path, s.query+"&admin=1", s.apiID, s.at); !errors.Is(err, originsig.ErrMismatch) {
			t.Errorf("%s %s: Verify(other query) = %v; want ErrMismatch", tt.method, tt.path, err)
		}
	}
	// A direct call with the forged header fails where the upstream checks.
	if err := originsig.Verify(forged, secret, "GET", "/v1/items", "", apiID, time.Now()); !errors.Is(err, originsig.ErrMismatch) {
		t.Errorf("Verify(forged by a client) = %v; want ErrMismatch", err)
	}

	// Rotation: during the overlap both secrets verify; after it (a route
	// put without the previous secret) only the new one does.
	rotated := originsig.NewSecret()
	r.Signing = &gatewayroute.Signing{APIID: apiID, Secret: rotated, PreviousSecret: secret, PreviousUntil: time.Now().Add(time.Hour).Unix()}
	if err := e.c.Put(t.Context(), r); err != nil {
		t.Fatalf("Put(rotated route) = %v", err)
	}
	lastSigned := func() signedRequest {
		t.Helper()
		// A connection kept from before the change may still be served by
		// the old config for a moment: poll until the new key signs.
		var s signedRequest
		testenv.Deadline(t, 10*time.Second, func() error {
			send(t, "GET", e.gw.URL+"/signed/items", "")
			seen := requests()
			s = seen[len(seen)-1]
			return originsig.Verify(s.signature, rotated, s.method, s.path, s.query, s.apiID, s.at)
		})
		return s
	}
	s := lastSigned()
	if err := originsig.Verify(s.signature, secret, s.method, s.path, s.query, s.apiID, s.at); err != nil {
		t.Errorf("during the overlap, Verify(previous secret) = %v; want nil", err)
	}
	r.Signing = &gatewayroute.Signing{APIID: apiID, Secret: rotated}
	if err := e.c.Put(t.Context(), r); err != nil {
		t.Fatalf("Put(route after the overlap) = %v", err)
	}
	testenv.Deadline(t, 10*time.Second, func() error {
		s = lastSigned()
		if err := originsig.Verify(s.signature, secret, s.method, s.path, s.query, s.apiID, s.at); !errors.Is(err, originsig.ErrMismatch) {
			return errors.New("the previous secret still verifies")
		}
		return nil
	})
}

// TestSigningRoutes: a route's signing reads back as it was put, with and
// without the veil handler in front; invalid signing is refused before
// the admin API is asked.
func TestSigningRoutes(t *testing.T) {
	e := setup(t)
	secret, previous := originsig.NewSecret(), originsig.NewSecret()
	routes := []gatewayroute.Route{
		{ID: routeID(t) + "-a", PathPrefix: "/sa", Upstream: "http://127.0.0.1:9/v1",
			Signing: &gatewayroute.Signing{APIID: "a", Secret: secret}},
		{ID: routeID(t) + "-b", PathPrefix: "/sb", Upstream: "https://api.example.com/base",
			Headers: map[string]string{gatewayroute.APIHeader: "b"},
			Veil:    &gatewayroute.Veil{APIID: "b", RouteTemplates: []string{"/items/{id}"}},
			Signing: &gatewayroute.Signing{APIID: "b", Secret: secret, PreviousSecret: previous, PreviousUntil: time.Now().Add(time.Hour).Unix()}},
	}
	for _, r := range routes {
		if err := e.c.Put(t.Context(), r); err != nil {
			t.Fatalf("Put(%s) = %v", r.ID, err)
		}
		got, err := e.c.Get(t.Context(), r.ID)
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("Get(%s) = %+v (signing %v), %v; want %+v (signing %v)", r.ID, got, got.Signing, err, r, r.Signing)
		}
	}
	bad := []struct {
		name    string
		signing gatewayroute.Signing
	}{
		{"no api id", gatewayroute.Signing{Secret: secret}},
		{"short secret", gatewayroute.Signing{APIID: "a", Secret: "short"}},
		{"placeholder in the secret", gatewayroute.Signing{APIID: "a", Secret: secret + "{env.HOME}"}},
		{"previous without its end", gatewayroute.Signing{APIID: "a", Secret: secret, PreviousSecret: previous}},
	}
	for _, tt := range bad {
		r := gatewayroute.Route{ID: routeID(t) + "-bad", PathPrefix: "/bad", Upstream: "http://127.0.0.1:9", Signing: &tt.signing}
		if err := e.c.Put(t.Context(), r); !errors.Is(err, gatewayroute.ErrInvalidRoute) {
			t.Errorf("Put(%s) = %v; want gatewayroute.ErrInvalidRoute", tt.name, err)
		}
	}
	// The secret never shows in how a route prints.
	if s := fmt.Sprintf("%v %+v", routes[1], routes[1]); strings.Contains(s, secret) || strings.Contains(s, previous) {
		t.Errorf("a route prints its secrets: %s", s)
	}
}
