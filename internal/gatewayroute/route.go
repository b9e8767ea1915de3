// Package gatewayroute is the shape of an API route in the gateway's Caddy
// config, owned in one place: the control plane writes routes with Encode,
// and the gateway's own admin endpoint admits only what Decode accepts, so
// a client allowed to change routes cannot slip any other Caddy handler in
// (a file server, a proxy to the admin socket).
package gatewayroute

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

var (
	// ErrInvalidRoute: the route's fields are refused; trying again will
	// not help.
	ErrInvalidRoute = errors.New("invalid route")
	// ErrUnrecognizedRoute: a route's Caddy JSON is not one Encode writes
	// (it was edited by hand, or by another tool).
	ErrUnrecognizedRoute = errors.New("unrecognized route")
)

// APIHeader names the API a request belongs to. When a Route's Headers
// carry it, the gateway sets it on the request toward the upstream and on
// the response too, so a caller can tell which route answered.
const APIHeader = "X-Veil-Api-Id"

// Route is one API as the gateway serves it.
type Route struct {
	// ID is the route's @id in the Caddy config, e.g. "veil-api-<uuid>".
	ID string
	// PathPrefix selects the requests, e.g. "/weather": it matches
	// /weather and /weather/*, case-insensitively as Caddy's path matcher
	// does. It is one or more path segments of letters, digits and
	// "-._~", without a trailing slash; /healthz and /readyz belong to the
	// gateway.
	PathPrefix string
	// Upstream is the provider's base URL, e.g. http://127.0.0.1:9999/v1.
	// A request for PathPrefix+"/rest" goes to the upstream's path +
	// "/rest", and one for PathPrefix itself to the path alone; the Host
	// header is the upstream's, and https upstreams are dialled with TLS.
	// The gateway connects through its egress policy: an upstream that is
	// or resolves to a non-public address (unless allowed) or to Veil's
	// own services answers 502. A trailing slash is dropped: Get returns
	// the URL without it.
	Upstream string
	// Methods, when set, limits the route to these methods; other methods
	// fall through to the gateway's 404.
	Methods []string
	// Headers are set on every request toward the upstream (replacing what
	// the client sent). Host is not allowed here: it is the upstream's.
	Headers map[string]string
	// Veil, when set, puts the veil handler in front of the upstream: API
	// keys, limits and usage events for this API.
	Veil *Veil
	// Signing, when set, signs every request toward the upstream with the
	// API's secret (the Veil-Signature header, see internal/originsig),
	// replacing any the client sent, after the rewrites so that the signed
	// path is the one the upstream receives.
	Signing *Signing
}

// Signing is the origin proof's part of a route. Its secrets live in the
// route's veil_sign handler config, which only the admin API can read.
type Signing struct {
	// APIID is the API's id, part of what is signed.
	APIID string
	// Secret is the API's signing secret.
	Secret string
	// PreviousSecret, after a rotation, is also signed with until
	// PreviousUntil (Unix seconds), so the upstream can roll over.
	PreviousSecret string
	PreviousUntil  int64
}

// String keeps the secrets out of logs and error messages.
func (s Signing) String() string { return "Signing{APIID:" + s.APIID + ", secrets redacted}" }

// Veil is the veil handler's part of a route.
type Veil struct {
	// APIID is the API whose keys the route admits.
	APIID string
	// RouteTemplates are the API's routes (e.g. /forecast/{city}), relative
	// to the API, naming each call's route in its usage event.
	RouteTemplates []string
}

// Route ids the gateway's own configuration uses; Encode refuses them and
// the control plane's listing leaves them out.
const (
	HealthRouteID   = "veil-healthz"
	NotFoundRouteID = "veil-not-found"
	MetricsRouteID  = "veil-metrics"
)

// APIRoutePrefix prefixes the @id of every route the control plane's
// catalog puts for an API. The gateway's routes endpoint replaces and
// removes a route under it whatever its shape (the control plane heals a
// tampered route by writing it again), and other routes only when they
// have the shape Encode writes.
const APIRoutePrefix = "veil-api-"

// ReservedPaths are served by the gateway itself, ahead of any API.
var ReservedPaths = []string{"/healthz", "/readyz"}

// MetricsPath is where the gateway's metrics listener serves them. It is
// not on the public port, but stays reserved there so that a scraper
// pointed at the wrong port never reads a provider's API instead.
const MetricsPath = "/metrics"

var (
	prefixPattern = regexp.MustCompile(`^(/[A-Za-z0-9._~-]+)+$`)
	methodPattern = regexp.MustCompile(`^[A-Z]+$`)
	headerPattern = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// proxySpec is a validated Route with its upstream taken apart.
type proxySpec struct {
	route  Route  // normalized
	scheme string // http or https
	host   string // the upstream's host[:port], also its Host header
	dial   string // host:port
	base   string // escaped base path without trailing slash, "" for the root
}

// spec validates r and returns it normalized: methods upper case, header
// names canonical, the upstream without a trailing slash.
func (r Route) spec() (proxySpec, error) {
	var s proxySpec
	switch {
	case r.ID == "":
		return s, fmt.Errorf("%w: empty id", ErrInvalidRoute)
	case r.ID == HealthRouteID || r.ID == NotFoundRouteID || r.ID == MetricsRouteID:
		return s, fmt.Errorf("%w: id %q belongs to the gateway", ErrInvalidRoute, r.ID)
	case !prefixPattern.MatchString(r.PathPrefix):
		return s, fmt.Errorf("%w: path prefix %q: want path segments of letters, digits and -._~ without a trailing slash", ErrInvalidRoute, r.PathPrefix)
	}
	for _, seg := range strings.Split(r.PathPrefix[1:], "/") {
		if seg == "." || seg == ".." {
			return s, fmt.Errorf("%w: path prefix %q has a dot segment", ErrInvalidRoute, r.PathPrefix)
		}
	}
	for _, p := range append(slices.Clone(ReservedPaths), MetricsPath) {
		if strings.EqualFold(r.PathPrefix, p) {
			return s, fmt.Errorf("%w: path prefix %s belongs to the gateway", ErrInvalidRoute, p)
		}
	}
	u, err := url.Parse(r.Upstream)
	if err != nil {
		return s, fmt.Errorf("%w: upstream: %w", ErrInvalidRoute, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return s, fmt.Errorf("%w: upstream %q: want an absolute http or https URL without credentials, query or fragment", ErrInvalidRoute, r.Upstream)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	s.scheme, s.host, s.dial = u.Scheme, u.Host, net.JoinHostPort(u.Hostname(), port)
	s.base = strings.TrimRight(u.EscapedPath(), "/")

	out := Route{ID: r.ID, PathPrefix: r.PathPrefix, Upstream: s.scheme + "://" + s.host + s.base}
	if r.Veil != nil {
		if r.Veil.APIID == "" || strings.ContainsAny(r.Veil.APIID, "{}") {
			return s, fmt.Errorf("%w: veil api id %q", ErrInvalidRoute, r.Veil.APIID)
		}
		v := &Veil{APIID: r.Veil.APIID}
		for _, t := range r.Veil.RouteTemplates {
			if !strings.HasPrefix(t, "/") || strings.ContainsAny(t, "\r\n\x00") {
				return s, fmt.Errorf("%w: route template %q", ErrInvalidRoute, t)
			}
			v.RouteTemplates = append(v.RouteTemplates, t)
		}
		out.Veil = v
	}
	if g := r.Signing; g != nil {
		switch {
		case g.APIID == "" || strings.ContainsAny(g.APIID, "{}"):
			return s, fmt.Errorf("%w: signing api id %q", ErrInvalidRoute, g.APIID)
		case len(g.Secret) < 32 || strings.ContainsAny(g.Secret, "{}\r\n\x00"):
			return s, fmt.Errorf("%w: signing secret: want at least 32 characters without braces or control characters", ErrInvalidRoute)
		case g.PreviousSecret != "" && (len(g.PreviousSecret) < 32 || strings.ContainsAny(g.PreviousSecret, "{}\r\n\x00") || g.PreviousUntil <= 0):
			return s, fmt.Errorf("%w: previous signing secret: want at least 32 characters and an end", ErrInvalidRoute)
		}
		sg := *g
		if sg.PreviousSecret == "" {
			sg.PreviousUntil = 0
		}
		out.Signing = &sg
	}
	for _, m := range r.Methods {
		m = strings.ToUpper(m)
		if !methodPattern.MatchString(m) {
			return s, fmt.Errorf("%w: method %q", ErrInvalidRoute, m)
		}
		if !slices.Contains(out.Methods, m) {
			out.Methods = append(out.Methods, m)
		}
	}
	if len(r.Headers) > 0 {
		out.Headers = make(map[string]string, len(r.Headers))
	}
	for k, v := range r.Headers {
		k = textproto.CanonicalMIMEHeaderKey(k)
		switch {
		case !headerPattern.MatchString(k):
			return s, fmt.Errorf("%w: header name %q", ErrInvalidRoute, k)
		case k == "Host":
			return s, fmt.Errorf("%w: the Host header is the upstream's", ErrInvalidRoute)
		case strings.ContainsAny(v, "\r\n\x00"):
			return s, fmt.Errorf("%w: header %s has a control character", ErrInvalidRoute, k)
		}
		if _, dup := out.Headers[k]; dup {
			return s, fmt.Errorf("%w: header %s given twice", ErrInvalidRoute, k)
		}
		out.Headers[k] = v
	}
	s.route = out
	return s, nil
}

// The Caddy JSON this package writes and reads back. Only the fields it
// uses are declared: reading a route with any other field fails, because
// then the route is not one Encode wrote.
type (
	caddyRoute struct {
		ID       string         `json:"@id,omitempty"`
		Group    string         `json:"group,omitempty"`
		Match    []caddyMatch   `json:"match,omitempty"`
		Handle   []caddyHandler `json:"handle,omitempty"`
		Terminal bool           `json:"terminal,omitempty"`
	}
	caddyMatch struct {
		Path   []string `json:"path,omitempty"`
		Method []string `json:"method,omitempty"`
	}
	caddyHandler struct {
		Handler string `json:"handler"`
		// subroute
		Routes []caddyRoute `json:"routes,omitempty"`
		// rewrite
		URI             string `json:"uri,omitempty"`
		StripPathPrefix string `json:"strip_path_prefix,omitempty"`
		// veil (see VeilHandler)
		APIID          string   `json:"api_id,omitempty"`
		PathPrefix     string   `json:"path_prefix,omitempty"`
		RouteTemplates []string `json:"route_templates,omitempty"`
		KeyQueryParam  string   `json:"key_query_param,omitempty"`
		UnitsHeader    string   `json:"units_header,omitempty"`
		// veil_sign (api_id as above)
		Secret         string `json:"secret,omitempty"`
		PreviousSecret string `json:"previous_secret,omitempty"`
		PreviousUntil  int64  `json:"previous_until,omitempty"`
		// reverse_proxy
		Upstreams []caddyUpstream `json:"upstreams,omitempty"`
		Headers   *caddyHeaders   `json:"headers,omitempty"`
		Transport *caddyTransport `json:"transport,omitempty"`
	}
	caddyUpstream struct {
		Dial string `json:"dial"`
	}
	caddyHeaders struct {
		Request  *caddyHeaderOps `json:"request,omitempty"`
		Response *caddyHeaderOps `json:"response,omitempty"`
	}
	caddyHeaderOps struct {
		Set map[string][]string `json:"set,omitempty"`
	}
	caddyTransport struct {
		Protocol string    `json:"protocol"`
		TLS      *struct{} `json:"tls,omitempty"`
	}
)

// TransportModule is the reverse_proxy transport of every route: the
// gateway's http.reverse_proxy.transport.veil, Caddy's HTTP transport
// behind the egress policy of upstreams.
const TransportModule = "veil"

// rewriteGroup makes the two rewrites of a route exclusive: Caddy runs
// only the first matching route of a group.
const rewriteGroup = "veil-rewrite"

// pathPlaceholder is the request path after the prefix was stripped.
const pathPlaceholder = "{http.request.uri.path}"

// caddy returns the route as Caddy JSON:
//
//	match PathPrefix, PathPrefix/* [and the methods]
//	subroute, one of:
//	  PathPrefix exactly: path := base (so /weather goes to /v1, not /v1/)
//	  otherwise:          strip PathPrefix, then path := base + path
//	reverse_proxy to the upstream with Host and the route's headers
//
// Stripping with Caddy's strip_path_prefix (rather than a regexp) keeps
// its handling of escapes and case, which match the path matcher's.
func (s proxySpec) caddy() caddyRoute {
	r := s.route
	match := caddyMatch{Path: []string{r.PathPrefix, r.PathPrefix + "/*"}, Method: r.Methods}
	exact := s.base
	if exact == "" {
		exact = "/"
	}
	rest := []caddyHandler{{Handler: "rewrite", StripPathPrefix: r.PathPrefix}}
	if s.base != "" {
		rest = append(rest, caddyHandler{Handler: "rewrite", URI: s.base + pathPlaceholder})
	}
	sub := caddyHandler{Handler: "subroute", Routes: []caddyRoute{
		{Group: rewriteGroup, Match: []caddyMatch{{Path: []string{r.PathPrefix}}}, Handle: []caddyHandler{{Handler: "rewrite", URI: exact}}},
		{Group: rewriteGroup, Handle: rest},
	}}
	req := map[string][]string{"Host": {s.host}}
	for k, v := range r.Headers {
		req[k] = []string{EscapeBraces(v)}
	}
	hdr := &caddyHeaders{Request: &caddyHeaderOps{Set: req}}
	if v, ok := r.Headers[APIHeader]; ok {
		hdr.Response = &caddyHeaderOps{Set: map[string][]string{APIHeader: {EscapeBraces(v)}}}
	}
	// The veil transport dials only what the egress policy allows,
	// resolving the upstream's name itself at every connection.
	proxy := caddyHandler{Handler: "reverse_proxy", Upstreams: []caddyUpstream{{Dial: s.dial}}, Headers: hdr,
		Transport: &caddyTransport{Protocol: TransportModule}}
	if s.scheme == "https" {
		proxy.Transport.TLS = &struct{}{}
	}
	handle := []caddyHandler{sub, proxy}
	if g := r.Signing; g != nil {
		// Between the rewrites and the proxy: the signed path is the one
		// the upstream receives.
		sign := caddyHandler{Handler: "veil_sign", APIID: g.APIID, Secret: g.Secret, PreviousSecret: g.PreviousSecret, PreviousUntil: g.PreviousUntil}
		handle = []caddyHandler{sub, sign, proxy}
	}
	if r.Veil != nil {
		// Before the rewrites: the handler matches key routes and
		// templates against the API-relative path, which it takes from
		// the original one by the prefix.
		veil := VeilHandler{APIID: r.Veil.APIID, PathPrefix: r.PathPrefix, RouteTemplates: r.Veil.RouteTemplates}
		handle = append([]caddyHandler{veil.caddy()}, handle...)
	}
	return caddyRoute{ID: r.ID, Match: []caddyMatch{match}, Handle: handle, Terminal: true}
}

// Encode validates r and returns it normalized (methods upper case, header
// names canonical, the upstream without a trailing slash) with its Caddy
// JSON.
func Encode(r Route) (Route, []byte, error) {
	s, err := r.spec()
	if err != nil {
		return Route{}, nil, err
	}
	b, err := json.Marshal(s.caddy())
	if err != nil {
		return Route{}, nil, fmt.Errorf("encode route: %w", err)
	}
	return s.route, b, nil
}

// Decode reads back a route Encode wrote; anything else, down to one
// field more or a handler in another order, is ErrUnrecognizedRoute.
func Decode(raw []byte) (Route, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var c caddyRoute
	if err := dec.Decode(&c); err != nil {
		return Route{}, fmt.Errorf("%w: %w", ErrUnrecognizedRoute, err)
	}
	r, err := fromCaddy(c)
	if err != nil {
		return Route{}, fmt.Errorf("%w: %w", ErrUnrecognizedRoute, err)
	}
	// Written by Encode means Encode would write exactly this again.
	s, err := r.spec()
	if err != nil {
		return Route{}, fmt.Errorf("%w: %w", ErrUnrecognizedRoute, err)
	}
	want, _ := json.Marshal(s.caddy())
	got, _ := json.Marshal(c)
	if !bytes.Equal(want, got) {
		return Route{}, fmt.Errorf("%w: it differs from the route its fields describe", ErrUnrecognizedRoute)
	}
	return s.route, nil
}

// fromCaddy extracts the Route fields; Decode checks the rest of the
// shape by writing them again.
func fromCaddy(c caddyRoute) (Route, error) {
	if len(c.Match) != 1 || len(c.Match[0].Path) != 2 {
		return Route{}, errors.New("want one matcher with two paths")
	}
	var veil *Veil
	if len(c.Handle) >= 3 && c.Handle[0].Handler == VeilHandlerName {
		veil = &Veil{APIID: c.Handle[0].APIID, RouteTemplates: c.Handle[0].RouteTemplates}
		c.Handle = c.Handle[1:]
	}
	var signing *Signing
	if len(c.Handle) == 3 && c.Handle[1].Handler == "veil_sign" {
		h := c.Handle[1]
		signing = &Signing{APIID: h.APIID, Secret: h.Secret, PreviousSecret: h.PreviousSecret, PreviousUntil: h.PreviousUntil}
		c.Handle = []caddyHandler{c.Handle[0], c.Handle[2]}
	}
	if len(c.Handle) != 2 || c.Handle[0].Handler != "subroute" || c.Handle[1].Handler != "reverse_proxy" {
		return Route{}, errors.New("want a subroute and a reverse_proxy handler")
	}
	sub, proxy := c.Handle[0], c.Handle[1]
	if len(sub.Routes) != 2 || len(sub.Routes[0].Handle) != 1 {
		return Route{}, errors.New("want two rewrite routes")
	}
	if proxy.Headers == nil || proxy.Headers.Request == nil || len(proxy.Headers.Request.Set["Host"]) != 1 {
		return Route{}, errors.New("want a Host header toward the upstream")
	}
	scheme := "http"
	if proxy.Transport != nil && proxy.Transport.TLS != nil {
		scheme = "https"
	}
	base := sub.Routes[0].Handle[0].URI
	if base == "/" {
		base = ""
	}
	r := Route{
		ID:         c.ID,
		PathPrefix: c.Match[0].Path[0],
		Upstream:   scheme + "://" + proxy.Headers.Request.Set["Host"][0] + base,
		Methods:    c.Match[0].Method,
		Veil:       veil,
		Signing:    signing,
	}
	for k, v := range proxy.Headers.Request.Set {
		if k == "Host" {
			continue
		}
		if len(v) != 1 {
			return Route{}, fmt.Errorf("header %s has %d values; want 1", k, len(v))
		}
		if r.Headers == nil {
			r.Headers = map[string]string{}
		}
		r.Headers[k] = unescapeBraces(v[0])
	}
	return r, nil
}

// Caddy expands {placeholders} in header values; a value is sent as given.
var (
	braceEscaper   = strings.NewReplacer(`{`, `\{`, `}`, `\}`)
	braceUnescaper = strings.NewReplacer(`\{`, `{`, `\}`, `}`)
)

// EscapeBraces makes Caddy send s as given instead of expanding
// {placeholders} in it.
func EscapeBraces(s string) string   { return braceEscaper.Replace(s) }
func unescapeBraces(s string) string { return braceUnescaper.Replace(s) }
