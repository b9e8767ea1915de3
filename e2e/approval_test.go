package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

func TestApprovalFlowEndToEnd(t *testing.T) {
	e := newCPEnv(t)
	c := e.startControlPlane(t, e.options(4))
	prov := providerToken(t)
	acmeAdmin := token(t, "acme", "root", identity.RoleAdmin)
	admin := adminToken(t)

	sink := newWebhookSink(t)
	sink.subscribe(t, c, prov, client.WebhookEndpointInputEventTypesAsterisk)

	t.Run("approved and active only once the route answers", func(t *testing.T) {
		ctx := t.Context()
		apiID, approvalID := e.register(t, c, prov, "hello")
		for _, tok := range []string{acmeAdmin, prov} {
			resp, err := c.ApproveApprovalWithResponse(ctx, approvalID, nil, client.DecisionInput{}, client.Bearer(tok))
			expect(t, http.StatusForbidden, resp, err)
		}
		e.admin.failNext.Store(2)
		approve(t, c, admin, approvalID, client.DecisionInput{Reason: client.Ptr("looks good")})
		waitState(t, c, prov, apiID, "active", 30*time.Second, "failed")
		if got := e.admin.failed.Load(); got != 2 {
			t.Errorf("injected admin failures = %d; want 2", got)
		}
		status, body := throughGateway(e.gw, "/hello/hello")
		if status != http.StatusOK || !strings.Contains(body, apiID.String()) {
			t.Fatalf("GET /hello/hello through the gateway = %d %s; want 200 from the upstream naming %s", status, body, apiID)
		}
		tr, err := c.ListAPITransitionsWithResponse(ctx, apiID, nil, client.Bearer(prov))
		expect(t, http.StatusOK, tr, err)
		var path []string
		for _, x := range tr.JSON200.Data {
			path = append(path, string(x.From)+">"+string(x.To))
		}
		if got := strings.Join(path, " "); got != "draft>submitted submitted>pending_approval pending_approval>approved approved>active" {
			t.Errorf("transitions = %s", got)
		}
		// Suspend removes the route, resume brings it back.
		suspended, err := c.SuspendAPIWithResponse(ctx, apiID, nil, client.ReasonInput{Reason: client.Ptr("abuse report")}, client.Bearer(admin))
		expect(t, http.StatusOK, suspended, err)
		waitNoRoutes(t, e, "suspend")
		if status, _ := throughGateway(e.gw, "/hello/hello"); status != http.StatusNotFound {
			t.Errorf("suspended api through the gateway = %d; want 404", status)
		}
		resumed, err := c.ResumeAPIWithResponse(ctx, apiID, nil, client.ReasonInput{}, client.Bearer(admin))
		expect(t, http.StatusAccepted, resumed, err)
		waitState(t, c, prov, apiID, "active", 30*time.Second, "failed")
		if status, _ := throughGateway(e.gw, "/hello/hello"); status != http.StatusOK {
			t.Errorf("resumed api through the gateway = %d; want 200", status)
		}
		reconcileHeals(t, e, c, admin, apiID.String())

		// Retire removes it for good.
		retired, err := c.RetireAPIWithResponse(ctx, apiID, nil, client.ReasonInput{}, client.Bearer(prov))
		expect(t, http.StatusOK, retired, err)
		waitNoRoutes(t, e, "retire")
	})

	t.Run("a gateway that always fails leaves the api failed and the gateway clean", func(t *testing.T) {
		defer e.admin.failAlways.Store(false)
		e.failedApproval(t, c, prov, admin, "always-fails", &e.admin.failAlways, "after 4 attempts")
	})

	t.Run("a gateway that acknowledges but does not serve never makes the api active", func(t *testing.T) {
		defer e.admin.lie.Store(false)
		apiID := e.failedApproval(t, c, prov, admin, "lying-gateway", &e.admin.lie, "route could not be verified through the gateway")
		// An admin retries once the gateway is healthy again.
		e.admin.lie.Store(false)
		retried, err := c.RetryAPIWithResponse(t.Context(), apiID, nil, client.ReasonInput{}, client.Bearer(admin))
		expect(t, http.StatusAccepted, retried, err)
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

// reconcileHeals removes the API's route behind the control plane's back
// and adds a route no API owns; reconciliation heals both, once.
func reconcileHeals(t *testing.T, e *cpEnv, c *controlPlane, admin, apiID string) {
	t.Helper()
	if resp, err := adminDo(e.gw, http.MethodDelete, "/id/veil-api-"+apiID, ""); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("delete route in caddy: %v %v", resp, err)
	}
	orphan := `{"@id":"veil-api-00000000-0000-4000-8000-000000000001","match":[{"path":["/orphan","/orphan/*"]}],"handle":[{"handler":"static_response","body":"orphan"}]}`
	resp, err := adminDo(e.gw, http.MethodPost, "/config/apps/http/servers/veil/routes/0", orphan)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("add orphan route: %v %v", resp, err)
	}
	rep, err := c.ReconcileAPIsWithResponse(t.Context(), nil, client.Bearer(admin))
	expect(t, http.StatusOK, rep, err)
	if r := rep.JSON200; r.Missing != 1 || r.Orphans != 1 || r.Healed != 2 || len(r.Unhealed) != 0 {
		t.Errorf("reconcile report = %+v; want 1 missing, 1 orphan, 2 healed", *r)
	}
	if status, _ := throughGateway(e.gw, "/hello/hello"); status != http.StatusOK {
		t.Errorf("healed api through the gateway = %d; want 200", status)
	}
	if status, _ := throughGateway(e.gw, "/orphan"); status != http.StatusNotFound {
		t.Errorf("orphan route through the gateway = %d; want 404", status)
	}
	rep, err = c.ReconcileAPIsWithResponse(t.Context(), nil, client.Bearer(admin))
	expect(t, http.StatusOK, rep, err)
	if rep.JSON200.Healed != 0 {
		t.Errorf("second reconcile healed %d; want 0", rep.JSON200.Healed)
	}
}

// TestControlPlaneKilledMidRegistrationRecovers kills the control plane
// while a registration job is inside the upstream health check, starts it
// again and expects the registration to finish on its own.
func TestControlPlaneKilledMidRegistrationRecovers(t *testing.T) {
	e := newCPEnv(t)
	addr := testenv.FreeLoopbackAddr(t)
	first := e.controlPlaneProcess(t, addr)
	c := &controlPlane{proc: first, ClientWithResponses: newClient(t, "http://"+addr), URL: "http://" + addr}
	prov := providerToken(t)
	admin := adminToken(t)

	apiID, approvalID := e.register(t, c, prov, "crashy")
	hold := make(chan struct{})
	e.upstream.mu.Lock()
	e.upstream.hold = hold
	e.upstream.mu.Unlock()
	approve(t, c, admin, approvalID, client.DecisionInput{})
	select {
	case <-e.upstream.healthCalls:
	case <-time.After(30 * time.Second):
		t.Fatal("the registration job never reached the upstream health check")
	}
	first.kill()
	close(hold)
	// The API stays approved while nobody runs the job.
	e.controlPlaneProcess(t, addr)
	got, err := c.GetAPIWithResponse(t.Context(), apiID, nil, client.Bearer(prov))
	expect(t, http.StatusOK, got, err)
	if api := got.JSON200; api.State != "approved" && api.State != "active" {
		t.Fatalf("api after restart = %s; want approved or active", api.State)
	}
	waitState(t, c, prov, apiID, "active", 150*time.Second, "failed")
	if status, body := throughGateway(e.gw, "/crashy/hello"); status != http.StatusOK {
		t.Fatalf("GET /crashy/hello through the gateway = %d %s; want 200", status, body)
	}
}

// controlPlaneProcess starts `veil control-plane` on addr, to be killed.
func (e *cpEnv) controlPlaneProcess(t *testing.T, addr string) *proc {
	t.Helper()
	p := startVeil(t, nil, "control-plane",
		"--control-plane-addr", addr, "--postgres-url", e.pgURL,
		"--redis-addr", testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"), "--redis-db", fmt.Sprint(e.redisDB),
		// Calls through the gateway reach the upstream without a key: this test is about crash recovery.
		"--gateway-key-auth=false",
		"--jwt-secret", testJWTSecret, "--gateway-admin-url", e.admin.srv.URL, "--gateway-url", e.gw.URL,
		"--register-attempts", "20", "--register-retry-base", "50ms", "--register-retry-max", "500ms",
		"--job-rescue-after", "51s", "--rate-limit-ip=", "--rate-limit-token=", "--log-level", "warn",
		// Not the default port: tests run side by side.
		"--metrics-addr", testenv.FreeLoopbackAddr(t), "--upstream-allow-cidrs", "127.0.0.0/8")
	p.waitReady(t, "http://"+addr+"/readyz", 30*time.Second)
	return p
}

// waitNoRoutes waits until the gateway serves no route, after the change
// named what.
func waitNoRoutes(t *testing.T, e *cpEnv, what string) {
	t.Helper()
	testenv.Deadline(t, 20*time.Second, func() error {
		if ids := routeIDs(t, e.gw); len(ids) != 0 {
			return fmt.Errorf("routes after %s: %v", what, ids)
		}
		return nil
	})
}

// failedApproval registers the API slug and approves it while fault is
// set: the API must end failed, for a reason that contains reason, and
// leave no route on the gateway. The caller clears fault.
func (e *cpEnv) failedApproval(t *testing.T, c *controlPlane, prov, admin, slug string, fault *atomic.Bool, reason string) uuid.UUID {
	t.Helper()
	apiID, approvalID := e.register(t, c, prov, slug)
	fault.Store(true)
	approve(t, c, admin, approvalID, client.DecisionInput{})
	api := waitState(t, c, prov, apiID, "failed", 30*time.Second, "active")
	if !strings.Contains(api.StateReason, reason) {
		t.Errorf("failed reason = %q; want one containing %q", api.StateReason, reason)
	}
	if ids := routeIDs(t, e.gw); len(ids) != 0 {
		t.Errorf("gateway routes after failure = %v; want none", ids)
	}
	return apiID
}
