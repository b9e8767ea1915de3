package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

const testJWTSecret = "control-plane-test-secret-0123456789"

func token(t *testing.T, org, user string, role identity.Role) string {
	t.Helper()
	tok, err := identity.Mint([]byte(testJWTSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: user, Org: org, Role: role}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// The people of the end-to-end tests: acme's provider alice, the
// platform's operator (an admin) and globex's consumer bob.

func providerToken(t *testing.T) string { return token(t, "acme", "alice", identity.RoleProvider) }

func adminToken(t *testing.T) string { return token(t, "platform", "operator", identity.RoleAdmin) }

func consumerToken(t *testing.T) string { return token(t, "globex", "bob", identity.RoleConsumer) }

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// startGateway starts `veil gateway` with its admin API on a unix socket;
// the test upstreams listen on loopback, so it lets upstreams there
// through (Veil's own ports stay refused). env comes after, and over, that.
func startGateway(t *testing.T, env ...string) *testenv.GatewayProcess {
	t.Helper()
	return testenv.Gateway(t, testenv.GatewayEnv(append([]string{"VEIL_UPSTREAM_ALLOW_CIDRS=127.0.0.0/8"}, env...)...),
		testenv.GatewayStopTimeout(30*time.Second))
}

// adminDo sends a request to the gateway's admin API, read from Caddy
// directly (not through any fault proxy).
func adminDo(g *testenv.GatewayProcess, method, path, body string) (*http.Response, error) {
	req, err := http.NewRequest(method, g.Admin(path), strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return g.AdminClient.Do(req)
}

// routeIDs lists the veil-api-* route ids in the gateway's live config,
// read from Caddy directly (not through any fault proxy).
func routeIDs(t *testing.T, g *testenv.GatewayProcess) []string {
	t.Helper()
	resp, err := adminDo(g, http.MethodGet, "/config/apps/http/servers/veil/routes", "")
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

func throughGateway(g *testenv.GatewayProcess, path string) (int, string) {
	status, body, err := get(g.URL + path)
	if err != nil {
		return 0, err.Error()
	}
	return status, body
}

// expect fails the test unless the call answered status want.
func expect(t *testing.T, want int, resp client.Response, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", callName(resp), err)
	}
	if got := resp.StatusCode(); got != want {
		t.Fatalf("%s = %d %s; want %d", callName(resp), got, resp.Bytes(), want)
	}
}

// callName is "METHOD /path" of a generated response, for messages.
func callName(resp client.Response) string {
	v := reflect.ValueOf(resp)
	if !v.IsValid() || v.IsNil() {
		return "call"
	}
	hr, _ := v.Elem().FieldByName("HTTPResponse").Interface().(*http.Response)
	if hr == nil || hr.Request == nil {
		return "call"
	}
	return hr.Request.Method + " " + hr.Request.URL.Path
}

// cpEnv is a migrated database, a real gateway behind a fault proxy and an
// upstream.
type cpEnv struct {
	pgURL string
	// redisDB is the test's own Redis database: the control plane's key
	// reconciliation scans every key record in it.
	redisDB  int
	redis    rueidis.Client // on redisDB
	gw       *testenv.GatewayProcess
	admin    *faultyAdmin
	upstream *upstream
}

func newCPEnv(t *testing.T) *cpEnv {
	t.Helper()
	return newCPEnvWith(t, nil)
}

// newCPEnvWith is newCPEnv with the gateway started with the environment
// gatewayEnv returns for the test's Redis database, when it is not nil.
func newCPEnvWith(t *testing.T, gatewayEnv func(redisDB int) []string) *cpEnv {
	t.Helper()
	pgURL := testenv.MigratedPostgresURL(t)
	t.Cleanup(func() {
		if t.Failed() {
			dumpJobs(t, pgURL)
		}
	})
	rc, db := testenv.RedisDB(t)
	var env []string
	if gatewayEnv != nil {
		env = gatewayEnv(db)
	}
	gw := startGateway(t, env...)
	return &cpEnv{pgURL: pgURL, redisDB: db, redis: rc, gw: gw, admin: newFaultyAdmin(t, gw.AdminURL), upstream: newUpstream(t)}
}

// register creates an API on the upstream and submits it; it returns the
// API id and the approval id.
func (e *cpEnv) register(t *testing.T, c *controlPlane, prov, slug string) (apiID, approvalID uuid.UUID) {
	t.Helper()
	ctx := t.Context()
	created, err := c.CreateAPIWithResponse(ctx, nil, client.APIInput{
		Name: "Hello " + slug, Slug: slug, UpstreamUrl: e.upstream.srv.URL + "/v1", Version: client.Ptr("1.0"),
		Routes:          &[]client.Route{{Methods: []client.RouteMethods{client.RouteMethodsGET}, Path: "/hello"}},
		HealthCheckPath: client.Ptr("/health"), DocsUrl: client.Ptr("https://docs.example.com/hello"),
	}, client.Bearer(prov))
	expect(t, http.StatusCreated, created, err)
	api := created.JSON201
	if api.State != "draft" {
		t.Fatalf("new api state = %s; want draft", api.State)
	}
	submitted, err := c.SubmitAPIWithResponse(ctx, api.Id, nil, client.SubmitInput{Priority: client.Ptr(client.High)}, client.Bearer(prov))
	expect(t, http.StatusCreated, submitted, err)
	if submitted.JSON201.Status != "pending" {
		t.Fatalf("approval status = %s; want pending", submitted.JSON201.Status)
	}
	return api.Id, submitted.JSON201.Id
}

// approve approves the approval request id as admin.
func approve(t *testing.T, c *controlPlane, admin string, id uuid.UUID, body client.DecisionInput) {
	t.Helper()
	resp, err := c.ApproveApprovalWithResponse(t.Context(), id, nil, body, client.Bearer(admin))
	expect(t, http.StatusOK, resp, err)
}

// activeAPI registers an API on the upstream as prov, has admin approve
// it and waits until it is active; it returns the API's id.
func (e *cpEnv) activeAPI(t *testing.T, c *controlPlane, prov, admin, slug string) uuid.UUID {
	t.Helper()
	apiID, approvalID := e.register(t, c, prov, slug)
	approve(t, c, admin, approvalID, client.DecisionInput{})
	waitState(t, c, prov, apiID, "active", 30*time.Second, "failed")
	return apiID
}

// callGateway GETs url through the gateway with key as the bearer token
// and returns the status and the problem type of the answer, if any.
func callGateway(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("call through the gateway: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var p struct{ Type string }
	_ = json.Unmarshal(body, &p)
	return resp.StatusCode, p.Type
}

// waitState polls the API until it reaches want, failing if it ever shows
// one of never.
func waitState(t *testing.T, c *controlPlane, tok string, id uuid.UUID, want string, d time.Duration, never ...string) client.API {
	t.Helper()
	var api client.API
	testenv.Deadline(t, d, func() error {
		resp, err := c.GetAPIWithResponse(t.Context(), id, nil, client.Bearer(tok))
		expect(t, http.StatusOK, resp, err)
		api = *resp.JSON200
		for _, n := range never {
			if string(api.State) == n {
				t.Fatalf("api %s reached state %s (%s); it must never", id, n, api.StateReason)
			}
		}
		if string(api.State) != want {
			return fmt.Errorf("api state %s (%s); want %s", api.State, api.StateReason, want)
		}
		return nil
	})
	return api
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
