package gatewayadmin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/internal/egress/egresstest"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/testenv"
)

// The real gateway connects to an upstream only through the egress
// policy: none of the forms of an internal address reaches the services
// the test runs on loopback, a name that resolves to an internal address
// after it was approved (DNS rebinding) is refused at dial time, and a
// redirect from the upstream is passed to the client, not followed.
func TestGatewayRefusesInternalUpstreams(t *testing.T) {
	t.Parallel()
	dns := egresstest.NewDNS(t)
	var redirect string
	pub, internal := egresstest.ListenPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A new connection per request: the rebinding below must be
		// dialled, not served by a connection kept from before.
		w.Header().Set("Connection", "close")
		if strings.HasSuffix(r.URL.Path, "/redirect") {
			http.Redirect(w, r, redirect, http.StatusFound)
			return
		}
		fmt.Fprint(w, "public")
	}))
	loop := egresstest.NewListener(t, "127.0.0.1:0")
	port := netip.MustParseAddrPort(pub.Listener.Addr().String()).Port()
	redirect = fmt.Sprintf("http://127.0.0.2:%d/secret", port)
	// Only the stand-in for a public upstream is allowed.
	gw := testenv.Gateway(t, testenv.GatewayEnv(
		fmt.Sprintf("VEIL_UPSTREAM_ALLOW_CIDRS=127.0.0.1:%d", port),
		"VEIL_UPSTREAM_RESOLVER="+dns.Addr(),
	))
	c, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: gw.AdminURL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	put := func(prefix, upstream string) error {
		return c.Put(ctx, gatewayroute.Route{ID: "veil-api-egress" + strings.ReplaceAll(prefix, "/", "-"), PathPrefix: prefix, Upstream: upstream})
	}

	dns.Set("public.veil.test", "127.0.0.1")
	if err := put("/allowed", fmt.Sprintf("http://public.veil.test:%d/v1", port)); err != nil {
		t.Fatal(err)
	}
	if a := call(t, "GET", gw.URL+"/allowed/x"); a.status != http.StatusOK || a.body != "public" {
		t.Errorf("GET /allowed/x = %d %q; want 200 from the allowed upstream", a.status, a.body)
	}

	forms := egresstest.Forms(dns, loop.Port())
	refused := 0
	for i, f := range forms {
		prefix := fmt.Sprintf("/form-%d", i)
		if err := put(prefix, f.URL); err != nil {
			// Not even a route: refused before any dial.
			t.Logf("%s: Put(%s) = %v", f.Name, f.URL, err)
			refused++
			continue
		}
		// A connection accepted while Caddy swaps configurations may
		// still meet the previous one: wait for the route to be served.
		var a answer
		testenv.Deadline(t, 5*time.Second, func() error {
			if a = call(t, "GET", gw.URL+prefix+"/"); isProblem(a, http.StatusNotFound, "route-not-found") {
				return fmt.Errorf("%s: route %s not served yet", f.Name, prefix)
			}
			return nil
		})
		typ := "egress-refused"
		if f.Kind == "" {
			typ = "gateway-error" // no address to refuse
		}
		if !isProblem(a, http.StatusBadGateway, typ) {
			t.Errorf("%s: GET through %s = %d %q; want a 502 %s problem", f.Name, f.URL, a.status, a.body, typ)
		}
		if strings.Contains(a.body, "127.0.0") {
			t.Errorf("%s: the refusal %q names an address", f.Name, a.body)
		}
		refused++
	}
	if refused < 25 {
		t.Fatalf("%d forms refused; want at least 25", refused)
	}

	// DNS rebinding: approved while public, internal at the next dial.
	dns.Set("rebind.veil.test", "127.0.0.1")
	if err := put("/rebind", fmt.Sprintf("http://rebind.veil.test:%d", port)); err != nil {
		t.Fatal(err)
	}
	if a := call(t, "GET", gw.URL+"/rebind/x"); a.status != http.StatusOK || a.body != "public" {
		t.Errorf("GET /rebind/x before rebinding = %d %q; want 200 from the allowed upstream", a.status, a.body)
	}
	dns.Set("rebind.veil.test", "127.0.0.2")
	if a := call(t, "GET", gw.URL+"/rebind/x"); !isProblem(a, http.StatusBadGateway, "egress-refused") {
		t.Errorf("GET /rebind/x after rebinding = %d %q; want a 502 egress-refused problem", a.status, a.body)
	}

	// A redirect toward an internal address goes back to the client as it
	// is; the gateway does not follow it.
	noFollow := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	resp, err := noFollow.Get(gw.URL + "/allowed/redirect")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != redirect {
		t.Errorf("GET /allowed/redirect = %d Location %q; want 302 to %s passed through", resp.StatusCode, resp.Header.Get("Location"), redirect)
	}

	for _, l := range []*egresstest.Listener{internal, loop} {
		if n := l.Conns.Load(); n != 0 {
			t.Errorf("internal service %s accepted %d connections; want 0", l.Listener.Addr(), n)
		}
	}
	metrics := call(t, "GET", gw.MetricsURL+"/metrics").body
	for _, want := range []string{`veil_gateway_upstream_refused_total{reason="loopback"}`, `veil_gateway_upstream_refused_total{reason="invalid-host"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("gateway metrics lack %s", want)
		}
	}
}

func isProblem(a answer, status int, typ string) bool {
	var p map[string]any
	return a.status == status && a.header.Get("Content-Type") == "application/problem+json" &&
		json.Unmarshal([]byte(a.body), &p) == nil && p["type"] == problem.TypeBase+typ
}
