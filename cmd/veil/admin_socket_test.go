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
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/testenv"
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
	addr, metricsAddr := testenv.FreeLoopbackAddr(t), testenv.FreeLoopbackAddr(t)
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
	if err := c.Put(t.Context(), gatewayroute.Route{ID: "veil-api-default-socket", PathPrefix: "/sock", Upstream: up.URL}); err != nil {
		t.Fatalf("Put through the default admin socket: %v", err)
	}
	// Whether the egress policy lets this loopback upstream through is
	// not this test's business: the route is live either way.
	if _, err := c.Get(t.Context(), "veil-api-default-socket"); err != nil {
		t.Fatalf("Get through the default admin socket: %v", err)
	}
}
