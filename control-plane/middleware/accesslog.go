package middleware

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-chi/chi/v5"
)

// routeUnmatched labels requests no route matched: the raw path would make
// the metrics' label set as large as the set of paths scanners try.
const routeUnmatched = "unmatched"

// AccessLogOption adjusts AccessLog.
type AccessLogOption func(*accessLog)

// WithTrustedProxies makes the remote_ip field ClientIP(r, proxies) instead
// of the peer address.
func WithTrustedProxies(proxies TrustedProxies) AccessLogOption {
	return func(a *accessLog) { a.proxies = proxies }
}

type accessLog struct {
	log     *slog.Logger
	set     *metrics.Set
	proxies TrustedProxies
}

// AccessLog writes one log line per request (request_id, method, route,
// status, bytes, duration_ms, remote_ip) and counts it in
// veil_controlplane_http_requests_total{method,route,status} and
// veil_controlplane_http_request_duration_seconds{route}.
//
// route is chi's route pattern ("/apis/{id}"), read after routing, so mount
// AccessLog on the chi router (Use) for it to be known; requests that no
// route matched are "unmatched". Methods outside the standard set count as
// "OTHER". Both keep the labels bounded whatever clients send.
//
// A panic passing through is logged as status 500 and continues to the
// Recoverer, so the order of the two does not matter.
func AccessLog(logger *slog.Logger, set *metrics.Set, opts ...AccessLogOption) func(http.Handler) http.Handler {
	a := &accessLog{log: logger, set: set}
	for _, o := range opts {
		o(a)
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.set == nil {
		a.set = metrics.NewSet()
	}
	return a.middleware
}

func (a *accessLog) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rctx := chi.RouteContext(r.Context())
		patternsBefore := 0
		if rctx != nil {
			patternsBefore = len(rctx.RoutePatterns)
		}
		sw := &statusWriter{ResponseWriter: w}
		completed := false
		defer func() {
			status := sw.status
			if !sw.wroteHeader {
				status = http.StatusOK
				if !completed {
					status = http.StatusInternalServerError
				}
			}
			a.record(r, route(rctx, patternsBefore), status, sw.bytes, time.Since(start))
		}()
		next.ServeHTTP(sw, r)
		completed = true
	})
}

func (a *accessLog) record(r *http.Request, route string, status int, bytes int64, d time.Duration) {
	method := metricMethod(r.Method)
	code := strconv.Itoa(status)
	a.set.GetOrCreateCounter(`veil_controlplane_http_requests_total{method="` + method + `",route="` + labelValue(route) + `",status="` + code + `"}`).Inc()
	a.set.GetOrCreatePrometheusHistogram(`veil_controlplane_http_request_duration_seconds{route="` + labelValue(route) + `"}`).Update(d.Seconds())

	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	a.log.LogAttrs(r.Context(), level, "http request",
		slog.String("request_id", RequestIDFrom(r.Context())),
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Int64("bytes", bytes),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("remote_ip", a.remoteIP(r)),
	)
}

func (a *accessLog) remoteIP(r *http.Request) string {
	if len(a.proxies) > 0 {
		return ClientIP(r, a.proxies)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// route is the pattern chi matched below the middleware. Patterns added
// before it ran (a Mount above, such as service.Listen's "/*") do not count
// as a match: if routing below added none, nothing matched.
func route(rctx *chi.Context, patternsBefore int) string {
	if rctx == nil || len(rctx.RoutePatterns) <= patternsBefore {
		return routeUnmatched
	}
	p := rctx.RoutePattern()
	if p == "" {
		return routeUnmatched
	}
	return p
}

func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// labelValue escapes v for a Prometheus label; route patterns may hold
// regular expressions.
func labelValue(v string) string { return labelEscaper.Replace(v) }
