package gatewayadmin

import "github.com/veil-platform/veil/internal/gatewayroute"

// The route's shape is gatewayroute's, shared with the gateway's admin
// endpoint that checks every route it is given; these names keep this
// package's API.
type (
	// Route is one API as the gateway serves it.
	Route = gatewayroute.Route
	// Signing is the origin proof's part of a route.
	Signing = gatewayroute.Signing
	// Veil is the veil handler's part of a route.
	Veil = gatewayroute.Veil
)

// APIHeader names the API a request belongs to (see gatewayroute).
const APIHeader = gatewayroute.APIHeader

// Route ids the gateway's own configuration uses; Put refuses them and
// List leaves them out.
const (
	HealthRouteID   = gatewayroute.HealthRouteID
	NotFoundRouteID = gatewayroute.NotFoundRouteID
	MetricsRouteID  = gatewayroute.MetricsRouteID
)

// TransportModule is the reverse_proxy transport of every route.
const TransportModule = gatewayroute.TransportModule

// RoutesPath is the gateway's own admin endpoint for API routes
// (admin.api.veil_routes): GET lists the server's routes, PUT …/<id>
// creates or replaces one, DELETE …/<id> removes one. It admits only
// routes of the shape gatewayroute writes, which is why it, and not
// Caddy's /config/, is what a remote admin client may use.
const RoutesPath = "/veil/routes/"
