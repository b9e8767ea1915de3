package gatewayadmin

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/veil-platform/veil/internal/gatewayroute"
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
	// AdminAddr is where Caddy's admin API listens, in Caddy's network
	// address form: a unix socket such as
	// "unix//var/lib/veil/gateway-admin.sock|0600" (what veil gateway
	// uses), whose file permissions decide who may change the gateway, or
	// a TCP address such as "127.0.0.1:2019". A TCP admin API answers
	// anything that can connect to it, a provider's upstream proxied
	// through this very gateway included: keep it off TCP.
	AdminAddr string
	// MetricsAddr, with Veil set, is a listener of its own serving the
	// veil_gateway_* metrics at /metrics, e.g. "127.0.0.1:9183": metrics
	// stay off the public port. Empty: not served.
	MetricsAddr string
	// Remote, when set, also serves the admin API over TLS with client
	// certificates, for a control plane on another host.
	Remote *RemoteAdmin
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
	// app is loaded at start.
	Veil any
}

// MetricsServer names the HTTP server that serves the gateway's metrics
// (apps.http.servers.veil-metrics).
const MetricsServer = "veil-metrics"

// RemoteAdmin is Caddy's remote admin endpoint: the admin API over TLS
// that requires a client certificate, for a control plane that cannot
// reach the gateway's unix socket. Each client may use the gateway's
// routes endpoint (RoutesPath) and nothing else: not /config/, /load or
// /stop. That endpoint admits only API routes of the shape the control
// plane writes (the veil handler, veil_sign, the rewrites, reverse_proxy
// through the veil transport), so a client certificate cannot add a file
// server or a proxy to the admin socket. It can still send the gateway's
// API traffic to any upstream the egress policy allows, and read the
// routes' signing secrets: guard it like the control plane's secrets.
type RemoteAdmin struct {
	// Listen is its address, e.g. ":2021".
	Listen string
	// Names are the DNS names and IP addresses the control plane dials
	// the gateway by; the endpoint's certificate is issued for them.
	Names []string
	// CACertFile and CAKeyFile are PEM files of the CA that issues the
	// endpoint's certificate (through Caddy's pki app and its internal
	// issuer, so nothing leaves the host); the control plane trusts this
	// CA and no other for the gateway.
	CACertFile, CAKeyFile string
	// ClientCerts are the certificates of the clients allowed in, PEM;
	// Caddy matches a client by its certificate's public key.
	ClientCerts []byte
}

// adminCA names the pki app's CA that issues the remote admin endpoint's
// certificate.
const adminCA = "veil-admin"

// remoteJSON returns the admin config's identity and remote parts and the
// pki app.
func (r RemoteAdmin) remoteJSON() (identity, remote, pki map[string]any, err error) {
	if r.Listen == "" || len(r.Names) == 0 || r.CACertFile == "" || r.CAKeyFile == "" {
		return nil, nil, nil, errors.New("remote admin: the listen address, the names, and the CA certificate and key are required")
	}
	var keys []string
	for rest := r.ClientCerts; ; {
		var der []byte
		der, rest, err = nextCert(rest)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("remote admin: client certificates: %w", err)
		}
		if der == nil {
			break
		}
		keys = append(keys, base64.StdEncoding.EncodeToString(der))
	}
	if len(keys) == 0 {
		return nil, nil, nil, errors.New("remote admin: no client certificate")
	}
	identity = map[string]any{
		"identifiers": r.Names,
		"issuers":     []any{map[string]any{"module": "internal", "ca": adminCA}},
	}
	remote = map[string]any{
		"listen": r.Listen,
		"access_control": []any{map[string]any{
			"public_keys": keys,
			"permissions": []any{map[string]any{
				"paths":   []string{RoutesPath},
				"methods": []string{http.MethodGet, http.MethodPut, http.MethodDelete},
			}},
		}},
	}
	pki = map[string]any{"certificate_authorities": map[string]any{adminCA: map[string]any{
		"name":          "Veil gateway admin",
		"install_trust": false,
		"root":          map[string]any{"certificate": r.CACertFile, "private_key": r.CAKeyFile, "format": "pem_file"},
	}}}
	return identity, remote, pki, nil
}

// nextCert returns the DER of the first CERTIFICATE block of b and what
// follows it; nil when there is none.
func nextCert(b []byte) (der, rest []byte, err error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, nil, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, nil, err
		}
		return block.Bytes, b, nil
	}
}

// JSON returns the Caddy config.
func (b Bootstrap) JSON() ([]byte, error) {
	b, err := b.normalized()
	if err != nil {
		return nil, err
	}
	server, err := trafficServer(b.Addr)
	if err != nil {
		return nil, err
	}
	httpApp := map[string]any{"servers": map[string]any{b.Server: server}}
	if b.GracePeriod > 0 {
		httpApp["grace_period"] = b.GracePeriod.String()
	}
	admin := map[string]any{
		"listen": b.AdminAddr,
		// The control plane is the source of truth for routes and
		// puts them again after a restart; nothing is saved to disk.
		"config": map[string]any{"persist": false},
	}
	// The routes endpoint (ingest/caddyveil's admin.api.veil_routes)
	// applies the changes it admits through the local admin API.
	apps := map[string]any{"http": httpApp, "veil_routes": map[string]any{"admin": b.AdminAddr, "server": b.Server}}
	if b.Remote != nil {
		identity, remote, pki, err := b.Remote.remoteJSON()
		if err != nil {
			return nil, fmt.Errorf("gateway config: %w", err)
		}
		admin["identity"], admin["remote"], apps["pki"] = identity, remote, pki
	}
	cfg := map[string]any{
		"admin": admin,
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{
			"writer":  map[string]any{"output": "stderr"},
			"encoder": map[string]any{"format": "json"},
			"level":   b.LogLevel,
		}}},
		"apps": apps,
	}
	if b.Veil != nil {
		apps["veil"] = b.Veil
		if b.MetricsAddr != "" {
			if b.Server == MetricsServer {
				return nil, fmt.Errorf("gateway config: server name %q is the metrics server's", b.Server)
			}
			// A server of its own: /metrics is not reachable through the
			// public port, where anyone could read traffic by API.
			httpApp["servers"].(map[string]any)[MetricsServer] = metricsServer(b.MetricsAddr)
		}
	}
	return json.Marshal(cfg)
}

// normalized checks b and fills in the defaults of its optional fields.
func (b Bootstrap) normalized() (Bootstrap, error) {
	if b.Addr == "" || b.AdminAddr == "" {
		return b, fmt.Errorf("gateway config: the listen and admin addresses are required")
	}
	if strings.HasPrefix(b.AdminAddr, "unix/") && !strings.HasPrefix(b.AdminAddr, "unix//") {
		return b, fmt.Errorf("gateway config: admin address %q: a unix socket needs an absolute path, unix//path", b.AdminAddr)
	}
	if b.Server == "" {
		b.Server = DefaultServer
	}
	if !serverPattern.MatchString(b.Server) {
		return b, fmt.Errorf("gateway config: server name %q: want letters, digits, - and _", b.Server)
	}
	switch b.LogLevel {
	case "":
		b.LogLevel = "INFO"
	case "DEBUG", "INFO", "WARN", "ERROR":
	default:
		return b, fmt.Errorf("gateway config: log level %q: want DEBUG, INFO, WARN or ERROR", b.LogLevel)
	}
	return b, nil
}

// trafficServer is the server API routes are added to: the gateway's own
// health and not-found routes, and errors as problems.
func trafficServer(addr string) (map[string]any, error) {
	notFound, err := json.Marshal(problem.New(http.StatusNotFound, "route-not-found", "Route not found", "No API is published at this path."))
	if err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	problemHeaders := map[string][]string{
		"Content-Type":           {"application/problem+json"},
		"X-Content-Type-Options": {"nosniff"},
	}
	srv := plainServer(addr,
		map[string]any{
			"@id":      gatewayroute.HealthRouteID,
			"match":    []any{map[string]any{"path": gatewayroute.ReservedPaths, "method": []string{"GET", "HEAD"}}},
			"handle":   []any{map[string]any{"handler": "static_response", "status_code": 200, "body": "ok"}},
			"terminal": true,
		},
		map[string]any{
			"@id": gatewayroute.NotFoundRouteID,
			"handle": []any{map[string]any{
				"handler": "static_response", "status_code": http.StatusNotFound,
				"headers": problemHeaders, "body": gatewayroute.EscapeBraces(string(notFound)),
			}},
			"terminal": true,
		},
	)
	// Errors inside Caddy (an upstream that does not answer: 502) are
	// problems too, instead of an empty body.
	srv["errors"] = map[string]any{"routes": []any{map[string]any{
		"handle": []any{map[string]any{
			"handler": "static_response", "status_code": "{http.error.status_code}",
			"headers": problemHeaders,
			"body": `\{"type":"` + problem.TypeBase + `gateway-error","title":"{http.error.status_text}",` +
				`"status":{http.error.status_code},"detail":"The gateway could not complete the request."\}`,
		}},
	}}}
	return srv, nil
}

// metricsServer serves the veil app's /metrics on addr, and nothing else.
func metricsServer(addr string) map[string]any {
	return plainServer(addr,
		map[string]any{
			"@id":      gatewayroute.MetricsRouteID,
			"match":    []any{map[string]any{"path": []string{gatewayroute.MetricsPath}, "method": []string{"GET", "HEAD"}}},
			"handle":   []any{map[string]any{"handler": "veil_metrics"}},
			"terminal": true,
		},
		map[string]any{"handle": []any{map[string]any{"handler": "static_response", "status_code": http.StatusNotFound}}},
	)
}

// plainServer is a Caddy server on addr that answers plain HTTP/1.1 with
// routes: TLS ends in front of the gateway, and Caddy would otherwise warn
// at every reload that h2 and h3 need it.
func plainServer(addr string, routes ...any) map[string]any {
	return map[string]any{
		"listen":          []string{addr},
		"automatic_https": map[string]any{"disable": true},
		"protocols":       []string{"h1"},
		"routes":          routes,
	}
}
