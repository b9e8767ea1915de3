package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// GatewayProcess is a `veil gateway` running as a child process of the
// test, on loopback ports of its own.
type GatewayProcess struct {
	// AdminURL is its Caddy admin API, e.g. http://127.0.0.1:41234.
	AdminURL string
	// URL is where it serves traffic, e.g. http://127.0.0.1:41235.
	URL string

	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{} // closed when the process has been waited for
	err    error         // its exit error, set before exited closes
	stop   sync.Once
}

// Gateway builds the veil binary (once per test process), starts
// `veil gateway` and waits until its admin API and /healthz answer. The
// test fails, showing the gateway's stderr, if it does not start; the
// process is stopped when the test ends.
func Gateway(t testing.TB) *GatewayProcess {
	t.Helper()
	bin := VeilBinary(t)
	data := t.TempDir()
	addr, admin := freeLoopbackAddr(t), freeLoopbackAddr(t)
	g := &GatewayProcess{
		AdminURL: "http://" + admin,
		URL:      "http://" + addr,
		stderr:   &syncBuffer{},
		exited:   make(chan struct{}),
	}
	g.cmd = exec.Command(bin, "gateway")
	g.cmd.Env = append(os.Environ(),
		"VEIL_GATEWAY_ADDR="+addr,
		"VEIL_GATEWAY_ADMIN_ADDR="+admin,
		// Caddy keeps its storage (certificates, locks) under these.
		"XDG_DATA_HOME="+filepath.Join(data, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(data, "config"),
	)
	g.cmd.Stdout = g.stderr
	g.cmd.Stderr = g.stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start veil gateway: %v", err)
	}
	go func() {
		g.err = g.cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("stop veil gateway: %v\n%s", err, g.Stderr())
		} else if t.Failed() {
			t.Logf("veil gateway stderr:\n%s", g.Stderr())
		}
	})
	client := &http.Client{Timeout: 2 * time.Second}
	Deadline(t, 60*time.Second, func() error {
		select {
		case <-g.exited:
			t.Fatalf("veil gateway exited before it was ready: %v\n%s", g.err, g.Stderr())
		default:
		}
		for _, u := range []string{g.AdminURL + "/config/", g.URL + "/healthz"} {
			resp, err := client.Get(u)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET %s = %d; want 200", u, resp.StatusCode)
			}
		}
		return nil
	})
	return g
}

// Stop sends SIGTERM, waits up to 10 s for the gateway to exit and kills it
// after that. It reports an unclean exit; stopping a stopped gateway is
// fine.
func (g *GatewayProcess) Stop() error {
	var err error
	g.stop.Do(func() {
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
			err = g.err
		case <-time.After(10 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.exited
			err = errors.New("did not exit within 10s of SIGTERM; killed")
		}
	})
	return err
}

// Kill ends the gateway at once with SIGKILL, as a crash would.
func (g *GatewayProcess) Kill() {
	g.stop.Do(func() {
		_ = g.cmd.Process.Kill()
		<-g.exited
	})
}

// Stderr returns what the gateway wrote so far (Caddy's JSON logs).
func (g *GatewayProcess) Stderr() string { return g.stderr.String() }

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

// freeLoopbackAddr returns a loopback address with a port free a moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
