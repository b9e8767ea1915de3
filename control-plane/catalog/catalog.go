// Package catalog holds the APIs providers publish: their registration and
// versions, the state machine every API moves through, the approval workflow
// that admits an API, and the jobs that register approved APIs with the
// gateway — all or nothing — and keep the gateway and the database in
// agreement.
package catalog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/validation"
)

// Sentinel errors; the HTTP layer maps each to one problem type.
var (
	ErrAPINotFound       = errors.New("api not found")
	ErrApprovalNotFound  = errors.New("approval request not found")
	ErrSelfApproval      = errors.New("an organization cannot decide on its own api")
	ErrInvalidTransition = errors.New("invalid state transition")
	ErrNotEditable       = errors.New("api is not editable in its state")
	ErrSlugTaken         = errors.New("slug already taken")
	ErrVersionExists     = errors.New("version already exists")
	ErrApprovalClosed    = errors.New("approval request already decided")
	ErrConflict          = errors.New("concurrent change")
	// ErrAPIInUse: the API has subscriptions, which keep it from being
	// deleted (invoices cite them); it stays retired instead.
	ErrAPIInUse = errors.New("api has subscriptions")
	// ErrGatewayUnavailable: the gateway's admin API did not answer.
	ErrGatewayUnavailable = errors.New("gateway unavailable")
)

// Gateway is what the catalog needs from the gateway's admin API.
type Gateway interface {
	Put(ctx context.Context, r gatewayroute.Route) error
	Delete(ctx context.Context, id string) error
	List(ctx context.Context, idPrefix string) ([]gatewayroute.Route, error)
	IDs(ctx context.Context, idPrefix string) ([]string, error)
}

// Publisher announces changes to webhook endpoints inside the caller's
// transaction.
type Publisher interface {
	Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error
}

// Inserter enqueues jobs inside a transaction (a *river.Client[pgx.Tx]).
type Inserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}

// Config configures the Service.
type Config struct {
	Pool      *pgxpool.Pool
	Jobs      Inserter
	Gateway   Gateway
	Publisher Publisher
	Logger    *slog.Logger
	Metrics   *metrics.Set
	// GatewayURL is where the gateway serves traffic; registration checks
	// the new route answers there before the API becomes active.
	GatewayURL string
	// HTTPClient makes the verification through the gateway. Default: 5 s
	// timeout, no redirects followed. Upstream health checks have their
	// own client, bound to Egress.
	HTTPClient *http.Client
	// Egress decides which upstreams an API may have: checked when an
	// upstream is saved, before registration, at every reconciliation
	// and by the health check's dialer. Required.
	Egress *egress.Policy
	// RegisterAttempts is the retry budget of one registration (default 8).
	// When it is spent the API becomes failed and its route is removed.
	RegisterAttempts int
	// RetryBase is the first retry delay; later ones double, with full
	// jitter, up to RetryMax (defaults 2 s and 5 min).
	RetryBase, RetryMax time.Duration
	// SLA maps approval priority to the time allowed for a decision
	// (defaults: urgent 4 h, high 24 h, normal 72 h, low 7 days).
	SLA map[Priority]time.Duration
	// MaxEscalations is how many times an overdue request escalates before
	// it expires (default 2).
	MaxEscalations int
	// KeyAuth puts the gateway's veil handler in front of every API: calls
	// need an API key, are limited and metered. Registration then verifies
	// a route by the handler's refusal of a call without a key.
	KeyAuth bool
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// Service is the catalog.
type Service struct {
	cfg    Config
	pool   *pgxpool.Pool
	log    *slog.Logger
	now    func() time.Time
	client *http.Client
	// upstream makes the health checks, through the egress policy.
	upstream *http.Client
	metrics  serviceMetrics
}

type serviceMetrics struct {
	registrations  *metrics.Counter
	registerFailed *metrics.Counter
	registerErrors *metrics.Counter
	reconcileFixed *metrics.Counter
	reconcileLeft  *metrics.Counter
}

// RoutePrefix prefixes the @id of every gateway route the catalog owns.
const RoutePrefix = gatewayroute.APIRoutePrefix

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Jobs == nil || cfg.Gateway == nil || cfg.Publisher == nil {
		return nil, errors.New("new catalog: pool, jobs, gateway and publisher are required")
	}
	if cfg.GatewayURL == "" {
		return nil, errors.New("new catalog: gateway url is required")
	}
	if cfg.Egress == nil {
		return nil, errors.New("new catalog: an egress policy is required")
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	if cfg.RegisterAttempts <= 0 {
		cfg.RegisterAttempts = 8
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 2 * time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Minute
	}
	sla := map[Priority]time.Duration{
		PriorityUrgent: 4 * time.Hour, PriorityHigh: 24 * time.Hour,
		PriorityNormal: 72 * time.Hour, PriorityLow: 7 * 24 * time.Hour,
	}
	for p, d := range cfg.SLA {
		sla[p] = d
	}
	cfg.SLA = sla
	if cfg.MaxEscalations <= 0 {
		cfg.MaxEscalations = 2
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	client := cfg.HTTPClient
	if client == nil {
		client = routeCheckClient()
	}
	m := cfg.Metrics
	return &Service{
		cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: cfg.Now, client: client, upstream: upstreamClient(cfg.Egress),
		metrics: serviceMetrics{
			registrations:  m.NewCounter(`veil_controlplane_gateway_registrations_total{result="active"}`),
			registerFailed: m.NewCounter(`veil_controlplane_gateway_registrations_total{result="failed"}`),
			registerErrors: m.NewCounter(`veil_controlplane_gateway_registration_errors_total`),
			reconcileFixed: m.NewCounter(`veil_controlplane_reconcile_healed_total{kind="apis"}`),
			reconcileLeft:  m.NewCounter(`veil_controlplane_reconcile_unhealed_total{kind="apis"}`),
		},
	}, nil
}

// routeCheckClient is the default client that verifies routes through the
// gateway: it follows no redirect, and ignores HTTP_PROXY and HTTPS_PROXY,
// so the check reaches the gateway itself and no proxy the environment
// names sees the calls.
func routeCheckClient() *http.Client {
	return &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        16,
			IdleConnTimeout:     30 * time.Second,
			TLSHandshakeTimeout: 5 * time.Second,
		},
	}
}

// Visibility says who sees an API in the catalog.
type Visibility string

// Visibilities.
const (
	VisibilityPublic  Visibility = "public"
	VisibilityPrivate Visibility = "private"
)

// Route is one operation an API exposes, e.g. GET /forecast/{city}.
type Route struct {
	Methods []string `json:"methods"`
	Path    string   `json:"path"`
}

// API is a registered API. Its upstream URL and health path are the
// owning organization's and the admins' to see: GetAPI and ListAPIs leave
// them out for everyone else, who would otherwise call the upstream
// directly, past keys, metering and quotas.
type API struct {
	ID             uuid.UUID `json:"id"`
	OrganizationID uuid.UUID `json:"organization_id"`
	// APIInput is what its organization registered and has changed since;
	// its fields are the API's own in JSON.
	APIInput
	State       State     `json:"state"`
	StateReason string    `json:"state_reason"`
	GatewayPath string    `json:"gateway_path"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`

	redacted bool     // upstream_url and health_check_path are left out
	signing  *signing // the gateway's secrets; only toServed sets them
}

// MarshalJSON leaves out what a redacted API's reader may not see.
func (a API) MarshalJSON() ([]byte, error) {
	type plain API // without this method
	if !a.redacted {
		return json.Marshal(plain(a))
	}
	// The outer fields hide the embedded ones of the same names.
	return json.Marshal(struct {
		plain
		UpstreamURL     string `json:"upstream_url,omitempty"`
		HealthCheckPath string `json:"health_check_path,omitempty"`
	}{plain: plain(a)})
}

// ownedBy reports whether actor may see a's internals (upstream, health
// path, versions, state history): its own organization and admins.
func (a API) ownedBy(actor identity.Actor) bool {
	return actor.IsAdmin() || actor.OrgID == a.OrganizationID
}

// viewFor is a as actor may read it.
func (a API) viewFor(actor identity.Actor) API {
	if !a.ownedBy(actor) {
		a.UpstreamURL, a.HealthCheckPath, a.redacted = "", "", true
	}
	return a
}

// APIInput registers an API.
type APIInput struct {
	Name            string     `json:"name"`
	Slug            string     `json:"slug"`
	Description     string     `json:"description"`
	UpstreamURL     string     `json:"upstream_url"`
	Version         string     `json:"version"`
	Routes          []Route    `json:"routes"`
	HealthCheckPath string     `json:"health_check_path"`
	DocsURL         string     `json:"docs_url"`
	Visibility      Visibility `json:"visibility"`
}

var (
	slugRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)
	versionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
	methods   = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}
)

// Validate checks in, filling defaults.
func (in *APIInput) Validate() error {
	var v validation.Error
	if n := utf8.RuneCountInString(strings.TrimSpace(in.Name)); n == 0 || n > 200 {
		v.Add("name", "must be 1 to 200 characters")
	}
	if !slugRe.MatchString(in.Slug) {
		v.Add("slug", "must match %s", slugRe)
	}
	if utf8.RuneCountInString(in.Description) > 5000 {
		v.Add("description", "must be at most 5000 characters")
	}
	validateUpstream(&v, "upstream_url", in.UpstreamURL)
	if in.Version == "" {
		in.Version = "1"
	}
	if !versionRe.MatchString(in.Version) {
		v.Add("version", "must match %s", versionRe)
	}
	validateRoutes(&v, in.Routes)
	if in.HealthCheckPath != "" && (!strings.HasPrefix(in.HealthCheckPath, "/") || len(in.HealthCheckPath) > 500) {
		v.Add("health_check_path", "must start with / and be at most 500 characters")
	}
	if in.DocsURL != "" {
		if u, err := url.Parse(in.DocsURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.Add("docs_url", "must be an absolute http or https URL")
		}
	}
	switch in.Visibility {
	case "":
		in.Visibility = VisibilityPublic
	case VisibilityPublic, VisibilityPrivate:
	default:
		v.Add("visibility", "must be public or private")
	}
	return v.Err()
}

func validateUpstream(v *validation.Error, field, raw string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		v.Add(field, "must be an absolute http or https URL without query, fragment or credentials")
	}
}

func validateRoutes(v *validation.Error, routes []Route) {
	if len(routes) > 200 {
		v.Add("routes", "at most 200 routes")
	}
	for i, r := range routes {
		field := fmt.Sprintf("routes[%d]", i)
		if !strings.HasPrefix(r.Path, "/") || len(r.Path) > 500 {
			v.Add(field+".path", "must start with / and be at most 500 characters")
		}
		if len(r.Methods) == 0 {
			v.Add(field+".methods", "must name at least one method")
		}
		for j, m := range r.Methods {
			if !methods[m] {
				v.Add(fmt.Sprintf("%s.methods[%d]", field, j), "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
			}
		}
	}
}

// APIPatch changes an API; nil fields stay as they are.
type APIPatch struct {
	Name            *string     `json:"name"`
	Slug            *string     `json:"slug"`
	Description     *string     `json:"description"`
	UpstreamURL     *string     `json:"upstream_url"`
	Routes          *[]Route    `json:"routes"`
	HealthCheckPath *string     `json:"health_check_path"`
	DocsURL         *string     `json:"docs_url"`
	Visibility      *Visibility `json:"visibility"`
}

// touchesGateway reports whether p changes what the gateway serves.
func (p APIPatch) touchesGateway() bool {
	return p.Slug != nil || p.UpstreamURL != nil || p.Routes != nil || p.HealthCheckPath != nil
}

// changesPresentation reports whether p changes what the review approved
// about how a showing API looks and who sees it: its name, description,
// docs_url and visibility. After approval a private API turned public with
// a new docs_url would reach every consumer unreviewed. Setting a field to
// the value it has is no change, and neither is going private, which only
// narrows who sees the API.
func (p APIPatch) changesPresentation(a API) bool {
	differs := func(v *string, cur string) bool { return v != nil && *v != cur }
	return differs(p.Name, a.Name) || differs(p.Description, a.Description) || differs(p.DocsURL, a.DocsURL) ||
		(p.Visibility != nil && *p.Visibility != a.Visibility && *p.Visibility != VisibilityPrivate)
}

// apply returns the input a patched API would have.
func (p APIPatch) apply(a API) APIInput {
	in := a.APIInput
	set(&in.Name, p.Name)
	set(&in.Slug, p.Slug)
	set(&in.Description, p.Description)
	set(&in.UpstreamURL, p.UpstreamURL)
	set(&in.Routes, p.Routes)
	set(&in.HealthCheckPath, p.HealthCheckPath)
	set(&in.DocsURL, p.DocsURL)
	set(&in.Visibility, p.Visibility)
	return in
}

func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

// Version is one recorded version of an API.
type Version struct {
	APIID       uuid.UUID `json:"api_id"`
	Version     string    `json:"version"`
	UpstreamURL string    `json:"upstream_url"`
	Routes      []Route   `json:"routes"`
	Changelog   string    `json:"changelog"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
}

// VersionInput adds a version.
type VersionInput struct {
	Version     string  `json:"version"`
	UpstreamURL string  `json:"upstream_url"`
	Routes      []Route `json:"routes"`
	Changelog   string  `json:"changelog"`
}

// Validate checks in.
func (in *VersionInput) Validate() error {
	var v validation.Error
	if !versionRe.MatchString(in.Version) {
		v.Add("version", "must match %s", versionRe)
	}
	validateUpstream(&v, "upstream_url", in.UpstreamURL)
	validateRoutes(&v, in.Routes)
	if utf8.RuneCountInString(in.Changelog) > 10000 {
		v.Add("changelog", "must be at most 10000 characters")
	}
	return v.Err()
}

// Transition is one recorded state change.
type Transition struct {
	From      State     `json:"from"`
	To        State     `json:"to"`
	Actor     string    `json:"actor"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}
