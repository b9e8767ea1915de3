package caddyveil

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/schemas/usage"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is http.handlers.veil: it stands in front of one API's upstream.
// For each request it
//
//  1. takes the API key from Authorization: Bearer, X-API-Key or the
//     configured query parameter, and refuses a key whose checksum fails
//     without asking anyone (401);
//  2. looks the key up by its SHA-256 through client-side caching, and
//     checks its status, expiry and rotation grace (401), its API, methods
//     and route patterns (403), its subscription's status (403), the
//     subscription's quota block (429) and the key's and subscription's
//     rate limits (429), with Retry-After and the IETF RateLimit headers;
//  3. removes the key from the request and passes it on;
//  4. after the response, emits one usage event (refusals included, marked
//     with their reason, so they are recorded but never billed).
//
// Every refusal is an application/problem+json answer.
type Handler struct {
	// APIID is the API this route serves; keys of other APIs are refused.
	APIID string `json:"api_id"`
	// PathPrefix is the route's prefix (e.g. /weather): it is taken off the
	// path before the key's route patterns and the route templates are
	// matched, which are relative to the API.
	PathPrefix string `json:"path_prefix,omitempty"`
	// Routes are the API's route templates (e.g. /forecast/{city}); an
	// event names the first one matching the request, else "/*".
	// Parameter names are letters, digits and _ (in a Caddyfile, {host},
	// {path} and the like would be taken for placeholders).
	Routes []string `json:"route_templates,omitempty"`
	// KeyQueryParam, when set, is a query parameter that may carry the key.
	KeyQueryParam string `json:"key_query_param,omitempty"`
	// UnitsHeader, when set, is a response header with the billable units
	// of the call (a non-negative decimal, at most 6 decimals); it is
	// removed from the response. Without it, or when it is missing or
	// invalid, a call is 1 unit. More than usage.MaxUnits (10^9) counts as
	// usage.MaxUnits, so that the call is still counted: an event over the
	// cap would be refused whole (veil_gateway_units_clamped_total).
	UnitsHeader string `json:"units_header,omitempty"`

	app *App
	res *resources
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.veil", New: func() caddy.Module { return new(Handler) }}
}

// Provision takes the veil app's shared resources.
func (h *Handler) Provision(ctx caddy.Context) error {
	app, err := ctx.App("veil")
	if err != nil {
		return fmt.Errorf("veil handler: %w", err)
	}
	h.app = app.(*App)
	h.res = h.app.res
	h.PathPrefix = strings.TrimRight(h.PathPrefix, "/")
	return nil
}

// Validate checks the settings without side effects.
func (h *Handler) Validate() error {
	if h.APIID == "" {
		return errors.New("veil handler: api_id is required")
	}
	if h.PathPrefix != "" && !strings.HasPrefix(h.PathPrefix, "/") {
		return fmt.Errorf("veil handler: path_prefix %q must start with /", h.PathPrefix)
	}
	for _, r := range h.Routes {
		if err := enforcement.ValidRoute(r); err != nil {
			return fmt.Errorf("veil handler: route %q: %w", r, err)
		}
		for _, seg := range strings.Split(r, "/") {
			if strings.HasPrefix(seg, "{") && !paramName.MatchString(seg[1:len(seg)-1]) {
				return fmt.Errorf("veil handler: route %q: parameter %s: want letters, digits and _ (a Caddyfile expands {host}, {path} and the like as placeholders)", r, seg)
			}
		}
	}
	return nil
}

var paramName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	c := call{start: time.Now(), subject: anonymousSubject, units: decimal.NewFromInt(1)}
	c.rel = h.relPath(r.URL.Path)
	c.route = h.template(c.rel)
	w.Header().Set(apiHeader, h.APIID)
	if ref, retry, ok := h.admit(r, w.Header(), &c); !ok {
		h.refuse(w, r, &c, ref, retry)
		return nil
	}
	h.stripKey(r)
	body := &countingReader{ReadCloser: r.Body}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	cw := &countingWriter{ResponseWriter: w, unitsHeader: h.UnitsHeader}
	err := next.ServeHTTP(cw, r)
	c.status = cw.status
	if err != nil {
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			c.status = he.StatusCode
		} else {
			c.status = http.StatusBadGateway
		}
	} else if c.status == 0 {
		c.status = http.StatusOK
	}
	if cw.units != nil {
		c.units = *cw.units
	}
	if cw.clamped {
		h.res.m.unitsClamped.Inc()
		h.res.log.WarnContext(r.Context(), "upstream reported more units than one event may carry; counted at the cap",
			"header", h.UnitsHeader, "max_units", usage.MaxUnits, "route", c.route, "subject", c.subject)
	}
	c.reqBytes, c.resBytes = body.n, cw.n
	h.emit(r, &c)
	return err
}

// apiHeader names the API on every answer, refusals included, as the
// control plane's routes do.
const apiHeader = "X-Veil-Api-Id"

// refuse answers with the refusal's problem and emits its event (an
// anonymous one only when sampled).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, c *call, ref refusal, retry time.Duration) {
	h.res.m.refused(ref.reason).Inc()
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(retry.Seconds())), 10))
	}
	if ref.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="veil"`)
	}
	p := problem.New(ref.status, ref.typ, ref.title, ref.detail).With("api_id", h.APIID)
	if inv := ref.invoice; inv != nil {
		p = p.With("invoice_id", inv.id).With("invoice_number", inv.number)
		if u := h.app.invoiceURL(inv.id); u != "" {
			p = p.With("invoice_url", u)
		}
	}
	problem.Write(w, p)
	c.status, c.refusal, c.units = ref.status, ref.reason, decimal.Zero
	if r.ContentLength > 0 {
		c.reqBytes = r.ContentLength
	}
	if c.subject == anonymousSubject && !h.app.anon.emit(clientIP(r), time.Now(), h.res.m) {
		h.res.m.requests.Inc() // counted, not sampled into an event
		return
	}
	h.emit(r, c)
}

// extractKey finds the key: Authorization: Bearer, then X-API-Key, then
// the query parameter.
func (h *Handler) extractKey(r *http.Request) string {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	if k := r.Header.Get("X-API-Key"); k != "" {
		return strings.TrimSpace(k)
	}
	if h.KeyQueryParam != "" && r.URL.RawQuery != "" {
		return r.URL.Query().Get(h.KeyQueryParam)
	}
	return ""
}

// stripKey removes the key from the request: the upstream never sees it.
func (h *Handler) stripKey(r *http.Request) {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		r.Header.Del("Authorization")
	}
	r.Header.Del("X-API-Key")
	if h.KeyQueryParam != "" && r.URL.RawQuery != "" {
		// Only the key's pairs go; the rest of the query stays byte for byte.
		kept := make([]string, 0, 4)
		removed := false
		for _, pair := range strings.Split(r.URL.RawQuery, "&") {
			name, _, _ := strings.Cut(pair, "=")
			if n, err := url.QueryUnescape(name); err == nil && n == h.KeyQueryParam {
				removed = true
				continue
			}
			kept = append(kept, pair)
		}
		if removed {
			r.URL.RawQuery = strings.Join(kept, "&")
			r.RequestURI = r.URL.RequestURI()
		}
	}
}

// relPath is the request's path relative to the API.
func (h *Handler) relPath(p string) string {
	n := len(h.PathPrefix)
	if n > 0 && len(p) >= n && strings.EqualFold(p[:n], h.PathPrefix) && (len(p) == n || p[n] == '/') {
		p = p[n:]
	}
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	return p
}

// template names the request's route for the event.
func (h *Handler) template(rel string) string {
	for _, t := range h.Routes {
		if enforcement.MatchRoute(t, rel) {
			return t
		}
	}
	return "/*"
}

var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
