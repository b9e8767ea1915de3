package catalog_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/originsig"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestOriginProofThroughTheGateway registers an API on a real gateway
// process and calls it there: the upstream verifies every call with the
// secret its provider was shown, the calls made to it directly do not
// verify, and after a rotation the new secret verifies at once while the
// previous one still does during the overlap.
func TestOriginProofThroughTheGateway(t *testing.T) {
	gw := testenv.Gateway(t, testenv.GatewayEnv("VEIL_UPSTREAM_ALLOW_CIDRS=127.0.0.0/8"))
	client, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: gw.AdminURL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// The overlap is judged by the gateway on the real clock.
	e := setup(t, func(c *catalog.Config) { c.Gateway, c.GatewayURL, c.Now = client, gw.URL, time.Now })

	type call struct {
		method, path, query, apiID, signature string
		at                                    time.Time
	}
	var (
		mu    sync.Mutex
		calls []call
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, call{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get(gatewayroute.APIHeader), r.Header.Get(originsig.Header), time.Now()})
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	last := func() call {
		mu.Lock()
		defer mu.Unlock()
		return calls[len(calls)-1]
	}

	a, shown := e.approvedSigned("proof", srv.URL+"/v1")
	if err := e.register(a.ID, 1, 3); err != nil {
		t.Fatalf("register on the real gateway = %v", err)
	}
	// What a client might send to pass for the gateway.
	forged := originsig.Sign(time.Now(), "GET", "/v1/items", "", a.ID.String(), originsig.NewSecret())
	get := func(path string) call {
		t.Helper()
		testenv.Deadline(t, 10*time.Second, func() error {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+path, nil)
			req.Header.Set(originsig.Header, forged) // replaced by the gateway
			resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s through the gateway = %d; want 200", path, resp.StatusCode)
			}
			return nil
		})
		return last()
	}
	c := get("/proof/items?page=2&q=a%20b")
	if c.signature == forged {
		t.Error("the client's Veil-Signature reached the upstream")
	}
	if err := originsig.Verify(c.signature, shown.Secret, c.method, c.path, c.query, c.apiID, c.at); err != nil || c.apiID != a.ID.String() || c.path != "/v1/items" || c.query != "page=2&q=a%20b" {
		t.Errorf("upstream got %s %s?%s (api %q, signature %q): Verify = %v; want a valid signature of the API", c.method, c.path, c.query, c.apiID, c.signature, err)
	}

	// A consumer calling the upstream directly, with a signature it made
	// up or one it captured earlier, is refused by the same check.
	if err := originsig.Verify(forged, shown.Secret, "GET", "/v1/items", "", a.ID.String(), time.Now()); err == nil {
		t.Error("Verify(made up by a client) = nil; want an error")
	}
	if err := originsig.Verify(c.signature, shown.Secret, c.method, c.path, c.query, c.apiID, c.at.Add(originsig.Tolerance+time.Minute)); err == nil {
		t.Error("Verify(replayed later) = nil; want an error")
	}

	// Rotation: the route on the gateway changes at once.
	rotated, err := e.svc.RotateSigningSecret(t.Context(), e.provider, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Deadline(t, 10*time.Second, func() error {
		c = get("/proof/items")
		return originsig.Verify(c.signature, rotated.Secret, c.method, c.path, c.query, c.apiID, c.at)
	})
	if err := originsig.Verify(c.signature, shown.Secret, c.method, c.path, c.query, c.apiID, c.at); err != nil {
		t.Errorf("during the overlap, Verify(previous secret) = %v; want nil", err)
	}
}
