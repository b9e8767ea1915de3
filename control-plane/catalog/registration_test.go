package catalog_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/gatewayroute"
)

func TestAct(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	tests := []struct {
		name   string
		from   catalog.State
		actor  identity.Actor
		action catalog.Action
		to     catalog.State // the state it ends in
		job    string        // the job it enqueues
		err    error
	}{
		{"admin suspends active", catalog.StateActive, e.admin, catalog.ActionSuspend, catalog.StateSuspended, "api_deregister", nil},
		{"admin suspends approved", catalog.StateApproved, e.admin, catalog.ActionSuspend, catalog.StateSuspended, "api_deregister", nil},
		{"admin resumes suspended", catalog.StateSuspended, e.admin, catalog.ActionResume, catalog.StateApproved, "api_register", nil},
		{"admin retries failed", catalog.StateFailed, e.admin, catalog.ActionRetry, catalog.StateApproved, "api_register", nil},
		{"provider deprecates active", catalog.StateActive, e.provider, catalog.ActionDeprecate, catalog.StateDeprecated, "", nil},
		{"provider retires deprecated", catalog.StateDeprecated, e.provider, catalog.ActionRetire, catalog.StateRetired, "api_deregister", nil},
		{"provider retires active", catalog.StateActive, e.provider, catalog.ActionRetire, catalog.StateRetired, "api_deregister", nil},
		{"provider retires suspended", catalog.StateSuspended, e.provider, catalog.ActionRetire, catalog.StateRetired, "api_deregister", nil},
		{"provider revises rejected", catalog.StateRejected, e.provider, catalog.ActionRevise, catalog.StateDraft, "", nil},
		{"provider revises failed", catalog.StateFailed, e.provider, catalog.ActionRevise, catalog.StateDraft, "", nil},

		{"provider revises pending", catalog.StatePendingApproval, e.provider, catalog.ActionRevise, catalog.StatePendingApproval, "", catalog.ErrInvalidTransition},
		{"provider deprecates draft", catalog.StateDraft, e.provider, catalog.ActionDeprecate, catalog.StateDraft, "", catalog.ErrInvalidTransition},
		{"admin resumes active", catalog.StateActive, e.admin, catalog.ActionResume, catalog.StateActive, "", catalog.ErrInvalidTransition},
		{"admin retires retired", catalog.StateRetired, e.admin, catalog.ActionRetire, catalog.StateRetired, "", catalog.ErrInvalidTransition},
		{"provider suspends own", catalog.StateActive, e.provider, catalog.ActionSuspend, catalog.StateActive, "", identity.ErrForbidden},
		{"provider resumes own", catalog.StateSuspended, e.provider, catalog.ActionResume, catalog.StateSuspended, "", identity.ErrForbidden},
		{"provider retries own", catalog.StateFailed, e.provider, catalog.ActionRetry, catalog.StateFailed, "", identity.ErrForbidden},
		{"other provider suspends", catalog.StateActive, e.otherProvider, catalog.ActionSuspend, catalog.StateActive, "", catalog.ErrAPINotFound},
		{"other provider retries", catalog.StateFailed, e.otherProvider, catalog.ActionRetry, catalog.StateFailed, "", catalog.ErrAPINotFound},
		{"other provider retires unlisted", catalog.StateSuspended, e.otherProvider, catalog.ActionRetire, catalog.StateSuspended, "", catalog.ErrAPINotFound},
		{"other provider retires listed", catalog.StateActive, e.otherProvider, catalog.ActionRetire, catalog.StateActive, "", identity.ErrForbidden},
		{"consumer deprecates", catalog.StateActive, e.consumer, catalog.ActionDeprecate, catalog.StateActive, "", identity.ErrForbidden},
	}
	for i, tt := range tests {
		a := e.createAPI(e.provider, "act-"+string(rune('a'+i)))
		e.setState(a.ID, tt.from)
		e.markApproved(a.ID)
		reason := "because: " + tt.name
		got, err := e.svc.Act(ctx, tt.actor, a.ID, tt.action, reason)
		if !errors.Is(err, tt.err) {
			t.Errorf("Act(%s) = %v; want %v", tt.name, err, tt.err)
			continue
		}
		if state := e.api(a.ID).State; state != tt.to {
			t.Errorf("Act(%s): state = %s; want %s", tt.name, state, tt.to)
		}
		var wantJobs []string
		if tt.job != "" {
			wantJobs = []string{tt.job}
		}
		if jobs := e.jobKinds(a.ID); !slices.Equal(jobs, wantJobs) {
			t.Errorf("Act(%s): jobs = %v; want %v", tt.name, jobs, wantJobs)
		}
		trs, audits := e.transitions(a.ID), e.audits(a.ID)
		if tt.err != nil {
			if len(trs) != 0 || len(audits) != 1 {
				t.Errorf("Act(%s) refused: %d transitions, %d audit entries; want 0 and the creation's", tt.name, len(trs), len(audits))
			}
			continue
		}
		if got.State != tt.to || got.StateReason != reason {
			t.Errorf("Act(%s) = %s (%q); want %s (%q)", tt.name, got.State, got.StateReason, tt.to, reason)
		}
		if want := []transition{{string(tt.from), string(tt.to), tt.actor.Subject, reason}}; !slices.Equal(trs, want) {
			t.Errorf("Act(%s): transitions = %v; want %v", tt.name, trs, want)
		}
		last := audits[len(audits)-1]
		if last.Action != "api.transition."+string(tt.to) || last.Actor != tt.actor.Subject || last.Role != string(tt.actor.Role) ||
			last.Org == nil || *last.Org != e.org || last.Before["state"] != string(tt.from) ||
			last.After["state"] != string(tt.to) || last.After["reason"] != reason {
			t.Errorf("Act(%s): audit = %+v; want api.transition.%s by %s with state %s → %s and the reason", tt.name, last, tt.to, tt.actor.Subject, tt.from, tt.to)
		}
		if types := e.publishedTypes(a.ID); types[len(types)-1] != "api.state_changed" {
			t.Errorf("Act(%s): published %v; want api.state_changed last", tt.name, types)
		}
	}
	a := e.createAPI(e.provider, "act-unknown")
	_, err := e.svc.Act(ctx, e.admin, a.ID, "explode", "")
	wantFields(t, "Act(explode)", err, "action")
}

func TestRegisterWorkerActivates(t *testing.T) {
	e := setup(t)
	a := e.approved("weather")
	if err := e.register(a.ID, 1, 3); err != nil {
		t.Fatalf("register(weather) = %v; want nil", err)
	}
	got := e.api(a.ID)
	if got.State != catalog.StateActive || got.StateReason != "route verified through the gateway" {
		t.Errorf("state after registration = %s (%q); want active", got.State, got.StateReason)
	}
	r, ok := e.gw.route(a.ID)
	want := gatewayroute.Route{ID: catalog.RouteID(a.ID), PathPrefix: "/weather", Upstream: e.upstream.url, Headers: map[string]string{gatewayroute.APIHeader: a.ID.String()}}
	if !ok || r.ID != want.ID || r.PathPrefix != want.PathPrefix || r.Upstream != want.Upstream || len(r.Headers) != 1 || r.Headers[gatewayroute.APIHeader] != a.ID.String() {
		t.Errorf("gateway route = %+v (present %v); want %+v", r, ok, want)
	}
	if n := e.upstream.checks.Load(); n != 1 {
		t.Errorf("upstream health checks = %d; want 1", n)
	}
	probe, probed := e.gw.request("/weather/health")
	if !probed || probe.Get("User-Agent") != "Veil-Registration/1" {
		t.Errorf("verification through the gateway = %v, %v; want GET /weather/health by Veil-Registration/1", probed, probe)
	}
	trs := e.transitions(a.ID)
	if last := trs[len(trs)-1]; last != (transition{"approved", "active", "system", "route verified through the gateway"}) {
		t.Errorf("last transition = %v; want approved → active by system", last)
	}
	types := e.publishedTypes(a.ID)
	if types[len(types)-1] != "api.activated" {
		t.Errorf("published = %v; want api.activated last", types)
	}

	// A duplicate job finds the API active and leaves everything alone.
	if err := e.register(a.ID, 1, 3); err != nil {
		t.Errorf("register(weather) again = %v; want nil", err)
	}
	if puts, deletes := e.gw.calls(); len(puts) != 1 || len(deletes) != 0 {
		t.Errorf("gateway calls after a duplicate job = puts %v, deletes %v; want one put", puts, deletes)
	}
	if n := len(e.transitions(a.ID)); n != len(trs) {
		t.Errorf("transitions after a duplicate job = %d; want %d", n, len(trs))
	}

	// Without a health path the upstream is not checked and the gateway
	// is probed at the API's root.
	in := e.input("plain")
	in.HealthCheckPath = ""
	b, err := e.svc.CreateAPI(t.Context(), e.provider, in)
	if err != nil {
		t.Fatal(err)
	}
	e.decide(e.submit(e.provider, b.ID, catalog.PriorityNormal).ID, catalog.DecisionApprove, "")
	if err := e.register(b.ID, 1, 3); err != nil || e.api(b.ID).State != catalog.StateActive {
		t.Errorf("register(plain) = %v, state %s; want nil, active", err, e.api(b.ID).State)
	}
	if n := e.upstream.checks.Load(); n != 1 {
		t.Errorf("upstream health checks after plain = %d; want still 1", n)
	}
}

// TestRegisterProbesAgainWhileTheGatewaySwaps: right after the put, the
// probe may meet the server Caddy is replacing, which closes the connection
// unanswered; the route is probed again and the API goes active, with one
// put. A route that keeps failing is TestRegisterWorkerFailures'.
func TestRegisterProbesAgainWhileTheGatewaySwaps(t *testing.T) {
	e := setup(t)
	a := e.approved("swapping")
	e.gw.set(func(g *fakeGateway) { g.dropped, g.puts = 2, nil })
	if err := e.register(a.ID, 1, 3); err != nil {
		t.Fatalf("register(swapping) with two probes dropped = %v; want nil", err)
	}
	if got := e.api(a.ID); got.State != catalog.StateActive {
		t.Errorf("state after registration = %s (%q); want active", got.State, got.StateReason)
	}
	if puts, _ := e.gw.calls(); len(puts) != 1 {
		t.Errorf("gateway puts = %v; want one", puts)
	}
}

// TestRegisterWorkerFailures runs each failure on an early attempt (the job
// retries, the API stays approved) and on the last one (the route is
// removed and the API fails, naming the attempts and the cause).
func TestRegisterWorkerFailures(t *testing.T) {
	e := setup(t)
	// cause is in the job's error (and the log); reason is all the
	// provider reads in state_reason, without the gateway's details.
	failures := []struct {
		name          string
		inject        func()
		cause, reason string
		puts          int
	}{
		{"unhealthy upstream", func() { e.upstream.status.Store(http.StatusServiceUnavailable) }, "upstream health check", "upstream health check did not answer 2xx (5xx)", 0},
		{"put refused", func() {
			e.gw.set(func(g *fakeGateway) {
				g.putErr = errors.New("dial unix /var/lib/veil/gateway-admin.sock: admin api down")
			})
		}, "put gateway route: dial unix /var/lib/veil/gateway-admin.sock: admin api down", "the gateway could not be updated", 1},
		{"answer not from the route", func() { e.gw.set(func(g *fakeGateway) { g.untagged = true }) }, "verify route through the gateway", "route could not be verified through the gateway", 1},
	}
	for i, f := range failures {
		for _, attempt := range []int{1, 3} {
			name := fmt.Sprintf("%s, attempt %d of 3", f.name, attempt)
			a := e.approved(fmt.Sprintf("api-%d-%d", i, attempt))
			e.upstream.status.Store(http.StatusOK)
			e.gw.set(func(g *fakeGateway) { g.putErr, g.untagged, g.puts, g.deletes = nil, false, nil, nil })
			f.inject()

			err := e.register(a.ID, attempt, 3)
			puts, deletes := e.gw.calls()
			if len(puts) != f.puts {
				t.Errorf("%s: gateway puts = %v; want %d", name, puts, f.puts)
			}
			got := e.api(a.ID)
			if attempt < 3 {
				if err == nil || !strings.Contains(err.Error(), f.cause) {
					t.Errorf("register(%s) = %v; want an error about %s", name, err, f.cause)
				}
				if got.State != catalog.StateApproved || len(deletes) != 0 {
					t.Errorf("after %s: state %s, deletes %v; want approved, none", name, got.State, deletes)
				}
				continue
			}
			if err != nil {
				t.Errorf("register(%s) = %v; want nil (the failure is recorded)", name, err)
			}
			if !slices.Equal(deletes, []string{catalog.RouteID(a.ID)}) {
				t.Errorf("%s: gateway deletes = %v; want [%s]", name, deletes, catalog.RouteID(a.ID))
			}
			if _, ok := e.gw.route(a.ID); ok {
				t.Errorf("%s: route still on the gateway", name)
			}
			if want := "gateway registration failed after 3 attempts: " + f.reason; got.State != catalog.StateFailed || got.StateReason != want {
				t.Errorf("after %s: %s (%q); want failed (%q)", name, got.State, got.StateReason, want)
			}
			for _, leak := range []string{"gateway-admin.sock", "admin api down", "GET ", "http://", "503"} {
				if strings.Contains(got.StateReason, leak) {
					t.Errorf("after %s: state_reason %q shows %q", name, got.StateReason, leak)
				}
			}
			trs := e.transitions(a.ID)
			if last := trs[len(trs)-1]; last.From != "approved" || last.To != "failed" || last.Actor != "system" {
				t.Errorf("%s: last transition = %v; want approved → failed by system", name, last)
			}
			if types := e.publishedTypes(a.ID); types[len(types)-1] != "api.failed" {
				t.Errorf("%s: published = %v; want api.failed last", name, types)
			}
			// An admin retries: approved again with a new registration job.
			if _, err := e.svc.Act(t.Context(), e.admin, a.ID, catalog.ActionRetry, "fixed"); err != nil {
				t.Errorf("%s: Act(retry) = %v; want nil", name, err)
			}
			if got := e.jobKinds(a.ID); !slices.Equal(got, []string{"api_register", "api_register"}) {
				t.Errorf("%s: jobs after retry = %v; want two api_register", name, got)
			}
		}
	}
}

// TestRegisterWorkerLeftApproved checks jobs whose API left approved,
// before the job ran or while it registered: the route goes, the API is
// never activated.
func TestRegisterWorkerLeftApproved(t *testing.T) {
	e := setup(t)
	ctx := t.Context()

	before := e.approved("suspended-before")
	if _, err := e.svc.Act(ctx, e.admin, before.ID, catalog.ActionSuspend, "abuse"); err != nil {
		t.Fatal(err)
	}
	if err := e.register(before.ID, 1, 3); err != nil {
		t.Errorf("register(suspended before) = %v; want nil", err)
	}
	puts, deletes := e.gw.calls()
	if len(puts) != 0 || !slices.Equal(deletes, []string{catalog.RouteID(before.ID)}) {
		t.Errorf("register(suspended before): gateway calls = puts %v, deletes %v; want only the route deleted", puts, deletes)
	}
	if got := e.api(before.ID).State; got != catalog.StateSuspended {
		t.Errorf("register(suspended before): state = %s; want suspended", got)
	}

	during := e.approved("suspended-during")
	e.gw.set(func(g *fakeGateway) {
		g.onPut = func(gatewayroute.Route) {
			if _, err := e.svc.Act(ctx, e.admin, during.ID, catalog.ActionSuspend, "abuse"); err != nil {
				t.Errorf("Act(suspend) during registration = %v", err)
			}
		}
	})
	if err := e.register(during.ID, 1, 3); err != nil {
		t.Errorf("register(suspended during) = %v; want nil", err)
	}
	e.gw.set(func(g *fakeGateway) { g.onPut = nil })
	if _, ok := e.gw.route(during.ID); ok {
		t.Errorf("register(suspended during): the route is still on the gateway")
	}
	if got := e.api(during.ID).State; got != catalog.StateSuspended {
		t.Errorf("register(suspended during): state = %s; want suspended", got)
	}
	for _, tr := range e.transitions(during.ID) {
		if tr.To == "active" {
			t.Errorf("register(suspended during): transitions include %v; want never active", tr)
		}
	}
	if slices.Contains(e.publishedTypes(during.ID), "api.activated") {
		t.Errorf("register(suspended during): api.activated published")
	}

	deleted := e.approved("deleted")
	if _, err := e.pool.Exec(ctx, `DELETE FROM apis WHERE id = $1`, deleted.ID); err != nil {
		t.Fatal(err)
	}
	e.gw.set(func(g *fakeGateway) { g.puts, g.deletes = nil, nil })
	if err := e.register(deleted.ID, 1, 3); err != nil {
		t.Errorf("register(deleted) = %v; want nil", err)
	}
	if puts, deletes := e.gw.calls(); len(puts) != 0 || len(deletes) != 0 {
		t.Errorf("register(deleted): gateway calls = puts %v, deletes %v; want none", puts, deletes)
	}
}

func TestDeregisterWorker(t *testing.T) {
	e := setup(t)
	tests := []struct {
		state  catalog.State // "" deletes the API
		remove bool
	}{
		{catalog.StateActive, false},
		{catalog.StateDeprecated, false},
		{catalog.StateApproved, false},
		{catalog.StateSuspended, true},
		{catalog.StateRetired, true},
		{catalog.StateFailed, true},
		{"", true},
	}
	for i, tt := range tests {
		a := e.createAPI(e.provider, "dereg-"+string(rune('a'+i)))
		if err := e.gw.Put(t.Context(), gatewayroute.Route{ID: catalog.RouteID(a.ID), PathPrefix: "/" + a.Slug, Upstream: a.UpstreamURL}); err != nil {
			t.Fatal(err)
		}
		if tt.state == "" {
			if _, err := e.pool.Exec(t.Context(), `DELETE FROM apis WHERE id = $1`, a.ID); err != nil {
				t.Fatal(err)
			}
		} else {
			e.setState(a.ID, tt.state)
		}
		if err := e.deregister(a.ID); err != nil {
			t.Errorf("deregister(%q) = %v; want nil", tt.state, err)
		}
		if _, ok := e.gw.route(a.ID); ok == tt.remove {
			t.Errorf("deregister(%q): route present = %v; want %v", tt.state, ok, !tt.remove)
		}
	}

	a := e.createAPI(e.provider, "dereg-failing")
	e.setState(a.ID, catalog.StateRetired)
	e.gw.set(func(g *fakeGateway) { g.deleteErr = errors.New("admin api down") })
	if err := e.deregister(a.ID); err == nil || !strings.Contains(err.Error(), "admin api down") {
		t.Errorf("deregister with the gateway failing = %v; want its error, for River to retry", err)
	}
}

func TestReconcile(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	set := func(f func(g *fakeGateway)) { e.gw.set(f) }

	intact := e.active("intact")
	missing := e.active("missing")
	set(func(g *fakeGateway) { delete(g.routes, catalog.RouteID(missing.ID)) })
	changed := e.active("changed")
	if _, err := e.svc.Act(ctx, e.provider, changed.ID, catalog.ActionDeprecate, ""); err != nil {
		t.Fatal(err)
	}
	set(func(g *fakeGateway) {
		r := g.routes[catalog.RouteID(changed.ID)]
		r.Upstream = "http://127.0.0.1:1/old"
		g.routes[r.ID] = r
	})
	handEdited := e.active("hand-edited") // its route no longer parses
	set(func(g *fakeGateway) {
		delete(g.routes, catalog.RouteID(handEdited.ID))
		g.foreign[catalog.RouteID(handEdited.ID)] = true
	})
	retired := e.active("retired") // retired, its deregistration not run yet
	if _, err := e.svc.Act(ctx, e.provider, retired.ID, catalog.ActionRetire, ""); err != nil {
		t.Fatal(err)
	}
	gone := catalog.RouteID(uuid.New()) // a route whose API no longer exists
	set(func(g *fakeGateway) {
		g.foreign[catalog.RoutePrefix+"hand-made"] = true
		g.routes[gone] = gatewayroute.Route{ID: gone, PathPrefix: "/gone", Upstream: "http://127.0.0.1:1"}
		g.routes["other-route"] = gatewayroute.Route{ID: "other-route", PathPrefix: "/other", Upstream: "http://127.0.0.1:1"}
	})
	lost := e.approved("lost") // its registration job was lost
	if _, err := e.pool.Exec(ctx, `DELETE FROM river_job WHERE args->>'api_id' = $1`, lost.ID.String()); err != nil {
		t.Fatal(err)
	}
	queued := e.approved("queued") // its job waits, and an attempt already put the route
	set(func(g *fakeGateway) {
		g.routes[catalog.RouteID(queued.ID)] = gatewayroute.Route{ID: catalog.RouteID(queued.ID), PathPrefix: "/queued", Upstream: e.upstream.url}
	})
	e.gw.set(func(g *fakeGateway) { g.puts, g.deletes = nil, nil })

	rep, err := e.svc.Reconcile(ctx)
	if err != nil {
		t.Fatalf("Reconcile() = %v; want nil", err)
	}
	want := catalog.ReconcileReport{Checked: 4, Missing: 1, Mismatched: 2, Orphans: 3, Requeued: 1, Healed: 7}
	if !sameReport(rep, want) || len(rep.Unhealed) != 0 {
		t.Errorf("Reconcile() = %+v; want %+v", rep, want)
	}
	for _, a := range []catalog.API{intact, missing, changed, handEdited} {
		r, ok := e.gw.route(a.ID)
		if !ok || r.PathPrefix != "/"+a.Slug || r.Upstream != e.upstream.url || r.Headers[gatewayroute.APIHeader] != a.ID.String() {
			t.Errorf("route of %s after Reconcile() = %+v (present %v); want the API's route", a.Slug, r, ok)
		}
	}
	ids, _ := e.gw.IDs(ctx, "")
	wantIDs := []string{catalog.RouteID(intact.ID), catalog.RouteID(missing.ID), catalog.RouteID(changed.ID),
		catalog.RouteID(handEdited.ID), catalog.RouteID(queued.ID), "other-route"}
	slices.Sort(wantIDs)
	if !slices.Equal(ids, wantIDs) {
		t.Errorf("gateway routes after Reconcile() = %v; want %v", ids, wantIDs)
	}
	puts, deletes := e.gw.calls()
	slices.Sort(deletes)
	wantDeletes := []string{catalog.RouteID(retired.ID), gone, catalog.RoutePrefix + "hand-made"}
	slices.Sort(wantDeletes)
	if len(puts) != 3 || !slices.Equal(deletes, wantDeletes) {
		t.Errorf("Reconcile() gateway calls = puts %v, deletes %v; want 3 puts, deletes %v", puts, deletes, wantDeletes)
	}
	if got, want := e.jobs(lost.ID), []job{{"api_register", "available", 3}}; !slices.Equal(got, want) {
		t.Errorf("jobs of the lost registration = %v; want %v", got, want)
	}
	if got := len(e.jobs(queued.ID)); got != 1 {
		t.Errorf("jobs of the queued registration = %d; want 1", got)
	}

	// Healed: a second run finds nothing to do.
	rep, err = e.svc.Reconcile(ctx)
	if want := (catalog.ReconcileReport{Checked: 4}); err != nil || !sameReport(rep, want) || len(rep.Unhealed) != 0 {
		t.Errorf("Reconcile() again = %+v, %v; want %+v", rep, err, want)
	}

	// What it cannot heal, it reports.
	set(func(g *fakeGateway) {
		delete(g.routes, catalog.RouteID(missing.ID))
		g.foreign[catalog.RoutePrefix+"stale"] = true
		g.putErr = errors.New("admin api down")
		g.deleteErr = errors.New("admin api down")
	})
	rep, err = e.svc.Reconcile(ctx)
	if want := (catalog.ReconcileReport{Checked: 4, Missing: 1, Orphans: 1}); err != nil || !sameReport(rep, want) || len(rep.Unhealed) != 2 {
		t.Fatalf("Reconcile() with the gateway failing = %+v, %v; want %+v and 2 unhealed", rep, err, want)
	}
	slices.Sort(rep.Unhealed)
	if u := rep.Unhealed; !strings.Contains(u[0], missing.ID.String()) || !strings.Contains(u[0], "put route") ||
		!strings.Contains(u[1], catalog.RoutePrefix+"stale") || !strings.Contains(u[1], "delete") {
		t.Errorf("Reconcile().Unhealed = %q; want the missing route's put and the stale route's delete", u)
	}
}

func sameReport(a, b catalog.ReconcileReport) bool {
	return a.Checked == b.Checked && a.Missing == b.Missing && a.Mismatched == b.Mismatched && a.Orphans == b.Orphans &&
		a.Requeued == b.Requeued && a.Healed == b.Healed
}
