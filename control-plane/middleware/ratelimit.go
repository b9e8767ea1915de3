package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/problem"
)

// Rate is a limit of Limit requests per Period, of which up to Burst may
// come at once. The budget refills smoothly: one request every
// Period/Limit.
type Rate struct {
	Limit  int
	Period time.Duration
	// Burst is how many requests a caller with a full budget may send at
	// once. Zero means Limit.
	Burst int
}

// RateLimitConfig configures a RateLimiter.
type RateLimitConfig struct {
	// Client is the Redis every replica shares. Required.
	Client rueidis.Client
	// Prefix starts every key the limiter writes. Default "veil:cp:rl:".
	Prefix string
	// FailOpen lets requests through when Redis does not answer, counting
	// veil_controlplane_ratelimit_errors_total: an outage of Redis then
	// costs the rate limit, not the API. When false, such requests are
	// answered 503. The zero value is false; the control plane sets true.
	FailOpen bool
	// Timeout bounds each Redis call, so a slow Redis delays requests by
	// at most this much before FailOpen decides. Default 500ms.
	Timeout time.Duration
	Logger  *slog.Logger
	Metrics *metrics.Set
}

// RateLimiter limits requests per key with GCRA (the generic cell rate
// algorithm) in Redis: one key per limited caller holds its theoretical
// arrival time, updated by one Lua script. The script reads the clock of
// Redis (TIME), not of the replica, so replicas with skewed clocks share one
// budget exactly.
type RateLimiter struct {
	cfg    RateLimitConfig
	log    *slog.Logger
	errors *metrics.Counter
}

// NewRateLimiter returns a RateLimiter; cfg.Client is required.
func NewRateLimiter(cfg RateLimitConfig) (*RateLimiter, error) {
	if cfg.Client == nil {
		return nil, errors.New("new rate limiter: Client is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "veil:cp:rl:"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	return &RateLimiter{
		cfg:    cfg,
		log:    cfg.Logger,
		errors: cfg.Metrics.GetOrCreateCounter("veil_controlplane_ratelimit_errors_total"),
	}, nil
}

// gcraScript admits one request if the key's budget allows it.
//
// KEYS[1] the key's theoretical arrival time (TAT) in microseconds of
// Redis time. ARGV[1] emission interval (Period/Limit) in microseconds,
// ARGV[2] burst.
//
// Returns {allowed (0/1), remaining, retry after µs, reset after µs}: reset
// after is when the budget is full again.
//
// Microseconds since the epoch (~1.8e15) fit a Lua double exactly; the TAT
// is written with %.0f because Lua's default formatting keeps 14 digits.
// replicate_commands is needed before writing after TIME on Redis < 5 and
// is a no-op later.
var gcraScript = rueidis.NewLuaScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
local new_tat = tat + interval
local diff = now - (new_tat - burst * interval)
if diff < 0 then
  return {0, 0, -diff, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor(diff / interval), 0, new_tat - now}
`)

// decision is one answer of gcraScript.
type decision struct {
	allowed    bool
	remaining  int64
	retryAfter time.Duration
	resetAfter time.Duration
}

func (l *RateLimiter) allow(ctx context.Context, key string, interval time.Duration, burst int) (decision, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	v, err := gcraScript.Exec(ctx, l.cfg.Client, []string{key},
		[]string{strconv.FormatInt(interval.Microseconds(), 10), strconv.Itoa(burst)}).AsIntSlice()
	if err != nil {
		return decision{}, fmt.Errorf("run rate limit script: %w", err)
	}
	if len(v) != 4 {
		return decision{}, fmt.Errorf("run rate limit script: got %d values; want 4", len(v))
	}
	return decision{
		allowed:    v[0] == 1,
		remaining:  v[1],
		retryAfter: time.Duration(v[2]) * time.Microsecond,
		resetAfter: time.Duration(v[3]) * time.Microsecond,
	}, nil
}

// Middleware limits the requests that share key(r) to rate; name tells the
// limiters apart in keys, metrics and problems, so it must be unique per
// RateLimiter. An empty key(r) is not limited, nor is anything when key is
// nil or rate.Limit or rate.Period is not positive.
//
// Every limited response carries RateLimit-Limit (the burst),
// RateLimit-Remaining and RateLimit-Reset (seconds until the budget is full
// again). A refused request gets a 429 problem (type rate-limited) with
// Retry-After in whole seconds, rounded up, and counts in
// veil_controlplane_ratelimit_rejected_total{limiter=name}.
func (l *RateLimiter) Middleware(name string, rate Rate, key func(*http.Request) string) func(http.Handler) http.Handler {
	if rate.Limit <= 0 || rate.Period <= 0 || key == nil {
		return func(next http.Handler) http.Handler { return next }
	}
	burst := rate.Burst
	if burst <= 0 {
		burst = rate.Limit
	}
	interval := rate.Period / time.Duration(rate.Limit)
	if interval < time.Microsecond {
		interval = time.Microsecond
	}
	rejected := l.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_ratelimit_rejected_total{limiter="` + labelValue(name) + `"}`)
	prefix := l.cfg.Prefix + name + ":"
	limit := strconv.Itoa(burst)

	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			k := key(r)
			if k == "" {
				next.ServeHTTP(w, r)
				return
			}
			d, err := l.allow(r.Context(), prefix+k, interval, burst)
			if err != nil {
				if r.Context().Err() != nil {
					return // the client left; nobody reads an answer
				}
				l.errors.Inc()
				l.log.WarnContext(r.Context(), "rate limit unavailable", "limiter", name,
					"request_id", RequestIDFrom(r.Context()), "fail_open", l.cfg.FailOpen, "error", err)
				if l.cfg.FailOpen {
					next.ServeHTTP(w, r)
					return
				}
				w.Header().Set("Retry-After", "1")
				writeProblem(w, r, problem.New(http.StatusServiceUnavailable, "rate-limit-unavailable",
					"Service Unavailable", "the rate limiter cannot be reached; retry shortly"))
				return
			}
			h := w.Header()
			h.Set("RateLimit-Limit", limit)
			h.Set("RateLimit-Remaining", strconv.FormatInt(d.remaining, 10))
			h.Set("RateLimit-Reset", retryAfterSeconds(d.resetAfter))
			if !d.allowed {
				rejected.Inc()
				secs := retryAfterSeconds(d.retryAfter)
				h.Set("Retry-After", secs)
				writeProblem(w, r, problem.New(http.StatusTooManyRequests, "rate-limited", "Too Many Requests",
					"rate limit "+name+" exceeded; retry after "+secs+" s").With("limiter", name))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
