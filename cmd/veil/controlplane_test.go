package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/migrate"
)

const testJWTSecret = "control-plane-test-secret-0123456789"

// gatewayProc is a real Caddy gateway process (this test binary running
// `veil gateway`).
type gatewayProc struct {
	cmd *exec.Cmd
	URL string
	// AdminURL is its admin socket, unix:///…; admin sends requests there.
	AdminURL string
	admin    *http.Client
}

// adminDo sends a request to the gateway's admin API, read from Caddy
// directly (not through any fault proxy).
func (g *gatewayProc) adminDo(method, path, body string) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return g.admin.Do(req)
}

func startGateway(t *testing.T, env ...string) *gatewayProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr, metricsAddr, sock := freeAddr(t), freeAddr(t), testenv.SocketPath(t, "admin.sock")
	cmd := exec.Command(self, "gateway")
	cmd.Env = append(append(os.Environ(), "VEIL_TEST_EXEC=1", "VEIL_GATEWAY_ADDR="+addr,
		"VEIL_GATEWAY_ADMIN_ADDR=unix/"+sock+"|0600", "VEIL_METRICS_ADDR="+metricsAddr,
		// The test upstreams listen on loopback; Veil's ports stay refused.
		"VEIL_UPSTREAM_ALLOW_CIDRS=127.0.0.0/8"), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	g := &gatewayProc{cmd: cmd, URL: "http://" + addr, AdminURL: "unix://" + sock, admin: testenv.UnixClient(sock)}
	testenv.Deadline(t, 60*time.Second, func() error {
		if cmd.ProcessState != nil {
			t.Fatalf("gateway exited: %s", stderr.String())
		}
		status, _, err := get(g.URL + "/healthz")
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("gateway /healthz = %d", status)
		}
		return nil
	})
	return g
}

// routeIDs lists the veil-api-* route ids in the gateway's live config,
// read from Caddy directly (not through any fault proxy).
func (g *gatewayProc) routeIDs(t *testing.T) []string {
	t.Helper()
	resp, err := g.adminDo(http.MethodGet, "/config/apps/http/servers/veil/routes", "")
	if err != nil {
		t.Fatalf("read gateway routes: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("read gateway routes = %d, %v: %s", resp.StatusCode, err, body)
	}
	var routes []map[string]any
	if err := json.Unmarshal(body, &routes); err != nil {
		t.Fatalf("decode gateway routes: %v", err)
	}
	var ids []string
	for _, r := range routes {
		if id, _ := r["@id"].(string); strings.HasPrefix(id, "veil-api-") {
			ids = append(ids, id)
		}
	}
	return ids
}

// faultyAdmin sits in front of Caddy's admin API and breaks configuration
// changes on cue: the next failNext ones answer 500, or all of them while
// failAlways is set, or (lie) they answer 200 without reaching Caddy.
type faultyAdmin struct {
	srv        *httptest.Server
	failNext   atomic.Int32
	failAlways atomic.Bool
	lie        atomic.Bool
	failed     atomic.Int32
}

func newFaultyAdmin(t *testing.T, target string) *faultyAdmin {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyAdmin{}
	// SetURL also rewrites Host: Caddy's admin API refuses foreign hosts.
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }}
	if u.Scheme == "unix" {
		// The admin API's socket: every connection goes there.
		proxy.Transport = testenv.UnixClient(u.Path).Transport
		u = &url.URL{Scheme: "http", Host: "localhost"}
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodDelete {
			if f.lie.Load() {
				w.WriteHeader(http.StatusOK)
				return
			}
			if f.failAlways.Load() || f.failNext.Add(-1) >= 0 {
				f.failed.Add(1)
				http.Error(w, `{"error":"injected fault"}`, http.StatusInternalServerError)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// upstream is a provider's API: /health and /hello, with a health check
// that can be held.
type upstream struct {
	srv         *httptest.Server
	hold        chan struct{} // when non-nil, /health waits for it to close
	healthCalls chan struct{}
	mu          sync.Mutex
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{healthCalls: make(chan struct{}, 100)}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/health":
			select {
			case u.healthCalls <- struct{}{}:
			default:
			}
			u.mu.Lock()
			hold := u.hold
			u.mu.Unlock()
			if hold != nil {
				<-hold
			}
			_, _ = io.WriteString(w, "ok")
		case "/v1/hello":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"hello":"world","api":%q}`, r.Header.Get("X-Veil-Api-Id"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// webhookSink receives webhooks and verifies each signature with its own
// implementation of the Standard Webhooks scheme.
type webhookSink struct {
	srv    *httptest.Server
	mu     sync.Mutex
	secret string
	events []map[string]any
	bad    []string
}

func newWebhookSink(t *testing.T) *webhookSink {
	t.Helper()
	s := &webhookSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := verifyStandardWebhook(s.secret, r.Header, body, time.Now()); err != nil {
			s.bad = append(s.bad, err.Error())
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		s.events = append(s.events, ev)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// verifyStandardWebhook checks webhook-id, webhook-timestamp (within five
// minutes) and a v1 HMAC-SHA256 signature over "id.timestamp.body".
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("missing webhook headers")
	}
	var unix int64
	if _, err := fmt.Sscan(ts, &unix); err != nil {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	if d := now.Sub(time.Unix(unix, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %s too far from now", ts)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return fmt.Errorf("bad secret: %v", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no valid signature in %q", sigs)
}

func (s *webhookSink) types() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		out = append(out, fmt.Sprint(e["type"]))
	}
	return out
}

// cpClient calls the control plane.
type cpClient struct {
	t    *testing.T
	base string
}

func token(t *testing.T, org, user string, role identity.Role) string {
	t.Helper()
	tok, err := identity.Mint([]byte(testJWTSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: user, Org: org, Role: role}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (c cpClient) do(method, path, tok string, body any, out any) int {
	c.t.Helper()
	return c.doWith(method, path, tok, body, out)
}

// doWith is do with extra request headers, as name, value pairs.
func (c cpClient) doWith(method, path, tok string, body any, out any, header ...string) int {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// with returns the client failing t instead.
func (c cpClient) with(t *testing.T) cpClient { c.t = t; return c }

// must calls do and fails unless the status is want.
func (c cpClient) must(want int, method, path, tok string, body any, out any) {
	c.t.Helper()
	var raw json.RawMessage
	if got := c.do(method, path, tok, body, &raw); got != want {
		c.t.Fatalf("%s %s = %d %s; want %d", method, path, got, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatal(err)
		}
	}
}

type apiView struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	StateReason string `json:"state_reason"`
	Slug        string `json:"slug"`
}

// cpEnv is a migrated database, a real gateway behind a fault proxy and an
// upstream.
type cpEnv struct {
	pgURL string
	// redisDB is the test's own Redis database: the control plane's key
	// reconciliation scans every key record in it.
	redisDB  int
	gw       *gatewayProc
	admin    *faultyAdmin
	upstream *upstream
}

func newCPEnv(t *testing.T) *cpEnv {
	t.Helper()
	pgURL := testenv.PostgresURL(t)
	if _, err := migrate.Postgres(t.Context(), pgURL, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t)
	t.Cleanup(func() {
		if t.Failed() {
			dumpJobs(t, pgURL)
		}
	})
	_, db := testenv.RedisDB(t)
	return &cpEnv{pgURL: pgURL, redisDB: db, gw: gw, admin: newFaultyAdmin(t, gw.AdminURL), upstream: newUpstream(t)}
}

func (e *cpEnv) flags(t *testing.T, attempts int) controlPlaneFlags {
	return controlPlaneFlags{
		addr: "127.0.0.1:0", redisAddr: testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"), redisDB: e.redisDB,
		jwtSecret: testJWTSecret, jwtIssuer: "veil", jwtAudience: "veil-control-plane",
		gatewayAdminURL: e.admin.srv.URL, gatewayURL: e.gw.URL,
		registerAttempts: attempts, retryBase: 20 * time.Millisecond, retryMax: 200 * time.Millisecond,
		reconcileEvery: time.Hour, sweepEvery: time.Hour, rescueAfter: 51 * time.Second,
		ipRate: "100000/1m", tokenRate: "100000/1m", webhookPrivate: true, webhookAttempts: 5,
		webhookRetryBase: 20 * time.Millisecond, workers: 4,
		keyReconcileEvery: time.Hour, maintenanceEvery: time.Hour, keyEnv: "test", keySealSecret: "control-plane-test-seal",
		usageReconcileEvery: time.Hour, periodRollEvery: time.Hour,
		egress: egressFlags{allow: "127.0.0.0/8"},
	}
}

// startControlPlane runs a control plane in this process until the test ends.
func (e *cpEnv) startControlPlane(t *testing.T, attempts int) cpClient {
	t.Helper()
	_, c := e.runControlPlane(t, e.flags(t, attempts))
	return c
}

// runControlPlane runs a control plane with flags in this process until the
// test ends, and returns it with a client of its API.
func (e *cpEnv) runControlPlane(t *testing.T, flags controlPlaneFlags) (*controlPlane, cpClient) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	plane, err := newControlPlane(ctx, flags, e.pgURL, testenv.Logger(t), metrics.NewSet())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- plane.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
		plane.close()
	})
	return plane, cpClient{t: t, base: "http://" + plane.addr().String()}
}

// register creates an API on the upstream and submits it; it returns the
// API id and the approval id.
func (e *cpEnv) register(c cpClient, prov, slug string) (apiID, approvalID string) {
	var api apiView
	c.must(http.StatusCreated, "POST", "/v1/apis", prov, map[string]any{
		"name": "Hello " + slug, "slug": slug, "upstream_url": e.upstream.srv.URL + "/v1", "version": "1.0",
		"routes":            []map[string]any{{"methods": []string{"GET"}, "path": "/hello"}},
		"health_check_path": "/health", "docs_url": "https://docs.example.com/hello",
	}, &api)
	if api.State != "draft" {
		c.t.Fatalf("new api state = %s; want draft", api.State)
	}
	var approval struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	c.must(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/submit", prov, map[string]any{"priority": "high"}, &approval)
	if approval.Status != "pending" {
		c.t.Fatalf("approval status = %s; want pending", approval.Status)
	}
	return api.ID, approval.ID
}

// waitState polls the API until it reaches want, failing if it ever shows
// one of never.
func waitState(t *testing.T, c cpClient, tok, id, want string, d time.Duration, never ...string) apiView {
	t.Helper()
	var api apiView
	testenv.Deadline(t, d, func() error {
		c.must(http.StatusOK, "GET", "/v1/apis/"+id, tok, nil, &api)
		for _, n := range never {
			if api.State == n {
				t.Fatalf("api %s reached state %s (%s); it must never", id, n, api.StateReason)
			}
		}
		if api.State != want {
			return fmt.Errorf("api state %s (%s); want %s", api.State, api.StateReason, want)
		}
		return nil
	})
	return api
}

func throughGateway(g *gatewayProc, path string) (int, string) {
	status, body, err := get(g.URL + path)
	if err != nil {
		return 0, err.Error()
	}
	return status, body
}

func TestApprovalFlowEndToEnd(t *testing.T) {
	e := newCPEnv(t)
	c := e.startControlPlane(t, 4)
	prov := token(t, "acme", "alice", identity.RoleProvider)
	acmeAdmin := token(t, "acme", "root", identity.RoleAdmin)
	admin := token(t, "platform", "operator", identity.RoleAdmin)

	sink := newWebhookSink(t)
	var hook struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	c.must(http.StatusCreated, "POST", "/v1/webhooks", prov, map[string]any{"url": sink.srv.URL, "event_types": []string{"*"}}, &hook)
	sink.mu.Lock()
	sink.secret = hook.Secret
	sink.mu.Unlock()

	t.Run("approved and active only once the route answers", func(t *testing.T) {
		c := c.with(t)
		apiID, approvalID := e.register(c, prov, "hello")
		c.must(http.StatusForbidden, "POST", "/v1/admin/approvals/"+approvalID+"/approve", acmeAdmin, nil, nil)
		c.must(http.StatusForbidden, "POST", "/v1/admin/approvals/"+approvalID+"/approve", prov, nil, nil)
		e.admin.failNext.Store(2)
		c.must(http.StatusOK, "POST", "/v1/admin/approvals/"+approvalID+"/approve", admin, map[string]string{"reason": "looks good"}, nil)
		waitState(t, c, prov, apiID, "active", 30*time.Second, "failed")
		if got := e.admin.failed.Load(); got != 2 {
			t.Errorf("injected admin failures = %d; want 2", got)
		}
		status, body := throughGateway(e.gw, "/hello/hello")
		if status != http.StatusOK || !strings.Contains(body, apiID) {
			t.Fatalf("GET /hello/hello through the gateway = %d %s; want 200 from the upstream naming %s", status, body, apiID)
		}
		var tr struct {
			Data []struct{ From, To string } `json:"data"`
		}
		c.must(http.StatusOK, "GET", "/v1/apis/"+apiID+"/transitions", prov, nil, &tr)
		var path []string
		for _, x := range tr.Data {
			path = append(path, x.From+">"+x.To)
		}
		if got := strings.Join(path, " "); got != "draft>submitted submitted>pending_approval pending_approval>approved approved>active" {
			t.Errorf("transitions = %s", got)
		}
		// Suspend removes the route, resume brings it back.
		c.must(http.StatusOK, "POST", "/v1/admin/apis/"+apiID+"/suspend", admin, map[string]string{"reason": "abuse report"}, nil)
		testenv.Deadline(t, 20*time.Second, func() error {
			if ids := e.gw.routeIDs(t); len(ids) != 0 {
				return fmt.Errorf("routes after suspend: %v", ids)
			}
			return nil
		})
		if status, _ := throughGateway(e.gw, "/hello/hello"); status != http.StatusNotFound {
			t.Errorf("suspended api through the gateway = %d; want 404", status)
		}
		c.must(http.StatusAccepted, "POST", "/v1/admin/apis/"+apiID+"/resume", admin, nil, nil)
		waitState(t, c, prov, apiID, "active", 30*time.Second, "failed")
		if status, _ := throughGateway(e.gw, "/hello/hello"); status != http.StatusOK {
			t.Errorf("resumed api through the gateway = %d; want 200", status)
		}

		// Reconciliation heals a route removed behind the control plane's
		// back and removes a route no API owns.
		if resp, err := e.gw.adminDo(http.MethodDelete, "/id/veil-api-"+apiID, ""); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("delete route in caddy: %v %v", resp, err)
		}
		orphan := `{"@id":"veil-api-00000000-0000-4000-8000-000000000001","match":[{"path":["/orphan","/orphan/*"]}],"handle":[{"handler":"static_response","body":"orphan"}]}`
		resp, err := e.gw.adminDo(http.MethodPost, "/config/apps/http/servers/veil/routes/0", orphan)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("add orphan route: %v %v", resp, err)
		}
		var rep struct {
			Missing, Orphans, Healed int
			Unhealed                 []string
		}
		c.must(http.StatusOK, "POST", "/v1/admin/reconcile/apis", admin, nil, &rep)
		if rep.Missing != 1 || rep.Orphans != 1 || rep.Healed != 2 || len(rep.Unhealed) != 0 {
			t.Errorf("reconcile report = %+v; want 1 missing, 1 orphan, 2 healed", rep)
		}
		if status, _ := throughGateway(e.gw, "/hello/hello"); status != http.StatusOK {
			t.Errorf("healed api through the gateway = %d; want 200", status)
		}
		if status, _ := throughGateway(e.gw, "/orphan"); status != http.StatusNotFound {
			t.Errorf("orphan route through the gateway = %d; want 404", status)
		}
		c.must(http.StatusOK, "POST", "/v1/admin/reconcile/apis", admin, nil, &rep)
		if rep.Healed != 0 {
			t.Errorf("second reconcile healed %d; want 0", rep.Healed)
		}

		// Retire removes it for good.
		c.must(http.StatusOK, "POST", "/v1/apis/"+apiID+"/retire", prov, nil, nil)
		testenv.Deadline(t, 20*time.Second, func() error {
			if ids := e.gw.routeIDs(t); len(ids) != 0 {
				return fmt.Errorf("routes after retire: %v", ids)
			}
			return nil
		})
	})

	t.Run("a gateway that always fails leaves the api failed and the gateway clean", func(t *testing.T) {
		c := c.with(t)
		apiID, approvalID := e.register(c, prov, "always-fails")
		e.admin.failAlways.Store(true)
		defer e.admin.failAlways.Store(false)
		c.must(http.StatusOK, "POST", "/v1/admin/approvals/"+approvalID+"/approve", admin, nil, nil)
		api := waitState(t, c, prov, apiID, "failed", 30*time.Second, "active")
		if !strings.Contains(api.StateReason, "after 4 attempts") {
			t.Errorf("failed reason = %q; want the attempts named", api.StateReason)
		}
		if ids := e.gw.routeIDs(t); len(ids) != 0 {
			t.Errorf("gateway routes after failure = %v; want none", ids)
		}
	})

	t.Run("a gateway that acknowledges but does not serve never makes the api active", func(t *testing.T) {
		c := c.with(t)
		apiID, approvalID := e.register(c, prov, "lying-gateway")
		e.admin.lie.Store(true)
		defer e.admin.lie.Store(false)
		c.must(http.StatusOK, "POST", "/v1/admin/approvals/"+approvalID+"/approve", admin, nil, nil)
		api := waitState(t, c, prov, apiID, "failed", 30*time.Second, "active")
		if !strings.Contains(api.StateReason, "route could not be verified through the gateway") {
			t.Errorf("failed reason = %q; want the verification named", api.StateReason)
		}
		if ids := e.gw.routeIDs(t); len(ids) != 0 {
			t.Errorf("gateway routes after failure = %v; want none", ids)
		}
		// An admin retries once the gateway is healthy again.
		e.admin.lie.Store(false)
		c.must(http.StatusAccepted, "POST", "/v1/admin/apis/"+apiID+"/retry", admin, nil, nil)
		waitState(t, c, prov, apiID, "active", 30*time.Second, "failed")
	})

	t.Run("webhooks carried every state change, signed", func(t *testing.T) {
		testenv.Deadline(t, 30*time.Second, func() error {
			got := strings.Join(sink.types(), " ")
			for _, want := range []string{"api.created", "approval.submitted", "approval.decided", "api.activated", "api.failed", "api.state_changed"} {
				if !strings.Contains(got, want) {
					return fmt.Errorf("webhook types %s; missing %s", got, want)
				}
			}
			return nil
		})
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if len(sink.bad) > 0 {
			t.Errorf("webhooks with bad signatures: %v", sink.bad)
		}
	})
}

// controlPlaneProcess starts `veil control-plane` as a separate process.
func (e *cpEnv) controlPlaneProcess(t *testing.T, addr string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "control-plane",
		"--control-plane-addr", addr, "--postgres-url", e.pgURL,
		"--redis-addr", testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"), "--redis-db", strconv.Itoa(e.redisDB),
		// Calls through the gateway reach the upstream without a key: this test is about crash recovery.
		"--gateway-key-auth=false",
		"--jwt-secret", testJWTSecret, "--gateway-admin-url", e.admin.srv.URL, "--gateway-url", e.gw.URL,
		"--register-attempts", "20", "--register-retry-base", "50ms", "--register-retry-max", "500ms",
		"--job-rescue-after", "51s", "--rate-limit-ip=", "--rate-limit-token=", "--log-level", "warn",
		// Not the default port: tests run side by side.
		"--metrics-addr", freeAddr(t), "--upstream-allow-cidrs", "127.0.0.0/8")
	cmd.Env = append(os.Environ(), "VEIL_TEST_EXEC=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	testenv.Deadline(t, 30*time.Second, func() error {
		status, _, err := get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("/readyz = %d", status)
		}
		return nil
	})
	return cmd
}

// TestControlPlaneKilledMidRegistrationRecovers kills the control plane
// while a registration job is inside the upstream health check, starts it
// again and expects the registration to finish on its own.
func TestControlPlaneKilledMidRegistrationRecovers(t *testing.T) {
	e := newCPEnv(t)
	addr := freeAddr(t)
	cmd := e.controlPlaneProcess(t, addr)
	c := cpClient{t: t, base: "http://" + addr}
	prov := token(t, "acme", "alice", identity.RoleProvider)
	admin := token(t, "platform", "operator", identity.RoleAdmin)

	apiID, approvalID := e.register(c, prov, "crashy")
	hold := make(chan struct{})
	e.upstream.mu.Lock()
	e.upstream.hold = hold
	e.upstream.mu.Unlock()
	c.must(http.StatusOK, "POST", "/v1/admin/approvals/"+approvalID+"/approve", admin, nil, nil)
	select {
	case <-e.upstream.healthCalls:
	case <-time.After(30 * time.Second):
		t.Fatal("the registration job never reached the upstream health check")
	}
	kill(t, cmd)
	close(hold)
	var api apiView
	// The API stays approved while nobody runs the job.
	c2 := cpClient{t: t, base: "http://" + addr}
	e.controlPlaneProcess(t, addr)
	c2.must(http.StatusOK, "GET", "/v1/apis/"+apiID, prov, nil, &api)
	if api.State != "approved" && api.State != "active" {
		t.Fatalf("api after restart = %s; want approved or active", api.State)
	}
	waitState(t, c2, prov, apiID, "active", 150*time.Second, "failed")
	if status, body := throughGateway(e.gw, "/crashy/hello"); status != http.StatusOK {
		t.Fatalf("GET /crashy/hello through the gateway = %d %s; want 200", status, body)
	}
}

// dumpJobs logs the job table, to explain a failed test.
func dumpJobs(t *testing.T, pgURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT id, kind, state, attempt, args::text, coalesce(errors::text, '') FROM river_job ORDER BY id`)
	if err != nil {
		return
	}
	for rows.Next() {
		var id int64
		var kind, state, args, errs string
		var attempt int
		_ = rows.Scan(&id, &kind, &state, &attempt, &args, &errs)
		t.Logf("job %d %s %s attempt %d %s %.300s", id, kind, state, attempt, args, errs)
	}
}
