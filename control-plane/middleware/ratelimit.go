package middleware

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/ratelimit"
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

// RateLimiter is the HTTP face of internal/ratelimit for the control
// plane: one GCRA limit per limited caller, decided in Redis on Redis's
// clock (so replicas with skewed clocks share one budget exactly), with
// the RateLimit headers and the problems of the control plane's API.
type RateLimiter struct {
	cfg     RateLimitConfig
	log     *slog.Logger
	limiter *ratelimit.Limiter
}

// NewRateLimiter returns a RateLimiter; cfg.Client is required.
func NewRateLimiter(cfg RateLimitConfig) (*RateLimiter, error) {
	if cfg.Client == nil {
		return nil, errors.New("new rate limiter: Client is required")
	}
	cfg.Prefix = cmp.Or(cfg.Prefix, "veil:cp:rl:")
	if cfg.Timeout <= 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	onError := ratelimit.OnRedisErrorDeny
	if cfg.FailOpen {
		onError = ratelimit.OnRedisErrorAllow
	}
	l, err := ratelimit.New(ratelimit.Config{
		Client: cfg.Client, Timeout: cfg.Timeout, OnRedisError: onError,
		ErrorsMetric: "veil_controlplane_ratelimit_errors_total", Logger: cfg.Logger, Metrics: cfg.Metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("new rate limiter: %w", err)
	}
	return &RateLimiter{cfg: cfg, log: cfg.Logger, limiter: l}, nil
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
	// A request costs at least a microsecond, the script's unit.
	period := max(rate.Period, time.Duration(rate.Limit)*time.Microsecond)
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
			lim := ratelimit.Limit{Key: prefix + k, Name: name, Rate: rate.Limit, Period: period, Burst: burst}
			d, err := l.limiter.Allow(r.Context(), time.Now(), lim)
			if err != nil && r.Context().Err() != nil {
				return // the client left; nobody reads an answer
			}
			if err != nil || d.Degraded {
				l.unavailable(w, r, next, name, err)
				return
			}
			h := w.Header()
			h.Set("RateLimit-Limit", limit)
			h.Set("RateLimit-Remaining", strconv.Itoa(d.Remaining))
			h.Set("RateLimit-Reset", retryAfterSeconds(d.Reset))
			if !d.Allowed {
				rejected.Inc()
				secs := retryAfterSeconds(d.RetryAfter)
				h.Set("Retry-After", secs)
				writeProblem(w, r, problem.New(http.StatusTooManyRequests, "rate-limited", "Too Many Requests",
					"rate limit "+name+" exceeded; retry after "+secs+" s").With("limiter", name))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// unavailable answers a request the limiter could not decide because Redis
// does not answer (counted by the limiter): passed on when FailOpen, else
// 503.
func (l *RateLimiter) unavailable(w http.ResponseWriter, r *http.Request, next http.Handler, name string, err error) {
	attrs := []any{"limiter", name, "request_id", RequestIDFrom(r.Context()), "fail_open", l.cfg.FailOpen}
	if err != nil {
		attrs = append(attrs, "error", err)
	}
	l.log.WarnContext(r.Context(), "rate limit unavailable", attrs...)
	if l.cfg.FailOpen {
		next.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Retry-After", "1")
	writeProblem(w, r, problem.New(http.StatusServiceUnavailable, "rate-limit-unavailable",
		"Service Unavailable", "the rate limiter cannot be reached; retry shortly"))
}
