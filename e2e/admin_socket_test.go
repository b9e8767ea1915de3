package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestControlPlaneOverAdminSocket: the control plane registers an API
// through the gateway's admin socket itself (no proxy in between), and
// serves /metrics on its metrics address, not on the API port.
func TestControlPlaneOverAdminSocket(t *testing.T) {
	t.Parallel()
	// The test's upstream is on loopback.
	const allowLoopback = "VEIL_UPSTREAM_ALLOW_CIDRS=127.0.0.1/32"
	e := newCPEnvWith(t, func(int) []string { return []string{allowLoopback} })
	addr, metricsAddr := testenv.FreeLoopbackAddr(t), testenv.FreeLoopbackAddr(t)
	p := startVeil(t, []string{allowLoopback}, "control-plane",
		"--control-plane-addr", addr, "--metrics-addr", metricsAddr, "--postgres-url", e.pgURL,
		"--redis-addr", testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"), "--redis-db", fmt.Sprint(e.redisDB),
		"--gateway-key-auth=false",
		"--jwt-secret", testJWTSecret, "--gateway-admin-url", e.gw.AdminURL, "--gateway-url", e.gw.URL,
		"--register-attempts", "20", "--register-retry-base", "50ms", "--register-retry-max", "500ms",
		"--job-rescue-after", "51s", "--rate-limit-ip=", "--rate-limit-token=", "--log-level", "warn")
	p.waitReady(t, "http://"+addr+"/readyz", 30*time.Second)
	if code, _, err := get("http://" + addr + "/metrics"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /metrics on the API port = %d, %v; want 404", code, err)
	}
	if code, body, err := get("http://" + metricsAddr + "/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics on the metrics address = %d, %v; want 200 with the process metrics", code, err)
	}

	c := &controlPlane{proc: p, ClientWithResponses: newClient(t, "http://"+addr), URL: "http://" + addr}
	prov := providerToken(t)
	admin := adminToken(t)
	apiID, approvalID := e.register(t, c, prov, "socket")
	approve(t, c, admin, approvalID, client.DecisionInput{})
	waitState(t, c, prov, apiID, "active", 60*time.Second, "failed")
	if ids := routeIDs(t, e.gw); !slices.Contains(ids, "veil-api-"+apiID.String()) {
		t.Errorf("gateway routes = %v; want veil-api-%s, put over the socket", ids, apiID)
	}
}
