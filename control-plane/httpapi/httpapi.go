// Package httpapi is the control plane's REST API: routing, authentication
// and authorization, request decoding and validation, and the one mapping
// from domain errors to RFC 9457 problem details. httpapi.go wires the
// router and mounts the routes; each domain's routes and handlers have a
// file of their own (apis.go, approvals.go, plans.go (and pricing.go, the
// quote), meters.go, subscriptions.go, keys.go,
// quota.go, usage.go, webhooks.go, audit.go, ingesttokens.go,
// promotions.go, billing.go (invoices, credits, adjustments, billing
// profiles, tax rules, revenue), budgets.go, reconcile.go for the admins' reconcile
// calls, and
// pricing_reload.go for their reload of the plan files); decode.go reads
// requests,
// handlers.go adapts service calls to handlers, errors.go maps errors to
// problems.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/accounts"
	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/budgets"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/ingesttokens"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/control-plane/payments"
	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/control-plane/promotions"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/internal/httpserver"
	"github.com/veil-platform/veil/internal/problem"
)

// Authenticator verifies the bearer token and puts the principal in the
// request context.
type Authenticator interface {
	Middleware(next http.Handler) http.Handler
}

// Config wires the API.
type Config struct {
	Pool          *pgxpool.Pool
	Catalog       *catalog.Service
	Subscriptions *subscriptions.Service
	// Usage reads usage for the usage endpoints; nil answers them 503.
	Usage UsageReader
	// Quota answers quota status; nil answers it 503.
	Quota QuotaService
	// Drift checks usage drift; nil answers its endpoints 503.
	Drift         DriftChecker
	Webhooks      *webhooks.Service
	Directory     *accounts.Directory
	Authenticator Authenticator
	RateLimiter   *middleware.RateLimiter
	// IPRate limits every caller by address, before authentication;
	// TokenRate limits each authenticated subject. Zero Limit disables one.
	IPRate, TokenRate middleware.Rate
	// PaymentRate limits pay now and card setup per organization (each
	// is a charge or a SetupIntent at the provider). Zero Limit disables
	// it.
	PaymentRate    middleware.Rate
	Idempotency    *middleware.Idempotency
	CORS           middleware.CORSConfig
	TrustedProxies middleware.TrustedProxies
	OpenAPI        []byte
	Logger         *slog.Logger
	Metrics        *metrics.Set

	// IngestTokens issues and revokes ingest tokens; nil uses one on Pool.
	IngestTokens *ingesttokens.Service
	// PromotionCodes manages promotion codes and their redemptions; nil
	// uses one on Pool, Subscriptions and Webhooks.
	PromotionCodes *promotions.Service
	// Pricing serves the meters; nil uses one on Pool.
	Pricing *pricing.Service
	// Promotions prices quotes that name promotion codes; nil uses
	// PromotionCodes.
	Promotions PromotionQuoter
	// PlanFiles reloads the plan directory (VEIL_PRICING_DIR); nil answers
	// POST /v1/admin/pricing/reload with 409: no directory is configured.
	PlanFiles PlanFilesReloader
	// Billing serves invoices, credits, adjustments, billing profiles,
	// tax rules and revenue; nil uses one on Pool (without ClickHouse:
	// previews answer 503).
	Billing *billing.Service
	// Payments serves invoices' payments, refunds, payment methods and the
	// Stripe webhook; nil uses one on Pool without providers (the webhook
	// answers 409, collections cannot start).
	Payments *payments.Service
	// Analytics answers the usage analytics and exports; nil uses one on
	// Pool and Billing without ClickHouse (they answer 503).
	Analytics *analytics.Service
	// Budgets manages budgets; nil uses one on Pool, which has
	// Subscriptions rewrite the gateway record of a hard budget's
	// subscription.
	Budgets *budgets.Service
}

type api struct {
	cfg Config
	log *slog.Logger
}

// New returns the control plane's handler.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.PromotionCodes == nil && cfg.Subscriptions != nil && cfg.Webhooks != nil {
		// New fails only without these.
		cfg.PromotionCodes, _ = promotions.New(promotions.Config{Pool: cfg.Pool, Subscriptions: cfg.Subscriptions, Publisher: cfg.Webhooks, Logger: cfg.Logger})
	}
	if cfg.Promotions == nil && cfg.PromotionCodes != nil {
		cfg.Promotions = cfg.PromotionCodes
	}
	if cfg.Billing == nil && cfg.Pool != nil {
		// New fails only without a pool.
		cfg.Billing, _ = billing.New(billing.Config{Pool: cfg.Pool, Logger: cfg.Logger})
	}
	if cfg.Payments == nil && cfg.Pool != nil {
		// New fails only without a pool.
		cfg.Payments, _ = payments.New(payments.Config{Pool: cfg.Pool, Logger: cfg.Logger})
	}
	if cfg.Budgets == nil && cfg.Pool != nil {
		bc := budgets.Config{Pool: cfg.Pool, Logger: cfg.Logger}
		if rs, ok := any(cfg.Subscriptions).(budgets.RecordSyncer); ok && cfg.Subscriptions != nil {
			bc.Records = rs
		}
		// New fails only without a pool.
		cfg.Budgets, _ = budgets.New(bc)
	}
	if cfg.Analytics == nil && cfg.Pool != nil {
		// New fails only without a pool.
		cfg.Analytics, _ = analytics.New(analytics.Config{Pool: cfg.Pool, Billing: cfg.Billing, Logger: cfg.Logger})
	}
	a := &api{cfg: cfg, log: cfg.Logger}
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.Recoverer(cfg.Logger), middleware.AccessLog(cfg.Logger, cfg.Metrics))
	r.Use(middleware.CORS(cfg.CORS), saneQuery)
	if cfg.RateLimiter != nil && cfg.IPRate.Limit > 0 {
		r.Use(cfg.RateLimiter.Middleware("ip", cfg.IPRate, func(r *http.Request) string {
			return middleware.ClientIP(r, cfg.TrustedProxies)
		}))
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, problem.New(http.StatusNotFound, "not-found", "Not Found", "no route for "+r.Method+" "+r.URL.Path))
	})
	r.MethodNotAllowed(httpserver.MethodNotAllowed(r))
	r.Get("/openapi.json", a.openAPI)
	// Stripe authenticates with the delivery's signature, not a token.
	r.Post("/v1/billing/stripe/webhook", a.stripeWebhook)
	r.Group(func(r chi.Router) {
		r.Use(cfg.Authenticator.Middleware, a.resolveActor)
		if cfg.RateLimiter != nil && cfg.TokenRate.Limit > 0 {
			r.Use(cfg.RateLimiter.Middleware("token", cfg.TokenRate, func(r *http.Request) string {
				p, _ := identity.FromContext(r.Context())
				return p.Org + "/" + p.Subject
			}))
		}
		if cfg.Idempotency != nil {
			r.Use(cfg.Idempotency.Middleware)
		}
		a.routes(r)
	})
	return r
}

// routes mounts every route. Each domain's file registers its own; the
// admins' routes are under /v1/admin, behind adminOnly.
func (a *api) routes(r chi.Router) {
	r.Get("/v1/me", a.handle(a.me))
	a.apiRoutes(r)
	a.approvalRoutes(r)
	a.webhookRoutes(r)
	a.planRoutes(r)
	a.meterRoutes(r)
	a.subscriptionRoutes(r)
	a.quotaRoutes(r)
	a.promotionRoutes(r)
	a.keyRoutes(r)
	a.billingRoutes(r)
	a.paymentRoutes(r)
	a.payoutRoutes(r)
	a.analyticsRoutes(r)
	a.providerAnalyticsRoutes(r)
	a.budgetRoutes(r)
	r.Get("/v1/audit", a.handle(a.listAudit))

	r.Route("/v1/admin", func(r chi.Router) {
		r.Use(adminOnly)
		a.adminAPIRoutes(r)
		a.adminApprovalRoutes(r)
		a.adminSubscriptionRoutes(r)
		a.reconcileRoutes(r)
		a.adminIngestTokenRoutes(r)
		r.Post("/pricing/reload", a.handle(a.reloadPlanFiles))
		a.adminBillingRoutes(r)
		a.adminPaymentRoutes(r)
		a.adminOverviewRoutes(r)
	})
}

// uuidParam is the pattern of ids in paths: anything else is not a
// resource of this API, so /v1/apis/stats is 404 or 405, never a 422 about
// a malformed id, and static siblings (approvals/bulk) are not shadowed.
const uuidParam = `[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`

var paramRE = regexp.MustCompile(`\{(id|delivery)\}`)

// idPath constrains the {id} and {delivery} parameters of a route pattern
// to UUIDs.
func idPath(pattern string) string {
	return paramRE.ReplaceAllString(pattern, "{$1:"+uuidParam+"}")
}

var constraintRE = regexp.MustCompile(`\{([a-z_]+):[^/]*\}`)

// Routes lists every route as "METHOD pattern", patterns written as in the
// OpenAPI document ({id}, without the UUID constraint); the OpenAPI test
// compares it with the document.
func Routes(h http.Handler) ([]string, error) {
	r, ok := h.(chi.Routes)
	if !ok {
		return nil, errors.New("handler is not a chi router")
	}
	var out []string
	err := chi.Walk(r, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		out = append(out, method+" "+constraintRE.ReplaceAllString(route, "{$1}"))
		return nil
	})
	return out, err
}

func (a *api) openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(a.cfg.OpenAPI)
}

// saneQuery refuses query strings that are not valid UTF-8 or hold NUL,
// which no parameter accepts and Postgres cannot compare.
func saneQuery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for name, values := range r.URL.Query() {
			for _, v := range append(values, name) {
				if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
					problem.Write(w, problem.New(http.StatusBadRequest, "bad-query", "Bad Query",
						"query parameters must be UTF-8 text without NUL").With("request_id", middleware.RequestIDFrom(r.Context())))
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

type actorKey struct{}

// resolveActor turns the verified principal into a catalog actor with the
// organization's id, and puts the request's audit metadata in the context.
func (a *api) resolveActor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := identity.FromContext(r.Context())
		if !ok {
			problem.Write(w, problem.New(http.StatusUnauthorized, "unauthorized", "Unauthorized", "authentication required"))
			return
		}
		acct, err := a.cfg.Directory.Resolve(r.Context(), accounts.Identity{Org: p.Org, Subject: p.Subject, Role: string(p.Role), Name: p.Name, Email: p.Email, EmailVerified: p.EmailVerified})
		if err != nil {
			a.fail(w, r, err)
			return
		}
		actor := identity.Actor{Subject: p.Subject, Role: p.Role, OrgID: acct.OrgID}
		ctx := context.WithValue(r.Context(), actorKey{}, actor)
		ctx = audit.WithMeta(ctx, audit.Meta{
			SourceIP:  middleware.ClientIP(r, a.cfg.TrustedProxies),
			UserAgent: r.UserAgent(),
			RequestID: middleware.RequestIDFrom(r.Context()),
		})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func actorFrom(r *http.Request) identity.Actor {
	act, _ := r.Context().Value(actorKey{}).(identity.Actor)
	return act
}

// adminOnly refuses every role but admin.
func adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if actorFrom(r).Role != identity.RoleAdmin {
			problem.Write(w, problem.New(http.StatusForbidden, "forbidden", "Forbidden", "this route is for platform admins"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *api) me(w http.ResponseWriter, r *http.Request) error {
	p, _ := identity.FromContext(r.Context())
	act := actorFrom(r)
	writeJSON(w, http.StatusOK, map[string]any{
		"subject": p.Subject, "organization": p.Org, "organization_id": act.OrgID, "role": p.Role, "name": p.Name, "email": p.Email,
	})
	return nil
}
