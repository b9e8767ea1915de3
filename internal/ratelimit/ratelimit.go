// Package ratelimit is Veil's one rate limiter, the gateway's and (through
// the HTTP adapter in control-plane/middleware) the control plane's: GCRA
// (the generic cell rate algorithm) over several limits at once, decided in
// Redis by one Lua script per request.
//
// Every limit keeps one Redis key holding its theoretical arrival time (TAT)
// in microseconds of Redis time. The script reads the clock of Redis (TIME),
// never the gateway's, so any number of gateway instances with skewed clocks
// share one budget exactly. A request names all the limits it falls under
// (per key, per subscription, per second, per minute, …) and the script
// decides them together: when any of them refuses, it writes nothing, so a
// refused request costs no budget anywhere; otherwise it advances every TAT.
//
// When Redis does not answer, [Config.OnRedisError] decides: by default an
// in-process GCRA per limit key keeps admitting at a local rate for as long
// as the outage lasts, so an outage of Redis costs accuracy, not the API.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"
)

// What Config.OnRedisError accepts.
const (
	// OnRedisErrorLocal decides with an in-process limiter per limit key.
	OnRedisErrorLocal = "local"
	// OnRedisErrorAllow admits every request.
	OnRedisErrorAllow = "allow"
	// OnRedisErrorDeny refuses every request.
	OnRedisErrorDeny = "deny"
)

// ErrInvalidLimit reports a Limit that cannot be enforced: an empty key, or
// a rate, period or burst out of range.
var ErrInvalidLimit = errors.New("invalid rate limit")

// Limit is Rate requests per Period, of which up to Burst may come at once.
// The budget refills smoothly, one request every Period/Rate.
type Limit struct {
	// Key is the Redis key of the limit's state, for example
	// "veil:rl:{<subscription id>}:key:<key id>:s". When one Allow call
	// has several limits, their keys must differ and share a Redis Cluster
	// hash tag ({…}), because one script touches them all.
	Key string
	// Name identifies the limit to clients in the RateLimit-Policy and
	// RateLimit headers. Default "default".
	Name string
	// Rate is how many requests a Period admits. Required, positive.
	Rate int
	// Period is the window Rate counts in. Required, at least a
	// microsecond per request.
	Period time.Duration
	// Burst is how many requests a caller with a full budget may send at
	// once. Zero means Rate.
	Burst int
}

// burst is Burst with its default applied.
func (l Limit) burst() int {
	if l.Burst == 0 {
		return l.Rate
	}
	return l.Burst
}

// interval is the time one request costs, in whole microseconds because
// the script counts in microseconds of Redis time.
func (l Limit) interval() int64 {
	us := (int64(l.Period)/int64(l.Rate) + 500) / 1000
	return max(us, 1)
}

func (l Limit) validate() error {
	switch {
	case l.Key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidLimit)
	case l.Rate <= 0:
		return fmt.Errorf("%w: %s: rate %d; want > 0", ErrInvalidLimit, l.Key, l.Rate)
	case l.Period < time.Microsecond*time.Duration(l.Rate):
		return fmt.Errorf("%w: %s: period %s for %d requests; want at least 1µs each", ErrInvalidLimit, l.Key, l.Period, l.Rate)
	case l.Burst < 0:
		return fmt.Errorf("%w: %s: burst %d; want >= 0", ErrInvalidLimit, l.Key, l.Burst)
	}
	return nil
}

// sameSlot checks that key may join the keys before it in one script: it
// differs from each, and all carry the same hash tag. A cluster client of
// rueidis panics on keys of different slots; on a single Redis the tags do
// not matter, but code that passes there must pass on a cluster too.
func sameSlot(first string, before []Limit, key string) error {
	if len(before) == 0 {
		return nil
	}
	tag := hashTag(first)
	if tag == "" || hashTag(key) != tag {
		return fmt.Errorf("%w: keys %s and %s do not share a hash tag", ErrInvalidLimit, first, key)
	}
	for _, b := range before {
		if b.Key == key {
			return fmt.Errorf("%w: key %s twice", ErrInvalidLimit, key)
		}
	}
	return nil
}

// hashTag returns the part of key that Redis Cluster hashes when it is not
// the whole key: what lies between the first '{' and the next '}', if not
// empty.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return ""
	}
	return key[i+1 : i+1+j]
}

// Decision is the answer to one request.
type Decision struct {
	// Allowed tells whether the request may pass.
	Allowed bool
	// Degraded is true when Redis did not answer and Config.OnRedisError
	// decided instead.
	Degraded bool
	// Limit is the tightest of the request's limits: on refusal the one
	// that refused (of several, the one that frees last), otherwise the
	// one with the least remaining budget.
	Limit Limit
	// Remaining is how many more requests Limit admits right now.
	Remaining int
	// RetryAfter is, on refusal, how long until the request would pass.
	// Zero when allowed.
	RetryAfter time.Duration
	// Reset is how long until Limit's budget is full again.
	Reset time.Duration
}

// Config configures a Limiter.
type Config struct {
	// Client is the Redis every gateway instance shares. Required.
	Client rueidis.Client
	// Timeout bounds each Redis call, so a slow Redis delays a request by
	// at most this much before OnRedisError decides. Default 50ms.
	Timeout time.Duration
	// OnRedisError decides requests while Redis does not answer:
	//
	//   - "local" (the default): an in-process GCRA per limit key, at
	//     LocalFraction of each limit, for as long as Redis is down. Limits
	//     hold per instance, not across instances.
	//   - "allow": every request passes; rate limiting is off.
	//   - "deny": every request is refused with RetryAfter 1s; an outage of
	//     Redis is then an outage of the API.
	//
	// In every mode such decisions have Degraded set, count in
	// ErrorsMetric, and the limiter logs once
	// when Redis stops answering and once when it answers again.
	OnRedisError string
	// LocalFraction is the share of each limit's rate and burst one
	// instance admits while degraded in "local" mode. Default 1, the full
	// limit per instance; set 1/instances to hold the overall rate during
	// an outage. The local burst never drops below one request.
	LocalFraction float64
	// ErrorsMetric names the counter of the calls Redis did not answer.
	// Default veil_gateway_ratelimit_redis_errors_total, the gateway's;
	// the control plane's HTTP limiter counts in its own.
	ErrorsMetric string
	Logger       *slog.Logger
	Metrics      *metrics.Set
}

// Limiter decides requests against limits stored in Redis. It is safe for
// concurrent use.
type Limiter struct {
	client  rueidis.Client
	timeout time.Duration
	mode    string
	log     *slog.Logger

	redisErrors *metrics.Counter
	degraded    atomic.Bool
	local       *localLimiter
	args        argCache
}

// New returns a Limiter; cfg.Client is required.
func New(cfg Config) (*Limiter, error) {
	if cfg.Client == nil {
		return nil, errors.New("new rate limiter: Client is required")
	}
	switch cfg.OnRedisError {
	case "":
		cfg.OnRedisError = OnRedisErrorLocal
	case OnRedisErrorLocal, OnRedisErrorAllow, OnRedisErrorDeny:
	default:
		return nil, fmt.Errorf("new rate limiter: OnRedisError %q; want local, allow or deny", cfg.OnRedisError)
	}
	if cfg.LocalFraction == 0 {
		cfg.LocalFraction = 1
	}
	if !(cfg.LocalFraction > 0 && cfg.LocalFraction <= 1) {
		return nil, fmt.Errorf("new rate limiter: LocalFraction %v; want in (0, 1]", cfg.LocalFraction)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 50 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.ErrorsMetric == "" {
		cfg.ErrorsMetric = "veil_gateway_ratelimit_redis_errors_total"
	}
	return &Limiter{
		client:      cfg.Client,
		timeout:     cfg.Timeout,
		mode:        cfg.OnRedisError,
		log:         cfg.Logger,
		redisErrors: cfg.Metrics.GetOrCreateCounter(cfg.ErrorsMetric),
		local:       newLocalLimiter(cfg.LocalFraction),
		args:        argCache{m: make(map[argKey][2]string)},
	}, nil
}

// Degraded reports whether the last call to Redis failed, so that
// decisions are currently made by Config.OnRedisError.
func (l *Limiter) Degraded() bool { return l.degraded.Load() }

// maxLimits bounds the limits of one call, so the script's arguments fit
// in buffers on the stack.
const maxLimits = 8

// Allow decides one request that falls under all of limits: it passes only
// if every limit admits it, and then consumes one unit of each; a refused
// request consumes nothing. The decision is made in Redis, on Redis's
// clock; now is the caller's clock and serves only the local limiter of a
// degraded decision.
//
// A Redis that does not answer is no error: the decision is then Degraded
// and made by Config.OnRedisError, also in "deny" mode, where the caller
// tells a refusal for want of Redis (Degraded, typically a 503) from a rate
// limit (a 429) by that field. The error is not nil only for the caller's
// mistakes and departures: a limit that is invalid or cannot share the
// script with the others, its key repeated or without their hash tag
// ([ErrInvalidLimit]); more than 8 limits; or ctx ended (the client left).
// With no limits every request passes.
func (l *Limiter) Allow(ctx context.Context, now time.Time, limits ...Limit) (Decision, error) {
	if len(limits) == 0 {
		return Decision{Allowed: true}, nil
	}
	if len(limits) > maxLimits {
		return Decision{}, fmt.Errorf("allow request: %d limits; want at most %d", len(limits), maxLimits)
	}
	var keyBuf [maxLimits]string
	var argBuf [2 * maxLimits]string
	keys, args := keyBuf[:0], argBuf[:0]
	for i, lim := range limits {
		if err := lim.validate(); err != nil {
			return Decision{}, fmt.Errorf("allow request: %w", err)
		}
		if err := sameSlot(limits[0].Key, limits[:i], lim.Key); err != nil {
			return Decision{}, fmt.Errorf("allow request: %w", err)
		}
		interval, burst := l.args.get(lim.interval(), lim.burst())
		keys = append(keys, lim.Key)
		args = append(args, interval, burst)
	}

	d, err := l.allowRedis(ctx, keys, args, limits)
	if err == nil {
		if l.degraded.Load() && l.degraded.CompareAndSwap(true, false) {
			l.local.reset()
			l.log.InfoContext(ctx, "rate limiter recovered: Redis answers again")
		}
		return d, nil
	}
	if ctx.Err() != nil {
		return Decision{}, fmt.Errorf("allow request: %w", ctx.Err())
	}
	l.redisErrors.Inc()
	if l.degraded.CompareAndSwap(false, true) {
		l.log.WarnContext(ctx, "rate limiter degraded: Redis does not answer",
			"on_redis_error", l.mode, "error", err)
	}
	return l.degradedDecision(now, limits), nil
}

// allowRedis runs the script with a deadline of at most l.timeout.
func (l *Limiter) allowRedis(ctx context.Context, keys, args []string, limits []Limit) (Decision, error) {
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > l.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.timeout)
		defer cancel()
	}
	v, err := gcraScript.Exec(ctx, l.client, keys, args).ToArray()
	if err != nil {
		return Decision{}, fmt.Errorf("run rate limit script: %w", err)
	}
	if len(v) != 5 {
		return Decision{}, fmt.Errorf("run rate limit script: got %d values; want 5", len(v))
	}
	var n [5]int64
	for i := range v {
		if n[i], err = v[i].AsInt64(); err != nil {
			return Decision{}, fmt.Errorf("run rate limit script: value %d: %w", i, err)
		}
	}
	if n[1] < 1 || n[1] > int64(len(limits)) {
		return Decision{}, fmt.Errorf("run rate limit script: limit %d of %d", n[1], len(limits))
	}
	return Decision{
		Allowed:    n[0] == 1,
		Limit:      limits[n[1]-1],
		Remaining:  int(n[2]),
		RetryAfter: time.Duration(n[3]) * time.Microsecond,
		Reset:      time.Duration(n[4]) * time.Microsecond,
	}, nil
}

func (l *Limiter) degradedDecision(now time.Time, limits []Limit) Decision {
	switch l.mode {
	case OnRedisErrorAllow:
		return Decision{Allowed: true, Degraded: true, Limit: limits[0], Remaining: limits[0].burst()}
	case OnRedisErrorDeny:
		return Decision{Degraded: true, Limit: limits[0], RetryAfter: time.Second, Reset: time.Second}
	}
	d := l.local.allow(now, limits)
	d.Degraded = true
	return d
}

// gcraScript decides a request against every limit in KEYS at once.
//
// KEYS[i] holds limit i's theoretical arrival time (TAT) in microseconds of
// Redis time; ARGV[2i-1] is its emission interval (Period/Rate) in
// microseconds and ARGV[2i] its burst.
//
// Returns {allowed (0/1), index of the tightest limit (1-based), its
// remaining, retry after µs, reset after µs}. When any limit refuses, the
// script writes nothing and names the refusing limit that frees last, so
// retry after is when every limit admits the request; otherwise it writes
// every new TAT and names the limit with the least remaining.
//
// Microseconds since the epoch (~1.8e15) fit a Lua double exactly; TATs
// are written with %.0f because Lua's default formatting keeps 14 digits,
// and expire when the budget is full again, which is when a missing key
// means the same. replicate_commands is needed before writing after TIME
// on Redis < 5 and is a no-op later.
var gcraScript = rueidis.NewLuaScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = redis.call('MGET', unpack(KEYS))
local new_tats = {}
local refused = false
local pick, pick_rem, pick_retry, pick_reset = 1, -1, -1, -1
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(stored[i]) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local diff = now - (new_tat - burst * interval)
  if diff < 0 then
    if not refused or -diff > pick_retry then
      pick, pick_retry, pick_reset = i, -diff, tat - now
    end
    refused = true
  elseif not refused then
    new_tats[i] = new_tat
    local rem = math.floor(diff / interval)
    local reset = new_tat - now
    if pick_rem < 0 or rem < pick_rem or (rem == pick_rem and reset > pick_reset) then
      pick, pick_rem, pick_reset = i, rem, reset
    end
  end
end
if refused then
  return {0, pick, 0, pick_retry, pick_reset}
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', new_tats[i]), 'PX', math.max(1, math.ceil((new_tats[i] - now) / 1000)))
end
return {1, pick, pick_rem, 0, pick_reset}
`)

// argKey is one limit's script arguments before formatting.
type argKey struct {
	interval int64
	burst    int
}

// argCache keeps the formatted script arguments of the limits seen, so the
// hot path does not format numbers: gateways enforce few distinct limits
// (those of the plans), so the cache stays small; past argCacheMax entries
// arguments are formatted per call.
type argCache struct {
	mu sync.RWMutex
	m  map[argKey][2]string
}

const argCacheMax = 4096

func (c *argCache) get(interval int64, burst int) (string, string) {
	k := argKey{interval, burst}
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v[0], v[1]
	}
	v = [2]string{strconv.FormatInt(interval, 10), strconv.Itoa(burst)}
	c.mu.Lock()
	if len(c.m) < argCacheMax {
		c.m[k] = v
	}
	c.mu.Unlock()
	return v[0], v[1]
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(math.Ceil(d.Seconds()))
}
