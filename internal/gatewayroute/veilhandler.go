package gatewayroute

import (
	"encoding/json"
	"fmt"
)

// VeilHandlerName is the veil handler's name in a route's handle list.
const VeilHandlerName = "veil"

// VeilHandler is the config of the gateway's veil handler
// (http.handlers.veil, ingest/caddyveil.Handler, which documents each
// field): the one place its JSON is written, for the routes Encode writes
// and for the configs that benchmarks and tests build. A test in the
// gateway holds its fields to the module's.
type VeilHandler struct {
	// APIID is the API whose keys the handler admits. Required.
	APIID string
	// PathPrefix is the route's prefix, taken off the path before key
	// routes and templates are matched. Default: none.
	PathPrefix string
	// RouteTemplates name each call's route in its usage event. Default:
	// none, every call is "/*".
	RouteTemplates []string
	// KeyQueryParam is a query parameter that may carry the key. Default:
	// none, keys only in headers.
	KeyQueryParam string
	// UnitsHeader is a response header with the call's billable units.
	// Default: none, every call is 1 unit.
	UnitsHeader string
}

// caddy returns the handler as an entry of a route's handle list.
func (v VeilHandler) caddy() caddyHandler {
	return caddyHandler{
		Handler: VeilHandlerName, APIID: v.APIID, PathPrefix: v.PathPrefix, RouteTemplates: v.RouteTemplates,
		KeyQueryParam: v.KeyQueryParam, UnitsHeader: v.UnitsHeader,
	}
}

// MarshalJSON writes the handler as an entry of a route's handle list:
// {"handler":"veil","api_id":…}.
func (v VeilHandler) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(v.caddy())
	if err != nil {
		return nil, fmt.Errorf("encode veil handler: %w", err)
	}
	return b, nil
}

// Handle returns the handler's entry as a generic JSON object, for Caddy
// configs built as maps.
func (v VeilHandler) Handle() map[string]any {
	b, _ := v.MarshalJSON() // strings and a list of them always encode
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}
