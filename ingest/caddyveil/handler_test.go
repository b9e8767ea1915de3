package caddyveil

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/usage"
)

// wait bounds the polls for events and metrics: generous for a loaded CI
// machine, where they normally arrive in milliseconds.
const wait = 30 * time.Second

// testAPI is the API the gateway's /weather route serves.
const testAPI = "api_weather"

// testRoutes are its route templates.
var testRoutes = []string{"/forecast/{city}", "/alerts"}

// fixture is a real Caddy process (veil gateway run) with the veil app and
// handler in front of an echoing upstream, the Redis database it reads
// records from and the topic it sends events to.
type fixture struct {
	gw     *testenv.GatewayProcess
	url    string // the gateway's HTTP server
	store  *enforcement.Store
	kafka  *testenv.Kafka
	topic  string
	source string
	up     *upstream
	client *http.Client

	mu     sync.Mutex
	events []eventSummary // one per request made through the veil route
	calls  int
}

// setup starts the upstream and the gateway and waits until the gateway
// serves.
func setup(t *testing.T) *fixture {
	t.Helper()
	rdb, db := testenv.RedisDB(t)
	k := testenv.NewKafka(t)
	f := &fixture{
		store:  enforcement.New(rdb),
		kafka:  k,
		topic:  k.Topic(t, 3),
		source: "/gateway/test-" + testenv.Suffix(),
		up:     newUpstream(t),
		client: &http.Client{Timeout: 10 * time.Second},
	}
	t.Cleanup(f.client.CloseIdleConnections)
	app, err := json.Marshal(App{
		RedisAddress: testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"),
		RedisDB:      db,
		Brokers:      k.Brokers,
		Topic:        f.topic,
		SpoolDir:     t.TempDir(),
		Source:       f.source,
		// Every refusal is checked for its event, anonymous ones too.
		AnonymousSampleRate: 1,
		PublicURL:           "https://portal.example.test/",
	})
	if err != nil {
		t.Fatal(err)
	}
	// The handler's JSON comes from the one builder of it, which
	// TestVeilHandlerMatchesModule holds to the module's fields.
	veil := gatewayroute.VeilHandler{
		APIID:          testAPI,
		PathPrefix:     "/weather",
		RouteTemplates: testRoutes,
		KeyQueryParam:  "api_key",
		UnitsHeader:    "X-Units",
	}.Handle()
	addr, admin := testenv.FreeLoopbackAddr(t), testenv.FreeLoopbackAddr(t)
	f.url = "http://" + addr
	cfg := map[string]any{
		"admin": map[string]any{"listen": admin},
		"apps": map[string]any{
			"veil": json.RawMessage(app),
			"http": map[string]any{
				"grace_period": "2s",
				"servers": map[string]any{
					"gateway": map[string]any{
						"listen":          []string{addr},
						"automatic_https": map[string]any{"disable": true},
						"routes": []any{
							route("/healthz", map[string]any{"handler": "static_response", "status_code": 200}),
							route("/metrics", map[string]any{"handler": "veil_metrics"}),
							route("/weather", veil, map[string]any{
								"handler":   "reverse_proxy",
								"upstreams": []any{map[string]any{"dial": f.up.addr}},
							}),
						},
					},
				},
			},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	f.gw = testenv.GatewayRun(t, b, f.url+"/healthz")
	return f
}

// route matches prefix and everything under it and runs handlers.
func route(prefix string, handlers ...map[string]any) map[string]any {
	return map[string]any{
		"match":    []any{map[string]any{"path": []string{prefix, prefix + "/*"}}},
		"handle":   handlers,
		"terminal": true,
	}
}

// upstream is the API behind the gateway: it answers every request with
// what it received, bills 2.5 units through X-Units and remembers the
// X-Test-Call ids it saw, so a test can tell that a refused request never
// reached it.
type upstream struct {
	addr string
	seen sync.Map // X-Test-Call → true
}

// echo is the upstream's answer.
type echo struct {
	Method string      `json:"method"`
	Path   string      `json:"path"` // escaped: JSON cannot carry any byte
	Query  string      `json:"query"`
	Header http.Header `json:"header"`
}

func newUpstream(t *testing.T) *upstream {
	up := &upstream{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.seen.Store(r.Header.Get("X-Test-Call"), true)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Units", "2.5")
		_ = json.NewEncoder(w).Encode(echo{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header})
	}))
	t.Cleanup(srv.Close)
	up.addr = srv.Listener.Addr().String()
	return up
}

// Where a request carries its key.
const (
	viaNone   = ""
	viaBearer = "bearer"
	viaHeader = "x-api-key"
	viaQuery  = "query"
)

// result is the gateway's answer to one request.
type result struct {
	status int
	header http.Header
	body   []byte
	call   string // the X-Test-Call id
}

// do sends method target (a path under the gateway, with its query) with
// key carried as via.
func (f *fixture) do(t *testing.T, method, target, key, via string) result {
	t.Helper()
	f.mu.Lock()
	f.calls++
	call := strconv.Itoa(f.calls) + "-" + testenv.Suffix()
	f.mu.Unlock()
	if via == viaQuery {
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		target += sep + "api_key=" + key
	}
	req, err := http.NewRequestWithContext(t.Context(), method, f.url+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test-Call", call)
	switch via {
	case viaBearer:
		req.Header.Set("Authorization", "Bearer "+key)
	case viaHeader:
		req.Header.Set("X-API-Key", key)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: body, call: call}
}

// expect records the event a request made through the veil route must
// produce.
func (f *fixture) expect(e eventSummary) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
}

// eventSummary is what a test checks of one usage event.
type eventSummary struct {
	Subject string
	KeyID   string
	Method  string
	Route   string
	Path    string
	Status  int
	Refusal string
	Units   string
}

func (e eventSummary) String() string {
	return fmt.Sprintf("%s %q route=%s status=%d refusal=%q units=%s subject=%s key_id=%s",
		e.Method, e.Path, e.Route, e.Status, e.Refusal, e.Units, e.Subject, e.KeyID)
}

// checkRefused checks a refusal: status, problem type, the headers every
// refusal has, and that the upstream never saw the request.
func (f *fixture) checkRefused(t *testing.T, res result, status int, typ string) {
	t.Helper()
	if res.status != status {
		t.Errorf("status = %d; want %d (body %s)", res.status, status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q; want application/problem+json", ct)
	}
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
		Title  string `json:"title"`
		APIID  string `json:"api_id"`
	}
	if err := json.Unmarshal(res.body, &p); err != nil {
		t.Errorf("problem body %q: %v", res.body, err)
	}
	if want := problem.TypeBase + typ; p.Type != want {
		t.Errorf("problem type = %q; want %q", p.Type, want)
	}
	if p.Status != status || p.Title == "" || p.APIID != testAPI {
		t.Errorf("problem = %s; want status %d, a title and api_id %s", res.body, status, testAPI)
	}
	if got := res.header.Get("X-Veil-Api-Id"); got != testAPI {
		t.Errorf("X-Veil-Api-Id = %q; want %q", got, testAPI)
	}
	wantAuth := ""
	if status == http.StatusUnauthorized {
		wantAuth = `Bearer realm="veil"`
	}
	if got := res.header.Get("WWW-Authenticate"); got != wantAuth {
		t.Errorf("WWW-Authenticate = %q; want %q", got, wantAuth)
	}
	if _, ok := f.up.seen.Load(res.call); ok {
		t.Errorf("the upstream received refused request %s", res.call)
	}
}

// checkAdmitted checks a call the upstream answered: 200, the key gone
// from what the upstream received, the units header gone from the answer.
// It returns what the upstream received.
func (f *fixture) checkAdmitted(t *testing.T, res result) echo {
	t.Helper()
	if res.status != http.StatusOK {
		t.Fatalf("status = %d; want 200 (body %s)", res.status, res.body)
	}
	var got echo
	if err := json.Unmarshal(res.body, &got); err != nil {
		t.Fatalf("upstream echo %q: %v", res.body, err)
	}
	for _, h := range []string{"Authorization", "X-Api-Key"} {
		if v := got.Header.Get(h); v != "" {
			t.Errorf("upstream received %s: %q; want none", h, v)
		}
	}
	if strings.Contains(got.Query, "api_key") {
		t.Errorf("upstream received query %q; want no api_key", got.Query)
	}
	if v, ok := res.header["X-Units"]; ok {
		t.Errorf("answer has X-Units: %q; want the header removed", v)
	}
	if got := res.header.Get("X-Veil-Api-Id"); got != testAPI {
		t.Errorf("X-Veil-Api-Id = %q; want %q", got, testAPI)
	}
	return got
}

// subscriptionIDs name the subscriptions TestGatewayChecksEveryRequest puts.
type subscriptionIDs struct {
	main, other, suspended, canceled, blocked, limited, pastDue string
}

func putSubscription(t *testing.T, s *enforcement.Store, id, api, status string, perSecond int) {
	t.Helper()
	now := time.Now()
	_, err := s.PutSubscription(t.Context(), enforcement.SubscriptionRecord{
		ID: id, APIID: api, PlanID: "plan_test", Status: status,
		PeriodStart: now.Add(-24 * time.Hour), PeriodEnd: now.Add(30 * 24 * time.Hour),
		QuotaRequests: -1, RatePerSecond: perSecond, Version: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// activeKey puts an active subscription to testAPI, without a rate limit,
// and an active key of it; it returns the subscription's id, the key and
// its record.
func activeKey(t *testing.T, s *enforcement.Store) (sub, key string, rec enforcement.KeyRecord) {
	t.Helper()
	sub = uuid.NewString()
	putSubscription(t, s, sub, testAPI, enforcement.SubscriptionActive, 0)
	key, rec = newKey(t, s, enforcement.KeyRecord{SubscriptionID: sub})
	return sub, key, rec
}

// newKey generates a key and puts its record, made from rec (Hash and,
// when empty, KeyID, APIID, Status and Version filled in).
func newKey(t *testing.T, s *enforcement.Store, rec enforcement.KeyRecord) (plaintext string, r enforcement.KeyRecord) {
	t.Helper()
	k, err := apikey.Generate(apikey.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	rec.Hash = k.Hash
	if rec.KeyID == "" {
		rec.KeyID = "key_" + testenv.Suffix()
	}
	if rec.APIID == "" {
		rec.APIID = testAPI
	}
	if rec.Status == "" {
		rec.Status = enforcement.KeyActive
	}
	if rec.Version == 0 {
		rec.Version = 1
	}
	if _, err := s.PutKey(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	return k.Plaintext, rec
}

// badChecksum changes one character of a key's body: the checksum fails.
func badChecksum(t *testing.T, key string) string {
	t.Helper()
	i := len(key) - apikey.BodyLen + 5
	c := byte('a')
	if key[i] == c {
		c = 'b'
	}
	bad := key[:i] + string(c) + key[i+1:]
	if _, err := apikey.Parse(bad); err == nil {
		t.Fatalf("apikey.Parse(%q) = nil; want a checksum error", bad)
	}
	return bad
}

// TestGatewayChecksEveryRequest runs a real gateway through every refusal
// and every way in, then reads the topic: one valid event per request.
func TestGatewayChecksEveryRequest(t *testing.T) {
	t.Parallel()
	f := setup(t)
	subs := subscriptionIDs{
		main: uuid.NewString(), other: uuid.NewString(), suspended: uuid.NewString(),
		canceled: uuid.NewString(), blocked: uuid.NewString(), limited: uuid.NewString(),
		pastDue: uuid.NewString(),
	}
	putSubscription(t, f.store, subs.main, testAPI, enforcement.SubscriptionActive, 0)
	putSubscription(t, f.store, subs.other, "api_other", enforcement.SubscriptionActive, 0)
	putSubscription(t, f.store, subs.suspended, testAPI, enforcement.SubscriptionSuspended, 0)
	putSubscription(t, f.store, subs.canceled, testAPI, enforcement.SubscriptionCanceled, 0)
	putSubscription(t, f.store, subs.blocked, testAPI, enforcement.SubscriptionActive, 0)
	putSubscription(t, f.store, subs.limited, testAPI, enforcement.SubscriptionActive, 5)
	putSubscription(t, f.store, subs.pastDue, testAPI, enforcement.SubscriptionPastDue, 0)
	if err := f.store.PutBlock(t.Context(), subs.blocked, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	onMain := func(mod func(*enforcement.KeyRecord)) (string, enforcement.KeyRecord) {
		rec := enforcement.KeyRecord{SubscriptionID: subs.main}
		if mod != nil {
			mod(&rec)
		}
		return newKey(t, f.store, rec)
	}
	active, activeRec := onMain(nil)
	revoked, revokedRec := onMain(func(r *enforcement.KeyRecord) { r.Status = enforcement.KeyRevoked })
	expired, expiredRec := onMain(func(r *enforcement.KeyRecord) { r.Status = enforcement.KeyExpired })
	pastExpiry, pastExpiryRec := onMain(func(r *enforcement.KeyRecord) { r.ExpiresAt = now.Add(-time.Minute) })
	inGrace, inGraceRec := onMain(func(r *enforcement.KeyRecord) {
		r.Status, r.GraceUntil = enforcement.KeyRevoked, now.Add(time.Hour)
	})
	pastGrace, pastGraceRec := onMain(func(r *enforcement.KeyRecord) {
		r.Status, r.GraceUntil = enforcement.KeyRevoked, now.Add(-time.Minute)
	})
	suspended, suspendedRec := onMain(func(r *enforcement.KeyRecord) { r.Status = enforcement.KeySuspended })
	getOnly, getOnlyRec := onMain(func(r *enforcement.KeyRecord) { r.Methods = []string{"GET"} })
	alertsOnly, alertsOnlyRec := onMain(func(r *enforcement.KeyRecord) { r.Routes = []string{"/alerts"} })
	otherAPI, otherAPIRec := newKey(t, f.store, enforcement.KeyRecord{SubscriptionID: subs.other, APIID: "api_other"})
	subSuspended, subSuspendedRec := newKey(t, f.store, enforcement.KeyRecord{SubscriptionID: subs.suspended})
	subCanceled, subCanceledRec := newKey(t, f.store, enforcement.KeyRecord{SubscriptionID: subs.canceled})
	blocked, blockedRec := newKey(t, f.store, enforcement.KeyRecord{SubscriptionID: subs.blocked})
	limited, limitedRec := newKey(t, f.store, enforcement.KeyRecord{SubscriptionID: subs.limited})
	pastDue, pastDueRec := newKey(t, f.store, enforcement.KeyRecord{SubscriptionID: subs.pastDue})
	unknown, err := apikey.Generate(apikey.EnvTest)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("refusals", func(t *testing.T) {
		tests := []struct {
			name    string
			method  string
			path    string // under /weather
			key     string
			via     string
			rec     *enforcement.KeyRecord // the key's record; nil for unknown keys
			status  int
			problem string
			refusal string
		}{
			{"no key", "GET", "/forecast/paris", "", viaNone, nil, 401, "missing-key", "missing_key"},
			{"empty bearer", "GET", "/forecast/paris", "", viaBearer, nil, 401, "missing-key", "missing_key"},
			{"bad checksum", "GET", "/forecast/paris", badChecksum(t, active), viaBearer, nil, 401, "invalid-key", "invalid_key"},
			{"not a key", "GET", "/forecast/paris", "hunter2", viaHeader, nil, 401, "invalid-key", "invalid_key"},
			{"well-formed unknown key", "GET", "/forecast/paris", unknown.Plaintext, viaBearer, nil, 401, "invalid-key", "invalid_key"},
			{"unknown key again, from the negative cache", "GET", "/alerts", unknown.Plaintext, viaHeader, nil, 401, "invalid-key", "invalid_key"},
			{"revoked", "GET", "/forecast/paris", revoked, viaBearer, &revokedRec, 401, "key-revoked", "key_revoked"},
			{"rotated out, grace over", "GET", "/forecast/paris", pastGrace, viaBearer, &pastGraceRec, 401, "key-revoked", "key_revoked"},
			{"expired", "GET", "/forecast/paris", expired, viaBearer, &expiredRec, 401, "key-expired", "key_expired"},
			{"past its expiry", "GET", "/alerts", pastExpiry, viaHeader, &pastExpiryRec, 401, "key-expired", "key_expired"},
			{"suspended key", "GET", "/forecast/paris", suspended, viaBearer, &suspendedRec, 403, "key-suspended", "key_suspended"},
			{"key of another API", "GET", "/forecast/paris", otherAPI, viaBearer, &otherAPIRec, 403, "key-not-for-api", "api_mismatch"},
			{"method not permitted", "DELETE", "/forecast/paris", getOnly, viaBearer, &getOnlyRec, 403, "method-not-permitted", "method_not_allowed"},
			{"route not permitted", "GET", "/forecast/paris", alertsOnly, viaBearer, &alertsOnlyRec, 403, "route-not-permitted", "route_not_allowed"},
			{"subscription suspended", "GET", "/forecast/paris", subSuspended, viaBearer, &subSuspendedRec, 403, "subscription-inactive", "subscription_inactive"},
			{"subscription canceled", "GET", "/alerts", subCanceled, viaQuery, &subCanceledRec, 403, "subscription-inactive", "subscription_inactive"},
			{"quota exhausted", "GET", "/forecast/paris", blocked, viaBearer, &blockedRec, 429, "quota-exhausted", "quota_exhausted"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := f.do(t, tt.method, "/weather"+tt.path, tt.key, tt.via)
				f.checkRefused(t, res, tt.status, tt.problem)
				ev := eventSummary{
					Subject: "anonymous", Method: tt.method, Route: routeOf(tt.path), Path: tt.path,
					Status: tt.status, Refusal: tt.refusal, Units: "0",
				}
				if tt.rec != nil {
					ev.Subject, ev.KeyID = tt.rec.SubscriptionID, tt.rec.KeyID
				}
				f.expect(ev)
				if tt.status == http.StatusTooManyRequests {
					// The block lasts an hour: Retry-After says so.
					ra, err := strconv.Atoi(res.header.Get("Retry-After"))
					if err != nil || ra < 3590 || ra > 3600 {
						t.Errorf("Retry-After = %q; want about 3600", res.header.Get("Retry-After"))
					}
				} else if ra := res.header.Get("Retry-After"); ra != "" {
					t.Errorf("Retry-After = %q; want none", ra)
				}
			})
		}
	})

	t.Run("admitted", func(t *testing.T) {
		tests := []struct {
			name   string
			method string
			path   string // under /weather, with its query
			key    string
			via    string
			rec    enforcement.KeyRecord
		}{
			{"bearer", "GET", "/forecast/paris", active, viaBearer, activeRec},
			{"x-api-key", "GET", "/forecast/lyon", active, viaHeader, activeRec},
			{"query parameter", "GET", "/forecast/nice?units=metric", active, viaQuery, activeRec},
			{"post", "POST", "/alerts", active, viaBearer, activeRec},
			{"prefix alone", "GET", "", active, viaBearer, activeRec},
			{"path no template matches", "GET", "/stations/42", active, viaBearer, activeRec},
			{"path that is not UTF-8", "GET", "/forecast/%FF", active, viaBearer, activeRec},
			{"rotated out, within grace", "GET", "/forecast/paris", inGrace, viaBearer, inGraceRec},
			{"method permitted", "GET", "/forecast/paris", getOnly, viaHeader, getOnlyRec},
			{"route permitted", "GET", "/alerts", alertsOnly, viaBearer, alertsOnlyRec},
			{"subscription past due", "GET", "/alerts", pastDue, viaBearer, pastDueRec},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := f.do(t, tt.method, "/weather"+tt.path, tt.key, tt.via)
				got := f.checkAdmitted(t, res)
				path, query, _ := strings.Cut(tt.path, "?")
				if want := "/weather" + path; got.Path != want {
					t.Errorf("upstream path = %q; want %q", got.Path, want)
				}
				if got.Query != query {
					t.Errorf("upstream query = %q; want %q", got.Query, query)
				}
				if got.Method != tt.method {
					t.Errorf("upstream method = %q; want %q", got.Method, tt.method)
				}
				if v := res.header.Get("RateLimit-Policy"); v != "" {
					t.Errorf("RateLimit-Policy = %q; want none for a subscription without limits", v)
				}
				rel := unescape(t, path)
				if rel == "" {
					rel = "/"
				}
				f.expect(eventSummary{
					Subject: tt.rec.SubscriptionID, KeyID: tt.rec.KeyID, Method: tt.method,
					Route: routeOf(rel), Path: strings.ToValidUTF8(rel, "\uFFFD"), Status: 200, Units: "2.5",
				})
			})
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		// rate_per_second 5 admits a burst of 5; the 6th is refused.
		for i := 1; i <= 6; i++ {
			res := f.do(t, "GET", "/weather/alerts", limited, viaBearer)
			ev := eventSummary{
				Subject: subs.limited, KeyID: limitedRec.KeyID, Method: "GET", Route: "/alerts", Path: "/alerts",
			}
			if i <= 5 {
				f.checkAdmitted(t, res)
				ev.Status, ev.Units = 200, "2.5"
				f.expect(ev)
				if got, want := res.header.Get("RateLimit-Policy"), `"second";q=5;w=1`; got != want {
					t.Errorf("request %d: RateLimit-Policy = %q; want %q", i, got, want)
				}
				if got, want := res.header.Get("RateLimit-Remaining"), strconv.Itoa(5-i); got != want {
					t.Errorf("request %d: RateLimit-Remaining = %q; want %q", i, got, want)
				}
				continue
			}
			f.checkRefused(t, res, http.StatusTooManyRequests, "rate-limited")
			ev.Status, ev.Refusal, ev.Units = 429, "rate_limited", "0"
			f.expect(ev)
			if got := res.header.Get("Retry-After"); got != "1" {
				t.Errorf("Retry-After = %q; want 1", got)
			}
			if got, want := res.header.Get("RateLimit-Policy"), `"second";q=5;w=1`; got != want {
				t.Errorf("RateLimit-Policy = %q; want %q", got, want)
			}
			if got, want := res.header.Get("RateLimit"), `"second";r=0;t=1`; got != want {
				t.Errorf("RateLimit = %q; want %q", got, want)
			}
		}
	})

	t.Run("events", func(t *testing.T) {
		f.mu.Lock()
		want := slices.Clone(f.events)
		f.mu.Unlock()
		// The events arrive while the gateway runs ...
		testenv.Deadline(t, wait, func() error {
			if n := len(f.kafka.ReadAll(t, f.topic)); n < len(want) {
				return fmt.Errorf("%d events in %s; want %d", n, f.topic, len(want))
			}
			return nil
		})
		// ... and stopping it, which flushes the emitter, adds none.
		if err := f.gw.Stop(); err != nil {
			t.Fatalf("stop veil gateway: %v\n%s", err, f.gw.Stderr())
		}
		f.checkEvents(t, want)
	})
}

// routeOf is the template testRoutes give the relative path rel, spelled
// out here rather than asked of the code under test.
func routeOf(rel string) string {
	city, ok := strings.CutPrefix(rel, "/forecast/")
	switch {
	case rel == "/alerts":
		return "/alerts"
	case ok && city != "" && !strings.Contains(city, "/"):
		return "/forecast/{city}"
	default:
		return "/*"
	}
}

func unescape(t *testing.T, p string) string {
	t.Helper()
	s, err := url.PathUnescape(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkEvents reads every event in the topic and holds them to want: each
// decodes as a usage event, and they are exactly want, in any order.
func (f *fixture) checkEvents(t *testing.T, want []eventSummary) {
	t.Helper()
	recs := f.kafka.ReadAll(t, f.topic)
	var got []eventSummary
	ids := map[string]bool{}
	now := time.Now()
	for _, r := range recs {
		e, err := usage.Decode(r.Value)
		if err != nil {
			if strings.Contains(err.Error(), "refusal") {
				t.Errorf("usage.Decode(%s) = %v; the decoder does not take data.refusal yet", r.Value, err)
			} else {
				t.Errorf("usage.Decode(%s) = %v; want a valid event", r.Value, err)
			}
			continue
		}
		if err := e.CheckTime(now, usage.DefaultMaxFuture, usage.DefaultLateWindow); err != nil {
			t.Errorf("event %s: CheckTime = %v", r.Value, err)
		}
		if e.Type != usage.TypeAPIRequest || e.Source != f.source || e.Data.APIID != testAPI {
			t.Errorf("event %s: type, source, api_id = %s, %s, %s; want %s, %s, %s",
				r.Value, e.Type, e.Source, e.Data.APIID, usage.TypeAPIRequest, f.source, testAPI)
		}
		if e.Subject == anonymousSubject {
			// Spread over the partitions, not keyed by the subject.
			if !strings.HasPrefix(string(r.Key), anonymousSubject+"/") {
				t.Errorf("event %s: Kafka key %q; want anonymous/<random>", r.Value, r.Key)
			}
		} else if string(r.Key) != e.Subject {
			t.Errorf("event %s: Kafka key %q; want the subject %q", r.Value, r.Key, e.Subject)
		}
		if ids[e.ID] {
			t.Errorf("event id %s appears twice", e.ID)
		}
		ids[e.ID] = true
		got = append(got, eventSummary{
			Subject: e.Subject, KeyID: e.Data.KeyID, Method: e.Data.Method, Route: e.Data.Route, Path: e.Data.Path,
			Status: int(e.Data.Status), Refusal: e.Data.Refusal, Units: e.Data.Units.String(),
		})
	}
	sortEvents := func(s []eventSummary) {
		slices.SortFunc(s, func(a, b eventSummary) int { return strings.Compare(a.String(), b.String()) })
	}
	sortEvents(got)
	sortEvents(want)
	if len(recs) != len(want) {
		t.Errorf("%d events in the topic; want %d, one per request", len(recs), len(want))
	}
	if !slices.Equal(got, want) {
		var b strings.Builder
		for _, e := range want {
			if i := slices.Index(got, e); i >= 0 {
				got = slices.Delete(got, i, i+1)
			} else {
				fmt.Fprintf(&b, "\n  missing:    %s", e)
			}
		}
		for _, e := range got {
			fmt.Fprintf(&b, "\n  unexpected: %s", e)
		}
		t.Errorf("events differ from the requests made:%s", b.String())
	}
}

// TestGatewaySeesChangesWithinOneSecond writes records from another Redis
// client while the gateway has them in its client-side cache: Redis's
// invalidation must bring each change to the gateway within a second.
func TestGatewaySeesChangesWithinOneSecond(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sub, key, rec := activeKey(t, f.store)
	// Twice: the second call is answered from the cache the first filled.
	for range 2 {
		f.checkAdmitted(t, f.do(t, "GET", "/weather/alerts", key, viaBearer))
	}

	steps := []struct {
		name    string
		change  func() error
		status  int
		problem string
	}{
		{"quota block", func() error { return f.store.PutBlock(t.Context(), sub, time.Now().Add(time.Hour)) }, 429, "quota-exhausted"},
		{"block lifted", func() error { return f.store.DeleteBlock(t.Context(), sub) }, 200, ""},
		{"key revoked", func() error {
			r := rec
			r.Status, r.Version = enforcement.KeyRevoked, rec.Version+1
			applied, err := f.store.PutKey(t.Context(), r)
			if err == nil && !applied {
				err = errors.New("PutKey did not apply version 2")
			}
			return err
		}, 401, "key-revoked"},
	}
	for _, s := range steps {
		start := time.Now()
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		var (
			took time.Duration
			last result
		)
		testenv.Deadline(t, 10*time.Second, func() error {
			last = f.do(t, "GET", "/weather/alerts", key, viaBearer)
			if last.status != s.status {
				return fmt.Errorf("after %s: status %d; want %d", s.name, last.status, s.status)
			}
			took = time.Since(start)
			return nil
		})
		if took > time.Second {
			t.Errorf("%s reached the gateway %s after the write; want within 1s", s.name, took)
		}
		t.Logf("%s reached the gateway %s after the write", s.name, took)
		if s.problem != "" {
			f.checkRefused(t, last, s.status, s.problem)
		}
	}
}

// TestGatewayMetrics reads /metrics (the veil_metrics handler) after a
// few requests.
func TestGatewayMetrics(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, key, _ := activeKey(t, f.store)
	f.checkRefused(t, f.do(t, "GET", "/weather/alerts", "", viaNone), 401, "missing-key")
	for range 2 {
		f.checkRefused(t, f.do(t, "GET", "/weather/alerts", "hunter2", viaHeader), 401, "invalid-key")
	}
	f.checkAdmitted(t, f.do(t, "GET", "/weather/alerts", key, viaBearer))

	want := map[string]string{
		"veil_gateway_requests_total":                                "4",
		`veil_gateway_refused_total{reason="missing_key"}`:           "1",
		`veil_gateway_refused_total{reason="invalid_key"}`:           "2",
		`veil_gateway_request_duration_seconds_count`:                "",
		`veil_gateway_redis_errors_total`:                            "0",
		`veil_gateway_refused_total{reason="subscription_inactive"}`: "absent",
	}
	// An admitted call is counted once its answer is written, which the
	// client can see first: poll.
	testenv.Deadline(t, wait, func() error {
		resp, err := f.client.Get(f.url + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /metrics = %d; want 200", resp.StatusCode)
		}
		got := map[string]string{}
		for line := range strings.Lines(string(body)) {
			if name, value, ok := strings.Cut(strings.TrimSpace(line), " "); ok && !strings.HasPrefix(name, "#") {
				got[name] = value
			}
		}
		for name, w := range want {
			v, ok := got[name]
			switch {
			case w == "absent" && ok:
				return fmt.Errorf("/metrics has %s %s; want none", name, v)
			case w == "absent":
			case !ok:
				return fmt.Errorf("/metrics has no %s:\n%s", name, body)
			case w != "" && v != w:
				return fmt.Errorf("/metrics %s = %s; want %s", name, v, w)
			}
		}
		return nil
	})
}
