// Package caddyveil is the gateway's Caddy module: the "veil" app, which
// holds what every API route shares (the Redis client with client-side
// caching, the rate limiter, the usage-event emitter), and the
// http.handlers.veil handler, which authenticates API keys, enforces
// permissions, subscription state, quota blocks and rate limits, and emits
// one usage event per request without making the request wait for Kafka.
//
// The app's resources outlive config reloads (every route change the
// control plane makes is one): they live in a caddy.UsagePool keyed by the
// settings that shape them, so a reload with the same settings reuses the
// connections, the client-side cache and the emitter's spool.
//
// Each Caddy module has a file of its own: app.go (veil), handler.go
// (http.handlers.veil, whose checks are in admit.go and whose event is in
// event.go), sign.go (http.handlers.veil_sign), metrics.go
// (http.handlers.veil_metrics), transport.go
// (http.reverse_proxy.transport.veil), routesapp.go (veil_routes) and
// adminroutes.go (admin.api.veil_routes). The usage event's JSON is
// written by schemas/usage, the key format is internal/apikey's.
package caddyveil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/caddyserver/caddy/v2"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/ingest/emitter"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/ingesttoken"
	"github.com/veil-platform/veil/internal/ratelimit"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the "veil" Caddy app: the gateway's connections to Redis and
// Kafka, shared by every veil handler.
type App struct {
	// RedisAddress is the Redis holding the control plane's key and
	// subscription records. Default 127.0.0.1:6379.
	RedisAddress string `json:"redis_address,omitempty"`
	// RedisDB is its logical database. Default 0.
	RedisDB int `json:"redis_db,omitempty"`
	// CacheTTL bounds how long a record read through client-side caching
	// is used without word from Redis; changes arrive sooner, by Redis's
	// invalidation. Default 1m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`
	// NegativeCacheTTL is how long a key found nowhere is refused without
	// asking Redis again (against floods of made-up keys). Default 5s.
	NegativeCacheTTL caddy.Duration `json:"negative_cache_ttl,omitempty"`
	// RedisOutageGrace is how long, while Redis is unreachable, a key seen
	// valid keeps working on its last known records (under local rate
	// limits, counted in veil_gateway_degraded_admissions_total); after
	// that, and for keys not seen, calls get 503. Default 30s.
	RedisOutageGrace caddy.Duration `json:"redis_outage_grace,omitempty"`
	// OnRedisError is what the rate limiter does while Redis does not
	// answer: local (default: admit under in-process limits), allow or
	// deny. Keys cannot be checked without Redis: those requests get 503.
	OnRedisError string `json:"on_redis_error,omitempty"`
	// LocalRateFraction is the share of each rate limit one gateway admits
	// by itself while Redis is down (1/instances is exact). Default 1.
	LocalRateFraction float64 `json:"local_rate_fraction,omitempty"`

	// Brokers are Kafka's seed brokers. Default 127.0.0.1:9092.
	Brokers []string `json:"brokers,omitempty"`
	// Topic receives the usage events. Default veil.usage.raw.
	Topic string `json:"topic,omitempty"`
	// SpoolDir keeps events while Kafka is unreachable. Default
	// veil-spool under Caddy's data directory.
	SpoolDir string `json:"spool_dir,omitempty"`
	// SpoolMaxBytes bounds the spool; past it events are dropped and
	// counted. Default 1 GiB.
	SpoolMaxBytes int64 `json:"spool_max_bytes,omitempty"`
	// SpoolFsync is always, interval (default) or never.
	SpoolFsync string `json:"spool_fsync,omitempty"`
	// MemoryEvents bounds the in-memory queue in front of Kafka. Default
	// 100,000.
	MemoryEvents int `json:"memory_events,omitempty"`
	// Source is the CloudEvents source of the events, unique per gateway
	// instance so that ids never collide. Default /gateway/<hostname>. It
	// must start with /gateway/: only tokens scoped to such sources may
	// write them at ingest, so no producer passes its usage off as the
	// gateway's.
	Source string `json:"source,omitempty"`
	// Egress is the policy of upstream connections, used by every
	// http.reverse_proxy.transport.veil without a policy of its own.
	// Default: only public addresses.
	Egress *EgressConfig `json:"egress,omitempty"`
	// AnonymousSampleRate: of the refusals of requests without a usable
	// key, one in this many becomes a usage event (subject anonymous,
	// Kafka key spread over the partitions); all are counted in
	// veil_gateway_anonymous_refusals_total. 1 emits every one. Default
	// 100.
	AnonymousSampleRate int `json:"anonymous_sample_rate,omitempty"`
	// AnonymousEventsPerIPMinute bounds the sampled anonymous refusal
	// events of one client IP per minute; past it they are counted in
	// veil_gateway_anonymous_refusals_ip_limited_total only. The caller
	// gets its 401 either way. Default 60.
	AnonymousEventsPerIPMinute int `json:"anonymous_events_per_ip_minute,omitempty"`
	// AnonymousEventsPerMinute bounds the sampled anonymous refusal
	// events of all client IPs together per minute, since client IPs
	// taken from X-Forwarded-For can be made up; past it they are counted
	// in veil_gateway_anonymous_refusals_limited_total only. Default 6000.
	AnonymousEventsPerMinute int `json:"anonymous_events_per_minute,omitempty"`
	// PublicURL is the public base URL of the control plane (or of a
	// portal in front of it) that a consumer reaches: the 402 of a
	// subscription suspended for an unpaid invoice links the invoice as
	// <public_url>/v1/invoices/<id>. Empty: the 402 has no invoice_url,
	// as a path alone would point at the gateway's own host.
	PublicURL string `json:"public_url,omitempty"`

	redisKey, eventsKey string
	res                 *resources
	anon                *anonymousGate
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "veil", New: func() caddy.Module { return new(App) }}
}

// pool holds the resources of every live configuration.
var pool = caddy.NewUsagePool()

// Provision fills defaults and takes (or creates) the shared resources.
func (a *App) Provision(ctx caddy.Context) error {
	if err := CheckPublicURL(a.PublicURL); err != nil {
		return err
	}
	a.PublicURL = strings.TrimRight(a.PublicURL, "/")
	if a.RedisAddress == "" {
		a.RedisAddress = "127.0.0.1:6379"
	}
	if a.CacheTTL <= 0 {
		a.CacheTTL = caddy.Duration(time.Minute)
	}
	if a.NegativeCacheTTL <= 0 {
		a.NegativeCacheTTL = caddy.Duration(5 * time.Second)
	}
	if a.RedisOutageGrace <= 0 {
		a.RedisOutageGrace = caddy.Duration(30 * time.Second)
	}
	if a.OnRedisError == "" {
		a.OnRedisError = ratelimit.OnRedisErrorLocal
	}
	if a.LocalRateFraction == 0 {
		a.LocalRateFraction = 1
	}
	if len(a.Brokers) == 0 {
		a.Brokers = []string{"127.0.0.1:9092"}
	}
	if a.Topic == "" {
		a.Topic = broker.TopicUsageRaw
	}
	if a.SpoolDir == "" {
		a.SpoolDir = filepath.Join(caddy.AppDataDir(), "veil-spool")
	}
	if a.AnonymousSampleRate <= 0 {
		a.AnonymousSampleRate = DefaultAnonymousSampleRate
	}
	if a.AnonymousEventsPerIPMinute <= 0 {
		a.AnonymousEventsPerIPMinute = DefaultAnonymousEventsPerIPMinute
	}
	if a.AnonymousEventsPerMinute <= 0 {
		a.AnonymousEventsPerMinute = DefaultAnonymousEventsPerMinute
	}
	a.anon = newAnonymousGate(a.AnonymousSampleRate, a.AnonymousEventsPerIPMinute, a.AnonymousEventsPerMinute)
	if a.Source == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "unknown"
		}
		a.Source = ingesttoken.GatewaySourcePrefix + host
	}
	if err := CheckSource(a.Source); err != nil {
		return err
	}
	// The resources depend on these settings only; another config with
	// the same ones shares them. Events are keyed by their spool alone:
	// one spool directory has one emitter at a time, so a reload that
	// changes the brokers keeps the running ones (restart to change them).
	rkey, err := json.Marshal(struct {
		Redis string
		DB    int
		Mode  string
		Frac  float64
		Neg   caddy.Duration
	}{a.RedisAddress, a.RedisDB, a.OnRedisError, a.LocalRateFraction, a.NegativeCacheTTL})
	if err != nil {
		return err
	}
	a.redisKey, a.eventsKey = "redis:"+string(rkey), "events:"+a.SpoolDir
	logger := ctx.Slogger()
	val, _, err := pool.LoadOrNew(a.redisKey, func() (caddy.Destructor, error) { return newRedisResources(*a, logger) })
	if err != nil {
		return fmt.Errorf("veil app: %w", err)
	}
	rr := val.(*redisResources)
	val, _, err = pool.LoadOrNew(a.eventsKey, func() (caddy.Destructor, error) { return newEventResources(*a, logger) })
	if err != nil {
		_, _ = pool.Delete(a.redisKey)
		a.redisKey = ""
		return fmt.Errorf("veil app: %w", err)
	}
	er := val.(*eventResources)
	a.res = &resources{redisResources: rr, eventResources: er, log: logger}
	return nil
}

// ErrSource reports a configured event source outside /gateway/.
var ErrSource = errors.New("the gateway's event source must start with " + ingesttoken.GatewaySourcePrefix)

// CheckSource returns ErrSource for an event source that does not start
// with ingesttoken.GatewaySourcePrefix: ingest lets only tokens scoped to
// such sources write them, and a gateway elsewhere would share its source
// space with every producer's wildcard.
func CheckSource(source string) error {
	if !strings.HasPrefix(source, ingesttoken.GatewaySourcePrefix) || len(source) == len(ingesttoken.GatewaySourcePrefix) {
		return fmt.Errorf("veil app: source %q: %w", source, ErrSource)
	}
	return nil
}

// Validate checks the settings without side effects.
func (a *App) Validate() error {
	switch a.OnRedisError {
	case ratelimit.OnRedisErrorLocal, ratelimit.OnRedisErrorAllow, ratelimit.OnRedisErrorDeny:
	default:
		return fmt.Errorf("veil app: on_redis_error %q: want local, allow or deny", a.OnRedisError)
	}
	if a.LocalRateFraction <= 0 || a.LocalRateFraction > 1 {
		return fmt.Errorf("veil app: local_rate_fraction %v: want (0, 1]", a.LocalRateFraction)
	}
	if a.RedisDB < 0 {
		return fmt.Errorf("veil app: redis_db %d: want 0 or more", a.RedisDB)
	}
	return nil
}

// Start implements caddy.App; the resources run from Provision on.
func (a *App) Start() error { return nil }

// Stop implements caddy.App; Cleanup releases the resources.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's hold on the shared resources; the last
// holder closes them, flushing the emitter.
func (a *App) Cleanup() error {
	var errs []error
	for _, k := range []string{a.eventsKey, a.redisKey} {
		if k != "" {
			_, err := pool.Delete(k)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// resources are what a handler uses.
type resources struct {
	*redisResources
	*eventResources
	log *slog.Logger
}

// redisResources: the Redis client with client-side caching, the rate
// limiter and the handler's metrics.
type redisResources struct {
	redis   rueidis.Client
	store   *enforcement.Store
	limiter *ratelimit.Limiter
	neg     *negativeCache
	known   *knownCache
	metrics *metrics.Set
	m       handlerMetrics
}

func newRedisResources(a App, logger *slog.Logger) (_ *redisResources, err error) {
	set := metrics.NewSet()
	r := &redisResources{metrics: set, neg: newNegativeCache(65536, time.Duration(a.NegativeCacheTTL)), known: newKnownCache(100_000)}
	r.redis, err = rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{a.RedisAddress}, SelectDB: a.RedisDB,
		// Client-side caching of key and subscription records; Redis
		// pushes invalidations as they change.
		CacheSizeEachConn: 64 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to redis at %s: %w", a.RedisAddress, err)
	}
	r.store = enforcement.New(r.redis)
	r.limiter, err = ratelimit.New(ratelimit.Config{
		Client: r.redis, OnRedisError: a.OnRedisError, LocalFraction: a.LocalRateFraction, Logger: logger, Metrics: set,
		// A busy Redis answers in well under this; past it the limiter
		// decides by on_redis_error rather than hold the call.
		Timeout: 250 * time.Millisecond,
	})
	if err != nil {
		r.redis.Close()
		return nil, err
	}
	r.m = newHandlerMetrics(set)
	metrics.RegisterSet(set)
	return r, nil
}

// Destruct closes the Redis client.
func (r *redisResources) Destruct() error {
	metrics.UnregisterSet(r.metrics, false)
	r.redis.Close()
	return nil
}

// eventResources: the Kafka client and the emitter with its spool.
type eventResources struct {
	kafka   *kgo.Client
	emitter *emitter.Emitter
	metrics *metrics.Set
}

func newEventResources(a App, logger *slog.Logger) (_ *eventResources, err error) {
	set := metrics.NewSet()
	r := &eventResources{metrics: set}
	r.kafka, err = broker.NewClient(broker.ClientConfig{
		Brokers: a.Brokers, ClientID: "veil-gateway", Logger: logger, Metrics: set,
		Opts: []kgo.Opt{
			kgo.ProducerLinger(5 * time.Millisecond),
			kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()),
		},
	})
	if err != nil {
		return nil, err
	}
	r.emitter, err = emitter.New(emitter.Config{
		Client: r.kafka, Topic: a.Topic, SpoolDir: a.SpoolDir, MaxSpoolBytes: a.SpoolMaxBytes, Fsync: a.SpoolFsync,
		MemoryRecords: a.MemoryEvents, Logger: logger, Metrics: set,
	})
	if err != nil {
		r.kafka.Close()
		return nil, err
	}
	metrics.RegisterSet(set)
	return r, nil
}

// Destruct flushes the emitter (to Kafka, or to the spool) and closes the
// Kafka client.
func (r *eventResources) Destruct() error {
	metrics.UnregisterSet(r.metrics, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.emitter.Close(ctx)
	r.kafka.Close()
	return err
}

var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)

// CheckPublicURL refuses a public URL that is not an absolute http or
// https URL without credentials, query or fragment ("" is no URL).
func CheckPublicURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("veil public_url %q: want an absolute http(s) URL without credentials, query or fragment", s)
	}
	return nil
}

// invoiceURL is the public link of an invoice, "" without a public URL.
func (a *App) invoiceURL(id string) string {
	if a.PublicURL == "" {
		return ""
	}
	return a.PublicURL + "/v1/invoices/" + url.PathEscape(id)
}
