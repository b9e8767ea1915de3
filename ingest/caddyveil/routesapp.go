package caddyveil

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/veil-platform/veil/internal/gatewayroute"
)

func init() {
	caddy.RegisterModule(RoutesApp{})
}

// RoutesApp is the "veil_routes" app: the settings of the admin endpoint
// RoutesAdmin, which Caddy builds without a config of its own. It runs
// nothing.
type RoutesApp struct {
	// Admin is Caddy's local admin address (the admin config's listen,
	// e.g. unix//var/lib/veil/gateway-admin.sock|0600), where RoutesAdmin
	// applies the changes it admits. Required.
	Admin string `json:"admin"`
	// Server is the HTTP server whose routes RoutesAdmin manages, and the
	// only one. Required.
	Server string `json:"server"`

	client *http.Client
	base   string
	host   string
}

// CaddyModule returns the Caddy module information.
func (RoutesApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "veil_routes", New: func() caddy.Module { return new(RoutesApp) }}
}

// Provision prepares the client toward the local admin endpoint.
func (a *RoutesApp) Provision(caddy.Context) error {
	if a.Admin == "" || a.Server == "" || strings.ContainsAny(a.Server, "/.") {
		return errors.New("veil_routes: the admin address and a server name are required")
	}
	na, err := caddy.ParseNetworkAddress(a.Admin)
	if err != nil {
		return fmt.Errorf("veil_routes: admin address: %w", err)
	}
	network, addr := na.Network, na.JoinHostPort(0)
	a.host, a.base = addr, "http://"+addr
	if na.IsUnixNetwork() {
		addr, _, _ = strings.Cut(addr, "|")
		// Caddy does not check the Host of requests on a unix socket.
		a.host, a.base = "localhost", "http://localhost"
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	// No keep-alive: every change restarts the admin server, which closes
	// the connections of the old one.
	a.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
	}}
	return nil
}

// Start does nothing: the app only holds settings.
func (*RoutesApp) Start() error { return nil }

// Stop does nothing.
func (*RoutesApp) Stop() error { return nil }

func (a *RoutesApp) routesPath() string { return "/config/apps/http/servers/" + a.Server + "/routes" }

// routes returns the server's routes and their ETag.
func (a *RoutesApp) routes(ctx context.Context) ([]byte, string, error) {
	return a.do(ctx, http.MethodGet, a.routesPath(), "", nil)
}

// edit puts body as the route id (nil: removes it), on condition that the
// routes are still those read: Caddy addresses array elements by index,
// which a concurrent insert or delete shifts.
func (a *RoutesApp) edit(ctx context.Context, id string, body []byte) error {
	for attempt := 1; ; attempt++ {
		raw, etag, err := a.routes(ctx)
		if err != nil {
			return err
		}
		var routes []json.RawMessage
		if err := json.Unmarshal(raw, &routes); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadGateway, Err: fmt.Errorf("decode routes: %w", err)}
		}
		i := -1
		for j, r := range routes {
			var head struct {
				ID any `json:"@id"`
			}
			if json.Unmarshal(r, &head) == nil {
				if s, _ := head.ID.(string); s == id {
					i = j
					break
				}
			}
		}
		// Only the control plane's API routes and routes of the shape this
		// endpoint writes are its to replace or remove; an operator's own
		// route that happens to carry the id is not. An API route of
		// another shape is one tampered with or left by an older version,
		// which the control plane's reconciliation heals by writing it.
		if i >= 0 && !strings.HasPrefix(id, gatewayroute.APIRoutePrefix) {
			if _, err := gatewayroute.Decode(routes[i]); err != nil {
				return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("route %q is not an API route of this endpoint", id)}
			}
		}
		var method, path string
		switch {
		case body == nil && i < 0:
			return nil
		case body == nil:
			method, path = http.MethodDelete, a.routesPath()+"/"+strconv.Itoa(i)
		case i < 0:
			// PUT on an array index inserts there.
			method, path = http.MethodPut, a.routesPath()+"/0"
		default:
			method, path = http.MethodPatch, a.routesPath()+"/"+strconv.Itoa(i)
		}
		_, _, err = a.do(ctx, method, path, etag, body)
		var ae caddy.APIError
		if !errors.As(err, &ae) || ae.HTTPStatus != http.StatusPreconditionFailed || attempt == maxRouteAttempts {
			return err
		}
		t := time.NewTimer(time.Duration(min(attempt, 10)) * 5 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// do calls the local admin API. Its error answers come back as
// caddy.APIError with their status and message.
//
// A request that meets the moment the admin server restarts fails with EOF
// or a reset; do sends it again, which is safe for what edit sends: reads,
// and changes conditional on an ETag (one that did apply the first time
// gets 412 the second, and edit starts over).
func (a *RoutesApp) do(ctx context.Context, method, path, ifMatch string, body []byte) ([]byte, string, error) {
	for send := 1; ; send++ {
		b, etag, err := a.send(ctx, method, path, ifMatch, body)
		var ae caddy.APIError
		if err == nil || errors.As(err, &ae) || ctx.Err() != nil || send == 5 {
			if err != nil && !errors.As(err, &ae) {
				err = caddy.APIError{HTTPStatus: http.StatusBadGateway, Err: err}
			}
			return b, etag, err
		}
		t := time.NewTimer(time.Duration(send) * 10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, "", ctx.Err()
		case <-t.C:
		}
	}
}

// send makes one request to the local admin API.
func (a *RoutesApp) send(ctx context.Context, method, path, ifMatch string, body []byte) ([]byte, string, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return nil, "", fmt.Errorf("local admin %s %s: %w", method, path, err)
	}
	req.Host = a.host
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("local admin %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, "", fmt.Errorf("local admin %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var msg struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &msg) != nil || msg.Error == "" {
			msg.Error = strings.TrimSpace(string(b))
		}
		return nil, "", caddy.APIError{HTTPStatus: resp.StatusCode, Message: msg.Error, Err: errors.New(msg.Error)}
	}
	return b, resp.Header.Get("Etag"), nil
}

var (
	_ caddy.App         = (*RoutesApp)(nil)
	_ caddy.Provisioner = (*RoutesApp)(nil)
)
