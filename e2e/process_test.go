package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/testenv"
)

// proc is a veil command running as a child process of the test.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *testenv.SyncBuffer
	exited chan struct{} // closed once the process has been waited for
	err    error         // its exit error, set before exited closes
	end    sync.Once
}

// startVeil starts the veil binary with args and env (after the test's
// own environment). Its output is shown when the test fails; it is killed
// when the test ends, if it still runs.
func startVeil(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: "veil " + args[0], out: &testenv.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(testenv.VeilBinary(t), args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.out.String())
		}
	})
	return p
}

// kill ends the process at once with SIGKILL, as a crash would.
func (p *proc) kill() {
	p.end.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	})
}

// errStopped is what stop returns when the process was stopped or killed
// before.
var errStopped = errors.New("already stopped")

// stop sends SIGTERM and waits up to 30 s for a clean exit; it returns the
// exit error, or an error if the process had to be killed.
func (p *proc) stop() error {
	err := errStopped
	p.end.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			err = p.err
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			err = fmt.Errorf("%s did not exit within 30s of SIGTERM; killed", p.name)
		}
	})
	return err
}

// waitReady polls url until it answers 200, failing the test if the
// process exits first or d passes.
func (p *proc) waitReady(t *testing.T, url string, d time.Duration) {
	t.Helper()
	testenv.Deadline(t, d, func() error {
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.out.String())
		default:
		}
		status, _, err := get(url)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("%s = %d", url, status)
		}
		return nil
	})
}

// cpOptions are the settings of a control plane process that tests vary;
// options gives the usual ones.
type cpOptions struct {
	attempts                 int
	keyAuth                  bool
	kafkaBrokers, quotaTopic string
	clickhouseAddr           string
	clickhouseDB             string
	smtpAddr                 string
	egressAllow              string
	egressResolver           string
	periodRollEvery          time.Duration
	logLevel                 string
	// addr is where it listens; empty means a free loopback port. A test
	// that must know the address before the start (an OpenID provider's
	// redirect URL) picks it.
	addr string
	// env is added to the process's environment (settings read from the
	// environment only, such as VEIL_OIDC_CLIENT_SECRET).
	env []string
}

// options are a control plane's settings for this environment:
// registration retried attempts times quickly, periodic jobs out of the
// way (tests call them), no rate limits to speak of, webhooks to loopback
// allowed, keys of the test environment, no Kafka, ClickHouse or email.
func (e *cpEnv) options(attempts int) cpOptions {
	return cpOptions{attempts: attempts, egressAllow: "127.0.0.0/8", periodRollEvery: time.Hour, logLevel: "warn"}
}

// args are the command line of a control plane with o on addr.
func (e *cpEnv) args(addr string, o cpOptions) []string {
	return []string{"control-plane",
		"--control-plane-addr", addr, "--metrics-addr=", "--postgres-url", e.pgURL,
		"--redis-addr", testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"), "--redis-db", strconv.Itoa(e.redisDB),
		"--jwt-secret", testJWTSecret, "--jwt-issuer", "veil", "--jwt-audience", "veil-control-plane",
		"--gateway-admin-url", e.admin.srv.URL, "--gateway-url", e.gw.URL, "--gateway-key-auth=" + strconv.FormatBool(o.keyAuth),
		"--register-attempts", strconv.Itoa(o.attempts), "--register-retry-base", "20ms", "--register-retry-max", "200ms",
		"--reconcile-interval", "1h", "--approval-sweep-interval", "1h", "--job-rescue-after", "51s",
		"--rate-limit-ip", "100000/1m", "--rate-limit-token", "100000/1m",
		"--webhook-allow-private=true", "--webhook-max-attempts", "5", "--webhook-retry-base", "20ms", "--job-workers", "4",
		"--key-reconcile-interval", "1h", "--key-maintenance-interval", "1h", "--key-env", "test", "--key-seal-secret", "control-plane-test-seal",
		"--usage-reconcile-interval", "1h", "--period-roll-interval", o.periodRollEvery.String(),
		"--upstream-allow-cidrs", o.egressAllow, "--upstream-resolver", o.egressResolver,
		"--kafka-brokers", o.kafkaBrokers, "--quota-topic", o.quotaTopic,
		"--clickhouse-addr", o.clickhouseAddr, "--clickhouse-database", o.clickhouseDB,
		"--smtp-addr", o.smtpAddr, "--smtp-from", "Veil <noreply@veil.test>", "--smtp-tls", "none",
		"--log-level", o.logLevel,
	}
}

// controlPlane is a control plane process and a client of its API.
type controlPlane struct {
	*proc
	*client.ClientWithResponses
	URL string
}

// startControlPlane runs `veil control-plane` with o until the test ends,
// when it is stopped with SIGTERM and must exit cleanly.
func (e *cpEnv) startControlPlane(t *testing.T, o cpOptions) *controlPlane {
	t.Helper()
	if o.quotaTopic == "" {
		o.quotaTopic = broker.TopicQuotaEvents
	}
	addr := o.addr
	if addr == "" {
		addr = testenv.FreeLoopbackAddr(t)
	}
	p := startVeil(t, o.env, e.args(addr, o)...)
	cp := &controlPlane{proc: p, ClientWithResponses: newClient(t, "http://"+addr), URL: "http://" + addr}
	t.Cleanup(func() {
		if err := p.stop(); err != nil && !errors.Is(err, errStopped) {
			t.Errorf("control plane: %v", err)
		}
	})
	p.waitReady(t, cp.URL+"/readyz", 60*time.Second)
	return cp
}

func newClient(t *testing.T, url string) *client.ClientWithResponses {
	t.Helper()
	c, err := client.New(url, client.WithHTTPClient(&http.Client{Timeout: 30 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
