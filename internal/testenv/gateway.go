package testenv

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/gatewayproc"
)

// Defaults of the gateway helpers: generous for a loaded CI machine, where
// a gateway normally starts in about a second and stops in less.
const (
	gatewayReadyTimeout = 60 * time.Second
	gatewayStopTimeout  = 15 * time.Second
)

// GatewayProcess is a veil gateway running as a child process of the
// test, on loopback ports of its own.
type GatewayProcess struct {
	// AdminURL is its Caddy admin API as the control plane names it: its
	// unix socket, e.g. unix:///tmp/veil-gw-123/admin.sock. Set by
	// Gateway; the config given to GatewayRun names its own addresses.
	AdminURL string
	// AdminClient sends requests to the admin socket whatever their URL's
	// host: build them with Admin. Set by Gateway, like AdminURL.
	AdminClient *http.Client
	// URL is where it serves traffic, e.g. http://127.0.0.1:41235. Set by
	// Gateway, like AdminURL.
	URL string
	// MetricsURL is where it serves /metrics, e.g. http://127.0.0.1:41236.
	// Set by Gateway, like AdminURL.
	MetricsURL string

	proc *gatewayproc.Process
	// discarded: Gateway started another in its place (its port was
	// taken), so its unclean exit is no failure.
	discarded bool
}

// GatewayOption changes how Gateway and GatewayRun start and stop a
// gateway.
type GatewayOption func(*gatewayOptions)

type gatewayOptions struct {
	stopTimeout time.Duration
	noWait      bool
	env         []string
}

// GatewayEnv adds variables to the gateway's environment, after (and so
// over) the ones Gateway sets.
func GatewayEnv(env ...string) GatewayOption {
	return func(o *gatewayOptions) { o.env = append(o.env, env...) }
}

// GatewayStopTimeout sets how long Stop waits after SIGTERM before it
// kills the gateway (default 15 s). The veil app flushes its events on
// the way out, which may take longer against a slow broker.
func GatewayStopTimeout(d time.Duration) GatewayOption {
	return func(o *gatewayOptions) { o.stopTimeout = d }
}

// GatewayNoWait makes Gateway and GatewayRun return as soon as the process
// started, before it serves: call WaitReady before using it. A test that
// starts several gateways first and waits for them after has them start
// in parallel.
func GatewayNoWait() GatewayOption {
	return func(o *gatewayOptions) { o.noWait = true }
}

// Gateway builds the veil binary (once per test process), starts
// `veil gateway` with its bootstrap config, its admin API on a unix socket
// of its own, and waits until the admin API, /healthz and /metrics answer.
// The test fails, showing the gateway's output, if it does not start; the
// process is stopped when the test ends.
//
// A port FreeLoopbackAddr found free can be taken by another process of
// the test run before the gateway listens on it: a gateway that exits for
// that is started again on new ports, up to three times in all (not with
// GatewayNoWait, whose caller waits).
func Gateway(t testing.TB, opts ...GatewayOption) *GatewayProcess {
	t.Helper()
	var o gatewayOptions
	for _, opt := range opts {
		opt(&o)
	}
	for attempt := 1; ; attempt++ {
		addr, metrics := FreeLoopbackAddr(t), FreeLoopbackAddr(t)
		sock := SocketPath(t, "admin.sock")
		g := &GatewayProcess{AdminURL: "unix://" + sock, AdminClient: UnixClient(sock), URL: "http://" + addr, MetricsURL: "http://" + metrics}
		g.start(t, []string{"gateway"},
			[]string{"VEIL_GATEWAY_ADDR=" + addr, "VEIL_GATEWAY_ADMIN_ADDR=unix/" + sock + "|0600", "VEIL_METRICS_ADDR=" + metrics},
			[]string{g.URL + "/healthz", g.MetricsURL + "/metrics"}, append(opts[:len(opts):len(opts)], GatewayNoWait()))
		if o.noWait {
			return g
		}
		err := g.waitReady()
		if err == nil {
			return g
		}
		if attempt < 3 && strings.Contains(g.Stderr(), "address already in use") {
			g.discarded = true
			_ = g.Stop()
			continue
		}
		t.Fatal(err)
	}
}

// Admin returns the URL of path on the admin API, for AdminClient.
func (g *GatewayProcess) Admin(path string) string { return "http://localhost" + path }

// SocketPath returns a path for a unix socket named name in a directory of
// the test's own, removed when the test ends. The directory is made under
// the system's temporary directory rather than t.TempDir: a socket path
// has room for about 100 bytes, which a long test name exceeds.
func SocketPath(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "veil-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, name)
}

// UnixClient is an HTTP client whose every connection goes to the unix
// socket, whatever the request's host.
func UnixClient(socket string) *http.Client {
	var d net.Dialer
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}

// GatewayRun starts `veil gateway run --config <file>` on config, a Caddy
// JSON config written to a file of the test's, and waits until ready (a
// URL the config serves, e.g. its /healthz) answers 200. The test fails,
// showing the gateway's output, if the process exits first or ready does
// not answer within a minute. The process is stopped when the test ends
// and its output logged if the test failed.
func GatewayRun(t testing.TB, config []byte, ready string, opts ...GatewayOption) *GatewayProcess {
	t.Helper()
	file := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(file, config, 0o644); err != nil {
		t.Fatal(err)
	}
	g := &GatewayProcess{}
	g.start(t, []string{"gateway", "run", "--config", file}, nil, []string{ready}, opts)
	return g
}

// start runs veil with args and env, stops it when the test ends and,
// unless told not to, waits until every ready URL answers.
func (g *GatewayProcess) start(t testing.TB, args, env, ready []string, opts []GatewayOption) {
	t.Helper()
	o := gatewayOptions{stopTimeout: gatewayStopTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	proc, err := gatewayproc.Start(gatewayproc.Config{
		Binary: VeilBinary(t), Args: args, Env: append(env, o.env...), DataDir: t.TempDir(),
		Ready: ready, StopTimeout: o.stopTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.proc = proc
	t.Cleanup(func() {
		if g.discarded {
			return
		}
		if err := g.Stop(); err != nil {
			t.Errorf("stop %s: %v\n%s", proc.Name, err, g.Stderr())
		} else if t.Failed() {
			t.Logf("%s (ready at %s) output:\n%s", proc.Name, strings.Join(proc.ReadyURLs(), ", "), g.Stderr())
		}
	})
	if !o.noWait {
		g.WaitReady(t)
	}
}

// WaitReady waits until the gateway serves: every URL it is ready at
// answers 200. The test fails, showing the gateway's output, if the
// process exits first or does not serve within a minute.
func (g *GatewayProcess) WaitReady(t testing.TB) {
	t.Helper()
	if err := g.waitReady(); err != nil {
		t.Fatal(err)
	}
}

func (g *GatewayProcess) waitReady() error {
	var adminReady func() error
	if g.AdminClient != nil {
		adminReady = func() error {
			resp, err := g.AdminClient.Get(g.Admin("/config/"))
			if err != nil {
				return fmt.Errorf("admin API on %s: %w", g.AdminURL, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("admin API on %s: GET /config/ = %d; want 200", g.AdminURL, resp.StatusCode)
			}
			return nil
		}
	}
	return g.proc.WaitReady(context.Background(), gatewayReadyTimeout, adminReady)
}

// Stop sends SIGTERM, which makes Caddy stop its apps (the veil app
// flushes its events) and exit, and kills the gateway if it has not
// exited within the stop timeout. It reports an unclean exit; stopping a
// stopped gateway is fine.
func (g *GatewayProcess) Stop() error { return g.proc.Stop() }

// Stderr returns what the gateway wrote so far to stdout and stderr
// (Caddy's JSON logs).
func (g *GatewayProcess) Stderr() string { return g.proc.Output() }

var veilBin struct {
	once sync.Once
	path string
	err  error
}

// VeilBinary returns the path of the veil binary built from this checkout,
// building it on first use in the test process. Later builds come from the
// go build cache and only link.
func VeilBinary(t testing.TB) string {
	t.Helper()
	veilBin.once.Do(func() { veilBin.path, veilBin.err = buildVeil() })
	if veilBin.err != nil {
		t.Fatal(veilBin.err)
	}
	return veilBin.path
}

// buildVeil builds into a directory per checkout, shared by the test
// processes that go test runs at once: each links to a file of its own and
// renames it into place, which leaves a running binary alone.
func buildVeil() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root: %w", err)
	}
	root := strings.TrimSpace(string(out))
	h := fnv.New32a()
	h.Write([]byte(root))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("veil-test-bin-%d-%x", os.Getuid(), h.Sum32()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "veil-*.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-o", tmp.Name(), "github.com/veil-platform/veil/cmd/veil")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build veil: %w\n%s", err, stderr.String())
	}
	bin := filepath.Join(dir, "veil")
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// FreeLoopbackAddr returns a loopback address, host:port, whose port was
// free a moment ago: for a child process or a server to listen on.
func FreeLoopbackAddr(t testing.TB) string {
	t.Helper()
	addr, err := gatewayproc.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads: a
// child process's output or a logger's, read by the test while written.
// The zero value is ready to use.
type SyncBuffer = gatewayproc.SyncBuffer

// TCPListeners returns the addresses, ip:port, on which the gateway
// process listens for TCP connections, read from /proc: what anything on
// the host can connect to, whatever the configuration says.
func (g *GatewayProcess) TCPListeners(t testing.TB) []string {
	t.Helper()
	return TCPListeners(t, g.proc.Pid())
}

// TCPListeners returns the addresses, ip:port, on which process pid
// listens for TCP connections.
func TCPListeners(t testing.TB, pid int) []string {
	t.Helper()
	addrs, err := tcpListeners(pid)
	if err != nil {
		t.Fatalf("list the TCP listeners of process %d: %v", pid, err)
	}
	return addrs
}

// tcpListeners matches the socket inodes among pid's file descriptors
// with the listening sockets of /proc/net/tcp and tcp6.
func tcpListeners(pid int) ([]string, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			addr, err := procAddr(f[1])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", table, err)
			}
			out = append(out, addr)
		}
	}
	return out, nil
}

// procAddr decodes /proc/net/tcp's HEXIP:HEXPORT: the address in 32-bit
// words of host byte order (little-endian here), the port big-endian.
func procAddr(s string) (string, error) {
	h, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || (len(h) != 8 && len(h) != 32) {
		return "", fmt.Errorf("address %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", s, err)
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		ip[i], ip[i+1], ip[i+2], ip[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port))), nil
}
