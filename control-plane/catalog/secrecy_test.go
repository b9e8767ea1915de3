package catalog_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/originsig"
)

// TestUpstreamSecrecy: an API's upstream URL, health path, versions and
// state history are its own organization's and the admins' to see; any
// other member of any organization reads the public catalog without them.
func TestUpstreamSecrecy(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	a := e.active("weather")
	outsiderConsumer := identity.Actor{Subject: "consumer-2", Role: identity.RoleConsumer, OrgID: e.otherOrg}

	for _, actor := range []identity.Actor{e.otherProvider, outsiderConsumer} {
		got, err := e.svc.GetAPI(ctx, actor, a.ID)
		if err != nil {
			t.Fatalf("GetAPI(%s) = %v; want the public API", actor.Subject, err)
		}
		if got.UpstreamURL != "" || got.HealthCheckPath != "" {
			t.Errorf("GetAPI(%s) = upstream %q, health %q; want neither", actor.Subject, got.UpstreamURL, got.HealthCheckPath)
		}
		wantNoKeys(t, "GetAPI("+actor.Subject+")", got, "upstream_url", "health_check_path", "signing_secret")
		list, _, err := e.svc.ListAPIs(ctx, actor, catalog.APIFilter{})
		if err != nil || len(list) != 1 || list[0].ID != a.ID {
			t.Fatalf("ListAPIs(%s) = %v, %v; want the public API", actor.Subject, list, err)
		}
		wantNoKeys(t, "ListAPIs("+actor.Subject+")", list[0], "upstream_url", "health_check_path", "signing_secret")
		if _, err := e.svc.ListVersions(ctx, actor, a.ID); !errors.Is(err, identity.ErrForbidden) {
			t.Errorf("ListVersions(%s) = %v; want ErrForbidden", actor.Subject, err)
		}
		if _, err := e.svc.Transitions(ctx, actor, a.ID); !errors.Is(err, identity.ErrForbidden) {
			t.Errorf("Transitions(%s) = %v; want ErrForbidden", actor.Subject, err)
		}
	}
	// An API outsiders cannot see at all stays not found.
	draft := e.createAPI(e.provider, "draft")
	if _, err := e.svc.ListVersions(ctx, e.otherProvider, draft.ID); !errors.Is(err, catalog.ErrAPINotFound) {
		t.Errorf("ListVersions(other provider, draft) = %v; want ErrAPINotFound", err)
	}

	for _, actor := range []identity.Actor{e.provider, e.consumer, e.admin} {
		got, err := e.svc.GetAPI(ctx, actor, a.ID)
		if err != nil || got.UpstreamURL != e.upstream.url || got.HealthCheckPath != "/health" {
			t.Errorf("GetAPI(%s) = %q, %q, %v; want the upstream and health path", actor.Subject, got.UpstreamURL, got.HealthCheckPath, err)
		}
		b, _ := json.Marshal(got)
		if !strings.Contains(string(b), `"upstream_url":"`+e.upstream.url+`"`) {
			t.Errorf("GetAPI(%s) as JSON = %s; want the upstream_url", actor.Subject, b)
		}
		if v, err := e.svc.ListVersions(ctx, actor, a.ID); err != nil || len(v) != 1 || v[0].UpstreamURL != e.upstream.url {
			t.Errorf("ListVersions(%s) = %+v, %v; want the one version", actor.Subject, v, err)
		}
		if _, err := e.svc.Transitions(ctx, actor, a.ID); err != nil {
			t.Errorf("Transitions(%s) = %v; want nil", actor.Subject, err)
		}
	}
}

func wantNoKeys(t *testing.T, what string, a catalog.API, keys ...string) {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, ok := m[k]; ok {
			t.Errorf("%s as JSON has %s: %s", what, k, b)
		}
	}
	if m["id"] != a.ID.String() || m["slug"] != a.Slug {
		t.Errorf("%s as JSON = %s; want the API's other fields", what, b)
	}
}

// TestSigningSecret: an API gets a signing secret at creation, never
// shown; the gateway's route carries it; a rotation by the provider
// replaces it and shows the new one once, keeping a previously shown one
// for the overlap; no secret appears in a read, an audit entry or an
// announcement.
func TestSigningSecret(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	created := e.createAPI(e.provider, "weather")
	var secret string
	if err := e.pool.QueryRow(ctx, `SELECT secret FROM api_signing_secrets WHERE api_id = $1`, created.ID).Scan(&secret); err != nil {
		t.Fatalf("signing secret of a new API: %v", err)
	}
	if !strings.HasPrefix(secret, originsig.SecretPrefix) || len(secret) != len(originsig.SecretPrefix)+64 {
		t.Fatalf("signing secret of a new API = %q; want vsk_ and 64 hex digits", secret)
	}
	wantNoKeys(t, "GetAPI(admin)", e.api(created.ID), "signing_secret")

	e.decide(e.submit(e.provider, created.ID, catalog.PriorityNormal).ID, catalog.DecisionApprove, "ok")
	if err := e.register(created.ID, 1, 3); err != nil {
		t.Fatalf("register = %v", err)
	}
	r, ok := e.gw.route(created.ID)
	if !ok || r.Signing == nil || r.Signing.Secret != secret || r.Signing.APIID != created.ID.String() || r.Signing.PreviousSecret != "" {
		t.Fatalf("route after registration: signing %v (present %v); want the API's secret", r.Signing, ok)
	}

	// The first rotation reveals a secret; the unrevealed one needs no
	// overlap, since no upstream can hold it.
	first, err := e.svc.RotateSigningSecret(ctx, e.provider, created.ID)
	if err != nil || first.Secret == secret || first.PreviousValidUntil != nil {
		t.Fatalf("first RotateSigningSecret() = %+v, %v; want a new secret without overlap", first, err)
	}
	r, _ = e.gw.route(created.ID)
	if r.Signing == nil || r.Signing.Secret != first.Secret || r.Signing.PreviousSecret != "" {
		t.Errorf("route after the first rotation: signing %v; want the revealed secret alone", r.Signing)
	}
	secret = first.Secret

	// Only the owning organization's providers and admins rotate; anyone
	// else who can see the API is refused, and the secret stays.
	for _, actor := range []identity.Actor{e.otherProvider, e.admin, e.consumer} {
		if _, err := e.svc.RotateSigningSecret(ctx, actor, created.ID); !errors.Is(err, identity.ErrForbidden) {
			t.Errorf("RotateSigningSecret(%s) = %v; want ErrForbidden", actor.Subject, err)
		}
	}
	rot, err := e.svc.RotateSigningSecret(ctx, e.provider, created.ID)
	if err != nil {
		t.Fatalf("RotateSigningSecret(provider) = %v", err)
	}
	wantUntil := start.Add(catalog.SigningOverlap)
	if rot.Secret == secret || !strings.HasPrefix(rot.Secret, originsig.SecretPrefix) || rot.PreviousValidUntil == nil || !rot.PreviousValidUntil.Equal(wantUntil) {
		t.Errorf("RotateSigningSecret() = %+v; want a new secret, the previous valid until %v", rot, wantUntil)
	}
	r, _ = e.gw.route(created.ID)
	if r.Signing == nil || r.Signing.Secret != rot.Secret || r.Signing.PreviousSecret != secret || r.Signing.PreviousUntil != wantUntil.Unix() {
		t.Errorf("route after rotation: signing %v; want the new secret and the previous until %v", r.Signing, wantUntil)
	}

	// After the overlap, reconciliation takes the previous secret off.
	e.clock.Advance(catalog.SigningOverlap + time.Minute)
	if rep, err := e.svc.Reconcile(ctx); err != nil || rep.Mismatched != 1 {
		t.Errorf("Reconcile() after the overlap = %+v, %v; want the route mismatched and healed", rep, err)
	}
	r, _ = e.gw.route(created.ID)
	if r.Signing == nil || r.Signing.Secret != rot.Secret || r.Signing.PreviousSecret != "" {
		t.Errorf("route after the overlap: signing %v; want the new secret alone", r.Signing)
	}

	// Neither secret was ever audited or announced.
	for _, s := range []string{secret, rot.Secret} {
		if n := e.count(`SELECT count(*) FROM audit_log WHERE coalesce(before::text, '') || coalesce(after::text, '') LIKE '%' || $1 || '%'`, s); n != 0 {
			t.Errorf("audit entries holding a signing secret = %d; want 0", n)
		}
		if n := e.count(`SELECT count(*) FROM test_published WHERE data::text LIKE '%' || $1 || '%'`, s); n != 0 {
			t.Errorf("announcements holding a signing secret = %d; want 0", n)
		}
	}
	if got := e.auditActions(created.ID); got[len(got)-1] != "api.signing_secret.rotate" {
		t.Errorf("audit actions = %v; want the rotation last", got)
	}
}

// TestFailedAPIReReview: a failed API's gateway-facing fields are frozen
// (a change goes back through revise, draft and submit), and an admin's
// retry registers what the review approved even if the row was changed
// behind the service's back.
func TestFailedAPIReReview(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	a := e.approved("weather")
	e.upstream.status.Store(http.StatusServiceUnavailable)
	if err := e.register(a.ID, 3, 3); err != nil || e.api(a.ID).State != catalog.StateFailed {
		t.Fatalf("last registration attempt against an unhealthy upstream = %v, %s; want nil, failed", err, e.api(a.ID).State)
	}
	e.upstream.status.Store(http.StatusOK)

	elsewhere, routes, health, slug := "http://127.0.0.1:1/elsewhere", []catalog.Route{{Methods: []string{"DELETE"}, Path: "/all"}}, "/other", "weather-two"
	for field, p := range map[string]catalog.APIPatch{
		"upstream_url": {UpstreamURL: &elsewhere}, "routes": {Routes: &routes}, "health_check_path": {HealthCheckPath: &health}, "slug": {Slug: &slug},
	} {
		if _, err := e.svc.UpdateAPI(ctx, e.provider, a.ID, p); !errors.Is(err, catalog.ErrNotEditable) {
			t.Errorf("UpdateAPI(%s) of a failed API = %v; want ErrNotEditable", field, err)
		}
	}
	if _, err := e.svc.CreateVersion(ctx, e.provider, a.ID, catalog.VersionInput{Version: "2", UpstreamURL: e.upstream.url}); !errors.Is(err, catalog.ErrNotEditable) {
		t.Errorf("CreateVersion of a failed API = %v; want ErrNotEditable", err)
	}

	// The row is changed behind the service's back; the retry still
	// registers what was approved.
	if _, err := e.pool.Exec(ctx, `UPDATE apis SET upstream_url = 'http://tampered.invalid/v9', slug = 'tampered',
		routes = '[{"methods":["DELETE"],"path":"/all"}]', health_check_path = '/tampered' WHERE id = $1`, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Act(ctx, e.admin, a.ID, catalog.ActionRetry, "upstream fixed"); err != nil {
		t.Fatalf("Act(retry) = %v", err)
	}
	checks := e.upstream.checks.Load()
	if err := e.register(a.ID, 1, 3); err != nil {
		t.Fatalf("register after retry = %v", err)
	}
	if got := e.api(a.ID); got.State != catalog.StateActive {
		t.Fatalf("state after retry = %s (%s); want active", got.State, got.StateReason)
	}
	r, _ := e.gw.route(a.ID)
	if r.Upstream != e.upstream.url || r.PathPrefix != "/weather" {
		t.Errorf("route after retry = %s → %s; want /weather → %s (approved)", r.PathPrefix, r.Upstream, e.upstream.url)
	}
	if e.upstream.checks.Load() != checks+1 {
		t.Errorf("approved health path checked %d times; want once", e.upstream.checks.Load()-checks)
	}
	// Reconciliation serves the approved snapshot too: the tampered row
	// does not reach the gateway.
	if rep, err := e.svc.Reconcile(ctx); err != nil || rep.Mismatched != 0 || rep.Missing != 0 {
		t.Errorf("Reconcile() = %+v, %v; want nothing to change", rep, err)
	}
	if r, _ := e.gw.route(a.ID); r.Upstream != e.upstream.url {
		t.Errorf("route after Reconcile() → %s; want %s", r.Upstream, e.upstream.url)
	}
}

// TestRetryNeedsApproval: an API failed without a record of what was
// approved cannot be retried; it goes back through review.
func TestRetryNeedsApproval(t *testing.T) {
	e := setup(t)
	a := e.createAPI(e.provider, "weather")
	e.setState(a.ID, catalog.StateFailed)
	if _, err := e.svc.Act(t.Context(), e.admin, a.ID, catalog.ActionRetry, ""); !errors.Is(err, catalog.ErrNotApproved) || !errors.Is(err, catalog.ErrInvalidTransition) {
		t.Errorf("Act(retry) without an approval = %v; want ErrInvalidTransition and ErrNotApproved", err)
	}
	if _, err := e.svc.Act(t.Context(), e.provider, a.ID, catalog.ActionRevise, "fix it"); err != nil {
		t.Errorf("Act(revise) = %v; want nil", err)
	}
}

// TestHealthCheckSigned: the control plane's direct health check of an
// upstream is signed like the gateway's calls, so an upstream that refuses
// unsigned requests can still be registered.
func TestHealthCheckSigned(t *testing.T) {
	e := setup(t)
	var (
		mu   sync.Mutex
		seen []http.Header
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		if r.URL.EscapedPath() != "/base/health" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	a, rot := e.approvedSigned("signed", srv.URL+"/base")
	if err := e.register(a.ID, 1, 3); err != nil {
		t.Fatalf("register = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("upstream got %d health checks; want 1", len(seen))
	}
	h := seen[0]
	if err := originsig.Verify(h.Get(originsig.Header), rot.Secret, "GET", "/base/health", "", a.ID.String(), e.clock.Now()); err != nil || h.Get("X-Veil-Api-Id") != a.ID.String() {
		t.Errorf("health check signature %q, api %q: Verify = %v; want a valid signature of the API", h.Get(originsig.Header), h.Get("X-Veil-Api-Id"), err)
	}
}
