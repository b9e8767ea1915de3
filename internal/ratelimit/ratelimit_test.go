package ratelimit_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/ratelimit"
	"github.com/veil-platform/veil/internal/testenv"
)

// setup returns a limiter on the test Redis and a key prefix unique to the
// test, with a hash tag so that the test's limits share a slot.
func setup(t testing.TB, cfg ratelimit.Config) (*ratelimit.Limiter, string) {
	t.Helper()
	if cfg.Client == nil {
		cfg.Client = testenv.Redis(t)
		// These tests assert Redis's decisions: on a loaded machine a
		// first call (connection, script load) can pass the 50 ms
		// default and give a degraded decision instead. The tests of
		// the timeout bring their own client and Timeout.
		if cfg.Timeout == 0 {
			cfg.Timeout = time.Second
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = testenv.Logger(t)
	}
	l, err := ratelimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, "veil:test:rl:{" + testenv.Suffix() + "}:"
}

// allow calls l.Allow and fails the test on an error or a degraded
// decision.
func allow(t testing.TB, l *ratelimit.Limiter, limits ...ratelimit.Limit) ratelimit.Decision {
	t.Helper()
	d, err := l.Allow(t.Context(), time.Now(), limits...)
	if err != nil {
		t.Fatalf("Allow(%v) error: %v", limits, err)
	}
	if d.Degraded {
		t.Fatalf("Allow(%v) = degraded decision %+v; want one from Redis", limits, d)
	}
	return d
}

func TestAllowSingleLimit(t *testing.T) {
	// 20 per 2s refills one request every 100ms: long next to the few
	// milliseconds a burst of calls takes, short enough to wait for.
	const rate, period = 20, 2 * time.Second
	const interval = period / rate
	for _, tc := range []struct {
		name      string
		burst     int
		wantBurst int
	}{
		{"burst defaults to rate", 0, 20},
		{"burst below rate", 5, 5},
		{"burst above rate", 30, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, prefix := setup(t, ratelimit.Config{})
			lim := ratelimit.Limit{Key: prefix + "s", Rate: rate, Period: period, Burst: tc.burst}

			start := time.Now()
			admitted := 0
			var d ratelimit.Decision
			for range 2 * tc.wantBurst {
				if d = allow(t, l, lim); !d.Allowed {
					break
				}
				if admitted == 0 && d.Remaining != tc.wantBurst-1 {
					t.Errorf("first Allow: Remaining = %d; want %d", d.Remaining, tc.wantBurst-1)
				}
				admitted++
			}
			elapsed := time.Since(start)
			if admitted != tc.wantBurst {
				t.Fatalf("admitted %d requests in a burst of %s; want %d", admitted, elapsed, tc.wantBurst)
			}
			if d.Limit != lim || d.Remaining != 0 {
				t.Errorf("refusal: Limit, Remaining = %+v, %d; want %+v, 0", d.Limit, d.Remaining, lim)
			}
			// The first request's budget returns interval after it, and it
			// came at most elapsed ago.
			if d.RetryAfter <= 0 || d.RetryAfter > interval || d.RetryAfter < interval-elapsed {
				t.Errorf("refusal: RetryAfter = %s; want in [%s, %s]", d.RetryAfter, interval-elapsed, interval)
			}
			full := time.Duration(tc.wantBurst) * interval
			if d.Reset > full || d.Reset < full-elapsed {
				t.Errorf("refusal: Reset = %s; want in [%s, %s]", d.Reset, full-elapsed, full)
			}

			// Refused requests consume nothing, so one passes once
			// RetryAfter has passed, and the next is refused again.
			refusedAt := time.Now()
			wait := d.RetryAfter
			testenv.Deadline(t, 5*interval, func() error {
				if d := allow(t, l, lim); !d.Allowed {
					return fmt.Errorf("Allow = refused, RetryAfter %s; want allowed", d.RetryAfter)
				}
				return nil
			})
			if waited := time.Since(refusedAt); waited < wait {
				t.Errorf("allowed again after %s; want no earlier than RetryAfter %s", waited, wait)
			}
			if d := allow(t, l, lim); d.Allowed {
				t.Errorf("Allow right after the refill = allowed, Remaining %d; want refused", d.Remaining)
			}
		})
	}
}

func TestAllowAllOrNothing(t *testing.T) {
	l, prefix := setup(t, ratelimit.Config{})
	wide := ratelimit.Limit{Key: prefix + "wide", Name: "minute", Rate: 100, Period: time.Minute}
	narrow := ratelimit.Limit{Key: prefix + "narrow", Name: "second", Rate: 2, Period: time.Minute}

	for i := range 2 {
		d := allow(t, l, wide, narrow)
		if !d.Allowed || d.Limit != narrow || d.Remaining != 1-i {
			t.Fatalf("Allow(wide, narrow) #%d = %+v; want allowed by narrow with %d remaining", i+1, d, 1-i)
		}
	}
	for i := range 5 {
		d := allow(t, l, wide, narrow)
		if d.Allowed || d.Limit != narrow || d.RetryAfter <= 0 {
			t.Fatalf("Allow(wide, narrow) #%d after narrow ran out = %+v; want refused by narrow", i+3, d)
		}
	}
	// wide paid for the two admitted requests and this one only.
	if d := allow(t, l, wide); !d.Allowed || d.Remaining != 97 {
		t.Errorf("Allow(wide) = allowed %v, Remaining %d; want allowed, 97", d.Allowed, d.Remaining)
	}

	// The other way round: an exhausted first limit spares the second.
	tight := ratelimit.Limit{Key: prefix + "tight", Rate: 1, Period: time.Minute}
	loose := ratelimit.Limit{Key: prefix + "loose", Rate: 10, Period: time.Minute}
	allow(t, l, tight, loose)
	for range 3 {
		if d := allow(t, l, tight, loose); d.Allowed || d.Limit != tight {
			t.Fatalf("Allow(tight, loose) = %+v; want refused by tight", d)
		}
	}
	if d := allow(t, l, loose); d.Remaining != 8 {
		t.Errorf("Allow(loose) Remaining = %d; want 8", d.Remaining)
	}

	// Of two refusing limits, the decision names the one that frees last.
	slow := ratelimit.Limit{Key: prefix + "slow", Rate: 1, Period: time.Hour}
	fast := ratelimit.Limit{Key: prefix + "fast", Rate: 1, Period: time.Second}
	allow(t, l, fast, slow)
	if d := allow(t, l, fast, slow); d.Allowed || d.Limit != slow || d.RetryAfter <= time.Second {
		t.Errorf("Allow(fast, slow) = %+v; want refused by slow, RetryAfter near an hour", d)
	}
}

func TestAllowConcurrentInstances(t *testing.T) {
	// Three gateways, each with its own Redis connection and eight
	// goroutines, share one limit of 200 per 2s for a second: Redis's
	// clock and store make them admit what one would.
	const rate, period, burst = 200, 2 * time.Second, 200
	const interval = period / rate
	const run = time.Second

	key := "veil:test:rl:{" + testenv.Suffix() + "}:shared"
	lim := ratelimit.Limit{Key: key, Rate: rate, Period: period}
	var limiters []*ratelimit.Limiter
	for range 3 {
		l, _ := setup(t, ratelimit.Config{Client: testenv.Redis(t), Timeout: time.Second})
		limiters = append(limiters, l)
	}

	var admitted, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, l := range limiters {
		for range 8 {
			wg.Go(func() {
				for time.Since(start) < run {
					d, err := l.Allow(t.Context(), time.Now(), lim)
					switch {
					case err != nil || d.Degraded:
						if failed.Add(1) == 1 {
							t.Errorf("Allow = %+v, %v; want a decision from Redis", d, err)
						}
						return
					case d.Allowed:
						admitted.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)

	want := float64(burst) + float64(elapsed)/float64(interval)
	got := float64(admitted.Load())
	t.Logf("3 gateways admitted %v requests in %s; theory %.1f", got, elapsed, want)
	if diff := got - want; diff > want/100 || -diff > want/100 {
		t.Errorf("3 gateways admitted %v requests in %s; want %.1f ± 1%%", got, elapsed, want)
	}
}

// gate dials Redis while open and a closed port while shut, and cuts every
// connection it made when it shuts, standing in for a Redis that goes down
// and comes back.
type gate struct {
	mu    sync.Mutex
	shut  bool
	conns []net.Conn
}

func (g *gate) dial(ctx context.Context, addr string, d *net.Dialer, _ *tls.Config) (net.Conn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		addr = "127.0.0.1:1"
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		g.conns = append(g.conns, c)
	}
	return c, err
}

func (g *gate) set(shut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shut = shut
	if shut {
		for _, c := range g.conns {
			_ = c.Close()
		}
		g.conns = nil
	}
}

// lockedBuffer is a log sink for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.b.String(), s)
}

func TestAllowRedisDown(t *testing.T) {
	const errorsTotal = "veil_gateway_ratelimit_redis_errors_total"
	for _, tc := range []struct {
		mode     string
		fraction float64
		// want is how many of 20 requests under a limit of 10 per minute
		// pass while Redis is down.
		want int
	}{
		{ratelimit.OnRedisErrorLocal, 0, 10},
		{ratelimit.OnRedisErrorLocal, 0.5, 5},
		{ratelimit.OnRedisErrorAllow, 0, 20},
		{ratelimit.OnRedisErrorDeny, 0, 0},
	} {
		t.Run(fmt.Sprintf("%s %v", tc.mode, tc.fraction), func(t *testing.T) {
			g := &gate{}
			client, err := rueidis.NewClient(rueidis.ClientOption{
				InitAddress: []string{testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379")},
				DialCtxFn:   g.dial,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(client.Close)
			set := metrics.NewSet()
			var logs lockedBuffer
			l, prefix := setup(t, ratelimit.Config{
				Client:        client,
				OnRedisError:  tc.mode,
				LocalFraction: tc.fraction,
				Metrics:       set,
				Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
			})
			lim := ratelimit.Limit{Key: prefix + "m", Rate: 10, Period: time.Minute}
			other := ratelimit.Limit{Key: prefix + "h", Rate: 1000, Period: time.Hour}
			allow(t, l, lim, other)

			g.set(true)
			passed := 0
			for i := range 20 {
				d, err := l.Allow(t.Context(), time.Now(), lim, other)
				if err != nil {
					t.Fatalf("Allow with Redis down: error %v; want a degraded decision", err)
				}
				if !d.Degraded {
					t.Fatalf("Allow #%d with Redis down = %+v; want Degraded", i+1, d)
				}
				if d.Allowed {
					passed++
					continue
				}
				if d.RetryAfter <= 0 {
					t.Errorf("refusal #%d with Redis down: RetryAfter = %s; want > 0", i+1, d.RetryAfter)
				}
				if tc.mode == ratelimit.OnRedisErrorDeny && d.RetryAfter != time.Second {
					t.Errorf("deny: RetryAfter = %s; want 1s", d.RetryAfter)
				}
			}
			if passed != tc.want {
				t.Errorf("%d of 20 requests passed with Redis down; want %d", passed, tc.want)
			}
			if !l.Degraded() {
				t.Error("Degraded() = false with Redis down; want true")
			}
			if n := set.GetOrCreateCounter(errorsTotal).Get(); n != 20 {
				t.Errorf("%s = %d; want 20", errorsTotal, n)
			}

			g.set(false)
			testenv.Deadline(t, 5*time.Second, func() error {
				d, err := l.Allow(t.Context(), time.Now(), lim, other)
				if err != nil || d.Degraded {
					return fmt.Errorf("Allow = %+v, %v; want a decision from Redis", d, err)
				}
				return nil
			})
			if l.Degraded() {
				t.Error("Degraded() = true after Redis came back; want false")
			}
			if n, m := logs.count("rate limiter degraded"), logs.count("rate limiter recovered"); n != 1 || m != 1 {
				t.Errorf("logged degraded %d times, recovered %d times; want once each\n%s", n, m, logs.b.String())
			}
		})
	}
}

func TestAllowSilentRedis(t *testing.T) {
	// A Redis that stops answering without closing its connections costs
	// each request Timeout, then the local limiter decides.
	upstream := testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		silent atomic.Bool
		mu     sync.Mutex
		conns  []net.Conn
	)
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, r)
			mu.Unlock()
			go func() { _, _ = io.Copy(c, r) }()
			go func() {
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if !silent.Load() {
						if _, err := r.Write(buf[:n]); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{ln.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)

	const timeout = 30 * time.Millisecond
	l, prefix := setup(t, ratelimit.Config{Client: client, Timeout: timeout})
	lim := ratelimit.Limit{Key: prefix + "s", Rate: 2, Period: time.Minute}
	allow(t, l, lim)
	silent.Store(true)
	for i, want := range []bool{true, true, false} {
		start := time.Now()
		d, err := l.Allow(t.Context(), time.Now(), lim)
		if err != nil || !d.Degraded || d.Allowed != want {
			t.Fatalf("Allow #%d against a silent Redis = %+v, %v; want degraded, allowed %v", i+1, d, err, want)
		}
		if took := time.Since(start); took < timeout {
			t.Errorf("Allow #%d against a silent Redis took %s; want the whole Timeout %s", i+1, took, timeout)
		}
	}
}

func TestAllowCanceled(t *testing.T) {
	set := metrics.NewSet()
	l, prefix := setup(t, ratelimit.Config{Metrics: set})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := l.Allow(ctx, time.Now(), ratelimit.Limit{Key: prefix + "s", Rate: 1, Period: time.Second})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Allow(canceled ctx) error = %v; want context.Canceled", err)
	}
	if n := set.GetOrCreateCounter("veil_gateway_ratelimit_redis_errors_total").Get(); n != 0 || l.Degraded() {
		t.Errorf("after a canceled call: redis errors %d, Degraded %v; want 0, false", n, l.Degraded())
	}
}

func TestAllowInvalid(t *testing.T) {
	l, prefix := setup(t, ratelimit.Config{})
	ok := ratelimit.Limit{Key: prefix + "ok", Rate: 1, Period: time.Second}
	for _, tc := range []struct {
		name string
		lim  ratelimit.Limit
	}{
		{"empty key", ratelimit.Limit{Rate: 1, Period: time.Second}},
		{"zero rate", ratelimit.Limit{Key: prefix + "a", Period: time.Second}},
		{"negative rate", ratelimit.Limit{Key: prefix + "a", Rate: -1, Period: time.Second}},
		{"zero period", ratelimit.Limit{Key: prefix + "a", Rate: 1}},
		{"under a microsecond each", ratelimit.Limit{Key: prefix + "a", Rate: 2000, Period: time.Millisecond}},
		{"negative burst", ratelimit.Limit{Key: prefix + "a", Rate: 1, Period: time.Second, Burst: -1}},
		{"same key twice", ok},
		{"another hash tag", ratelimit.Limit{Key: "veil:test:rl:{other}:a", Rate: 1, Period: time.Second}},
		{"no hash tag", ratelimit.Limit{Key: "veil:test:rl:a", Rate: 1, Period: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := l.Allow(t.Context(), time.Now(), ok, tc.lim); !errors.Is(err, ratelimit.ErrInvalidLimit) {
				t.Errorf("Allow(%+v) error = %v; want ErrInvalidLimit", tc.lim, err)
			}
		})
	}
	// A rejected call touches no limit.
	if d := allow(t, l, ok); d.Remaining != 0 || !d.Allowed {
		t.Errorf("Allow(ok) after invalid calls = %+v; want allowed with 0 remaining", d)
	}
	if d := allow(t, l); !d.Allowed {
		t.Errorf("Allow() = %+v; want allowed", d)
	}
	many := make([]ratelimit.Limit, 9)
	for i := range many {
		many[i] = ratelimit.Limit{Key: fmt.Sprintf("%s%d", prefix, i), Rate: 1, Period: time.Second}
	}
	if _, err := l.Allow(t.Context(), time.Now(), many...); err == nil {
		t.Error("Allow(9 limits) error = nil; want one")
	}
}

func TestNew(t *testing.T) {
	client := testenv.Redis(t)
	for _, tc := range []struct {
		name    string
		cfg     ratelimit.Config
		wantErr bool
	}{
		{"defaults", ratelimit.Config{Client: client}, false},
		{"deny", ratelimit.Config{Client: client, OnRedisError: "deny"}, false},
		{"no client", ratelimit.Config{}, true},
		{"unknown mode", ratelimit.Config{Client: client, OnRedisError: "open"}, true},
		{"fraction above 1", ratelimit.Config{Client: client, LocalFraction: 1.5}, true},
		{"negative fraction", ratelimit.Config{Client: client, LocalFraction: -0.5}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ratelimit.New(tc.cfg); (err != nil) != tc.wantErr {
				t.Errorf("New(%+v) error = %v; want error %v", tc.cfg, err, tc.wantErr)
			}
		})
	}
}

func TestDecisionSetHeaders(t *testing.T) {
	minute := ratelimit.Limit{Key: "k", Name: "minute", Rate: 100, Period: time.Minute}
	for _, tc := range []struct {
		name string
		d    ratelimit.Decision
		want map[string]string
	}{
		{
			"allowed",
			ratelimit.Decision{Allowed: true, Limit: minute, Remaining: 42, Reset: 34200 * time.Millisecond},
			map[string]string{
				"RateLimit-Policy":    `"minute";q=100;w=60`,
				"RateLimit":           `"minute";r=42;t=35`,
				"RateLimit-Limit":     "100",
				"RateLimit-Remaining": "42",
				"RateLimit-Reset":     "35",
			},
		},
		{
			"refused",
			ratelimit.Decision{Limit: minute, RetryAfter: 600 * time.Millisecond, Reset: time.Minute},
			map[string]string{
				"RateLimit-Policy":    `"minute";q=100;w=60`,
				"RateLimit":           `"minute";r=0;t=1`,
				"RateLimit-Limit":     "100",
				"RateLimit-Remaining": "0",
				"RateLimit-Reset":     "1",
				"Retry-After":         "1",
			},
		},
		{
			"refused for long, burst, default name",
			ratelimit.Decision{
				Limit:      ratelimit.Limit{Key: "k", Rate: 1000, Period: time.Hour, Burst: 50},
				RetryAfter: 3*time.Second + time.Microsecond, Reset: 3 * time.Minute,
			},
			map[string]string{
				"RateLimit-Policy":    `"default";q=1000;w=3600;veil-burst=50`,
				"RateLimit":           `"default";r=0;t=4`,
				"RateLimit-Limit":     "50",
				"RateLimit-Remaining": "0",
				"RateLimit-Reset":     "4",
				"Retry-After":         "4",
			},
		},
		{
			"sub-second period, name to escape",
			ratelimit.Decision{
				Allowed: true, Limit: ratelimit.Limit{Key: "k", Name: `a"b\c` + "\n", Rate: 20, Period: 200 * time.Millisecond},
				Remaining: 19, Reset: 10 * time.Millisecond,
			},
			map[string]string{
				"RateLimit-Policy":    `"a\"b\\c?";q=100;w=1`,
				"RateLimit":           `"a\"b\\c?";r=19;t=1`,
				"RateLimit-Limit":     "20",
				"RateLimit-Remaining": "19",
				"RateLimit-Reset":     "1",
			},
		},
		{
			"full budget",
			ratelimit.Decision{Allowed: true, Limit: ratelimit.Limit{Key: "k", Name: "s", Rate: 5, Period: time.Second}, Remaining: 5},
			map[string]string{
				"RateLimit-Policy":    `"s";q=5;w=1`,
				"RateLimit":           `"s";r=5;t=0`,
				"RateLimit-Limit":     "5",
				"RateLimit-Remaining": "5",
				"RateLimit-Reset":     "0",
			},
		},
		{"no limit", ratelimit.Decision{Allowed: true}, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			tc.d.SetHeaders(h)
			for k, want := range tc.want {
				if got := h.Get(k); got != want {
					t.Errorf("SetHeaders(%+v): %s = %q; want %q", tc.d, k, got, want)
				}
			}
			if len(h) != len(tc.want) {
				t.Errorf("SetHeaders(%+v) wrote %d fields %v; want %d", tc.d, len(h), h, len(tc.want))
			}
		})
	}
}

func BenchmarkAllow(b *testing.B) {
	l, prefix := setup(b, ratelimit.Config{})
	limits := []ratelimit.Limit{
		{Key: prefix + "s", Name: "second", Rate: 1 << 30, Period: time.Hour},
		{Key: prefix + "m", Name: "minute", Rate: 1 << 30, Period: time.Hour},
	}
	ctx := b.Context()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d, err := l.Allow(ctx, time.Now(), limits...); err != nil || !d.Allowed || d.Degraded {
				b.Fatalf("Allow = %+v, %v; want allowed by Redis", d, err)
			}
		}
	})
	// 16 callers per CPU, as a gateway serving many connections: rueidis
	// pipelines their scripts on one connection.
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if d, err := l.Allow(ctx, time.Now(), limits...); err != nil || !d.Allowed || d.Degraded {
					b.Errorf("Allow = %+v, %v; want allowed by Redis", d, err)
					return
				}
			}
		})
	})
}
