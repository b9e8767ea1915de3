package catalog_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/egress/egresstest"
)

func egressPolicy(t testing.TB, cfg egress.Config) *egress.Policy {
	t.Helper()
	p, err := egress.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// egressEnv is a catalog whose policy allows one upstream, a stand-in for
// a public one on 127.0.0.1, and resolves names through a test DNS
// server; 127.0.0.2 on the same port is an internal service.
type egressEnv struct {
	*env
	dns      *egresstest.DNS
	internal *egresstest.Listener // 127.0.0.2, on the allowed upstream's port
	loop     *egresstest.Listener // 127.0.0.1, on a port of its own
	public   string               // host:port of the allowed upstream
	port     int
	redirect string // where the allowed upstream's /v1/redirect/health points
}

const upstreamName = "upstream.veil.test"

func setupEgress(t *testing.T) *egressEnv {
	dns := egresstest.NewDNS(t)
	ee := &egressEnv{dns: dns}
	pub, internal := egresstest.ListenPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/redirect/health" {
			http.Redirect(w, r, ee.redirect, http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	ee.internal = internal
	ee.loop = egresstest.NewListener(t, "127.0.0.1:0")
	ap := netip.MustParseAddrPort(pub.Listener.Addr().String())
	ee.public, ee.port = ap.String(), int(ap.Port())
	ee.redirect = fmt.Sprintf("http://127.0.0.2:%d/admin", ee.port)
	dns.Set(upstreamName, "127.0.0.1")
	ee.env = setup(t, func(c *catalog.Config) {
		c.Egress = egressPolicy(t, egress.Config{Allow: []string{ee.public}, Resolver: dns.Resolver()})
	})
	return ee
}

// upstream is the allowed upstream by name.
func (e *egressEnv) upstream() string { return fmt.Sprintf("http://%s:%d/v1", upstreamName, e.port) }

// nothingReached checks that no route went to the gateway and no
// connection to an internal service.
func (e *egressEnv) nothingReached() {
	e.t.Helper()
	if puts, _ := e.gw.calls(); len(puts) != 0 {
		e.t.Errorf("gateway puts = %v; want none", puts)
	}
	e.noInternalConnections()
}

func (e *egressEnv) noInternalConnections() {
	e.t.Helper()
	for _, l := range []*egresstest.Listener{e.internal, e.loop} {
		if n := l.Conns.Load(); n != 0 {
			e.t.Errorf("internal service %s accepted %d connections; want 0", l.Listener.Addr(), n)
		}
	}
}

// Every spelling of an internal address is refused when an API is
// created, changed or given a new version: 422 on upstream_url.
func TestUpstreamRefusedWhenSaved(t *testing.T) {
	e := setupEgress(t)
	ctx := t.Context()
	in := e.input("allowed")
	in.UpstreamURL = e.upstream()
	draft, err := e.svc.CreateAPI(ctx, e.provider, in)
	if err != nil {
		t.Fatalf("CreateAPI(allowed upstream %s) = %v; want nil", in.UpstreamURL, err)
	}
	forms := egresstest.Forms(e.dns, e.loop.Port())
	for i, f := range forms {
		in := e.input(fmt.Sprintf("refused-%d", i))
		in.UpstreamURL = f.URL
		_, err := e.svc.CreateAPI(ctx, e.provider, in)
		wantFields(t, f.Name+": CreateAPI("+f.URL+")", err, "upstream_url")
		url := f.URL
		_, err = e.svc.UpdateAPI(ctx, e.provider, draft.ID, catalog.APIPatch{UpstreamURL: &url})
		wantFields(t, f.Name+": UpdateAPI("+f.URL+")", err, "upstream_url")
		_, err = e.svc.CreateVersion(ctx, e.provider, draft.ID, catalog.VersionInput{Version: fmt.Sprintf("2.%d", i), UpstreamURL: f.URL})
		wantFields(t, f.Name+": CreateVersion("+f.URL+")", err, "upstream_url")
		if err != nil && strings.Contains(err.Error(), "127.0.0.2") {
			t.Errorf("%s: refusal %q names the address the host resolved to", f.Name, err)
		}
	}
	if got := e.api(draft.ID).UpstreamURL; got != e.upstream() {
		t.Errorf("upstream after refused changes = %s; want %s", got, e.upstream())
	}
	e.noInternalConnections()
}

// A name approved while it resolved to the allowed address and resolving
// to an internal one at registration fails registration at once: no route
// is put, the reason says why.
func TestRegistrationRefusesRebound(t *testing.T) {
	e := setupEgress(t)
	a := e.approved(t, "rebound", "")
	e.dns.Set(upstreamName, "127.0.0.2")
	if err := e.register(a.ID, 1, 3); err != nil {
		t.Fatalf("register = %v; want nil (failed for good, no retry)", err)
	}
	got := e.api(a.ID)
	if got.State != catalog.StateFailed || !strings.Contains(got.StateReason, "egress policy") {
		t.Errorf("after registration: %s %q; want failed by the egress policy", got.State, got.StateReason)
	}
	if strings.Contains(got.StateReason, "127.0.0.2") {
		t.Errorf("state_reason %q names the internal address", got.StateReason)
	}
	e.nothingReached()
}

// The health check follows no redirect: a 302 toward an internal address
// is an unhealthy answer, the internal address is never connected to, and
// the reason shows neither the address nor the status.
func TestHealthCheckDoesNotFollowRedirects(t *testing.T) {
	e := setupEgress(t)
	a := e.approved(t, "redirecting", "/redirect/health")
	for _, target := range []string{e.redirect, "http://127.0.0.1:2019/config/", "http://169.254.169.254/latest/meta-data/"} {
		e.redirect = target
		if err := e.register(a.ID, 1, 3); err == nil {
			t.Fatalf("register with a health check redirecting to %s = nil; want an error", target)
		}
	}
	if err := e.register(a.ID, 3, 3); err != nil {
		t.Fatalf("last register = %v", err)
	}
	got := e.api(a.ID)
	if got.State != catalog.StateFailed {
		t.Fatalf("state = %s; want failed", got.State)
	}
	for _, leak := range []string{"127.0.0.2", "302", "169.254", "2019"} {
		if strings.Contains(got.StateReason, leak) {
			t.Errorf("state_reason %q shows %q", got.StateReason, leak)
		}
	}
	e.nothingReached()
}

// Reconciliation takes an active API off the gateway once its upstream is
// refused (its name resolves to an internal address now).
func TestReconcileSuspendsRefusedUpstream(t *testing.T) {
	e := setupEgress(t)
	a := e.approved(t, "live", "")
	if err := e.register(a.ID, 1, 3); err != nil {
		t.Fatal(err)
	}
	if got := e.api(a.ID).State; got != catalog.StateActive {
		t.Fatalf("state = %s; want active", got)
	}
	rep, err := e.svc.Reconcile(t.Context())
	if err != nil || rep.Refused != 0 {
		t.Fatalf("Reconcile while allowed = %+v, %v; want nothing refused", rep, err)
	}
	e.dns.Set(upstreamName, "127.0.0.2")
	rep, err = e.svc.Reconcile(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Refused != 1 || rep.Healed != 1 {
		t.Errorf("Reconcile after rebinding = %+v; want 1 refused, healed", rep)
	}
	got := e.api(a.ID)
	if got.State != catalog.StateSuspended || !strings.Contains(got.StateReason, "egress policy") {
		t.Errorf("after reconciliation: %s %q; want suspended by the egress policy", got.State, got.StateReason)
	}
	if _, ok := e.gw.route(a.ID); ok {
		t.Error("route still on the gateway; want removed")
	}
	e.noInternalConnections()
}

// approved creates an API of slug on the test's allowed upstream, with
// healthPath when not empty, and approves it.
func (e *egressEnv) approved(t *testing.T, slug, healthPath string) catalog.API {
	t.Helper()
	in := e.input(slug)
	in.UpstreamURL = e.upstream()
	if healthPath != "" {
		in.HealthCheckPath = healthPath
	}
	a, err := e.svc.CreateAPI(t.Context(), e.provider, in)
	if err != nil {
		t.Fatal(err)
	}
	r := e.submit(e.provider, a.ID, catalog.PriorityNormal)
	e.decide(r.ID, catalog.DecisionApprove, "looks good")
	return a
}
