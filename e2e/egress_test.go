package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/egress/egresstest"
	"github.com/veil-platform/veil/internal/testenv"
)

// The control plane and the gateway, configured as `veil control-plane`
// and `veil gateway` are (VEIL_UPSTREAM_ALLOW_CIDRS, VEIL_UPSTREAM_RESOLVER),
// allow one upstream and nothing else: every spelling of an internal
// address is a 422 on upstream_url; an approved upstream whose name
// resolves to an internal address later is refused by the gateway (502)
// and suspended by reconciliation; no internal service is ever reached.
func TestUpstreamEgressEndToEnd(t *testing.T) {
	ctx := t.Context()
	dns := egresstest.NewDNS(t)
	pub, internal := egresstest.ListenPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A new connection per request, so that the rebinding is dialled.
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, "public")
	}))
	loop := egresstest.NewListener(t, "127.0.0.1:0")
	port := netip.MustParseAddrPort(pub.Listener.Addr().String()).Port()
	allow := fmt.Sprintf("127.0.0.1:%d", port)
	dns.Set("provider.veil.test", "127.0.0.1")

	e := newCPEnvWith(t, func(db int) []string {
		return []string{"VEIL_UPSTREAM_ALLOW_CIDRS=" + allow, "VEIL_UPSTREAM_RESOLVER=" + dns.Addr(), "VEIL_REDIS_DB=" + strconv.Itoa(db),
			"VEIL_GATEWAY_SPOOL_DIR=" + t.TempDir()}
	})
	o := e.options(3)
	o.egressAllow, o.egressResolver = allow, dns.Addr()
	c := e.startControlPlane(t, o)
	prov := providerToken(t)
	admin := adminToken(t)

	create := func(slug, upstream string) *client.CreateAPIResponse {
		resp, err := c.CreateAPIWithResponse(ctx, nil, client.APIInput{
			Name: "API " + slug, Slug: slug, UpstreamUrl: upstream, Version: client.Ptr("1.0"),
			Routes:          &[]client.Route{{Methods: []client.RouteMethods{client.RouteMethodsGET}, Path: "/x"}},
			HealthCheckPath: client.Ptr("/health"),
		}, client.Bearer(prov))
		if err != nil {
			t.Fatalf("POST /v1/apis: %v", err)
		}
		return resp
	}
	forms := egresstest.Forms(dns, loop.Port())
	for i, f := range forms {
		resp := create(fmt.Sprintf("refused-%d", i), f.URL)
		var p map[string]any
		_ = json.Unmarshal(resp.Body, &p)
		errs, _ := p["errors"].([]any)
		var field any
		if len(errs) == 1 {
			field = errs[0].(map[string]any)["field"]
		}
		if resp.StatusCode() != http.StatusUnprocessableEntity || field != "upstream_url" {
			t.Errorf("%s: POST /v1/apis with upstream %s = %d %v; want 422 naming upstream_url", f.Name, f.URL, resp.StatusCode(), p)
		}
	}

	created := create("allowed", fmt.Sprintf("http://provider.veil.test:%d/v1", port))
	if created.StatusCode() != http.StatusCreated {
		t.Fatalf("POST /v1/apis with the allowed upstream = %d %s; want 201", created.StatusCode(), created.Body)
	}
	id := created.JSON201.Id
	submitted, err := c.SubmitAPIWithResponse(ctx, id, nil, client.SubmitInput{Priority: client.Ptr(client.High)}, client.Bearer(prov))
	expect(t, http.StatusCreated, submitted, err)
	approve(t, c, admin, submitted.JSON201.Id, client.DecisionInput{Reason: client.Ptr("ok")})
	waitState(t, c, prov, id, "active", 30*time.Second, "failed")
	if status, body := throughGateway(e.gw, "/allowed/x"); status != http.StatusOK || body != "public" {
		t.Fatalf("GET /allowed/x = %d %q; want 200 from the allowed upstream", status, body)
	}

	// DNS rebinding after approval: the gateway refuses the next dial, and
	// reconciliation takes the API off the gateway.
	dns.Set("provider.veil.test", "127.0.0.2")
	if status, body := throughGateway(e.gw, "/allowed/x"); status != http.StatusBadGateway || !strings.Contains(body, "egress-refused") {
		t.Errorf("GET /allowed/x after rebinding = %d %q; want 502 egress-refused", status, body)
	}
	rep, err := c.ReconcileAPIsWithResponse(ctx, nil, client.Bearer(admin))
	expect(t, http.StatusOK, rep, err)
	if rep.JSON200.Refused != 1 {
		t.Errorf("reconcile report refused = %d; want 1", rep.JSON200.Refused)
	}
	got := waitState(t, c, prov, id, "suspended", 10*time.Second)
	if !strings.Contains(got.StateReason, "egress policy") || strings.Contains(got.StateReason, "127.0.0.2") {
		t.Errorf("state_reason = %q; want the egress policy named, not the address", got.StateReason)
	}
	testenv.Deadline(t, 10*time.Second, func() error {
		if ids := routeIDs(t, e.gw); len(ids) != 0 {
			return fmt.Errorf("routes after the refusal: %v", ids)
		}
		return nil
	})
	for _, l := range []*egresstest.Listener{internal, loop} {
		if n := l.Conns.Load(); n != 0 {
			t.Errorf("internal service %s accepted %d connections; want 0", l.Listener.Addr(), n)
		}
	}
}
