package caddyveil

import (
	"net/http"

	"github.com/VictoriaMetrics/metrics"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(MetricsHandler{})
}

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

var _ caddyhttp.MiddlewareHandler = (*MetricsHandler)(nil)
