package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/migrate"
)

// TestGatewayDefaultAdminIsUnixSocket runs veil gateway without an admin
// address: its admin API is a unix socket in Caddy's data directory,
// owner only, and the gateway listens on TCP only for traffic and
// metrics. The control plane's default admin URL is that socket, and puts
// routes through it.
func TestGatewayDefaultAdminIsUnixSocket(t *testing.T) {
	// Not parallel: it sets the environment the control plane's defaults
	// come from.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A short home: a socket path has room for about 100 bytes.
	data := filepath.Dir(testenv.SocketPath(t, "unused"))
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	env := []string{"VEIL_TEST_EXEC=1", "XDG_DATA_HOME=" + data, "XDG_CONFIG_HOME=" + filepath.Join(data, "config"),
		"VEIL_GATEWAY_ADDR=" + addr, "VEIL_METRICS_ADDR=" + metricsAddr}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains([]string{"VEIL_DATA_DIR", "VEIL_GATEWAY_ADMIN_ADDR", "VEIL_METRICS_ADDR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "VEIL_GATEWAY_ADMIN_URL"}, k) {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(self, "gateway")
	cmd.Env = env
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	testenv.Deadline(t, 60*time.Second, func() error {
		if code, _, err := get("http://" + addr + "/healthz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("gateway /healthz = %d, %v\n%s", code, err, out.String())
		}
		return nil
	})

	sock := filepath.Join(data, "caddy", gatewayAdminSocket)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("admin socket: %v\n%s", err, out.String())
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket %s mode = %v; want a socket with 0600", sock, fi.Mode())
	}
	listeners := testenv.TCPListeners(t, cmd.Process.Pid)
	slices.Sort(listeners)
	want := []string{addr, metricsAddr}
	slices.Sort(want)
	if !slices.Equal(listeners, want) {
		t.Errorf("veil gateway listens on TCP %v; want only %v (no admin API on TCP)", listeners, want)
	}
	if code, _, err := get("http://" + addr + "/metrics"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /metrics on the traffic port = %d, %v; want 404", code, err)
	}
	if code, body, err := get("http://" + metricsAddr + "/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "veil_gateway_") {
		t.Errorf("GET /metrics on the metrics address = %d, %v; want 200 with veil_gateway_*", code, err)
	}

	// The control plane's defaults, on the same host and data directory.
	t.Setenv("XDG_DATA_HOME", data)
	t.Setenv("VEIL_DATA_DIR", "")
	var cp controlPlaneFlags
	f := newFlags("control-plane", "", io.Discard)
	cp.register(f, true)
	if err := f.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if cp.gatewayAdminURL != "unix://"+sock {
		t.Fatalf("control plane's default admin URL = %q; want unix://%s", cp.gatewayAdminURL, sock)
	}
	c, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: cp.gatewayAdminURL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "up") }))
	t.Cleanup(up.Close)
	if err := c.Put(t.Context(), gatewayadmin.Route{ID: "veil-api-default-socket", PathPrefix: "/sock", Upstream: up.URL}); err != nil {
		t.Fatalf("Put through the default admin socket: %v", err)
	}
	// Whether the egress policy lets this loopback upstream through is
	// not this test's business: the route is live either way.
	if _, err := c.Get(t.Context(), "veil-api-default-socket"); err != nil {
		t.Fatalf("Get through the default admin socket: %v", err)
	}
}

// TestControlPlaneOverAdminSocket: the control plane registers an API
// through the gateway's admin socket itself (no proxy in between), and
// serves /metrics on its metrics address, not on the API port.
func TestControlPlaneOverAdminSocket(t *testing.T) {
	t.Parallel()
	pgURL := testenv.PostgresURL(t)
	if _, err := migrate.Postgres(t.Context(), pgURL, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	_, db := testenv.RedisDB(t)
	// The test's upstream is on loopback.
	const allowLoopback = "VEIL_UPSTREAM_ALLOW_CIDRS=127.0.0.1/32"
	e := &cpEnv{pgURL: pgURL, redisDB: db, gw: startGateway(t, allowLoopback), upstream: newUpstream(t)}
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "control-plane",
		"--control-plane-addr", addr, "--metrics-addr", metricsAddr, "--postgres-url", e.pgURL,
		"--redis-addr", testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"), "--redis-db", fmt.Sprint(e.redisDB),
		"--gateway-key-auth=false",
		"--jwt-secret", testJWTSecret, "--gateway-admin-url", e.gw.AdminURL, "--gateway-url", e.gw.URL,
		"--register-attempts", "20", "--register-retry-base", "50ms", "--register-retry-max", "500ms",
		"--job-rescue-after", "51s", "--rate-limit-ip=", "--rate-limit-token=", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "VEIL_TEST_EXEC=1", allowLoopback)
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			t.Logf("control plane output:\n%s", out.String())
		}
	})
	testenv.Deadline(t, 30*time.Second, func() error {
		if code, _, err := get("http://" + addr + "/readyz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("/readyz = %d, %v", code, err)
		}
		return nil
	})
	if code, _, err := get("http://" + addr + "/metrics"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /metrics on the API port = %d, %v; want 404", code, err)
	}
	if code, body, err := get("http://" + metricsAddr + "/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics on the metrics address = %d, %v; want 200 with the process metrics", code, err)
	}

	c := cpClient{t: t, base: "http://" + addr}
	prov := token(t, "acme", "alice", identity.RoleProvider)
	admin := token(t, "platform", "operator", identity.RoleAdmin)
	apiID, approvalID := e.register(c, prov, "socket")
	c.must(http.StatusOK, "POST", "/v1/admin/approvals/"+approvalID+"/approve", admin, nil, nil)
	waitState(t, c, prov, apiID, "active", 60*time.Second, "failed")
	if ids := e.gw.routeIDs(t); !slices.Contains(ids, "veil-api-"+apiID) {
		t.Errorf("gateway routes = %v; want veil-api-%s, put over the socket", ids, apiID)
	}
}
