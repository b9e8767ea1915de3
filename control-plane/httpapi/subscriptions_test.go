package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/problem"
)

// The HTTP behaviour of plans, subscriptions and keys, against the real
// Postgres, Redis and ClickHouse: what an answer shows of a key, the limits
// and conflicts a caller meets, the field errors, and usage.

// subsWorld is an active public API of acme with an active plan, and the
// subscription initech's consumer holds to it.
type subsWorld struct {
	e                         *testEnv
	provider, buyer, outsider string // tokens: acme's provider, initech's consumer, globex's provider
	apiID, planID, subID      string
}

func newSubsWorld(t *testing.T, e *testEnv) *subsWorld {
	t.Helper()
	w := &subsWorld{
		e:        e,
		provider: e.token("acme", "alice", identity.RoleProvider),
		buyer:    e.token("initech", "bob", identity.RoleConsumer),
		outsider: e.token("globex", "dave", identity.RoleProvider),
	}
	w.apiID = w.activeAPI(t, "weather")
	w.planID = w.plan(t, w.apiID, "basic", "active", nil)
	var sub struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/subscriptions", w.buyer, map[string]any{"plan_id": w.planID}, &sub)
	w.subID = sub.ID
	return w
}

// activeAPI registers a public API of acme and makes it active, as the
// gateway registration job would.
func (w *subsWorld) activeAPI(t *testing.T, slug string) string {
	t.Helper()
	var api struct{ ID string }
	w.e.must(http.StatusCreated, "POST", "/v1/apis", w.provider, weather(slug), &api)
	forceState(t, w.e, api.ID, "active")
	return api.ID
}

// plan adds a plan to the API; terms nil is a free plan in USD.
func (w *subsWorld) plan(t *testing.T, apiID, slug, status string, terms map[string]any) string {
	t.Helper()
	if terms == nil {
		terms = map[string]any{"currency": "USD"}
	}
	var p struct{ ID string }
	w.e.must(http.StatusCreated, "POST", "/v1/apis/"+apiID+"/plans", w.provider,
		map[string]any{"name": "Plan " + slug, "slug": slug, "status": status, "terms": terms}, &p)
	return p.ID
}

// key issues a key of the world's subscription with settings and returns
// the answer, decoded as JSON.
func (w *subsWorld) key(t *testing.T, settings map[string]any) map[string]any {
	t.Helper()
	var k map[string]any
	w.e.must(http.StatusCreated, "POST", "/v1/subscriptions/"+w.subID+"/keys", w.buyer, settings, &k)
	return k
}

// activate writes the key to the gateway's records as its sync job would,
// which makes it active.
func (w *subsWorld) activate(t *testing.T, id string) {
	t.Helper()
	if err := w.e.Subs.Keys().SyncKey(t.Context(), uuid.MustParse(id)); err != nil {
		t.Fatalf("SyncKey(%s) = %v; want nil", id, err)
	}
}

// activeKey issues a key with settings, makes it active and returns its
// id.
func (w *subsWorld) activeKey(t *testing.T, settings map[string]any) string {
	t.Helper()
	id := w.key(t, settings)["id"].(string)
	w.activate(t, id)
	return id
}

// problemDoc is a problem answer.
type problemDoc struct {
	Type, Title, Detail string
	Status              int
	Errors              []struct{ Field, Detail string }
}

func (p problemDoc) fields() []string {
	var out []string
	for _, f := range p.Errors {
		out = append(out, f.Field)
	}
	return out
}

// problem sends a request that must be refused with status and problem
// type typ, and returns the problem.
func (e *testEnv) problem(status int, typ, method, path, tok string, body any) problemDoc {
	e.t.Helper()
	got, b := e.do(method, path, tok, body)
	var p problemDoc
	if err := json.Unmarshal(b, &p); err != nil || got != status || p.Type != problem.TypeBase+typ || p.Status != status {
		e.t.Fatalf("%s %s = %d %s; want %d %s", method, path, got, b, status, typ)
	}
	return p
}

// plaintextRE matches a key's plaintext anywhere in a text.
var plaintextRE = regexp.MustCompile(`veil_(live|test)_[A-Za-z0-9]{39}`)

// TestKeyPlaintextOnlyOnIssue: the plaintext is in the answers that create
// and rotate a key, and in no other answer, audit entry or webhook event.
func TestKeyPlaintextOnlyOnIssue(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	ctx := t.Context()
	var hook struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/webhooks", w.buyer, map[string]any{"url": "http://127.0.0.1:9/hooks", "event_types": []string{"*"}}, &hook)

	k := w.key(t, map[string]any{"name": "ci"})
	plain, _ := k["key"].(string)
	if !plaintextRE.MatchString(plain) || k["state"] != "pending" || k["revealable"] != false {
		t.Fatalf("createKey = %v; want a pending key with its plaintext", k)
	}
	if want := plain[:len(k["prefix"].(string))]; k["prefix"] != want || !strings.HasSuffix(k["masked"].(string), plain[len(plain)-4:]) {
		t.Errorf("createKey prefix %v, masked %v; want the start and the last four of %s", k["prefix"], k["masked"], plain)
	}
	id := k["id"].(string)
	w.activate(t, id)

	var rotated map[string]any
	status, b := e.do("POST", "/v1/keys/"+id+"/rotate", w.buyer, map[string]any{"grace_seconds": 60})
	if status != http.StatusCreated {
		t.Fatalf("rotateKey = %d %s; want 201", status, b)
	}
	if err := json.Unmarshal(b, &rotated); err != nil {
		t.Fatal(err)
	}
	successor, _ := rotated["key"].(string)
	if !plaintextRE.MatchString(successor) || successor == plain || rotated["rotated_from"] != id {
		t.Fatalf("rotateKey = %s; want the successor of %s with a new plaintext", b, id)
	}

	// Every other answer about the keys: none shows a plaintext.
	reads := []struct{ method, path string }{
		{"GET", "/v1/keys/" + id},
		{"GET", "/v1/keys/" + rotated["id"].(string)},
		{"GET", "/v1/subscriptions/" + w.subID + "/keys"},
		{"GET", "/v1/keys/" + id + "/events"},
		{"GET", "/v1/audit"},
		{"PATCH", "/v1/keys/" + id},
		{"POST", "/v1/keys/" + id + "/suspend"},
		{"POST", "/v1/keys/" + id + "/revoke"},
		{"GET", "/v1/webhooks/" + hook.ID + "/deliveries?limit=200"},
	}
	for _, r := range reads {
		var body any
		if r.method == "PATCH" {
			body = map[string]any{"name": "ci-2"}
		}
		status, b := e.do(r.method, r.path, w.buyer, body)
		if status != http.StatusOK {
			t.Fatalf("%s %s = %d %s; want 200", r.method, r.path, status, b)
		}
		if plaintextRE.Match(b) || bytes.Contains(b, []byte(`"key":"`)) {
			t.Errorf("%s %s = %s; want no plaintext key", r.method, r.path, b)
		}
	}
	// Nor does anything stored: a key is kept as its SHA-256 only.
	for _, tc := range []struct {
		q    string
		want int
	}{
		{`SELECT count(*) FROM audit_log a WHERE row_to_json(a)::text LIKE '%' || $1 || '%'`, 0},
		{`SELECT count(*) FROM webhook_deliveries d WHERE row_to_json(d)::text LIKE '%' || $1 || '%'`, 0},
		{`SELECT count(*) FROM api_keys k WHERE row_to_json(k)::text LIKE '%' || $1 || '%'`, 0},
		{`SELECT count(*) FROM api_keys WHERE hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')`, 1},
	} {
		for _, secret := range []string{plain, successor} {
			var n int
			if err := e.Pool.QueryRow(ctx, tc.q, secret).Scan(&n); err != nil {
				t.Fatalf("%s: %v", tc.q, err)
			}
			if n != tc.want {
				t.Errorf("%s with a plaintext key = %d; want %d", tc.q, n, tc.want)
			}
		}
	}
}

// TestKeyLimit: a subscription holds max_active_keys (5) live keys; the
// sixth is refused until one is revoked; keys rotated out and in their
// grace do not count, so a subscription at its limit can still rotate.
func TestKeyLimit(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	var sub struct {
		MaxActiveKeys int `json:"max_active_keys"`
	}
	e.must(http.StatusOK, "GET", "/v1/subscriptions/"+w.subID, w.buyer, nil, &sub)
	if sub.MaxActiveKeys != 5 {
		t.Fatalf("max_active_keys = %d; want the default 5", sub.MaxActiveKeys)
	}
	var ids []string
	for i := range 5 {
		ids = append(ids, w.key(t, map[string]any{"name": fmt.Sprintf("k%d", i)})["id"].(string))
	}
	path := "/v1/subscriptions/" + w.subID + "/keys"
	p := e.problem(http.StatusConflict, "key-limit", "POST", path, w.buyer, map[string]any{})
	if !strings.Contains(p.Detail, "(5)") {
		t.Errorf("key-limit detail = %q; want the limit (5) named", p.Detail)
	}
	// Suspended keys still hold their slot.
	w.activate(t, ids[0])
	e.must(http.StatusOK, "POST", "/v1/keys/"+ids[0]+"/suspend", w.buyer, nil, nil)
	e.problem(http.StatusConflict, "key-limit", "POST", path, w.buyer, map[string]any{})

	// Rotating at the limit: the old key leaves the count for its successor.
	w.activate(t, ids[1])
	e.must(http.StatusCreated, "POST", "/v1/keys/"+ids[1]+"/rotate", w.buyer, map[string]any{"grace_seconds": 3600}, nil)
	e.problem(http.StatusConflict, "key-limit", "POST", path, w.buyer, map[string]any{})

	// A revoked key frees its slot; a deleted one too.
	e.must(http.StatusOK, "POST", "/v1/keys/"+ids[2]+"/revoke", w.buyer, map[string]any{"reason": "leaked"}, nil)
	w.key(t, map[string]any{})
	e.problem(http.StatusConflict, "key-limit", "POST", path, w.buyer, map[string]any{})
	e.must(http.StatusNoContent, "DELETE", "/v1/keys/"+ids[3], w.buyer, nil, nil)
	w.key(t, map[string]any{})
	e.problem(http.StatusConflict, "key-limit", "POST", path, w.buyer, map[string]any{})
}

// TestSubscribeConflicts: one live subscription per organization and API,
// and only active plans of active APIs take subscriptions.
func TestSubscribeConflicts(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	acmeConsumer := e.token("acme", "carol", identity.RoleConsumer)

	e.problem(http.StatusConflict, "already-subscribed", "POST", "/v1/subscriptions", w.buyer, map[string]any{"plan_id": w.planID})
	// Another plan of the same API is the same API.
	premium := w.plan(t, w.apiID, "premium", "active", map[string]any{"currency": "USD", "base_fee": "49"})
	e.problem(http.StatusConflict, "already-subscribed", "POST", "/v1/subscriptions", w.buyer, map[string]any{"plan_id": premium})

	var draftAPI struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis", w.provider, weather("maps"), &draftAPI)
	onDraftAPI := w.plan(t, draftAPI.ID, "basic", "active", nil)
	draftPlan := w.plan(t, w.apiID, "beta", "draft", nil)
	deprecated := w.activeAPI(t, "tides")
	onDeprecated := w.plan(t, deprecated, "basic", "active", nil)
	forceState(t, e, deprecated, "deprecated")

	for _, tc := range []struct {
		name, plan, tok string
		status          int
		typ             string
	}{
		// The API's own organization sees what others do not, and still
		// may not subscribe to what is not for sale.
		{"active plan of a draft API", onDraftAPI, acmeConsumer, 409, "plan-unavailable"},
		{"draft plan of an active API", draftPlan, acmeConsumer, 409, "plan-unavailable"},
		{"active plan of a deprecated API", onDeprecated, w.outsider, 409, "plan-unavailable"},
		{"draft API, as another organization", onDraftAPI, w.outsider, 404, "not-found"},
		{"draft plan, as another organization", draftPlan, w.outsider, 404, "not-found"},
		{"no such plan", uuid.NewString(), w.outsider, 404, "not-found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			p := e.problem(tc.status, tc.typ, "POST", "/v1/subscriptions", tc.tok, map[string]any{"plan_id": tc.plan})
			if tc.typ == "plan-unavailable" && !strings.Contains(p.Detail, "plan is") {
				t.Errorf("plan-unavailable detail = %q; want the plan's and the API's state", p.Detail)
			}
		})
	}

	// Canceled, the organization may subscribe again, to another plan.
	e.must(http.StatusOK, "POST", "/v1/subscriptions/"+w.subID+"/cancel", w.buyer, nil, nil)
	var again struct {
		ID, Status string
		PlanID     string `json:"plan_id"`
	}
	e.must(http.StatusCreated, "POST", "/v1/subscriptions", w.buyer, map[string]any{"plan_id": premium}, &again)
	if again.ID == w.subID || again.Status != "active" || again.PlanID != premium {
		t.Errorf("subscribe after cancel = %+v; want a new active subscription to %s", again, premium)
	}
	// A plan with trial days starts trialing.
	trial := w.plan(t, deprecated, "trial", "active", map[string]any{"currency": "EUR", "trial_days": 14})
	forceState(t, e, deprecated, "active")
	var trialing struct {
		Status      string
		TrialEndsAt *time.Time `json:"trial_ends_at"`
	}
	e.must(http.StatusCreated, "POST", "/v1/subscriptions", w.buyer, map[string]any{"plan_id": trial}, &trialing)
	if trialing.Status != "trialing" || trialing.TrialEndsAt == nil || time.Until(*trialing.TrialEndsAt) < 13*24*time.Hour {
		t.Errorf("subscribe to a 14-day trial = %+v; want trialing for 14 days", trialing)
	}
}

// TestInvalidTransitions: every refused change of a key's state or a
// subscription's status is a 409 invalid-transition naming both states.
func TestInvalidTransitions(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	admin := e.token("veil-ops", "root", identity.RoleAdmin)

	pending := w.key(t, map[string]any{"name": "pending"})["id"].(string)
	active := w.activeKey(t, map[string]any{"name": "active"})
	suspended := w.activeKey(t, map[string]any{"name": "suspended"})
	e.must(http.StatusOK, "POST", "/v1/keys/"+suspended+"/suspend", w.buyer, nil, nil)
	revoked := w.key(t, map[string]any{"name": "revoked"})["id"].(string)
	e.must(http.StatusOK, "POST", "/v1/keys/"+revoked+"/revoke", w.buyer, nil, nil)

	for _, tc := range []struct {
		name, method, path string
		body               any
		from, to           string
	}{
		{"resume an active key", "POST", "/v1/keys/" + active + "/resume", nil, "active", "active"},
		{"resume a pending key", "POST", "/v1/keys/" + pending + "/resume", nil, "pending", "active"},
		{"suspend a pending key", "POST", "/v1/keys/" + pending + "/suspend", nil, "pending", "suspended"},
		{"suspend a suspended key", "POST", "/v1/keys/" + suspended + "/suspend", nil, "suspended", "suspended"},
		{"suspend a revoked key", "POST", "/v1/keys/" + revoked + "/suspend", map[string]any{"reason": "again"}, "revoked", "suspended"},
		{"resume a revoked key", "POST", "/v1/keys/" + revoked + "/resume", nil, "revoked", "active"},
		{"revoke a revoked key", "POST", "/v1/keys/" + revoked + "/revoke", nil, "revoked", "revoked"},
		{"change a revoked key", "PATCH", "/v1/keys/" + revoked, map[string]any{"name": "back"}, "revoked", "revoked"},
		// Only an active key rotates.
		{"rotate a suspended key", "POST", "/v1/keys/" + suspended + "/rotate", nil, "suspended", "revoked"},
		{"rotate a pending key", "POST", "/v1/keys/" + pending + "/rotate", nil, "pending", "revoked"},
		{"resume an active subscription", "POST", "/v1/admin/subscriptions/" + w.subID + "/resume", nil, "active", "active"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			tok := w.buyer
			if strings.HasPrefix(tc.path, "/v1/admin/") {
				tok = admin
			}
			p := e.problem(http.StatusConflict, "invalid-transition", tc.method, tc.path, tok, tc.body)
			if want := tc.from + " → " + tc.to; !strings.Contains(p.Detail, want) {
				t.Errorf("%s %s detail = %q; want it to name %s", tc.method, tc.path, p.Detail, want)
			}
		})
	}

	// The subscription: suspended twice, then canceled, which is final.
	e.must(http.StatusOK, "POST", "/v1/admin/subscriptions/"+w.subID+"/suspend", admin, map[string]any{"reason": "Payment dispute."}, nil)
	if p := e.problem(http.StatusConflict, "invalid-transition", "POST", "/v1/admin/subscriptions/"+w.subID+"/suspend", admin, nil); !strings.Contains(p.Detail, "suspended → suspended") {
		t.Errorf("suspendSubscription of a suspended one: detail = %q; want suspended → suspended", p.Detail)
	}
	e.problem(http.StatusConflict, "subscription-inactive", "POST", "/v1/subscriptions/"+w.subID+"/keys", w.buyer, map[string]any{})
	e.must(http.StatusOK, "POST", "/v1/subscriptions/"+w.subID+"/cancel", w.buyer, map[string]any{"at_period_end": false}, nil)
	if p := e.problem(http.StatusConflict, "invalid-transition", "POST", "/v1/subscriptions/"+w.subID+"/cancel", w.buyer, nil); !strings.Contains(p.Detail, "already canceled") {
		t.Errorf("cancelSubscription of a canceled one: detail = %q; want already canceled", p.Detail)
	}
	if p := e.problem(http.StatusConflict, "invalid-transition", "POST", "/v1/admin/subscriptions/"+w.subID+"/resume", admin, nil); !strings.Contains(p.Detail, "canceled → active") {
		t.Errorf("resumeSubscription of a canceled one: detail = %q; want canceled → active", p.Detail)
	}
	e.problem(http.StatusConflict, "subscription-inactive", "POST", "/v1/subscriptions/"+w.subID+"/keys", w.buyer, map[string]any{})
	// Canceling revoked every key that was not terminal.
	var list struct {
		Data []struct{ Name, State string }
	}
	e.must(http.StatusOK, "GET", "/v1/subscriptions/"+w.subID+"/keys", w.buyer, nil, &list)
	for _, k := range list.Data {
		if k.State != "revoked" {
			t.Errorf("key %s of a canceled subscription is %s; want revoked", k.Name, k.State)
		}
	}
}

// TestSubscriptionValidation: refused input is a 422 naming each wrong
// field.
func TestSubscriptionValidation(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	active := w.activeKey(t, map[string]any{})
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	future := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	keys := "/v1/subscriptions/" + w.subID + "/keys"

	for _, tc := range []struct {
		name, method, path string
		body               any
		want               []string
	}{
		{"bad route patterns", "POST", keys, map[string]any{"routes": []string{"/forecast/{city", "/v1/*", "/a//b", "/x/../y", "no-slash"}},
			[]string{"routes[0]", "routes[2]", "routes[3]", "routes[4]"}},
		{"expiry in the past", "POST", keys, map[string]any{"expires_at": past}, []string{"expires_at"}},
		{"unknown methods", "POST", keys, map[string]any{"methods": []string{"GET", "FETCH", "get"}}, []string{"methods[1]", "methods[2]"}},
		{"too many methods", "POST", keys, map[string]any{"methods": []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "GET"}}, []string{"methods"}},
		{"rate limits out of range", "POST", keys, map[string]any{"rate_per_second": 0, "rate_per_minute": 1000001}, []string{"rate_per_second", "rate_per_minute"}},
		{"auto-renew without expiry or days", "POST", keys, map[string]any{"auto_renew": true}, []string{"renew_days", "auto_renew"}},
		{"rotation period too long", "POST", keys, map[string]any{"auto_rotate": true, "rotate_every_days": 3651}, []string{"rotate_every_days"}},
		{"name too long", "POST", keys, map[string]any{"name": strings.Repeat("n", 201)}, []string{"name"}},
		{"metadata over 8 KiB", "POST", keys, map[string]any{"metadata": map[string]any{"blob": strings.Repeat("x", 8200)}}, []string{"metadata"}},
		{"patch: expiry in the past", "PATCH", "/v1/keys/" + active, map[string]any{"expires_at": past, "routes": []string{"*"}}, []string{"expires_at", "routes[0]"}},
		{"patch: renew days cleared under auto-renew", "PATCH", "/v1/keys/" + active,
			map[string]any{"expires_at": future, "auto_renew": true, "renew_days": nil}, []string{"renew_days"}},
		{"negative grace", "POST", "/v1/keys/" + active + "/rotate", map[string]any{"grace_seconds": -1}, []string{"grace_seconds"}},
		{"grace over 90 days", "POST", "/v1/keys/" + active + "/rotate", map[string]any{"grace_seconds": 90*24*3600 + 1}, []string{"grace_seconds"}},
		{"no plan", "POST", "/v1/subscriptions", map[string]any{}, []string{"plan_id"}},
		{"plan input", "POST", "/v1/apis/" + w.apiID + "/plans", map[string]any{"name": " ", "slug": "-basic", "status": "archived",
			"terms": map[string]any{"type": "prepaid", "currency": "usd", "interval": "week", "base_fee": "-1", "trial_days": 366,
				"quota_requests": -1, "rate_per_second": 0, "included_units": "0.0000001"}},
			[]string{"name", "slug", "status", "terms.type", "terms.currency", "terms.interval", "terms.base_fee", "terms.trial_days",
				"terms.quota_requests", "terms.rate_per_second", "terms.included_units"}},
		{"plan version terms", "POST", "/v1/plans/" + w.planID + "/versions", map[string]any{"terms": map[string]any{"currency": "USD", "rate_per_minute": 1000001}},
			[]string{"terms.rate_per_minute"}},
		{"plan patch", "PATCH", "/v1/plans/" + w.planID, map[string]any{"name": "", "description": strings.Repeat("d", 5001)}, []string{"name", "description"}},
		{"subscription list filters", "GET", "/v1/subscriptions?api_id=weather&status=paused", nil, []string{"api_id", "status"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			tok := w.buyer
			if strings.Contains(tc.path, "plans") {
				tok = w.provider
			}
			p := e.problem(http.StatusUnprocessableEntity, "validation", tc.method, tc.path, tok, tc.body)
			if got := p.fields(); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("%s %s field errors = %v; want %v", tc.method, tc.path, got, tc.want)
			}
		})
	}
}

// usageRow is one usage event of the test ClickHouse.
type usageRow struct {
	sub, key, api string
	at            time.Time
	status        uint16
	latency       uint32
	units         string
}

// insertUsage writes usage events the way the processors do; the
// roll-ups the usage endpoints read fill as the insert runs.
func insertUsage(t *testing.T, e *testEnv, rows ...usageRow) {
	t.Helper()
	ctx := t.Context()
	batch, err := e.ClickHouse.PrepareBatch(ctx, `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
		status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatalf("prepare insert: %v", err)
	}
	for i, r := range rows {
		if err := batch.Append(uuid.NewString(), "/gateway", "veil.api.request", r.sub, r.at, r.api, r.key,
			"GET", "/forecast/{city}", "/forecast/paris", r.status, r.latency, uint64(100), uint64(1000),
			decimal.RequireFromString(r.units), r.at.Add(time.Second), int32(0), int64(i)); err != nil {
			t.Fatalf("append event %d: %v", i, err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("insert usage_events: %v", err)
	}
}

type usageReport struct {
	Subject     string `json:"subject"`
	KeyID       string `json:"key_id"`
	From, To    time.Time
	Granularity string
	Buckets     []usageBucket
	Total       usageBucket
}

type usageBucket struct {
	Start      time.Time
	Requests   uint64
	Successful uint64 `json:"successful_requests"`
	Server     uint64 `json:"server_error_requests"`
	Units      string
}

// TestUsage: the usage endpoints answer the ClickHouse roll-ups of the
// subscription, or of one key, by bucket; they refuse ranges they cannot
// answer and hide subscriptions the caller may not see.
func TestUsage(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	k1 := w.key(t, map[string]any{"name": "one"})["id"].(string)
	k2 := w.key(t, map[string]any{"name": "two"})["id"].(string)
	base := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	insertUsage(t, e,
		usageRow{w.subID, k1, w.apiID, base.Add(5 * time.Minute), 200, 10, "1.5"},
		usageRow{w.subID, k1, w.apiID, base.Add(50 * time.Minute), 503, 30, "0"},
		usageRow{w.subID, k2, w.apiID, base.Add(70 * time.Minute), 200, 20, "2.25"},
		// Another subscription's event in the same hour: never shown.
		usageRow{uuid.NewString(), uuid.NewString(), w.apiID, base.Add(10 * time.Minute), 200, 10, "100"},
	)
	q := url.Values{"from": {base.Format(time.RFC3339)}, "to": {base.Add(3 * time.Hour).Format(time.RFC3339)}, "granularity": {"hour"}}

	var rep usageReport
	e.must(http.StatusOK, "GET", "/v1/subscriptions/"+w.subID+"/usage?"+q.Encode(), w.buyer, nil, &rep)
	if rep.Subject != w.subID || rep.KeyID != "" || rep.Granularity != "hour" || !rep.From.Equal(base) || len(rep.Buckets) != 3 {
		t.Fatalf("subscription usage = %+v; want 3 hourly buckets of %s from %s", rep, w.subID, base)
	}
	if b := rep.Buckets[0]; b.Requests != 2 || b.Successful != 1 || b.Server != 1 || b.Units != "1.5" {
		t.Errorf("first hour = %+v; want 2 requests (1 ok, 1 5xx), 1.5 units", b)
	}
	if b := rep.Buckets[1]; b.Requests != 1 || b.Units != "2.25" || !b.Start.Equal(base.Add(time.Hour)) {
		t.Errorf("second hour = %+v; want 1 request, 2.25 units", b)
	}
	if rep.Total.Requests != 3 || rep.Total.Units != "3.75" {
		t.Errorf("total = %+v; want 3 requests, 3.75 units", rep.Total)
	}

	// One key, by day; the API's provider may read it too.
	q.Set("granularity", "day")
	e.must(http.StatusOK, "GET", "/v1/keys/"+k2+"/usage?"+q.Encode(), w.provider, nil, &rep)
	if rep.KeyID != k2 || rep.Total.Requests != 1 || rep.Total.Units != "2.25" {
		t.Errorf("key usage = %+v; want key %s's 1 request, 2.25 units", rep, k2)
	}
	// The defaults: the last 24 hours by hour.
	e.must(http.StatusOK, "GET", "/v1/keys/"+k1+"/usage", w.buyer, nil, &rep)
	if rep.Granularity != "hour" || len(rep.Buckets) < 24 || len(rep.Buckets) > 25 || rep.Total.Requests != 2 {
		t.Errorf("key usage with defaults = %s, %d buckets, %d requests; want about 24 hourly buckets, 2 requests", rep.Granularity, len(rep.Buckets), rep.Total.Requests)
	}

	sub := "/v1/subscriptions/" + w.subID + "/usage?"
	for _, tc := range []struct {
		name, query string
		status      int
		typ         string
	}{
		{"from after to", "from=" + base.Add(time.Hour).Format(time.RFC3339) + "&to=" + base.Format(time.RFC3339), 400, "bad-usage-query"},
		{"from equals to", "from=" + base.Format(time.RFC3339) + "&to=" + base.Format(time.RFC3339), 400, "bad-usage-query"},
		{"more than 1000 buckets", "granularity=minute&from=" + base.Add(-24*time.Hour).Format(time.RFC3339), 400, "bad-usage-query"},
		// Query parameters that do not parse are field errors, like limit's.
		{"unknown granularity", "granularity=week", 422, "validation"},
		{"from not RFC 3339", "from=yesterday", 422, "validation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			e.problem(tc.status, tc.typ, "GET", sub+tc.query, w.buyer, nil)
		})
	}
	e.problem(http.StatusNotFound, "not-found", "GET", "/v1/subscriptions/"+w.subID+"/usage", w.outsider, nil)
	e.problem(http.StatusNotFound, "not-found", "GET", "/v1/keys/"+k1+"/usage", w.outsider, nil)
	e.problem(http.StatusNotFound, "not-found", "GET", "/v1/subscriptions/"+uuid.NewString()+"/usage", w.buyer, nil)
}

// TestUsageUnavailable: without a usage reader the usage endpoints answer
// 503, as the document says, after checking the caller may see the
// subscription.
func TestUsageUnavailable(t *testing.T) {
	e := newTestEnvWith(t, func(cfg *httpapi.Config) { cfg.Usage = nil })
	w := newSubsWorld(t, e)
	k := w.key(t, map[string]any{})["id"].(string)
	c := newContract(t, e.Server.URL)
	for _, path := range []string{"/v1/subscriptions/" + w.subID + "/usage", "/v1/keys/" + k + "/usage"} {
		r := c.call(http.StatusServiceUnavailable, "GET", path, w.buyer, nil)
		if r.problem() != "usage-unavailable" || r.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s without a usage reader = %s, Retry-After %q; want usage-unavailable with Retry-After", path, r.Body, r.Header.Get("Retry-After"))
		}
		c.call(http.StatusNotFound, "GET", path, w.outsider, nil)
	}
}

// TestRevealSealedSuccessor: automatic rotation seals the successor; it is
// revealed once, by the subscriber only, and the reveal is audited.
func TestRevealSealedSuccessor(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	manual := w.key(t, map[string]any{})["id"].(string)
	e.problem(http.StatusConflict, "nothing-to-reveal", "POST", "/v1/keys/"+manual+"/reveal", w.buyer, nil)

	old := w.key(t, map[string]any{"name": "rotating", "auto_rotate": true, "rotate_every_days": 1})["id"].(string)
	successor := sealedSuccessor(t, e, old)
	var k map[string]any
	e.must(http.StatusOK, "GET", "/v1/keys/"+successor, w.buyer, nil, &k)
	if k["revealable"] != true || k["rotated_from"] != old || k["created_by"] != "system" || k["key"] != nil {
		t.Fatalf("sealed successor = %v; want revealable, rotated from %s by system, without plaintext", k, old)
	}
	var oldKey struct {
		GraceUntil *time.Time `json:"grace_until"`
		AutoRotate bool       `json:"auto_rotate"`
	}
	e.must(http.StatusOK, "GET", "/v1/keys/"+old, w.buyer, nil, &oldKey)
	if oldKey.GraceUntil == nil || time.Until(*oldKey.GraceUntil) < 6*24*time.Hour || oldKey.AutoRotate {
		t.Errorf("automatically rotated key = %+v; want a grace of 7 days and no further automatic rotation", oldKey)
	}

	e.problem(http.StatusForbidden, "forbidden", "POST", "/v1/keys/"+successor+"/reveal", w.provider, nil)
	e.problem(http.StatusNotFound, "not-found", "POST", "/v1/keys/"+successor+"/reveal", w.outsider, nil)
	status, b := e.do("POST", "/v1/keys/"+successor+"/reveal", w.buyer, nil)
	if status != http.StatusOK {
		t.Fatalf("revealKey = %d %s; want 200", status, b)
	}
	if err := json.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	if plain, _ := k["key"].(string); !plaintextRE.MatchString(plain) || k["revealable"] != false || !strings.HasSuffix(k["masked"].(string), plain[len(plain)-4:]) {
		t.Fatalf("revealKey = %s; want the successor's plaintext, no longer revealable", b)
	}
	e.problem(http.StatusConflict, "nothing-to-reveal", "POST", "/v1/keys/"+successor+"/reveal", w.buyer, nil)

	var events struct {
		Data []struct{ Action, Actor string }
	}
	e.must(http.StatusOK, "GET", "/v1/keys/"+successor+"/events", w.buyer, nil, &events)
	if len(events.Data) == 0 || events.Data[0].Action != "key.reveal" || events.Data[0].Actor != "bob" {
		t.Errorf("the successor's audit trail = %+v; want key.reveal by bob first", events.Data)
	}
}

// sealedSuccessor makes the automatic rotation of key (auto_rotate, every
// day) due and runs maintenance, which issues a sealed successor; it
// returns the successor's id.
func sealedSuccessor(t *testing.T, e *testEnv, key string) string {
	t.Helper()
	ctx := t.Context()
	if err := e.Subs.Keys().SyncKey(ctx, uuid.MustParse(key)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Pool.Exec(ctx, `UPDATE api_keys SET created_at = now() - interval '2 days' WHERE id = $1`, key); err != nil {
		t.Fatal(err)
	}
	rep, err := e.Subs.RunMaintenance(ctx)
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("RunMaintenance = %+v, %v; want no errors", rep, err)
	}
	var id string
	if err := e.Pool.QueryRow(ctx, `SELECT id::text FROM api_keys WHERE rotated_from = $1`, key).Scan(&id); err != nil {
		t.Fatalf("find the successor of %s: %v (maintenance: %+v)", key, err, rep)
	}
	return id
}

// TestDeleteAPIWithSubscriptions: a retired API that has subscriptions
// cannot be deleted (invoices cite them); the answer is a 409 problem, not
// the foreign key's 500, and the API is still there.
func TestDeleteAPIWithSubscriptions(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	forceState(t, e, w.apiID, "retired")
	e.problem(http.StatusConflict, "api-in-use", "DELETE", "/v1/apis/"+w.apiID, w.provider, nil)
	admin := e.token("veil", "root", identity.RoleAdmin)
	e.problem(http.StatusConflict, "api-in-use", "DELETE", "/v1/apis/"+w.apiID, admin, nil)
	var api struct{ ID, State string }
	e.must(http.StatusOK, "GET", "/v1/apis/"+w.apiID, w.provider, nil, &api)
	if api.State != "retired" {
		t.Errorf("API after refused delete is %s; want retired", api.State)
	}
}
