package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/veil-platform/veil/internal/problem"
)

// DefaultServer is the name of the gateway's HTTP server in the Caddy
// config (apps.http.servers.veil).
const DefaultServer = "veil"

// Bootstrap is the configuration `veil gateway` starts Caddy with: the
// admin API, and one HTTP server whose routes are the health route and,
// last, a catch-all answering 404 with a problem. Put inserts API routes
// at the front, so the catch-all always stays last.
type Bootstrap struct {
	// Addr is where the gateway serves traffic, e.g. ":8000".
	Addr string
	// AdminAddr is where Caddy's admin API listens, e.g. "127.0.0.1:2019".
	// On a loopback address Caddy accepts only requests whose Host header
	// names it (localhost, 127.0.0.1 or ::1 with that port).
	AdminAddr string
	// Server names the HTTP server (default DefaultServer).
	Server string
	// LogLevel is Caddy's log level: DEBUG, INFO (the default), WARN or
	// ERROR. Caddy logs JSON to stderr.
	LogLevel string
	// GracePeriod bounds how long a stop or a config reload (every route
	// change is one) waits for requests in flight on the old config; zero
	// waits for as long as they take.
	GracePeriod time.Duration
	// Veil is the veil app's config (Redis, Kafka, spool): when set, the
	// app is loaded at start and the gateway serves its veil_gateway_*
	// metrics at /metrics.
	Veil any
}

// JSON returns the Caddy config.
func (b Bootstrap) JSON() ([]byte, error) {
	if b.Addr == "" || b.AdminAddr == "" {
		return nil, fmt.Errorf("gateway config: the listen and admin addresses are required")
	}
	if b.Server == "" {
		b.Server = DefaultServer
	}
	if !serverPattern.MatchString(b.Server) {
		return nil, fmt.Errorf("gateway config: server name %q: want letters, digits, - and _", b.Server)
	}
	switch b.LogLevel {
	case "":
		b.LogLevel = "INFO"
	case "DEBUG", "INFO", "WARN", "ERROR":
	default:
		return nil, fmt.Errorf("gateway config: log level %q: want DEBUG, INFO, WARN or ERROR", b.LogLevel)
	}
	notFound, err := json.Marshal(problem.New(http.StatusNotFound, "route-not-found", "Route not found", "No API is published at this path."))
	if err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	problemHeaders := map[string][]string{
		"Content-Type":           {"application/problem+json"},
		"X-Content-Type-Options": {"nosniff"},
	}
	server := map[string]any{
		"listen":          []string{b.Addr},
		"automatic_https": map[string]any{"disable": true},
		// Plain HTTP/1.1: TLS ends in front of the gateway, and Caddy
		// would otherwise warn at every reload that h2 and h3 need it.
		"protocols": []string{"h1"},
		"routes": []any{
			map[string]any{
				"@id":      HealthRouteID,
				"match":    []any{map[string]any{"path": reservedPaths, "method": []string{"GET", "HEAD"}}},
				"handle":   []any{map[string]any{"handler": "static_response", "status_code": 200, "body": "ok"}},
				"terminal": true,
			},
			map[string]any{
				"@id": NotFoundRouteID,
				"handle": []any{map[string]any{
					"handler": "static_response", "status_code": http.StatusNotFound,
					"headers": problemHeaders, "body": escapeBraces(string(notFound)),
				}},
				"terminal": true,
			},
		},
		// Errors inside Caddy (an upstream that does not answer: 502) are
		// problems too, instead of an empty body.
		"errors": map[string]any{"routes": []any{map[string]any{
			"handle": []any{map[string]any{
				"handler": "static_response", "status_code": "{http.error.status_code}",
				"headers": problemHeaders,
				"body": `\{"type":"` + problem.TypeBase + `gateway-error","title":"{http.error.status_text}",` +
					`"status":{http.error.status_code},"detail":"The gateway could not complete the request."\}`,
			}},
		}}},
	}
	httpApp := map[string]any{"servers": map[string]any{b.Server: server}}
	if b.GracePeriod > 0 {
		httpApp["grace_period"] = b.GracePeriod.String()
	}
	cfg := map[string]any{
		"admin": map[string]any{
			"listen": b.AdminAddr,
			// The control plane is the source of truth for routes and
			// puts them again after a restart; nothing is saved to disk.
			"config": map[string]any{"persist": false},
		},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{
			"writer":  map[string]any{"output": "stderr"},
			"encoder": map[string]any{"format": "json"},
			"level":   b.LogLevel,
		}}},
		"apps": map[string]any{"http": httpApp},
	}
	if b.Veil != nil {
		cfg["apps"].(map[string]any)["veil"] = b.Veil
		routes := server["routes"].([]any)
		metricsRoute := map[string]any{
			"@id":      MetricsRouteID,
			"match":    []any{map[string]any{"path": []string{"/metrics"}, "method": []string{"GET", "HEAD"}}},
			"handle":   []any{map[string]any{"handler": "veil_metrics"}},
			"terminal": true,
		}
		server["routes"] = append([]any{routes[0], metricsRoute}, routes[1:]...)
	}
	return json.Marshal(cfg)
}
