package middleware_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/testenv"
)

// idemSetup is an Idempotency in front of a handler that counts its calls.
// The scope is the X-Subject header.
type idemSetup struct {
	handler http.Handler
	calls   atomic.Int64
	set     *metrics.Set
	// respond writes the response of call n (1-based); default 201 with the
	// call number and the request body.
	respond func(w http.ResponseWriter, r *http.Request, n int64)
}

func setupIdempotency(t *testing.T, client rueidis.Client) *idemSetup {
	t.Helper()
	s := &idemSetup{set: metrics.NewSet()}
	idem, err := middleware.NewIdempotency(middleware.IdempotencyConfig{
		Client: client, Prefix: "veil:test:idem:" + testenv.Suffix() + ":",
		Scope:  func(r *http.Request) string { return r.Header.Get("X-Subject") },
		Logger: testenv.Logger(t), Metrics: s.set,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.respond = func(w http.ResponseWriter, r *http.Request, n int64) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", fmt.Sprintf("/apis/%d", n))
		w.Header().Set("X-Not-Replayed", "1")
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, `{"call":%d,"echo":%q}`, n, body)
	}
	s.handler = idem.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.respond(w, r, s.calls.Add(1))
	}))
	return s
}

// failFirst makes the handler's first call run fail instead of
// responding; later calls respond as before.
func (s *idemSetup) failFirst(fail func(w http.ResponseWriter)) {
	respond := s.respond
	s.respond = func(w http.ResponseWriter, r *http.Request, n int64) {
		if n == 1 {
			fail(w)
			return
		}
		respond(w, r, n)
	}
}

func post(h http.Handler, subject, key, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/apis", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if subject != "" {
		req.Header.Set("X-Subject", subject)
	}
	if key != "" {
		req.Header.Set(middleware.HeaderIdempotencyKey, key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func problemType(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("decode problem %q: %v", rec.Body.String(), err)
	}
	typ, _ := body["type"].(string)
	return strings.TrimPrefix(typ, problem.TypeBase)
}

func TestIdempotencyReplay(t *testing.T) {
	s := setupIdempotency(t, testenv.Redis(t))
	first := post(s.handler, "alice", "key-1", `{"name":"weather"}`)
	if first.Code != http.StatusCreated {
		t.Fatalf("first: status = %d; want 201", first.Code)
	}
	if got := first.Header().Get(middleware.HeaderIdempotentReplayed); got != "" {
		t.Errorf("first: Idempotent-Replayed = %q; want none", got)
	}
	if first.Body.String() != `{"call":1,"echo":"{\"name\":\"weather\"}"}` {
		t.Errorf("first: body = %s; want the handler to read the whole request body", first.Body.String())
	}

	for i := range 2 {
		again := post(s.handler, "alice", "key-1", `{"name":"weather"}`)
		if again.Code != first.Code || again.Body.String() != first.Body.String() {
			t.Errorf("replay %d = %d %s; want %d %s", i+1, again.Code, again.Body.String(), first.Code, first.Body.String())
		}
		if got := again.Header().Get(middleware.HeaderIdempotentReplayed); got != "true" {
			t.Errorf("replay %d: Idempotent-Replayed = %q; want true", i+1, got)
		}
		for _, h := range []string{"Content-Type", "Location"} {
			if again.Header().Get(h) != first.Header().Get(h) {
				t.Errorf("replay %d: %s = %q; want %q", i+1, h, again.Header().Get(h), first.Header().Get(h))
			}
		}
		if got := again.Header().Get("X-Not-Replayed"); got != "" {
			t.Errorf("replay %d: X-Not-Replayed = %q; want headers outside the allow-list dropped", i+1, got)
		}
	}
	if n := s.calls.Load(); n != 1 {
		t.Fatalf("handler calls = %d; want 1", n)
	}
	text := metricsText(s.set)
	for _, want := range []string{
		`veil_controlplane_idempotency_requests_total{outcome="stored"} 1`,
		`veil_controlplane_idempotency_requests_total{outcome="replayed"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s:\n%s", want, text)
		}
	}
}

func TestIdempotencyDifferentBody(t *testing.T) {
	s := setupIdempotency(t, testenv.Redis(t))
	if code := post(s.handler, "alice", "key-1", `{"name":"weather"}`).Code; code != http.StatusCreated {
		t.Fatalf("first: status = %d; want 201", code)
	}
	rec := post(s.handler, "alice", "key-1", `{"name":"maps"}`)
	if rec.Code != http.StatusUnprocessableEntity || problemType(t, rec) != "idempotency-key-reused" {
		t.Fatalf("reused key: %d %s; want 422 idempotency-key-reused", rec.Code, rec.Body.String())
	}
	if n := s.calls.Load(); n != 1 {
		t.Fatalf("handler calls = %d; want 1", n)
	}
}

func TestIdempotencyInFlight(t *testing.T) {
	s := setupIdempotency(t, testenv.Redis(t))
	entered, release := make(chan struct{}), make(chan struct{})
	respond := s.respond
	s.respond = func(w http.ResponseWriter, r *http.Request, n int64) {
		if n == 1 {
			close(entered)
			<-release
		}
		respond(w, r, n)
	}

	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- post(s.handler, "alice", "key-1", `{}`) }()
	<-entered

	dup := post(s.handler, "alice", "key-1", `{}`)
	if dup.Code != http.StatusConflict || problemType(t, dup) != "idempotency-key-in-flight" {
		t.Errorf("duplicate in flight: %d %s; want 409 idempotency-key-in-flight", dup.Code, dup.Body.String())
	}
	if got := dup.Header().Get("Retry-After"); got != "1" {
		t.Errorf("duplicate in flight: Retry-After = %q; want 1", got)
	}
	other := post(s.handler, "alice", "key-1", `{"other":true}`)
	if other.Code != http.StatusUnprocessableEntity {
		t.Errorf("other body in flight: status = %d; want 422", other.Code)
	}

	close(release)
	first := <-done
	if first.Code != http.StatusCreated {
		t.Fatalf("first: status = %d; want 201", first.Code)
	}
	replay := post(s.handler, "alice", "key-1", `{}`)
	if replay.Code != http.StatusCreated || replay.Header().Get(middleware.HeaderIdempotentReplayed) != "true" {
		t.Errorf("after completion: %d replayed=%q; want 201 replayed", replay.Code, replay.Header().Get(middleware.HeaderIdempotentReplayed))
	}
	if n := s.calls.Load(); n != 1 {
		t.Fatalf("handler calls = %d; want 1", n)
	}
}

func TestIdempotencyServerErrorNotStored(t *testing.T) {
	s := setupIdempotency(t, testenv.Redis(t))
	s.failFirst(func(w http.ResponseWriter) { http.Error(w, "upstream down", http.StatusServiceUnavailable) })
	if code := post(s.handler, "alice", "key-1", `{}`).Code; code != http.StatusServiceUnavailable {
		t.Fatalf("first: status = %d; want 503", code)
	}
	retry := post(s.handler, "alice", "key-1", `{}`)
	if retry.Code != http.StatusCreated || retry.Header().Get(middleware.HeaderIdempotentReplayed) != "" {
		t.Fatalf("retry: %d replayed=%q; want 201 from the handler", retry.Code, retry.Header().Get(middleware.HeaderIdempotentReplayed))
	}
	if n := s.calls.Load(); n != 2 {
		t.Fatalf("handler calls = %d; want 2", n)
	}
}

// A 429 says "not now", like a 5xx: the same key later runs the handler
// (a replay would also lose the Retry-After of the moment).
func TestIdempotencyTooManyRequestsNotStored(t *testing.T) {
	s := setupIdempotency(t, testenv.Redis(t))
	s.failFirst(func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "30")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	})
	if code := post(s.handler, "alice", "key-1", `{}`).Code; code != http.StatusTooManyRequests {
		t.Fatalf("first: status = %d; want 429", code)
	}
	retry := post(s.handler, "alice", "key-1", `{}`)
	if retry.Code != http.StatusCreated || retry.Header().Get(middleware.HeaderIdempotentReplayed) != "" {
		t.Fatalf("retry: %d replayed=%q; want 201 from the handler", retry.Code, retry.Header().Get(middleware.HeaderIdempotentReplayed))
	}
}

func TestIdempotencyPanicReleasesLock(t *testing.T) {
	s := setupIdempotency(t, testenv.Redis(t))
	s.failFirst(func(http.ResponseWriter) { panic("boom") })
	if p := catchPanic(func() { post(s.handler, "alice", "key-1", `{}`) }); p != "boom" {
		t.Fatalf("panic = %v; want boom passed on", p)
	}
	if code := post(s.handler, "alice", "key-1", `{}`).Code; code != http.StatusCreated {
		t.Fatalf("retry after panic: status = %d; want 201 (lock released)", code)
	}
}

func TestIdempotencyScopes(t *testing.T) {
	s := setupIdempotency(t, testenv.Redis(t))
	a := post(s.handler, "alice", "key-1", `{}`)
	b := post(s.handler, "bob", "key-1", `{}`)
	if a.Code != http.StatusCreated || b.Code != http.StatusCreated || b.Header().Get(middleware.HeaderIdempotentReplayed) != "" {
		t.Fatalf("two subjects, one key: %d, %d replayed=%q; want both to run", a.Code, b.Code, b.Header().Get(middleware.HeaderIdempotentReplayed))
	}
	if a.Body.String() == b.Body.String() {
		t.Errorf("bob got alice's response %s", b.Body.String())
	}
	if n := s.calls.Load(); n != 2 {
		t.Fatalf("handler calls = %d; want 2", n)
	}
}

func TestIdempotencyPassThrough(t *testing.T) {
	s := setupIdempotency(t, testenv.Redis(t))
	tests := []struct {
		name                 string
		method, subject, key string
	}{
		{"no key", http.MethodPost, "alice", ""},
		{"no scope", http.MethodPost, "", "key-1"},
		{"not POST", http.MethodPut, "alice", "key-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.calls.Load()
			for range 2 {
				req := httptest.NewRequest(tt.method, "/apis", strings.NewReader(`{}`))
				if tt.subject != "" {
					req.Header.Set("X-Subject", tt.subject)
				}
				if tt.key != "" {
					req.Header.Set(middleware.HeaderIdempotencyKey, tt.key)
				}
				rec := httptest.NewRecorder()
				s.handler.ServeHTTP(rec, req)
				if rec.Header().Get(middleware.HeaderIdempotentReplayed) != "" {
					t.Fatalf("replayed; want the handler to run")
				}
			}
			if got := s.calls.Load() - before; got != 2 {
				t.Fatalf("handler calls = %d; want 2", got)
			}
		})
	}
}

func TestIdempotencyInvalidRequests(t *testing.T) {
	s := setupIdempotency(t, testenv.Redis(t))
	tests := []struct {
		name       string
		keys       []string
		body       string
		wantStatus int
		wantType   string
	}{
		{"empty key", []string{""}, `{}`, 400, "invalid-idempotency-key"},
		{"too long", []string{strings.Repeat("k", 256)}, `{}`, 400, "invalid-idempotency-key"},
		{"control character", []string{"key\x01"}, `{}`, 400, "invalid-idempotency-key"},
		{"non-ascii", []string{"clé"}, `{}`, 400, "invalid-idempotency-key"},
		{"two keys", []string{"a", "b"}, `{}`, 400, "invalid-idempotency-key"},
		{"body too large", []string{"big"}, strings.Repeat("x", middleware.MaxIdempotentRequestBytes+1), 413, "request-too-large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/apis", strings.NewReader(tt.body))
			req.Header.Set("X-Subject", "alice")
			req.Header[middleware.HeaderIdempotencyKey] = tt.keys
			rec := httptest.NewRecorder()
			s.handler.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus || problemType(t, rec) != tt.wantType {
				t.Errorf("status, type = %d, %s; want %d, %s", rec.Code, problemType(t, rec), tt.wantStatus, tt.wantType)
			}
		})
	}
	if n := s.calls.Load(); n != 0 {
		t.Fatalf("handler calls = %d; want 0", n)
	}
	// The longest valid key and the largest body still pass.
	if rec := post(s.handler, "alice", strings.Repeat("k", 255), strings.Repeat("x", middleware.MaxIdempotentRequestBytes)); rec.Code != http.StatusCreated {
		t.Fatalf("limits: status = %d; want 201", rec.Code)
	}
}

func TestIdempotencyRedisDown(t *testing.T) {
	s := setupIdempotency(t, unreachableRedis(t))
	rec := post(s.handler, "alice", "key-1", `{}`)
	if rec.Code != http.StatusServiceUnavailable || problemType(t, rec) != "idempotency-unavailable" {
		t.Fatalf("Redis down: %d %s; want 503 idempotency-unavailable", rec.Code, rec.Body.String())
	}
	if n := s.calls.Load(); n != 0 {
		t.Fatalf("handler calls = %d; want 0: running without the key's protection could duplicate", n)
	}
}

func TestIdempotencyStoredWithTTL(t *testing.T) {
	client := testenv.Redis(t)
	prefix := "veil:test:idem:" + testenv.Suffix() + ":"
	idem, err := middleware.NewIdempotency(middleware.IdempotencyConfig{
		Client: client, Prefix: prefix, TTL: time.Hour,
		Scope: func(*http.Request) string { return "alice" },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := idem.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	if code := post(h, "", "key-1", `{}`).Code; code != http.StatusAccepted {
		t.Fatalf("status = %d; want 202", code)
	}
	keys, err := client.Do(t.Context(), client.B().Keys().Pattern(prefix+"*").Build()).AsStrSlice()
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys under %s = %v, %v; want one", prefix, keys, err)
	}
	ttl, err := client.Do(t.Context(), client.B().Pttl().Key(keys[0]).Build()).AsInt64()
	if err != nil || ttl <= 59*60*1000 || ttl > 60*60*1000 {
		t.Fatalf("PTTL = %d, %v; want about an hour", ttl, err)
	}
}

func TestNewIdempotencyNeedsClientAndScope(t *testing.T) {
	if _, err := middleware.NewIdempotency(middleware.IdempotencyConfig{Scope: func(*http.Request) string { return "" }}); err == nil {
		t.Error("NewIdempotency(no client) = nil error; want an error")
	}
	if _, err := middleware.NewIdempotency(middleware.IdempotencyConfig{Client: testenv.Redis(t)}); err == nil {
		t.Error("NewIdempotency(no scope) = nil error; want an error")
	}
}

// TestIdempotencyWithholdsSecrets: a response marked no-store (a secret
// shown once) is not kept in Redis; a repeat runs nothing and says so.
func TestIdempotencyWithholdsSecrets(t *testing.T) {
	client := testenv.Redis(t)
	prefix := "veil:test:idem:" + testenv.Suffix() + ":"
	idem, err := middleware.NewIdempotency(middleware.IdempotencyConfig{
		Client: client, Prefix: prefix, Scope: func(*http.Request) string { return "alice" },
	})
	if err != nil {
		t.Fatal(err)
	}
	const secret = "veil_test_not-to-be-kept-0123456789"
	var calls atomic.Int64
	h := idem.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", fmt.Sprintf("/keys/%d", n))
		w.Header().Set("Cache-Control", "private, no-store")
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, `{"key":%q}`, secret)
	}))
	first := post(h, "", "key-1", `{}`)
	if first.Code != http.StatusCreated || !strings.Contains(first.Body.String(), secret) {
		t.Fatalf("first = %d %s; want 201 with the secret", first.Code, first.Body)
	}
	again := post(h, "", "key-1", `{}`)
	if again.Code != http.StatusConflict || problemType(t, again) != "idempotency-response-withheld" ||
		again.Header().Get("Location") != "/keys/1" || strings.Contains(again.Body.String(), secret) {
		t.Fatalf("repeat = %d %v %s; want 409 idempotency-response-withheld with Location /keys/1 and no secret", again.Code, again.Header(), again.Body)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times; want 1", n)
	}
	keys, err := client.Do(t.Context(), client.B().Keys().Pattern(prefix+"*").Build()).AsStrSlice()
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys under %s = %v, %v; want one", prefix, keys, err)
	}
	v, err := client.Do(t.Context(), client.B().Get().Key(keys[0]).Build()).ToString()
	// The body would be stored base64-encoded under "body".
	if err != nil || strings.Contains(v, secret) || strings.Contains(v, `"body"`) || !strings.Contains(v, `"withheld":true`) {
		t.Fatalf("stored entry = %s, %v; want one withheld without a body", v, err)
	}
}
