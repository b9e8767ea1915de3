package caddyveil

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/veil-platform/veil/internal/gatewayroute"
)

func init() {
	caddy.RegisterModule(RoutesAdmin{})
}

// RoutesPrefix is where RoutesAdmin answers on the admin endpoints.
const RoutesPrefix = "/veil/routes/"

// RoutesAdmin is admin.api.veil_routes, the only part of the admin API a
// remote admin client may use. It changes the API routes of one server,
// and admits only routes of the exact shape the control plane writes
// (gatewayroute.Decode): Caddy's own /config/ would take any handler in a
// route, a file server reading the CA key or a proxy to the admin socket
// included.
//
//	GET    /veil/routes/       the server's routes, as Caddy's /config/ has them
//	PUT    /veil/routes/<id>   creates the route (first, ahead of the others) or replaces it in place
//	DELETE /veil/routes/<id>   removes it; one that is not there is not an error
//
// An optional ?server= must name the server of the veil_routes app.
type RoutesAdmin struct{}

// CaddyModule returns the Caddy module information.
func (RoutesAdmin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "admin.api.veil_routes", New: func() caddy.Module { return new(RoutesAdmin) }}
}

// Routes returns the endpoint's route.
func (*RoutesAdmin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: RoutesPrefix, Handler: caddy.AdminHandlerFunc(serveRoutes)}}
}

// maxRouteBody bounds a route's JSON.
const maxRouteBody = 1 << 20

// maxRouteAttempts bounds how often a change starts again because another
// one came first.
const maxRouteAttempts = 50

func serveRoutes(w http.ResponseWriter, r *http.Request) error {
	app, err := routesApp()
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
	}
	if s := r.URL.Query().Get("server"); s != "" && s != app.Server {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("unknown server %q", s)}
	}
	id := strings.TrimPrefix(r.URL.Path, RoutesPrefix)
	if strings.Contains(id, "/") {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("not found")}
	}
	switch {
	case r.Method == http.MethodGet && id == "":
		body, etag, err := app.routes(r.Context())
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Etag", etag)
		_, _ = w.Write(body)
		return nil
	case r.Method == http.MethodPut && id != "":
		raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRouteBody))
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("read route: %w", err)}
		}
		route, err := gatewayroute.Decode(raw)
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
		if route.ID != id {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("route id %q is not the path's %q", route.ID, id)}
		}
		// Written again from the fields, not forwarded as received.
		_, body, err := gatewayroute.Encode(route)
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
		return app.edit(r.Context(), id, body)
	case r.Method == http.MethodDelete && id != "":
		if id == gatewayroute.HealthRouteID || id == gatewayroute.NotFoundRouteID || id == gatewayroute.MetricsRouteID {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("route %q belongs to the gateway", id)}
		}
		return app.edit(r.Context(), id, nil)
	}
	return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed on %s", r.Method, r.URL.Path)}
}

// routesApp returns the running config's veil_routes app.
func routesApp() (*RoutesApp, error) {
	a, err := caddy.ActiveContext().AppIfConfigured("veil_routes")
	if err != nil || a == nil {
		return nil, errors.New("the veil_routes app is not configured")
	}
	app, ok := a.(*RoutesApp)
	if !ok {
		return nil, errors.New("the veil_routes app is not configured")
	}
	return app, nil
}

var _ caddy.AdminRouter = (*RoutesAdmin)(nil)
