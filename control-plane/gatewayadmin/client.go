// Package gatewayadmin manages the routes of the Caddy gateway through the
// gateway's routes endpoint on Caddy's admin API (RoutesPath), which
// admits only routes of the shape internal/gatewayroute writes: the
// control plane puts, removes and lists the routes that send
// an API's traffic to its provider. It also holds the configuration the
// gateway starts with, since the client relies on its shape (one server,
// a catch-all route last).
package gatewayadmin

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/veil-platform/veil/internal/gatewayroute"
)

// ErrRouteNotFound: no route has the id. Put's refusals are gatewayroute's
// gatewayroute.ErrInvalidRoute and gatewayroute.ErrUnrecognizedRoute.
var ErrRouteNotFound = errors.New("route not found")

// RoutesPath is the gateway's own admin endpoint for API routes
// (admin.api.veil_routes): GET lists the server's routes, PUT …/<id>
// creates or replaces one, DELETE …/<id> removes one. It admits only
// routes of the shape gatewayroute writes, which is why it, and not
// Caddy's /config/, is what a remote admin client may use.
const RoutesPath = "/veil/routes/"

// AdminError is an error answer of Caddy's admin API.
type AdminError struct {
	Method  string
	Path    string
	Status  int
	Message string // Caddy's error message
}

func (e *AdminError) Error() string {
	return fmt.Sprintf("caddy admin %s %s: status %d: %s", e.Method, e.Path, e.Status, e.Message)
}

// Config configures a Client.
type Config struct {
	// AdminURL is where Caddy's admin API is:
	//   - unix:///var/lib/veil/gateway-admin.sock, its unix socket (what
	//     veil gateway listens on by default);
	//   - https://gateway:2021, Caddy's remote admin endpoint, which needs
	//     CAFile, CertFile and KeyFile;
	//   - http://127.0.0.1:2019, a TCP admin API. Its host must be one
	//     Caddy accepts: on a loopback listener that is localhost,
	//     127.0.0.1 or ::1 with the port.
	AdminURL string
	// CAFile is a PEM file of the CA that issued the remote admin
	// endpoint's certificate; the only one trusted for it.
	CAFile string
	// CertFile and KeyFile are the client certificate and its key (PEM)
	// that the remote admin endpoint lets in.
	CertFile, KeyFile string
	// Server is the HTTP server whose routes the client manages (default
	// DefaultServer); the gateway refuses any but the one it was started
	// with.
	Server string
	// HTTPClient calls an http:// admin API (default: a client with a 10 s
	// timeout that ignores HTTP_PROXY: the routes it puts carry signing
	// secrets). Unix and https URLs get a client of their own.
	HTTPClient *http.Client
	// Logger receives a debug line per change (default: discard).
	Logger *slog.Logger
}

// Client manages a gateway's routes through the gateway's own routes
// endpoint (RoutesPath), never Caddy's /config/. It is safe for concurrent
// use, also by several processes at once: the gateway makes every change
// conditional on the routes it read (Caddy's ETag and If-Match), and
// starts again when another change came first.
type Client struct {
	base   string
	server string
	http   *http.Client
	log    *slog.Logger
}

var serverPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// New returns a Client.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.AdminURL)
	switch {
	case err != nil:
	case u.Scheme == "unix" && u.Host == "" && strings.HasPrefix(u.Path, "/"):
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host != "":
	default:
		err = errors.New("unsupported form")
	}
	if err != nil {
		return nil, fmt.Errorf("new gateway client: admin url %q: want unix:///path/to/socket, https://host:port or http://host:port", cfg.AdminURL)
	}
	base := strings.TrimSuffix(cfg.AdminURL, "/")
	switch u.Scheme {
	case "unix":
		if cfg.HTTPClient != nil {
			return nil, errors.New("new gateway client: a unix admin url brings its own HTTP client")
		}
		socket := u.Path
		dialer := &net.Dialer{Timeout: 5 * time.Second}
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, "unix", socket)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     time.Minute,
		}}
		// Caddy does not check the Host of requests on a unix socket.
		base = "http://localhost"
	case "https":
		if cfg.HTTPClient != nil {
			return nil, errors.New("new gateway client: an https admin url brings its own HTTP client")
		}
		tc, err := clientTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("new gateway client: %w", err)
		}
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			Proxy:               nil,
			TLSClientConfig:     tc,
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     time.Minute,
		}}
	}
	cfg.Server = cmp.Or(cfg.Server, DefaultServer)
	if !serverPattern.MatchString(cfg.Server) {
		return nil, fmt.Errorf("new gateway client: server name %q: want letters, digits, - and _", cfg.Server)
	}
	cfg.HTTPClient = cmp.Or(cfg.HTTPClient, plainAdminClient())
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	return &Client{base: base, server: cfg.Server, http: cfg.HTTPClient, log: cfg.Logger}, nil
}

// plainAdminClient is the default client of an http:// admin URL. It
// ignores HTTP_PROXY: a proxy the environment names would see the signing
// secrets in the routes put.
func plainAdminClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}}
}

// clientTLS is the TLS config toward the remote admin endpoint: its CA
// only, and the client certificate.
func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("remote admin: the CA, the client certificate and its key are required")
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("remote admin: read CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("remote admin: %s has no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("remote admin: load client certificate: %w", err)
	}
	return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Put creates the route or replaces the one with the same ID in place.
// A new route goes first, ahead of every other route. Putting a route that
// is already there unchanged does not reload the gateway.
//
// When Put returns, new connections to the gateway get the new routes; a
// connection kept alive from before may be served by the old ones until
// Caddy closes it, which it does as soon as the connection is idle.
func (c *Client) Put(ctx context.Context, r gatewayroute.Route) error {
	route, body, err := gatewayroute.Encode(r)
	if err != nil {
		return fmt.Errorf("put route %q: %w", r.ID, err)
	}
	if _, _, err := c.do(ctx, http.MethodPut, c.routePath(r.ID), body); err != nil {
		return fmt.Errorf("put route %q: %w", r.ID, err)
	}
	c.log.DebugContext(ctx, "gateway route put", "route_id", r.ID, "path_prefix", route.PathPrefix, "upstream", route.Upstream)
	return nil
}

// Delete removes the route; removing one that is not there is not an
// error.
func (c *Client) Delete(ctx context.Context, id string) error {
	if _, _, err := c.do(ctx, http.MethodDelete, c.routePath(id), nil); err != nil {
		return fmt.Errorf("delete route %q: %w", id, err)
	}
	c.log.DebugContext(ctx, "gateway route deleted", "route_id", id)
	return nil
}

// routePath is the routes endpoint's path of one route.
func (c *Client) routePath(id string) string {
	return RoutesPath + url.PathEscape(id) + "?server=" + url.QueryEscape(c.server)
}

// Get returns the route with the id: ErrRouteNotFound when there is none,
// gatewayroute.ErrUnrecognizedRoute when it was not written by Put.
func (c *Client) Get(ctx context.Context, id string) (gatewayroute.Route, error) {
	routes, _, err := c.routes(ctx)
	if err != nil {
		return gatewayroute.Route{}, fmt.Errorf("get route %q: %w", id, err)
	}
	for _, raw := range routes {
		if routeID(raw) == id {
			r, err := gatewayroute.Decode(raw)
			if err != nil {
				return gatewayroute.Route{}, fmt.Errorf("get route %q: %w", id, err)
			}
			return r, nil
		}
	}
	return gatewayroute.Route{}, fmt.Errorf("get route %q: %w", id, ErrRouteNotFound)
}

// List returns every route whose id starts with idPrefix, in the order the
// gateway tries them; the gateway's own routes are left out. When some
// routes with the prefix were not written by Put, List returns the others
// together with an error wrapping gatewayroute.ErrUnrecognizedRoute that names them.
func (c *Client) List(ctx context.Context, idPrefix string) ([]gatewayroute.Route, error) {
	routes, _, err := c.routes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := []gatewayroute.Route{}
	var errs []error
	for _, raw := range routes {
		id := routeID(raw)
		if id == "" || id == gatewayroute.HealthRouteID || id == gatewayroute.NotFoundRouteID || id == gatewayroute.MetricsRouteID || !strings.HasPrefix(id, idPrefix) {
			continue
		}
		r, err := gatewayroute.Decode(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %q: %w", id, err))
			continue
		}
		out = append(out, r)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("list routes: %w", errors.Join(errs...))
	}
	return out, nil
}

// Ping checks that the admin API answers and has the server.
func (c *Client) Ping(ctx context.Context) error {
	if _, _, err := c.routes(ctx); err != nil {
		return fmt.Errorf("ping gateway: %w", err)
	}
	return nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// routes returns the server's routes and their ETag.
func (c *Client) routes(ctx context.Context) ([]json.RawMessage, string, error) {
	body, etag, err := c.do(ctx, http.MethodGet, RoutesPath+"?server="+url.QueryEscape(c.server), nil)
	if err != nil {
		return nil, "", err
	}
	var routes []json.RawMessage
	if err := json.Unmarshal(body, &routes); err != nil {
		return nil, "", fmt.Errorf("decode routes: %w", err)
	}
	return routes, etag, nil
}

// routeID returns a route's @id, "" when it has none (or a number).
func routeID(raw json.RawMessage) string {
	var r struct {
		ID any `json:"@id"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return ""
	}
	id, _ := r.ID.(string)
	return id
}

// maxResponse bounds what is read from the admin API.
const maxResponse = 64 << 20

// maxSends bounds how often one request is sent when the connection fails;
// with sendBackoff the sends span about 0.7 s, longer than Caddy takes to
// restart its remote admin server after a config change.
const maxSends = 8

// sendBackoff is the wait before send number n+1: 10 ms doubling, at most
// 200 ms.
func sendBackoff(n int) time.Duration {
	return min(10*time.Millisecond<<(n-1), 200*time.Millisecond)
}

// do calls the admin API and returns the body and ETag of a 2xx answer.
//
// Every config change restarts Caddy's admin server, which closes the
// connections of the old one: a request that meets that moment fails with
// EOF or a reset, and on the remote (mutual TLS) admin endpoint with a TLS
// "internal error" alert while the new listener takes over. do sends it
// again, which is safe for every request this package makes: reads, and
// puts and deletes of one route by its id, which the gateway applies again
// to the same end. An answer from Caddy (an AdminError) is final.
func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, string, error) {
	for send := 1; ; send++ {
		b, etag, err := c.send(ctx, method, path, body)
		var ae *AdminError
		if err == nil || errors.As(err, &ae) || ctx.Err() != nil || send == maxSends {
			return b, etag, err
		}
		c.log.DebugContext(ctx, "caddy admin request failed; sending it again", "method", method, "path", path, "error", err)
		if err := sleep(ctx, sendBackoff(send)); err != nil {
			return nil, "", err
		}
	}
}

// send makes one request.
func (c *Client) send(ctx context.Context, method, path string, body []byte) ([]byte, string, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, "", fmt.Errorf("caddy admin %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("caddy admin %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, "", fmt.Errorf("caddy admin %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &AdminError{Method: method, Path: path, Status: resp.StatusCode}
		var msg struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &msg) == nil && msg.Error != "" {
			ae.Message = msg.Error
		} else {
			ae.Message = strings.TrimSpace(string(b))
		}
		return nil, "", ae
	}
	return b, resp.Header.Get("Etag"), nil
}
