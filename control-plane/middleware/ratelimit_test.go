package middleware_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/testenv"
)

// limited returns a handler limited by rl and the number of calls that got
// through; the key is the X-Key header.
func limited(rl *middleware.RateLimiter, name string, rate middleware.Rate) (http.Handler, *int) {
	var calls int
	h := rl.Middleware(name, rate, func(r *http.Request) string { return r.Header.Get("X-Key") })(
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { calls++; w.WriteHeader(http.StatusNoContent) }))
	return h, &calls
}

func newRateLimiter(t *testing.T, client rueidis.Client, prefix string, set *metrics.Set, failOpen bool) *middleware.RateLimiter {
	t.Helper()
	rl, err := middleware.NewRateLimiter(middleware.RateLimitConfig{
		Client: client, Prefix: prefix, FailOpen: failOpen, Logger: testenv.Logger(t), Metrics: set,
	})
	if err != nil {
		t.Fatal(err)
	}
	return rl
}

func call(h http.Handler, key string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/apis", nil)
	if key != "" {
		req.Header.Set("X-Key", key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestRateLimitBurstThen429(t *testing.T) {
	set := metrics.NewSet()
	rl := newRateLimiter(t, testenv.Redis(t), "veil:test:rl:"+testenv.Suffix()+":", set, true)
	// One request every 20s, three at once.
	h, calls := limited(rl, "ip", middleware.Rate{Limit: 3, Period: time.Minute, Burst: 3})

	for i, wantRemaining := range []string{"2", "1", "0"} {
		rec := call(h, "198.51.100.1")
		if rec.Code != http.StatusNoContent {
			t.Fatalf("request %d: status = %d; want 204 within the burst", i+1, rec.Code)
		}
		if got := rec.Header().Get("RateLimit-Limit"); got != "3" {
			t.Errorf("request %d: RateLimit-Limit = %q; want 3", i+1, got)
		}
		if got := rec.Header().Get("RateLimit-Remaining"); got != wantRemaining {
			t.Errorf("request %d: RateLimit-Remaining = %q; want %s", i+1, got, wantRemaining)
		}
		if got := rec.Header().Get("Retry-After"); got != "" {
			t.Errorf("request %d: Retry-After = %q; want none on an allowed request", i+1, got)
		}
	}

	rec := call(h, "198.51.100.1")
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("request 4: status = %d; want 429", rec.Code)
	}
	if *calls != 3 {
		t.Errorf("handler calls = %d; want 3", *calls)
	}
	retry, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || retry <= 0 || retry > 20 {
		t.Errorf("Retry-After = %q; want 1..20 seconds", rec.Header().Get("Retry-After"))
	}
	if got := rec.Header().Get("RateLimit-Limit"); got != "3" {
		t.Errorf("429 RateLimit-Limit = %q; want 3", got)
	}
	if got := rec.Header().Get("RateLimit-Remaining"); got != "0" {
		t.Errorf("429 RateLimit-Remaining = %q; want 0", got)
	}
	reset, err := strconv.Atoi(rec.Header().Get("RateLimit-Reset"))
	if err != nil || reset < retry || reset > 60 {
		t.Errorf("429 RateLimit-Reset = %q; want %d..60 seconds", rec.Header().Get("RateLimit-Reset"), retry)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body["type"] != problem.TypeBase+"rate-limited" || body["status"] != float64(429) {
		t.Errorf("problem = %v; want type rate-limited, status 429", body)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/problem+json" {
		t.Errorf("Content-Type = %q; want application/problem+json", got)
	}
	if text := metricsText(set); !strings.Contains(text, `veil_controlplane_ratelimit_rejected_total{limiter="ip"} 1`) {
		t.Errorf("metrics lack the rejection:\n%s", text)
	}
}

func TestRateLimitReplicasShareBudget(t *testing.T) {
	prefix := "veil:test:rl:" + testenv.Suffix() + ":"
	rate := middleware.Rate{Limit: 4, Period: time.Hour}
	// Two replicas: separate limiters with their own Redis connections.
	a, callsA := limited(newRateLimiter(t, testenv.Redis(t), prefix, nil, true), "token", rate)
	b, callsB := limited(newRateLimiter(t, testenv.Redis(t), prefix, nil, true), "token", rate)

	var allowed, refused int
	for i := range 8 {
		h := a
		if i%2 == 1 {
			h = b
		}
		switch code := call(h, "org/alice").Code; code {
		case http.StatusNoContent:
			allowed++
		case http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("request %d: status = %d; want 204 or 429", i+1, code)
		}
	}
	if allowed != 4 || refused != 4 || *callsA+*callsB != 4 {
		t.Fatalf("allowed, refused, calls = %d, %d, %d; want 4, 4, 4 (one budget for both replicas)", allowed, refused, *callsA+*callsB)
	}
}

func TestRateLimitKeysIndependent(t *testing.T) {
	rl := newRateLimiter(t, testenv.Redis(t), "veil:test:rl:"+testenv.Suffix()+":", nil, true)
	rate := middleware.Rate{Limit: 1, Period: time.Hour}
	ip, _ := limited(rl, "ip", rate)
	token, _ := limited(rl, "token", rate)

	steps := []struct {
		h    http.Handler
		key  string
		want int
	}{
		{ip, "a", 204},
		{ip, "a", 429},
		{ip, "b", 204},    // another key has its own budget
		{token, "a", 204}, // another limiter too
		{ip, "", 204},     // an empty key is not limited
		{ip, "", 204},
	}
	for i, s := range steps {
		rec := call(s.h, s.key)
		if rec.Code != s.want {
			t.Errorf("step %d (key %q): status = %d; want %d", i+1, s.key, rec.Code, s.want)
		}
		if s.key == "" && rec.Header().Get("RateLimit-Limit") != "" {
			t.Errorf("step %d: unlimited request got RateLimit-Limit %q", i+1, rec.Header().Get("RateLimit-Limit"))
		}
	}
}

func TestRateLimitZeroRateDisables(t *testing.T) {
	rl := newRateLimiter(t, testenv.Redis(t), "veil:test:rl:"+testenv.Suffix()+":", nil, true)
	h, calls := limited(rl, "ip", middleware.Rate{})
	for range 3 {
		if rec := call(h, "a"); rec.Code != http.StatusNoContent || rec.Header().Get("RateLimit-Limit") != "" {
			t.Fatalf("status, RateLimit-Limit = %d, %q; want 204 and no header", rec.Code, rec.Header().Get("RateLimit-Limit"))
		}
	}
	if *calls != 3 {
		t.Fatalf("calls = %d; want 3", *calls)
	}
}

// unreachableRedis returns a client for a port nothing listens on.
func unreachableRedis(t *testing.T) rueidis.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	// ForceSingleClient returns a client although the first dial fails.
	c, _ := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{addr}, ForceSingleClient: true, DisableRetry: true, DisableCache: true,
		Dialer: net.Dialer{Timeout: time.Second},
	})
	if c == nil {
		t.Fatalf("no client for %s", addr)
	}
	t.Cleanup(c.Close)
	return c
}

func TestRateLimitRedisDown(t *testing.T) {
	client := unreachableRedis(t)
	t.Run("fail open", func(t *testing.T) {
		set := metrics.NewSet()
		h, calls := limited(newRateLimiter(t, client, "", set, true), "ip", middleware.Rate{Limit: 1, Period: time.Hour})
		for i := range 3 {
			if code := call(h, "a").Code; code != http.StatusNoContent {
				t.Fatalf("request %d: status = %d; want 204 with Redis down and FailOpen", i+1, code)
			}
		}
		if *calls != 3 {
			t.Errorf("calls = %d; want 3", *calls)
		}
		if text := metricsText(set); !strings.Contains(text, "veil_controlplane_ratelimit_errors_total 3") {
			t.Errorf("metrics lack 3 errors:\n%s", text)
		}
	})
	t.Run("fail closed", func(t *testing.T) {
		h, calls := limited(newRateLimiter(t, client, "", nil, false), "ip", middleware.Rate{Limit: 1, Period: time.Hour})
		rec := call(h, "a")
		if rec.Code != http.StatusServiceUnavailable || *calls != 0 {
			t.Fatalf("status, calls = %d, %d; want 503, 0", rec.Code, *calls)
		}
		if rec.Header().Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
	})
}

func TestNewRateLimiterNeedsClient(t *testing.T) {
	if _, err := middleware.NewRateLimiter(middleware.RateLimitConfig{}); err == nil {
		t.Fatal("NewRateLimiter(no client) = nil error; want an error")
	}
}

func TestRateLimitRefills(t *testing.T) {
	client := testenv.Redis(t)
	prefix := "veil:test:rl:" + testenv.Suffix() + ":"
	rl := newRateLimiter(t, client, prefix, nil, true)
	// One request every 100ms, no burst beyond one.
	h, _ := limited(rl, "ip", middleware.Rate{Limit: 10, Period: time.Second, Burst: 1})
	if code := call(h, "a").Code; code != http.StatusNoContent {
		t.Fatalf("first request: status = %d; want 204", code)
	}
	if code := call(h, "a").Code; code != http.StatusTooManyRequests {
		t.Fatalf("second request: status = %d; want 429", code)
	}
	// The state expires with the budget: nothing lingers in Redis.
	ttl, err := client.Do(t.Context(), client.B().Pttl().Key(prefix+"ip:a").Build()).AsInt64()
	if err != nil || ttl <= 0 || ttl > 1000 {
		t.Errorf("PTTL(%sip:a) = %d, %v; want 1..1000 ms", prefix, ttl, err)
	}
	testenv.Deadline(t, 3*time.Second, func() error {
		if code := call(h, "a").Code; code != http.StatusNoContent {
			return fmt.Errorf("status = %d; want 204 once the budget refilled", code)
		}
		return nil
	})
}
