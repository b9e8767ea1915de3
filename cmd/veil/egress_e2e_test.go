package main

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/egress/egresstest"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/migrate"
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

	pgURL := testenv.PostgresURL(t)
	if _, err := migrate.Postgres(ctx, pgURL, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	_, db := testenv.RedisDB(t)
	gw := startGateway(t, "VEIL_UPSTREAM_ALLOW_CIDRS="+allow, "VEIL_UPSTREAM_RESOLVER="+dns.Addr(), "VEIL_REDIS_DB="+strconv.Itoa(db),
		"VEIL_GATEWAY_SPOOL_DIR="+t.TempDir())
	e := &cpEnv{pgURL: pgURL, redisDB: db, gw: gw, admin: newFaultyAdmin(t, gw.AdminURL), upstream: newUpstream(t)}
	flags := e.flags(t, 3)
	flags.egress = egressFlags{allow: allow, resolver: dns.Addr()}
	_, c := e.runControlPlane(t, flags)
	prov := token(t, "acme", "alice", identity.RoleProvider)
	admin := token(t, "platform", "operator", identity.RoleAdmin)

	create := func(slug, upstream string) (int, map[string]any) {
		var out map[string]any
		status := c.do("POST", "/v1/apis", prov, map[string]any{
			"name": "API " + slug, "slug": slug, "upstream_url": upstream, "version": "1.0",
			"routes": []map[string]any{{"methods": []string{"GET"}, "path": "/x"}}, "health_check_path": "/health",
		}, &out)
		return status, out
	}
	forms := egresstest.Forms(dns, loop.Port())
	for i, f := range forms {
		status, p := create(fmt.Sprintf("refused-%d", i), f.URL)
		errs, _ := p["errors"].([]any)
		var field any
		if len(errs) == 1 {
			field = errs[0].(map[string]any)["field"]
		}
		if status != http.StatusUnprocessableEntity || field != "upstream_url" {
			t.Errorf("%s: POST /v1/apis with upstream %s = %d %v; want 422 naming upstream_url", f.Name, f.URL, status, p)
		}
	}

	status, api := create("allowed", fmt.Sprintf("http://provider.veil.test:%d/v1", port))
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/apis with the allowed upstream = %d %v; want 201", status, api)
	}
	id := api["id"].(string)
	var approval struct {
		ID string `json:"id"`
	}
	c.must(http.StatusCreated, "POST", "/v1/apis/"+id+"/submit", prov, map[string]any{"priority": "high"}, &approval)
	c.must(http.StatusOK, "POST", "/v1/admin/approvals/"+approval.ID+"/approve", admin, map[string]string{"reason": "ok"}, nil)
	waitState(t, c, prov, id, "active", 30*time.Second, "failed")
	if status, body := throughGateway(gw, "/allowed/x"); status != http.StatusOK || body != "public" {
		t.Fatalf("GET /allowed/x = %d %q; want 200 from the allowed upstream", status, body)
	}

	// DNS rebinding after approval: the gateway refuses the next dial, and
	// reconciliation takes the API off the gateway.
	dns.Set("provider.veil.test", "127.0.0.2")
	if status, body := throughGateway(gw, "/allowed/x"); status != http.StatusBadGateway || !strings.Contains(body, "egress-refused") {
		t.Errorf("GET /allowed/x after rebinding = %d %q; want 502 egress-refused", status, body)
	}
	var rep struct {
		Refused int `json:"refused"`
	}
	c.must(http.StatusOK, "POST", "/v1/admin/reconcile/apis", admin, nil, &rep)
	if rep.Refused != 1 {
		t.Errorf("reconcile report refused = %d; want 1", rep.Refused)
	}
	got := waitState(t, c, prov, id, "suspended", 10*time.Second)
	if !strings.Contains(got.StateReason, "egress policy") || strings.Contains(got.StateReason, "127.0.0.2") {
		t.Errorf("state_reason = %q; want the egress policy named, not the address", got.StateReason)
	}
	testenv.Deadline(t, 10*time.Second, func() error {
		if ids := gw.routeIDs(t); len(ids) != 0 {
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
