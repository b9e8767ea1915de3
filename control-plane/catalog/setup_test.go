package catalog_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/internal/validation"
)

// TestMain runs more tests at once than there are CPUs unless -parallel
// says otherwise: each test spends its time waiting on its own Postgres
// database (creation, migrations, small transactions), not computing.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", "6")
	}
	os.Exit(m.Run())
}

// env is one test's database, service and fakes. The River client is never
// started: jobs stay in river_job where the tests look for them, and the
// workers are driven by hand.
type env struct {
	t        *testing.T
	pool     *pgxpool.Pool
	svc      *catalog.Service
	clock    *testenv.Clock
	rec      *recorder
	gw       *fakeGateway
	upstream *upstream

	admin, otherAdmin, provider, otherProvider, consumer identity.Actor
	platformOrg, org, otherOrg                           uuid.UUID
}

// start is where every test's clock begins: a whole second, so that
// durations read back from Postgres (microseconds) compare exactly.
var start = time.Date(2030, 1, 7, 9, 0, 0, 0, time.UTC)

// setup migrates a fresh database and builds the service over it with the
// fake gateway, a healthy upstream and a clock at start; mod changes the
// config before New.
func setup(t *testing.T, mod ...func(*catalog.Config)) *env {
	t.Helper()
	t.Parallel()
	ctx := t.Context()
	pool := testenv.Postgres(t, func(c *pgxpool.Config) { c.MaxConns = 8 })
	// The recording publisher writes here inside the caller's transaction,
	// so the table holds exactly the announcements that were committed.
	if _, err := pool.Exec(ctx, `CREATE TABLE test_published (
		id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, organization_id uuid NOT NULL,
		event_type text NOT NULL, data jsonb NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	jobs := testenv.River(t, pool, nil)
	e := &env{t: t, pool: pool, clock: testenv.NewClock(start), rec: &recorder{}, gw: newFakeGateway(t), upstream: newUpstream(t)}
	cfg := catalog.Config{
		Pool: pool, Jobs: jobs, Gateway: e.gw, Publisher: e.rec, Logger: testenv.Logger(t),
		GatewayURL: e.gw.url, RegisterAttempts: 3, Now: e.clock.Now,
		// The test upstreams listen on loopback.
		Egress: egressPolicy(t, egress.Config{Allow: []string{"127.0.0.0/8"}}),
	}
	for _, m := range mod {
		m(&cfg)
	}
	svc, err := catalog.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	e.platformOrg = testenv.Org(t, pool, "veil-ops")
	e.org = testenv.Org(t, pool, "acme")
	e.otherOrg = testenv.Org(t, pool, "globex")
	e.admin = identity.Actor{Subject: "admin-1", Role: identity.RoleAdmin, OrgID: e.platformOrg}
	e.otherAdmin = identity.Actor{Subject: "admin-2", Role: identity.RoleAdmin, OrgID: e.platformOrg}
	e.provider = identity.Actor{Subject: "provider-1", Role: identity.RoleProvider, OrgID: e.org}
	e.otherProvider = identity.Actor{Subject: "provider-2", Role: identity.RoleProvider, OrgID: e.otherOrg}
	e.consumer = identity.Actor{Subject: "consumer-1", Role: identity.RoleConsumer, OrgID: e.org}
	return e
}

// recorder is the Publisher: it records each announcement in the caller's
// transaction (a rolled-back change leaves none) and counts every call.
// failOn makes it refuse one event type, which rolls the change back.
type recorder struct {
	calls  atomic.Int64
	mu     sync.Mutex
	failOn string
}

var errPublish = errors.New("publisher refused")

func (r *recorder) Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error {
	r.calls.Add(1)
	r.mu.Lock()
	fail := r.failOn == eventType
	r.mu.Unlock()
	if fail {
		return errPublish
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO test_published (organization_id, event_type, data) VALUES ($1, $2, $3)`, orgID, eventType, b)
	return err
}

// failPublishing makes the publisher refuse eventType ("" for none).
func (r *recorder) failPublishing(eventType string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failOn = eventType
}

// published is one committed announcement.
type published struct {
	Org  uuid.UUID
	Type string
	Data map[string]any
}

// published returns the committed announcements, oldest first.
func (e *env) published() []published {
	e.t.Helper()
	return rowsOf(e, `SELECT organization_id, event_type, data FROM test_published ORDER BY id`, func(row pgx.CollectableRow) (published, error) {
		var p published
		var raw []byte
		if err := row.Scan(&p.Org, &p.Type, &raw); err != nil {
			return p, err
		}
		return p, json.Unmarshal(raw, &p.Data)
	})
}

// publishedTypes returns the types of the committed announcements about
// one API (or approval), oldest first.
func (e *env) publishedTypes(id uuid.UUID) []string {
	e.t.Helper()
	var out []string
	for _, p := range e.published() {
		for _, k := range []string{"api", "approval"} {
			if m, ok := p.Data[k].(map[string]any); ok && m["id"] == id.String() {
				out = append(out, p.Type)
			}
		}
	}
	return out
}

// fakeGateway is the gateway's admin API in memory, and with url its
// traffic side: a request whose path falls under a route's prefix gets 200
// with the route's headers, as the real gateway sends X-Veil-Api-Id.
type fakeGateway struct {
	url string

	mu        sync.Mutex
	routes    map[string]gatewayroute.Route
	foreign   map[string]bool // ids under our prefix that Put did not write
	putErr    error
	deleteErr error
	untagged  bool                     // traffic answers 200 without the route's headers
	dropped   int                      // traffic connections still to close unanswered, as a server being replaced does
	onPut     func(gatewayroute.Route) // called after a successful Put, outside the lock
	puts      []string                 // ids, in call order
	deletes   []string                 // ids, in call order
	seen      map[string]http.Header   // traffic request path → headers
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{routes: map[string]gatewayroute.Route{}, foreign: map[string]bool{}, seen: map[string]http.Header{}}
	srv := httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(srv.Close)
	g.url = srv.URL
	return g
}

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.seen[r.URL.Path] = r.Header.Clone()
	var match *gatewayroute.Route
	for _, rt := range g.routes {
		if r.URL.Path == rt.PathPrefix || strings.HasPrefix(r.URL.Path, rt.PathPrefix+"/") {
			match = &rt
			break
		}
	}
	untagged := g.untagged
	drop := g.dropped > 0
	if drop {
		g.dropped--
	}
	g.mu.Unlock()
	if drop {
		// The client reads EOF, as it does from the server Caddy closes
		// while it swaps configurations.
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	if match == nil {
		http.NotFound(w, r)
		return
	}
	if !untagged {
		for k, v := range match.Headers {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (g *fakeGateway) Put(_ context.Context, r gatewayroute.Route) error {
	g.mu.Lock()
	g.puts = append(g.puts, r.ID)
	if g.putErr != nil {
		g.mu.Unlock()
		return g.putErr
	}
	g.routes[r.ID] = r
	delete(g.foreign, r.ID)
	hook := g.onPut
	g.mu.Unlock()
	if hook != nil {
		hook(r)
	}
	return nil
}

func (g *fakeGateway) Delete(_ context.Context, id string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deletes = append(g.deletes, id)
	if g.deleteErr != nil {
		return g.deleteErr
	}
	delete(g.routes, id)
	delete(g.foreign, id)
	return nil
}

// List returns the routes Put wrote under idPrefix and, like the real
// client, an error wrapping ErrUnrecognizedRoute naming the others.
func (g *fakeGateway) List(_ context.Context, idPrefix string) ([]gatewayroute.Route, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := []gatewayroute.Route{}
	for id, r := range g.routes {
		if strings.HasPrefix(id, idPrefix) {
			out = append(out, r)
		}
	}
	var errs []error
	for id := range g.foreign {
		if strings.HasPrefix(id, idPrefix) {
			errs = append(errs, fmt.Errorf("route %q: %w", id, gatewayroute.ErrUnrecognizedRoute))
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("list routes: %w", errors.Join(errs...))
	}
	return out, nil
}

func (g *fakeGateway) IDs(_ context.Context, idPrefix string) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for id := range g.routes {
		if strings.HasPrefix(id, idPrefix) {
			out = append(out, id)
		}
	}
	for id := range g.foreign {
		if strings.HasPrefix(id, idPrefix) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (g *fakeGateway) route(id uuid.UUID) (gatewayroute.Route, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.routes[catalog.RouteID(id)]
	return r, ok
}

// request returns the headers of the last traffic request for path.
func (g *fakeGateway) request(path string) (http.Header, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h, ok := g.seen[path]
	return h, ok
}

func (g *fakeGateway) set(f func(g *fakeGateway)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *fakeGateway) calls() (puts, deletes []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.puts), slices.Clone(g.deletes)
}

// upstream is a provider's service; its health endpoint answers status.
type upstream struct {
	url    string
	status atomic.Int64
	checks atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/health" {
			u.checks.Add(1)
			w.WriteHeader(int(u.status.Load()))
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	u.url = srv.URL + "/v1"
	return u
}

// input is a valid registration of slug on the test upstream.
func (e *env) input(slug string) catalog.APIInput {
	return catalog.APIInput{
		Name: "API " + slug, Slug: slug, UpstreamURL: e.upstream.url, HealthCheckPath: "/health",
		Routes: []catalog.Route{{Methods: []string{"GET"}, Path: "/items"}},
	}
}

// createAPI registers a draft API for actor's organization.
func (e *env) createAPI(actor identity.Actor, slug string) catalog.API {
	e.t.Helper()
	a, err := e.svc.CreateAPI(e.t.Context(), actor, e.input(slug))
	if err != nil {
		e.t.Fatalf("CreateAPI(%s) = %v; want nil", slug, err)
	}
	return a
}

// submit sends an API for review.
func (e *env) submit(actor identity.Actor, id uuid.UUID, p catalog.Priority) catalog.Approval {
	e.t.Helper()
	r, err := e.svc.Submit(e.t.Context(), actor, id, catalog.SubmitInput{Priority: p, Note: "please review"})
	if err != nil {
		e.t.Fatalf("Submit(%s, %s) = %v; want nil", id, p, err)
	}
	return r
}

// request creates an API of actor's named by slug and submits it for
// review at priority p: its request.
func (e *env) request(actor identity.Actor, slug string, p catalog.Priority) catalog.Approval {
	e.t.Helper()
	return e.submit(actor, e.createAPI(actor, slug).ID, p)
}

// pending is a new API of the provider's, named by slug, and its request
// for review at normal priority.
func (e *env) pending(slug string) (catalog.API, catalog.Approval) {
	e.t.Helper()
	a := e.createAPI(e.provider, slug)
	return a, e.submit(e.provider, a.ID, catalog.PriorityNormal)
}

// approvedSigned is a new API of the provider's at upstream, given a
// signing secret (returned: it is shown this once) and then approved.
func (e *env) approvedSigned(slug, upstream string) (catalog.API, catalog.SigningSecret) {
	e.t.Helper()
	in := e.input(slug)
	in.UpstreamURL = upstream
	a, err := e.svc.CreateAPI(e.t.Context(), e.provider, in)
	if err != nil {
		e.t.Fatalf("CreateAPI(%s) = %v; want nil", slug, err)
	}
	secret, err := e.svc.RotateSigningSecret(e.t.Context(), e.provider, a.ID)
	if err != nil {
		e.t.Fatalf("RotateSigningSecret(%s) = %v; want nil", slug, err)
	}
	e.decide(e.submit(e.provider, a.ID, catalog.PriorityNormal).ID, catalog.DecisionApprove, "ok")
	return a, secret
}

// decide decides as the platform admin and fails the test on an error.
func (e *env) decide(id uuid.UUID, d catalog.Decision, reason string) catalog.Approval {
	e.t.Helper()
	r, err := e.svc.Decide(e.t.Context(), e.admin, id, d, reason)
	if err != nil {
		e.t.Fatalf("Decide(%s, %s) = %v; want nil", id, d, err)
	}
	return r
}

// approved creates an API of the provider and approves it; its
// registration job is queued, not run.
func (e *env) approved(slug string) catalog.API {
	e.t.Helper()
	a := e.createAPI(e.provider, slug)
	r := e.submit(e.provider, a.ID, catalog.PriorityNormal)
	e.decide(r.ID, catalog.DecisionApprove, "looks good")
	return e.api(a.ID)
}

// active creates an API and takes it through approval and registration.
func (e *env) active(slug string) catalog.API {
	e.t.Helper()
	a := e.approved(slug)
	if err := e.register(a.ID, 1, 3); err != nil {
		e.t.Fatalf("register %s = %v; want nil", slug, err)
	}
	a = e.api(a.ID)
	if a.State != catalog.StateActive {
		e.t.Fatalf("state of %s after registration = %s; want active", slug, a.State)
	}
	return a
}

// api reads an API as the admin sees it.
func (e *env) api(id uuid.UUID) catalog.API {
	e.t.Helper()
	a, err := e.svc.GetAPI(e.t.Context(), e.admin, id)
	if err != nil {
		e.t.Fatalf("GetAPI(%s) = %v; want nil", id, err)
	}
	return a
}

// setState puts an API in a state behind the service's back, as a
// concurrent change would.
func (e *env) setState(id uuid.UUID, s catalog.State) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.t.Context(), `UPDATE apis SET state = $2 WHERE id = $1`, id, s); err != nil {
		e.t.Fatal(err)
	}
}

// markApproved records the API's live gateway-facing columns as what a
// review approved, as Decide does, for an API put in its state by hand.
func (e *env) markApproved(id uuid.UUID) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.t.Context(), `UPDATE apis SET approved_snapshot = jsonb_build_object('slug', slug,
		'upstream_url', upstream_url, 'routes', routes, 'health_check_path', health_check_path) WHERE id = $1`, id); err != nil {
		e.t.Fatal(err)
	}
}

// register runs the registration worker once, as River would run attempt
// of max.
func (e *env) register(id uuid.UUID, attempt, max int) error {
	e.t.Helper()
	job := &river.Job[catalog.RegisterArgs]{
		JobRow: &rivertype.JobRow{ID: 1, Attempt: attempt, MaxAttempts: max, Kind: catalog.RegisterArgs{}.Kind()},
		Args:   catalog.RegisterArgs{APIID: id},
	}
	return e.svc.RegisterWorker().Work(e.t.Context(), job)
}

// deregister runs the deregistration worker once.
func (e *env) deregister(id uuid.UUID) error {
	e.t.Helper()
	job := &river.Job[catalog.DeregisterArgs]{
		JobRow: &rivertype.JobRow{ID: 1, Attempt: 1, MaxAttempts: 25, Kind: catalog.DeregisterArgs{}.Kind()},
		Args:   catalog.DeregisterArgs{APIID: id},
	}
	return e.svc.DeregisterWorker().Work(e.t.Context(), job)
}

// job is a row of river_job.
type job struct {
	Kind        string
	State       string
	MaxAttempts int
}

// jobs returns the jobs queued for an API, oldest first.
func (e *env) jobs(id uuid.UUID) []job {
	e.t.Helper()
	return rowsOf(e, `SELECT kind, state::text, max_attempts FROM river_job
		WHERE args->>'api_id' = $1 ORDER BY id`, pgx.RowToStructByPos[job], id.String())
}

// rowsOf runs the query sql with args and collects its rows with to,
// failing the test on an error.
func rowsOf[T any](e *env, sql string, to pgx.RowToFunc[T], args ...any) []T {
	e.t.Helper()
	rows, err := e.pool.Query(e.t.Context(), sql, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, to)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// jobKinds returns the kinds of the jobs queued for an API, oldest first.
func (e *env) jobKinds(id uuid.UUID) []string {
	e.t.Helper()
	return each(e.jobs(id), func(j job) string { return j.Kind })
}

// each returns f of every item, in order; nil for none.
func each[T, V any](items []T, f func(T) V) []V {
	var out []V
	for _, it := range items {
		out = append(out, f(it))
	}
	return out
}

// transition is a row of api_transitions.
type transition struct {
	From, To, Actor, Reason string
}

func (e *env) transitions(id uuid.UUID) []transition {
	e.t.Helper()
	return rowsOf(e, `SELECT from_state::text, to_state::text, actor, reason FROM api_transitions
		WHERE api_id = $1 ORDER BY id`, pgx.RowToStructByPos[transition], id)
}

// auditEntry is a row of audit_log.
type auditEntry struct {
	Actor, Role, Action string
	Org                 *uuid.UUID
	Before, After       map[string]any
}

// audits returns the audit entries about a target, oldest first.
func (e *env) audits(targetID uuid.UUID) []auditEntry {
	e.t.Helper()
	return rowsOf(e, `SELECT actor, actor_role, action, organization_id, before, after FROM audit_log
		WHERE target_id = $1 ORDER BY id`, scanAuditEntry, targetID.String())
}

// scanAuditEntry reads an audit_log row, its snapshots decoded.
func scanAuditEntry(row pgx.CollectableRow) (auditEntry, error) {
	var a auditEntry
	var before, after []byte
	if err := row.Scan(&a.Actor, &a.Role, &a.Action, &a.Org, &before, &after); err != nil {
		return a, err
	}
	if before != nil {
		if err := json.Unmarshal(before, &a.Before); err != nil {
			return a, err
		}
	}
	if after != nil {
		if err := json.Unmarshal(after, &a.After); err != nil {
			return a, err
		}
	}
	return a, nil
}

// auditActions returns the actions audited about a target, oldest first.
func (e *env) auditActions(targetID uuid.UUID) []string {
	e.t.Helper()
	return each(e.audits(targetID), func(a auditEntry) string { return a.Action })
}

// count runs a count query.
func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.t.Context(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// wantErr fails the test unless err is target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s = %v; want %v", what, err, target)
	}
}

// wantFields fails the test unless err is a validation error naming
// exactly fields.
func wantFields(t *testing.T, what string, err error, fields ...string) {
	t.Helper()
	var v *validation.Error
	if !errors.As(err, &v) {
		t.Errorf("%s = %v; want a validation error on %v", what, err, fields)
		return
	}
	var got []string
	for _, f := range v.Fields {
		got = append(got, f.Field)
	}
	if !slices.Equal(got, fields) {
		t.Errorf("%s fields = %v; want %v", what, got, fields)
	}
}
