package caddyveil

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/egress/egresstest"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/testenv"
)

// The veil transport in a gateway of its own config, without the veil
// app: a transport with its own egress policy reaches what it allows (by
// name, through the test's DNS server, over TLS with the name as server
// name); one without a policy refuses loopback; and a refusal is a 502
// problem and a metric.
func TestTransportEgress(t *testing.T) {
	dns := egresstest.NewDNS(t)
	var serverName atomic.Value
	tlsUp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serverName.Store(r.TLS.ServerName)
		fmt.Fprint(w, "tls "+r.Host)
	}))
	t.Cleanup(tlsUp.Close)
	plain := egresstest.NewListener(t, "127.0.0.1:0")
	tlsPort := netip.MustParseAddrPort(tlsUp.Listener.Addr().String()).Port()
	dns.Set("tls.veil.test", "127.0.0.1")
	dns.Set("plain.veil.test", "127.0.0.1")

	own := map[string]any{"allow": []string{fmt.Sprintf("127.0.0.1:%d", tlsPort)}, "resolver": dns.Addr()}
	addr, admin := testenv.FreeLoopbackAddr(t), testenv.FreeLoopbackAddr(t)
	proxy := func(dial, host string, transport map[string]any) map[string]any {
		return map[string]any{
			"handler":   "reverse_proxy",
			"upstreams": []any{map[string]any{"dial": dial}},
			"headers":   map[string]any{"request": map[string]any{"set": map[string]any{"Host": []string{host}}}},
			"transport": transport,
		}
	}
	tlsDial := fmt.Sprintf("tls.veil.test:%d", tlsPort)
	plainDial := fmt.Sprintf("plain.veil.test:%d", plain.Port())
	cfg := map[string]any{
		"admin": map[string]any{"listen": admin},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"gateway": map[string]any{
			"listen":          []string{addr},
			"automatic_https": map[string]any{"disable": true},
			"routes": []any{
				route("/healthz", map[string]any{"handler": "static_response", "status_code": 200}),
				route("/metrics", map[string]any{"handler": "veil_metrics"}),
				route("/tls", proxy(tlsDial, tlsDial, map[string]any{"protocol": "veil", "egress": own,
					"tls": map[string]any{"insecure_skip_verify": true}})),
				// Allowed by its own policy for the TLS upstream's port only.
				route("/plain", proxy(plainDial, plainDial, map[string]any{"protocol": "veil", "egress": own})),
				// No policy of its own and no veil app: only public addresses.
				route("/default", proxy(plain.Listener.Addr().String(), "x", map[string]any{"protocol": "veil"})),
			},
		}}}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.GatewayRun(t, b, "http://"+addr+"/healthz")
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header
	}
	if status, body, _ := get("/tls/x"); status != http.StatusOK || body != "tls "+tlsDial {
		t.Errorf("GET /tls/x = %d %q; want 200 from the TLS upstream with its Host", status, body)
	}
	if got, _ := serverName.Load().(string); got != "tls.veil.test" {
		t.Errorf("TLS server name = %q; want tls.veil.test (the name, though the checked address was dialled)", got)
	}
	for _, path := range []string{"/plain/x", "/default/x"} {
		status, body, h := get(path)
		var p map[string]any
		_ = json.Unmarshal([]byte(body), &p)
		if status != http.StatusBadGateway || h.Get("Content-Type") != "application/problem+json" || p["type"] != problem.TypeBase+"egress-refused" {
			t.Errorf("GET %s = %d %s %q; want a 502 egress-refused problem", path, status, h.Get("Content-Type"), body)
		}
	}
	if n := plain.Conns.Load(); n != 0 {
		t.Errorf("loopback listener accepted %d connections; want 0", n)
	}
	_, metrics, _ := get("/metrics")
	if want := `veil_gateway_upstream_refused_total{reason="loopback"} 2`; !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %s", want)
	}
}
