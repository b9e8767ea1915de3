package caddyveil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/ingest/emitter"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/ratelimit"
	"github.com/veil-platform/veil/schemas/usage"
)

// Handler is http.handlers.veil: it stands in front of one API's upstream.
// For each request it
//
//  1. takes the API key from Authorization: Bearer, X-API-Key or the
//     configured query parameter, and refuses a key whose checksum fails
//     without asking anyone (401);
//  2. looks the key up by its SHA-256 through client-side caching, and
//     checks its status, expiry and rotation grace (401), its API, methods
//     and route patterns (403), its subscription's status (403), the
//     subscription's quota block (429) and the key's and subscription's
//     rate limits (429), with Retry-After and the IETF RateLimit headers;
//  3. removes the key from the request and passes it on;
//  4. after the response, emits one usage event (refusals included, marked
//     with their reason, so they are recorded but never billed).
//
// Every refusal is an application/problem+json answer.
type Handler struct {
	// APIID is the API this route serves; keys of other APIs are refused.
	APIID string `json:"api_id"`
	// PathPrefix is the route's prefix (e.g. /weather): it is taken off the
	// path before the key's route patterns and the route templates are
	// matched, which are relative to the API.
	PathPrefix string `json:"path_prefix,omitempty"`
	// Routes are the API's route templates (e.g. /forecast/{city}); an
	// event names the first one matching the request, else "/*".
	// Parameter names are letters, digits and _ (in a Caddyfile, {host},
	// {path} and the like would be taken for placeholders).
	Routes []string `json:"route_templates,omitempty"`
	// KeyQueryParam, when set, is a query parameter that may carry the key.
	KeyQueryParam string `json:"key_query_param,omitempty"`
	// UnitsHeader, when set, is a response header with the billable units
	// of the call (a non-negative decimal, at most 6 decimals); it is
	// removed from the response. Without it, or when it is missing or
	// invalid, a call is 1 unit. More than usage.MaxUnits (10^9) counts as
	// usage.MaxUnits, so that the call is still counted: an event over the
	// cap would be refused whole (veil_gateway_units_clamped_total).
	UnitsHeader string `json:"units_header,omitempty"`

	app *App
	res *resources
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.veil", New: func() caddy.Module { return new(Handler) }}
}

var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

// Provision takes the veil app's shared resources.
func (h *Handler) Provision(ctx caddy.Context) error {
	app, err := ctx.App("veil")
	if err != nil {
		return fmt.Errorf("veil handler: %w", err)
	}
	h.app = app.(*App)
	h.res = h.app.res
	h.PathPrefix = strings.TrimRight(h.PathPrefix, "/")
	return nil
}

// Validate checks the settings without side effects.
func (h *Handler) Validate() error {
	if h.APIID == "" {
		return errors.New("veil handler: api_id is required")
	}
	if h.PathPrefix != "" && !strings.HasPrefix(h.PathPrefix, "/") {
		return fmt.Errorf("veil handler: path_prefix %q must start with /", h.PathPrefix)
	}
	for _, r := range h.Routes {
		if err := enforcement.ValidRoute(r); err != nil {
			return fmt.Errorf("veil handler: route %q: %w", r, err)
		}
		for _, seg := range strings.Split(r, "/") {
			if strings.HasPrefix(seg, "{") && !paramName.MatchString(seg[1:len(seg)-1]) {
				return fmt.Errorf("veil handler: route %q: parameter %s: want letters, digits and _ (a Caddyfile expands {host}, {path} and the like as placeholders)", r, seg)
			}
		}
	}
	return nil
}

var paramName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// refusal is one way a request is turned away.
type refusal struct {
	status int
	typ    string // problem type
	title  string
	reason string // the event's data.refusal
	detail string
}

var (
	refMissingKey   = refusal{http.StatusUnauthorized, "missing-key", "Missing API Key", "missing_key", "send the API key as Authorization: Bearer <key> or X-API-Key"}
	refInvalidKey   = refusal{http.StatusUnauthorized, "invalid-key", "Invalid API Key", "invalid_key", "the API key is not valid"}
	refRevoked      = refusal{http.StatusUnauthorized, "key-revoked", "API Key Revoked", "key_revoked", "the API key was revoked"}
	refExpired      = refusal{http.StatusUnauthorized, "key-expired", "API Key Expired", "key_expired", "the API key has expired"}
	refSuspended    = refusal{http.StatusForbidden, "key-suspended", "API Key Suspended", "key_suspended", "the API key is suspended"}
	refWrongAPI     = refusal{http.StatusForbidden, "key-not-for-api", "Key Not For This API", "api_mismatch", "the API key belongs to a subscription to another API"}
	refMethod       = refusal{http.StatusForbidden, "method-not-permitted", "Method Not Permitted", "method_not_allowed", "the API key may not use this method"}
	refRoute        = refusal{http.StatusForbidden, "route-not-permitted", "Route Not Permitted", "route_not_allowed", "the API key may not call this route"}
	refSubscription = refusal{http.StatusForbidden, "subscription-inactive", "Subscription Not Active", "subscription_inactive", "the subscription is not active"}
	refQuota        = refusal{http.StatusTooManyRequests, "quota-exhausted", "Quota Exhausted", "quota_exhausted", "the subscription used its quota for this period"}
	refRateLimited  = refusal{http.StatusTooManyRequests, "rate-limited", "Rate Limited", "rate_limited", "too many requests; retry after the time in Retry-After"}
	refUnavailable  = refusal{http.StatusServiceUnavailable, "gateway-unavailable", "Gateway Unavailable", "gateway_unavailable", "the gateway cannot check API keys right now; retry shortly"}
)

// call is what the event of one request is made of.
type call struct {
	start    time.Time
	keyID    string
	subject  string
	route    string
	rel      string
	status   int
	reqBytes int64
	resBytes int64
	units    decimal.Decimal
	refusal  string
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	c := call{start: time.Now(), subject: anonymousSubject, units: decimal.NewFromInt(1)}
	c.rel = h.relPath(r.URL.Path)
	c.route = h.template(c.rel)
	w.Header().Set(apiHeader, h.APIID)
	if ref, retry, ok := h.admit(r, w.Header(), &c); !ok {
		h.refuse(w, r, &c, ref, retry)
		return nil
	}
	h.stripKey(r)
	body := &countingReader{ReadCloser: r.Body}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	cw := &countingWriter{ResponseWriter: w, unitsHeader: h.UnitsHeader}
	err := next.ServeHTTP(cw, r)
	c.status = cw.status
	if err != nil {
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			c.status = he.StatusCode
		} else {
			c.status = http.StatusBadGateway
		}
	} else if c.status == 0 {
		c.status = http.StatusOK
	}
	if cw.units != nil {
		c.units = *cw.units
	}
	if cw.clamped {
		h.res.m.unitsClamped.Inc()
		h.res.log.WarnContext(r.Context(), "upstream reported more units than one event may carry; counted at the cap",
			"header", h.UnitsHeader, "max_units", usage.MaxUnits, "route", c.route, "subject", c.subject)
	}
	c.reqBytes, c.resBytes = body.n, cw.n
	h.emit(r, &c)
	return err
}

// admit runs the checks; ok false names the refusal and, for 429, how long
// to wait.
func (h *Handler) admit(r *http.Request, hdr http.Header, c *call) (ref refusal, retry time.Duration, ok bool) {
	raw := h.extractKey(r)
	if raw == "" {
		return refMissingKey, 0, false
	}
	if _, err := apikey.Parse(raw); err != nil {
		return refInvalidKey, 0, false
	}
	hash := apikey.Hash(raw)
	now := time.Now()
	if h.res.neg.has(hash, now) {
		return refInvalidKey, 0, false
	}
	ctx := r.Context()
	ttl := time.Duration(h.app.CacheTTL)
	rec, err := h.res.store.GetKeyCached(ctx, hash, ttl)
	var sub enforcement.SubscriptionRecord
	degraded := false
	switch {
	case errors.Is(err, enforcement.ErrNotFound):
		h.res.neg.add(hash, now)
		return refInvalidKey, 0, false
	case errors.Is(err, enforcement.ErrCorruptRecord):
		h.res.log.ErrorContext(ctx, "corrupt key record; refusing the key", "error", err)
		return refInvalidKey, 0, false
	case err != nil:
		h.res.m.redisErrors.Inc()
		// Redis is unreachable: a key seen valid a moment ago keeps
		// working for a short grace, under the limiter's local limits.
		k, ok := h.res.known.get(hash, now, time.Duration(h.app.RedisOutageGrace))
		if !ok {
			h.res.log.WarnContext(ctx, "key lookup failed", "error", err)
			return refUnavailable, time.Second, false
		}
		h.res.m.degraded.Inc()
		rec, sub, degraded = k.key, k.sub, true
	}
	c.keyID, c.subject = rec.KeyID, rec.SubscriptionID
	if rec.APIID != h.APIID {
		return refWrongAPI, 0, false
	}
	if err := rec.Allows(r.Method, c.rel, now); err != nil {
		switch {
		case errors.Is(err, enforcement.ErrKeyExpired):
			return refExpired, 0, false
		case errors.Is(err, enforcement.ErrMethodNotAllowed):
			return refMethod, 0, false
		case errors.Is(err, enforcement.ErrRouteNotAllowed):
			return refRoute, 0, false
		case rec.Status == enforcement.KeySuspended:
			return refSuspended, 0, false
		default:
			return refRevoked, 0, false
		}
	}
	if !degraded {
		sub, err = h.res.store.GetSubscriptionCached(ctx, rec.SubscriptionID, ttl)
		switch {
		case errors.Is(err, enforcement.ErrNotFound), errors.Is(err, enforcement.ErrCorruptRecord):
			return refSubscription, 0, false
		case err != nil:
			h.res.m.redisErrors.Inc()
			return refUnavailable, time.Second, false
		}
		h.res.known.put(hash, rec, sub, now)
	}
	switch sub.Status {
	case enforcement.SubscriptionActive, enforcement.SubscriptionTrialing, enforcement.SubscriptionPastDue:
	default:
		return refSubscription, 0, false
	}
	if sub.APIID != h.APIID {
		return refWrongAPI, 0, false
	}
	var until time.Time
	if !degraded {
		until, err = h.res.store.BlockedUntilCached(ctx, rec.SubscriptionID, ttl)
	}
	if err != nil {
		// The block cannot be read: the quota is the processors' estimate
		// anyway, the rate limits below still hold.
		h.res.m.redisErrors.Inc()
	} else if until.After(now) {
		return refQuota, until.Sub(now), false
	}
	limits := h.limits(rec, sub)
	if len(limits) == 0 {
		return refusal{}, 0, true
	}
	d, err := h.res.limiter.Allow(ctx, now, limits...)
	if err != nil {
		if ctx.Err() != nil {
			return refUnavailable, time.Second, false
		}
		h.res.log.ErrorContext(ctx, "rate limit check failed", "error", err)
		return refUnavailable, time.Second, false
	}
	d.SetHeaders(hdr)
	if !d.Allowed {
		// Under on_redis_error deny an outage refuses everything: that is
		// the gateway's failure, not the caller's rate.
		if d.Degraded && h.app.OnRedisError == ratelimit.OnRedisErrorDeny {
			return refUnavailable, d.RetryAfter, false
		}
		return refRateLimited, d.RetryAfter, false
	}
	return refusal{}, 0, true
}

// limits are the rate limits a request falls under: the key's own (when
// it overrides the plan) and the subscription's, all under the
// subscription's hash tag so one script decides them together.
func (h *Handler) limits(k enforcement.KeyRecord, s enforcement.SubscriptionRecord) []ratelimit.Limit {
	var out []ratelimit.Limit
	tag := "veil:rl:{" + s.ID + "}:"
	add := func(key, name string, rate int, period time.Duration) {
		if rate > 0 {
			out = append(out, ratelimit.Limit{Key: tag + key, Name: name, Rate: rate, Period: period})
		}
	}
	add("k:"+k.KeyID+":s", "key-second", k.RatePerSecond, time.Second)
	add("k:"+k.KeyID+":m", "key-minute", k.RatePerMinute, time.Minute)
	add("s:s", "second", s.RatePerSecond, time.Second)
	add("s:m", "minute", s.RatePerMinute, time.Minute)
	return out
}

// apiHeader names the API on every answer, refusals included, as the
// control plane's routes do.
const apiHeader = "X-Veil-Api-Id"

func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, c *call, ref refusal, retry time.Duration) {
	h.res.m.refused(ref.reason).Inc()
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(retry.Seconds())), 10))
	}
	if ref.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="veil"`)
	}
	problem.Write(w, problem.New(ref.status, ref.typ, ref.title, ref.detail).With("api_id", h.APIID))
	c.status, c.refusal, c.units = ref.status, ref.reason, decimal.Zero
	if r.ContentLength > 0 {
		c.reqBytes = r.ContentLength
	}
	if c.subject == anonymousSubject && !h.app.anon.emit(clientIP(r), time.Now(), h.res.m) {
		h.res.m.requests.Inc() // counted, not sampled into an event
		return
	}
	h.emit(r, c)
}

// extractKey finds the key: Authorization: Bearer, then X-API-Key, then
// the query parameter.
func (h *Handler) extractKey(r *http.Request) string {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	if k := r.Header.Get("X-API-Key"); k != "" {
		return strings.TrimSpace(k)
	}
	if h.KeyQueryParam != "" && r.URL.RawQuery != "" {
		return r.URL.Query().Get(h.KeyQueryParam)
	}
	return ""
}

// stripKey removes the key from the request: the upstream never sees it.
func (h *Handler) stripKey(r *http.Request) {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		r.Header.Del("Authorization")
	}
	r.Header.Del("X-API-Key")
	if h.KeyQueryParam != "" && r.URL.RawQuery != "" {
		// Only the key's pairs go; the rest of the query stays byte for byte.
		kept := make([]string, 0, 4)
		removed := false
		for _, pair := range strings.Split(r.URL.RawQuery, "&") {
			name, _, _ := strings.Cut(pair, "=")
			if n, err := url.QueryUnescape(name); err == nil && n == h.KeyQueryParam {
				removed = true
				continue
			}
			kept = append(kept, pair)
		}
		if removed {
			r.URL.RawQuery = strings.Join(kept, "&")
			r.RequestURI = r.URL.RequestURI()
		}
	}
}

// relPath is the request's path relative to the API.
func (h *Handler) relPath(p string) string {
	n := len(h.PathPrefix)
	if n > 0 && len(p) >= n && strings.EqualFold(p[:n], h.PathPrefix) && (len(p) == n || p[n] == '/') {
		p = p[n:]
	}
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	return p
}

// template names the request's route for the event.
func (h *Handler) template(rel string) string {
	for _, t := range h.Routes {
		if enforcement.MatchRoute(t, rel) {
			return t
		}
	}
	return "/*"
}

// emit hands the call's event to the emitter; it never waits for Kafka.
func (h *Handler) emit(r *http.Request, c *call) {
	lat := time.Since(c.start).Milliseconds()
	if lat < 0 {
		lat = 0
	}
	b := make([]byte, 0, 512)
	b = append(b, `{"specversion":"1.0","id":"`...)
	b = appendID(b)
	b = append(b, `","source":`...)
	b = appendString(b, h.app.Source)
	b = append(b, `,"type":"veil.api.request","time":"`...)
	b = c.start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","subject":`...)
	b = appendString(b, c.subject)
	b = append(b, `,"datacontenttype":"application/json","data":{"api_id":`...)
	b = appendString(b, h.APIID)
	if c.keyID != "" {
		b = append(b, `,"key_id":`...)
		b = appendString(b, c.keyID)
	}
	b = append(b, `,"method":`...)
	b = appendString(b, eventMethod(r.Method))
	b = append(b, `,"route":`...)
	b = appendString(b, c.route)
	b = append(b, `,"path":`...)
	b = appendString(b, truncate(c.rel, 2048))
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(c.status), 10)
	b = append(b, `,"latency_ms":`...)
	b = strconv.AppendInt(b, lat, 10)
	b = append(b, `,"request_bytes":`...)
	b = strconv.AppendInt(b, c.reqBytes, 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendInt(b, c.resBytes, 10)
	b = append(b, `,"units":`...)
	b = append(b, c.units.String()...)
	if c.refusal != "" {
		b = append(b, `,"refusal":"`...)
		b = append(b, c.refusal...)
		b = append(b, '"')
	}
	b = append(b, "}}"...)
	key := []byte(c.subject)
	if c.subject == anonymousSubject {
		key = anonymousKey()
	}
	h.res.emitter.Emit(emitter.Record{Key: key, Value: b})
	h.res.m.requests.Inc()
	h.res.m.latency.Update(time.Since(c.start).Seconds())
}

// appendID appends a random 128-bit id in hex.
func appendID(b []byte) []byte {
	var id [16]byte
	_, _ = rand.Read(id[:])
	return hex.AppendEncode(b, id[:])
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	s = strings.ToValidUTF8(s, "\uFFFD") // paths decode %FF into bytes the event decoder refuses
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '"' || ch == '\\':
			b = append(b, '\\', ch)
		case ch < 0x20:
			b = append(b, fmt.Sprintf(`\u%04x`, ch)...)
		default:
			b = append(b, ch)
		}
	}
	return append(b, '"')
}

// eventMethod is the method as the event schema takes it (1–16 upper-case
// letters); anything else is OTHER.
func eventMethod(m string) string {
	if len(m) == 0 || len(m) > 16 {
		return "OTHER"
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return "OTHER"
		}
	}
	return m
}

// truncate cuts s to at most n bytes on a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// countingReader counts the request body bytes the upstream read.
type countingReader struct {
	io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

// maxUnits is usage.MaxUnits, the most units one event may carry.
var maxUnits = decimal.NewFromInt(usage.MaxUnits)

// countingWriter records the status and counts the body bytes, and takes
// the units header off the response.
type countingWriter struct {
	http.ResponseWriter
	unitsHeader string
	status      int
	n           int64
	units       *decimal.Decimal
	// clamped: the header said more than usage.MaxUnits, units holds the cap.
	clamped bool
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 && code >= 200 {
		c.status = code
		if c.unitsHeader != "" {
			if v := c.Header().Get(c.unitsHeader); v != "" {
				if d, err := decimal.NewFromString(v); err == nil && !d.IsNegative() && d.Exponent() >= -6 {
					if d.GreaterThan(maxUnits) {
						d, c.clamped = maxUnits, true
					}
					c.units = &d
				}
				c.Header().Del(c.unitsHeader)
			}
		}
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer (flushes,
// deadlines, hijacking).
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// handlerMetrics are the handler's veil_gateway_* metrics.
type handlerMetrics struct {
	set         *metrics.Set
	requests    *metrics.Counter
	redisErrors *metrics.Counter
	degraded    *metrics.Counter
	latency     *metrics.Histogram
	// anonymousRefusals counts every refusal without a usable key, sampled
	// into an event or not; anonymousIPLimited the sampled ones a client
	// IP's budget kept out of the events.
	anonymousRefusals  *metrics.Counter
	anonymousIPLimited *metrics.Counter
	// anonymousLimited counts the sampled ones the overall per-minute
	// bound kept out.
	anonymousLimited *metrics.Counter
	// unitsClamped counts calls whose units header passed usage.MaxUnits.
	unitsClamped *metrics.Counter
}

func newHandlerMetrics(set *metrics.Set) handlerMetrics {
	return handlerMetrics{
		set:         set,
		requests:    set.NewCounter("veil_gateway_requests_total"),
		redisErrors: set.NewCounter("veil_gateway_redis_errors_total"),
		degraded:    set.NewCounter("veil_gateway_degraded_admissions_total"),
		latency:     set.NewHistogram("veil_gateway_request_duration_seconds"),

		anonymousRefusals:  set.NewCounter("veil_gateway_anonymous_refusals_total"),
		anonymousIPLimited: set.NewCounter("veil_gateway_anonymous_refusals_ip_limited_total"),
		anonymousLimited:   set.NewCounter("veil_gateway_anonymous_refusals_limited_total"),
		unitsClamped:       set.NewCounter("veil_gateway_units_clamped_total"),
	}
}

func (m handlerMetrics) refused(reason string) *metrics.Counter {
	return m.set.GetOrCreateCounter(`veil_gateway_refused_total{reason="` + reason + `"}`)
}

// MetricsHandler is http.handlers.veil_metrics: it serves the gateway's
// veil_gateway_* metrics in the Prometheus text format.
type MetricsHandler struct{}

// CaddyModule returns the Caddy module information.
func (MetricsHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.veil_metrics", New: func() caddy.Module { return new(MetricsHandler) }}
}

// ServeHTTP writes the metrics.
func (MetricsHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request, _ caddyhttp.Handler) error {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	metrics.WritePrometheus(w, false)
	return nil
}
