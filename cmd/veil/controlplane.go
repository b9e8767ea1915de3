package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/control-plane/accounts"
	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/budgets"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/drift"
	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/payments"
	"github.com/veil-platform/veil/control-plane/planfiles"
	"github.com/veil-platform/veil/control-plane/portal"
	"github.com/veil-platform/veil/control-plane/promotions"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/ingest/caddyveil"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/httpserver"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/manualpay"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/schemas"
)

const (
	defaultControlPlaneAddr        = ":8080"
	defaultControlPlaneMetricsAddr = "127.0.0.1:9180"
	defaultGatewayURL              = "http://127.0.0.1:8000"
)

type controlPlaneFlags struct {
	addr             string
	redisAddr        string
	redisDB          int
	jwtSecret        string
	jwksURL          string
	jwtIssuer        string
	jwtAudience      string
	gatewayAdminURL  string
	gatewayURL       string
	gatewayKeyAuth   bool
	registerAttempts int
	retryBase        time.Duration
	retryMax         time.Duration
	reconcileEvery   time.Duration
	sweepEvery       time.Duration
	rescueAfter      time.Duration
	ipRate           string
	tokenRate        string
	paymentRate      string
	corsOrigins      string
	trustedProxies   string
	webhookPrivate   bool
	webhookAttempts  int
	webhookRetryBase time.Duration
	workers          int

	keyEnv            string
	maxActiveKeys     int
	keySyncFailAfter  int
	keyGrace          time.Duration
	keyAutoGrace      time.Duration
	keySealSecret     string
	keyReconcileEvery time.Duration
	maintenanceEvery  time.Duration
	smtp              notify.SMTPConfig

	usageReconcileEvery time.Duration
	periodRollEvery     time.Duration
	// kafkaBrokers is where quota crossings are consumed from (veil dev
	// sets it from its own flag).
	kafkaBrokers string
	quotaTopic   string
	// processorGroup is the processors' consumer group, whose lag the
	// admin overview shows (veil dev sets it from its own flag).
	processorGroup string

	// Set by the command from its ClickHouse flags: where usage is read.
	clickhouseAddr, clickhouseDB string
	// Usage exports: at most exportsMax at once (exportsPerOrg per
	// organization), each through a ClickHouse pool of that many
	// connections of their own, ended after exportTimeout.
	exportsMax, exportsPerOrg int
	exportTimeout             time.Duration

	// The remote admin endpoint's CA and this client's certificate.
	gatewayAdminCA, gatewayAdminCert, gatewayAdminKey string
	// metricsAddr is where /metrics is served (empty: not served).
	metricsAddr string
	// egress is the policy of provider upstreams.
	egress egressFlags
	// pricingDir is the plan directory (empty: no plan files).
	pricingDir string
	// billingGrace is how long after its end a billing period closes.
	billingGrace time.Duration
	// billingEvery is the interval of the billing cycle; billingReview
	// how long a draft invoice waits before it is finalized.
	billingEvery, billingReview time.Duration
	// outlookEvery is the interval of the outlooks job (previews and
	// projections stored for budgets and analytics).
	outlookEvery time.Duration
	// budgetsEvery is the interval of the budgets' evaluation.
	budgetsEvery time.Duration
	// billingSnapshotSource is where period snapshots count usage:
	// rollup or base.
	billingSnapshotSource string
	// payments configures the payment providers and the payments cycle.
	payments paymentFlags
	// publicURL is the control plane's public base URL, for links in
	// payment notices (VEIL_PUBLIC_URL, as the gateway's 402) and the
	// portal's sign-in callback.
	publicURL string
	// portal configures the portal's sign-in.
	portal portalFlags
}

// paymentFlags configure collection. Neither Stripe secret is logged or
// stored, nor given on the command line (ps shows it): they come from the
// environment or a file only (flags.Secret).
type paymentFlags struct {
	stripeSecretKey, stripeWebhookSecret, stripeAPIBase string
	bankHolder, bankIBAN, bankBIC                       string
	every                                               time.Duration
}

// register adds the control plane's flags; withRedis false leaves out
// --redis-addr, --kafka-brokers and --quota-topic for commands that
// already define them (veil dev).
func (c *controlPlaneFlags) register(f *flags, withRedis bool) {
	f.String(&c.addr, "control-plane-addr", "VEIL_CONTROL_PLANE_ADDR", defaultControlPlaneAddr, "listen address of the control plane's REST API")
	if withRedis {
		f.String(&c.redisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address (rate limits, idempotency keys)")
		f.String(&c.quotaTopic, "quota-topic", "VEIL_QUOTA_TOPIC", broker.TopicQuotaEvents, "topic of the processors' quota threshold crossings")
		f.String(&c.kafkaBrokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers, where quota threshold crossings are consumed from (empty: no quota notices)")
		f.String(&c.processorGroup, "processor-group", "VEIL_PROCESSOR_GROUP", defaultProcessorGroup, "the processors' Kafka consumer group, whose lag GET /v1/admin/overview shows")
	}
	f.Int(&c.exportsMax, "exports-max", "VEIL_EXPORTS_MAX", analytics.DefaultMaxExports, "usage exports running at once, in all (each holds one connection of the exports' own ClickHouse pool)")
	f.Int(&c.exportsPerOrg, "exports-per-org", "VEIL_EXPORTS_PER_ORG", analytics.DefaultMaxExportsPerOrg, "usage exports running at once per organization (beyond: 429)")
	f.Duration(&c.exportTimeout, "export-timeout", "VEIL_EXPORT_TIMEOUT", metering.DefaultExportTimeout, "how long a usage export may run, however fast its client reads")
	f.Duration(&c.periodRollEvery, "period-roll-interval", "VEIL_PERIOD_ROLL_INTERVAL", time.Minute, "how often ended billing periods are rolled (a new period's quota is enforced from its roll)")
	f.Duration(&c.usageReconcileEvery, "usage-reconcile-interval", "VEIL_USAGE_RECONCILE_INTERVAL", 5*time.Minute, "how often the Redis usage counters are checked against ClickHouse and healed")
	f.Int(&c.redisDB, "redis-db", "VEIL_REDIS_DB", 0, "Redis logical database of the control plane's records (the gateway and processors must read the same one)")
	f.String(&c.jwtSecret, "jwt-secret", "VEIL_JWT_SECRET", "", "HS256 secret that signs bearer tokens")
	f.String(&c.jwksURL, "jwt-jwks-url", "VEIL_JWT_JWKS_URL", "", "JWKS URL of an identity provider signing RS256/ES256 tokens")
	f.String(&c.jwtIssuer, "jwt-issuer", "VEIL_JWT_ISSUER", "veil", "required token issuer")
	f.String(&c.jwtAudience, "jwt-audience", "VEIL_JWT_AUDIENCE", "veil-control-plane", "required token audience")
	f.String(&c.gatewayAdminURL, "gateway-admin-url", "VEIL_GATEWAY_ADMIN_URL", defaultGatewayAdminURL(),
		"the gateway's Caddy admin API: unix:///path (its socket; default: in VEIL_DATA_DIR, else Caddy's data directory), https://host:2021 (remote admin: needs the CA, certificate and key below) or http://host:port")
	f.String(&c.gatewayAdminCA, "gateway-admin-ca", "VEIL_GATEWAY_ADMIN_CA", "", "PEM file of the CA that issued the gateway's remote admin certificate (https admin URL)")
	f.String(&c.gatewayAdminCert, "gateway-admin-cert", "VEIL_GATEWAY_ADMIN_CERT", "", "PEM client certificate for the gateway's remote admin endpoint (https admin URL)")
	f.String(&c.gatewayAdminKey, "gateway-admin-key", "VEIL_GATEWAY_ADMIN_KEY", "", "PEM private key of that certificate")
	f.String(&c.gatewayURL, "gateway-url", "VEIL_GATEWAY_URL", defaultGatewayURL, "where the gateway serves traffic (registration verifies routes there)")
	f.Bool(&c.gatewayKeyAuth, "gateway-key-auth", "VEIL_GATEWAY_KEY_AUTH", true, "put the gateway's veil handler (API keys, limits, usage events) in front of every API")
	f.Int(&c.registerAttempts, "register-attempts", "VEIL_REGISTER_ATTEMPTS", 8, "attempts of one gateway registration before the API is marked failed")
	f.Duration(&c.retryBase, "register-retry-base", "VEIL_REGISTER_RETRY_BASE", 2*time.Second, "first registration retry delay; later ones double, with jitter")
	f.Duration(&c.retryMax, "register-retry-max", "VEIL_REGISTER_RETRY_MAX", 5*time.Minute, "longest registration retry delay")
	f.Duration(&c.reconcileEvery, "reconcile-interval", "VEIL_RECONCILE_INTERVAL", 5*time.Minute, "how often APIs and gateway routes are reconciled")
	f.Duration(&c.sweepEvery, "approval-sweep-interval", "VEIL_APPROVAL_SWEEP_INTERVAL", time.Minute, "how often overdue approval requests escalate or expire")
	f.Duration(&c.rescueAfter, "job-rescue-after", "VEIL_JOB_RESCUE_AFTER", time.Minute, "a job still running this long after its start (its worker died) is retried; must exceed the longest job timeout, 50s (scheduled maintenance, period rolls and usage checks)")
	f.String(&c.ipRate, "rate-limit-ip", "VEIL_RATE_LIMIT_IP", "600/1m", "requests per client address, as N/period (empty: off)")
	f.String(&c.tokenRate, "rate-limit-token", "VEIL_RATE_LIMIT_TOKEN", "1200/1m", "requests per authenticated subject, as N/period (empty: off)")
	f.String(&c.paymentRate, "rate-limit-payment", "VEIL_RATE_LIMIT_PAYMENT", "20/1h", "pay now and card setup calls per organization, as N/period (empty: off)")
	f.String(&c.corsOrigins, "cors-origins", "VEIL_CORS_ORIGINS", "", "comma-separated origins allowed by CORS (empty: CORS off)")
	f.String(&c.trustedProxies, "trusted-proxies", "VEIL_TRUSTED_PROXIES", "", "comma-separated CIDRs whose X-Forwarded-For is believed")
	f.Bool(&c.webhookPrivate, "webhook-allow-private", "VEIL_WEBHOOK_ALLOW_PRIVATE", false, "allow webhook endpoints on loopback and private networks (development only)")
	f.Int(&c.webhookAttempts, "webhook-max-attempts", "VEIL_WEBHOOK_MAX_ATTEMPTS", 10, "delivery attempts of one webhook before it is marked failed")
	f.Duration(&c.webhookRetryBase, "webhook-retry-base", "VEIL_WEBHOOK_RETRY_BASE", 5*time.Second, "first webhook retry delay; later ones double, with jitter")
	f.Int(&c.workers, "job-workers", "VEIL_JOB_WORKERS", 10, "concurrent background jobs")
	f.String(&c.keyEnv, "key-env", "VEIL_KEY_ENV", "live", "environment of issued API keys: live (veil_live_…) or test (veil_test_…)")
	f.Int(&c.maxActiveKeys, "max-active-keys", "VEIL_MAX_ACTIVE_KEYS", 5, "live keys a new subscription may hold")
	f.Int(&c.keySyncFailAfter, "key-sync-fail-after", "VEIL_KEY_SYNC_FAIL_AFTER", 3, "failed attempts to write a new key to the gateway before it shows failed_sync (retries go on)")
	f.Duration(&c.keyGrace, "key-rotation-grace", "VEIL_KEY_ROTATION_GRACE", 24*time.Hour, "how long a rotated-out key keeps working when the caller names no grace")
	f.Duration(&c.keyAutoGrace, "key-auto-rotation-grace", "VEIL_KEY_AUTO_ROTATION_GRACE", 7*24*time.Hour, "grace of keys rotated by the automatic rotation policy")
	f.String(&c.keySealSecret, "key-seal-secret", "VEIL_KEY_SEAL_SECRET", "", "secret that seals automatically rotated keys until revealed (empty: automatic rotation only notifies)")
	f.Duration(&c.keyReconcileEvery, "key-reconcile-interval", "VEIL_KEY_RECONCILE_INTERVAL", 5*time.Minute, "how often keys and subscriptions are reconciled with the gateway's Redis records")
	f.Duration(&c.maintenanceEvery, "key-maintenance-interval", "VEIL_KEY_MAINTENANCE_INTERVAL", time.Hour, "how often key expiry, notices, rotation grace, automatic rotation and billing periods are processed")
	c.egress.register(f)
	f.String(&c.pricingDir, "pricing-dir", "VEIL_PRICING_DIR", "", "directory of YAML plan files, loaded at start, on every change and on POST /v1/admin/pricing/reload (empty: no plan files)")
	f.Duration(&c.billingGrace, "billing-grace", "VEIL_BILLING_GRACE", time.Hour, "how long after its end a billing period closes and its usage is snapshotted, so that events still in flight count in it (later ones are billed as late usage on the next invoice)")
	f.Duration(&c.billingEvery, "billing-interval", "VEIL_BILLING_INTERVAL", time.Minute, "how often the billing cycle runs: periods recorded and closed, late usage recounted, draft invoices built, recomputed and finalized, overdue invoices marked")
	f.Duration(&c.budgetsEvery, "budgets-interval", "VEIL_BUDGETS_INTERVAL", time.Minute, "how often budgets are compared with the stored outlooks and their threshold notices sent (webhook and email, once per threshold, basis and period)")
	f.Duration(&c.outlookEvery, "outlook-interval", "VEIL_OUTLOOK_INTERVAL", time.Minute, "how often the outlooks job refreshes each live subscription's cost so far and projection (subscription_outlooks, read by budgets and analytics)")
	f.Duration(&c.billingReview, "billing-review", "VEIL_BILLING_REVIEW", 0, "how long a draft invoice waits after it is built before it is finalized, for the provider to review it (0: the next billing cycle finalizes it)")
	f.String(&c.billingSnapshotSource, "billing-snapshot-source", "VEIL_BILLING_SNAPSHOT_SOURCE", "rollup", "where a period's usage is counted when it closes: rollup (the billing roll-up's whole hours, usage_events for the rest) or base (usage_events alone: the same figures, slower)")
	// Stripe's API key (sk_…; none: Stripe is not configured) and its
	// webhook endpoint's signing secret (whsec_…; none: deliveries are
	// answered 503), from the environment or a file only.
	f.Secret(&c.payments.stripeSecretKey, "VEIL_STRIPE_SECRET_KEY")
	f.Secret(&c.payments.stripeWebhookSecret, "VEIL_STRIPE_WEBHOOK_SECRET")
	c.portal.register(f)
	f.String(&c.publicURL, "public-url", "VEIL_PUBLIC_URL", "", "public base URL of the control plane or portal (https://veil.example.com), for the invoice links of payment notices (empty: none)")
	f.String(&c.payments.stripeAPIBase, "stripe-api-base", "VEIL_STRIPE_API_BASE", "", "Stripe API base URL (empty: Stripe itself; http://127.0.0.1:12111 for stripe-mock)")
	f.String(&c.payments.bankHolder, "bank-account-holder", "VEIL_BANK_ACCOUNT_HOLDER", "", "account holder of the bank account the manual provider's invoices are paid into by transfer")
	f.String(&c.payments.bankIBAN, "bank-iban", "VEIL_BANK_IBAN", "", "IBAN of that account (empty: the manual provider is not configured)")
	f.String(&c.payments.bankBIC, "bank-bic", "VEIL_BANK_BIC", "", "BIC of that account (optional within SEPA)")
	f.Duration(&c.payments.every, "payments-interval", "VEIL_PAYMENTS_INTERVAL", time.Minute, "how often the payments cycle runs: invoices with nothing due marked paid, open invoices collected, due retries made, unanswered attempts reconciled")
	f.String(&c.smtp.Addr, "smtp-addr", "VEIL_SMTP_ADDR", "", "SMTP server (host:port) for notices to people (empty: no email)")
	f.String(&c.smtp.From, "smtp-from", "VEIL_SMTP_FROM", "Veil <noreply@veil.localhost>", "sender of notices")
	f.String(&c.smtp.Username, "smtp-username", "VEIL_SMTP_USERNAME", "", "SMTP login")
	f.String(&c.smtp.Password, "smtp-password", "VEIL_SMTP_PASSWORD", "", "SMTP password")
	f.String(&c.smtp.TLS, "smtp-tls", "VEIL_SMTP_TLS", notify.TLSOpportunistic, "SMTP TLS: none, opportunistic, mandatory (STARTTLS) or tls (implicit)")
}

// parseRate reads "N/period", e.g. "600/1m".
func parseRate(s string) (middleware.Rate, error) {
	if s == "" {
		return middleware.Rate{}, nil
	}
	n, p, ok := strings.Cut(s, "/")
	limit, err := strconv.Atoi(n)
	if !ok || err != nil || limit <= 0 {
		return middleware.Rate{}, fmt.Errorf("rate %q: want N/period such as 600/1m", s)
	}
	period, err := time.ParseDuration(p)
	if err != nil || period <= 0 {
		return middleware.Rate{}, fmt.Errorf("rate %q: want N/period such as 600/1m", s)
	}
	return middleware.Rate{Limit: limit, Period: period, Burst: limit}, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runControlPlane(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cp  controlPlaneFlags
		mig migrateFlags
		log logFlags
	)
	f := newFlags("control-plane", `Serves the control plane's REST API (identity, APIs and approvals, webhooks, audit)
and runs its background jobs: gateway registration and reconciliation of APIs, overdue
approvals, webhook deliveries, key record syncs and notices, key reconciliation, key
maintenance, billing period rolls, quota notices and the usage drift check (with
ClickHouse). Run 'veil migrate' first.`, stdout)
	cp.register(f, true)
	f.String(&cp.metricsAddr, "metrics-addr", "VEIL_METRICS_ADDR", defaultControlPlaneMetricsAddr, "listen address of the control plane's /metrics, kept off the API port (empty: not served)")
	mig.register(f)
	log.register(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	set := metrics.NewSet()
	cp.clickhouseAddr, cp.clickhouseDB = mig.clickhouseAddr, mig.clickhouseDB
	plane, err := newControlPlane(ctx, cp, mig.postgresURL, logger, set)
	if err != nil {
		return err
	}
	defer plane.close()
	return plane.run(ctx)
}

// controlPlane is a wired control plane, ready to run.
type controlPlane struct {
	server *httpserver.Server
	river  *river.Client[pgx.Tx]
	pool   *pgxpool.Pool
	redis  rueidis.Client
	// clickhouse serves usage reads; nil when none is configured.
	clickhouse driver.Conn
	quota      *quota.Service
	drift      *drift.Checker
	subs       *subscriptions.Service
	// planFiles loads VEIL_PRICING_DIR; nil when none is set.
	planFiles *planfiles.Loader
	// exportCH serves usage exports alone, so that exports held open by
	// slow readers never take the connections of billing and analytics.
	exportCH driver.Conn
	// consumeQuota reports whether quota crossings are consumed (Kafka
	// brokers are configured).
	consumeQuota bool
	// kafka reads the processors' consumer lag for the admin overview;
	// nil without brokers.
	kafka *kafkaAdmin
	log   *slog.Logger
}

func newControlPlane(ctx context.Context, cp controlPlaneFlags, postgresURL string, logger *slog.Logger, set *metrics.Set) (_ *controlPlane, err error) {
	if err := cp.validate(); err != nil {
		return nil, err
	}
	limits, err := cp.limits()
	if err != nil {
		return nil, err
	}
	verifier, err := identity.NewVerifier(ctx, identity.Config{
		Secret: []byte(cp.jwtSecret), JWKSURL: cp.jwksURL, Issuer: cp.jwtIssuer, Audience: cp.jwtAudience,
		Logger: logger, Metrics: set,
	})
	if err != nil {
		return nil, fmt.Errorf("token verification: %w", err)
	}
	plane := &controlPlane{log: logger}
	defer func() {
		if err != nil {
			plane.close()
		}
	}()
	if err := plane.connect(ctx, cp, postgresURL); err != nil {
		return nil, err
	}
	// The job client comes first, as the services queue jobs through it;
	// they register their workers and periodic jobs before it starts.
	workers := river.NewWorkers()
	plane.river, err = river.NewClient(riverpgxv5.New(plane.pool), &river.Config{
		Queues:               map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cp.workers}},
		Workers:              workers,
		JobTimeout:           30 * time.Second,
		RescueStuckJobsAfter: cp.rescueAfter,
		Logger:               logger.With("component", "jobs"),
	})
	if err != nil {
		return nil, fmt.Errorf("new job client: %w", err)
	}
	svc, err := plane.newServices(ctx, cp, logger, set)
	if err != nil {
		return nil, err
	}
	periodic := slices.Concat(
		svc.hooks.RegisterJobs(workers, webhooks.JobSchedule{}),
		svc.catalog.RegisterJobs(workers, catalog.JobSchedule{Reconcile: cp.reconcileEvery, Sweep: cp.sweepEvery}),
		svc.subs.RegisterJobs(workers, subscriptions.JobSchedule{
			ReconcileKeys: cp.keyReconcileEvery, Maintenance: cp.maintenanceEvery, PeriodRoll: cp.periodRollEvery,
		}),
		plane.quota.RegisterJobs(workers, quota.JobSchedule{}),
		svc.billing.RegisterJobs(workers, billing.JobSchedule{Cycle: cp.billingEvery}),
		svc.billing.RegisterNoticeJobs(workers, 0),
		svc.billing.RegisterOutlookJobs(workers, billing.OutlookSchedule{Every: cp.outlookEvery, Metrics: set}),
		svc.pays.RegisterJobs(workers, payments.JobSchedule{Cycle: cp.payments.every}),
		svc.notices.RegisterJobs(workers, cp.payments.every),
		svc.budgets.RegisterJobs(workers, budgets.JobSchedule{Evaluate: cp.budgetsEvery}),
	)
	if plane.clickhouse != nil {
		periodic = append(periodic, plane.drift.RegisterJobs(workers, drift.JobSchedule{Check: cp.usageReconcileEvery})...)
	}
	if _, err := plane.river.PeriodicJobs().AddManySafely(periodic); err != nil {
		return nil, fmt.Errorf("add periodic jobs: %w", err)
	}
	api, err := plane.apiHandler(cp, limits, svc, verifier, logger, set)
	if err != nil {
		return nil, err
	}
	auth, err := cp.portal.authConfig(plane.pool, cp.publicURL, set)
	if err != nil {
		return nil, fmt.Errorf("portal: %w", err)
	}
	pc := portal.Config{API: api, Auth: auth, Logger: logger, Metrics: set}
	if limits.ipRate.Limit > 0 {
		// The pages and the sign-in answer each client address within the
		// API's rate, in a bucket of their own.
		limiter, err := middleware.NewRateLimiter(middleware.RateLimitConfig{Client: plane.redis, Prefix: "veil:cp:rl:portal:", Logger: logger, Metrics: set, FailOpen: true})
		if err != nil {
			return nil, err
		}
		pc.Limit = limiter.Middleware("portal-ip", limits.ipRate, func(r *http.Request) string { return middleware.ClientIP(r, limits.proxies) })
	}
	handler, err := portal.New(ctx, pc)
	if err != nil {
		return nil, err
	}
	plane.server, err = httpserver.Listen(httpserver.Config{
		Name: "control-plane", Addr: cp.addr, Handler: handler, Logger: logger, Metrics: set, MetricsAddr: cp.metricsAddr,
		Ready: plane.ready,
	})
	if err != nil {
		return nil, err
	}
	return plane, nil
}

// validate checks what the flags' parsers cannot.
func (cp controlPlaneFlags) validate() error {
	// River does not check a periodic interval: a non-positive one would
	// make its job due again at once, on every tick. Each is refused here,
	// by its flag, before anything starts.
	for _, iv := range []struct {
		flag  string
		every time.Duration
	}{
		{"--reconcile-interval", cp.reconcileEvery},
		{"--approval-sweep-interval", cp.sweepEvery},
		{"--key-reconcile-interval", cp.keyReconcileEvery},
		{"--key-maintenance-interval", cp.maintenanceEvery},
		{"--period-roll-interval", cp.periodRollEvery},
		{"--usage-reconcile-interval", cp.usageReconcileEvery},
		{"--billing-interval", cp.billingEvery},
		{"--outlook-interval", cp.outlookEvery},
		{"--budgets-interval", cp.budgetsEvery},
		{"--payments-interval", cp.payments.every},
	} {
		if iv.every <= 0 {
			return fmt.Errorf("%s must be positive, not %s", iv.flag, iv.every)
		}
	}
	if cp.billingGrace <= 0 {
		return fmt.Errorf("--billing-grace must be positive, not %s", cp.billingGrace)
	}
	if cp.billingReview < 0 {
		return fmt.Errorf("--billing-review must not be negative, not %s", cp.billingReview)
	}
	if cp.billingSnapshotSource != "rollup" && cp.billingSnapshotSource != "base" {
		return fmt.Errorf("--billing-snapshot-source must be rollup or base, not %q", cp.billingSnapshotSource)
	}
	if err := caddyveil.CheckPublicURL(cp.publicURL); err != nil {
		return fmt.Errorf("VEIL_PUBLIC_URL: %w", err)
	}
	if cp.rescueAfter <= 50*time.Second {
		return errors.New("--job-rescue-after must exceed the longest job timeout, 50s")
	}
	return nil
}

// connect opens the control plane's Postgres pool and Redis client, and its
// ClickHouse connection when one is configured (usage reads and checks).
func (p *controlPlane) connect(ctx context.Context, cp controlPlaneFlags, postgresURL string) error {
	// Room for the job workers, their per-API lock connections, River's
	// listener and the API at once.
	pool, err := datastore.OpenPostgres(ctx, datastore.Postgres{URL: postgresURL, MinMaxConns: int32(cp.workers + 10)})
	if err != nil {
		return err
	}
	p.pool = pool
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		return fmt.Errorf("ping postgres (make services starts it): %w", err)
	}
	if p.redis, err = datastore.OpenRedis(datastore.Redis{Addr: cp.redisAddr, DB: cp.redisDB, DisableCache: true}); err != nil {
		return err
	}
	if cp.clickhouseAddr != "" {
		if p.clickhouse, err = datastore.OpenClickHouse(datastore.ClickHouse{Addr: cp.clickhouseAddr, Database: cp.clickhouseDB}); err != nil {
			return err
		}
		exp := datastore.ClickHouse{Addr: cp.clickhouseAddr, Database: cp.clickhouseDB, MaxOpenConns: max(cp.exportsMax, 1)}
		if p.exportCH, err = datastore.OpenClickHouse(exp); err != nil {
			return err
		}
	}
	return nil
}

// services are the control plane's domain services, wired together.
type services struct {
	hooks   *webhooks.Service
	catalog *catalog.Service
	subs    *subscriptions.Service
	promos  *promotions.Service
	billing *billing.Service
	pays    *payments.Service
	notices *payments.Notifier
	budgets *budgets.Service
}

// newServices builds the domain services on the plane's connections and job
// client; the quota service is kept on the plane, which runs its consumer.
func (p *controlPlane) newServices(ctx context.Context, cp controlPlaneFlags, logger *slog.Logger, set *metrics.Set) (services, error) {
	var svc services
	gw, err := gatewayadmin.New(gatewayadmin.Config{
		AdminURL: cp.gatewayAdminURL, CAFile: cp.gatewayAdminCA, CertFile: cp.gatewayAdminCert, KeyFile: cp.gatewayAdminKey,
		Logger: logger,
	})
	if err != nil {
		return svc, err
	}
	// Neither webhooks nor upstreams ever reach what this control plane is
	// configured with, on top of Veil's default ports on loopback; not
	// even webhooks with private networks allowed for development.
	pg := p.pool.Config().ConnConfig
	own := []string{cp.addr, cp.metricsAddr, cp.redisAddr, cp.kafkaBrokers, cp.clickhouseAddr,
		fmt.Sprintf("%s:%d", pg.Host, pg.Port), cp.gatewayURL, cp.gatewayAdminURL, cp.smtp.Addr}
	hookEgress, err := webhooks.EgressPolicy(ctx, cp.webhookPrivate, denyList(own))
	if err != nil {
		return svc, err
	}
	if svc.hooks, err = webhooks.New(webhooks.Config{
		Pool: p.pool, Jobs: p.river, Logger: logger, Metrics: set, Egress: hookEgress,
		MaxAttempts: cp.webhookAttempts, RetryBase: cp.webhookRetryBase, AllowPrivateNetworks: cp.webhookPrivate,
	}); err != nil {
		return svc, err
	}
	upstreams, err := cp.egress.policy(ctx, own...)
	if err != nil {
		return svc, err
	}
	if svc.catalog, err = catalog.New(catalog.Config{
		Pool: p.pool, Jobs: p.river, Gateway: gw, Publisher: svc.hooks, Logger: logger, Metrics: set,
		GatewayURL: cp.gatewayURL, KeyAuth: cp.gatewayKeyAuth, Egress: upstreams, RegisterAttempts: cp.registerAttempts, RetryBase: cp.retryBase, RetryMax: cp.retryMax,
	}); err != nil {
		return svc, err
	}
	mailer, err := newMailer(cp.smtp, logger, set)
	if err != nil {
		return svc, err
	}
	if svc.subs, err = subscriptions.New(subscriptions.Config{
		Pool: p.pool, Jobs: p.river, Records: enforcement.New(p.redis), Publisher: svc.hooks, Mailer: mailer,
		Logger: logger, Metrics: set, MaxActiveKeys: cp.maxActiveKeys, Keys: keys.Options{
			Env: apikey.Env(cp.keyEnv), SyncFailAfter: cp.keySyncFailAfter, DefaultGrace: cp.keyGrace,
			AutoRotateGrace: cp.keyAutoGrace, SealSecret: []byte(cp.keySealSecret),
		},
	}); err != nil {
		return svc, err
	}
	p.subs = svc.subs
	// Subscribe redeems promotion codes in its transaction through the
	// promotions service, which is built on the subscriptions service.
	if svc.promos, err = promotions.New(promotions.Config{Pool: p.pool, Subscriptions: svc.subs, Publisher: svc.hooks, Logger: logger}); err != nil {
		return svc, err
	}
	svc.subs.SetPromotions(svc.promos)
	if cp.keySealSecret == "" {
		logger.Warn("no key-seal secret (VEIL_KEY_SEAL_SECRET): keys with automatic rotation get notices but are not rotated")
	}
	if p.quota, err = quota.New(quota.Config{
		Pool: p.pool, Redis: p.redis, Publisher: svc.hooks, Mailer: mailer, Jobs: p.river,
		Brokers: broker.ParseBrokers(cp.kafkaBrokers), Topic: cp.quotaTopic, Logger: logger, Metrics: set,
	}); err != nil {
		return svc, err
	}
	if p.drift, err = drift.New(drift.Config{Pool: p.pool, Redis: p.redis, ClickHouse: p.clickhouse, Logger: logger, Metrics: set}); err != nil {
		return svc, err
	}
	p.consumeQuota = len(broker.ParseBrokers(cp.kafkaBrokers)) > 0
	if p.kafka, err = newKafkaAdmin(cp.kafkaBrokers); err != nil {
		return svc, err
	}
	if svc.budgets, err = budgets.New(budgets.Config{
		Pool: p.pool, Publisher: svc.hooks, Mailer: mailer, Jobs: p.river, Records: svc.subs, Logger: logger, Metrics: set,
	}); err != nil {
		return svc, err
	}
	if svc.billing, err = billing.New(billing.Config{
		Pool: p.pool, ClickHouse: p.clickhouse, Logger: logger, Grace: cp.billingGrace, Publisher: svc.hooks, Review: cp.billingReview,
		Mailer: mailer, SnapshotBaseTable: cp.billingSnapshotSource == "base",
	}); err != nil {
		return svc, err
	}
	if svc.pays, err = newPayments(p.pool, cp.payments, svc.hooks, svc.subs, svc.billing, svc.billing, logger, set); err != nil {
		return svc, err
	}
	// A finalized invoice is collected at once (a job queued in the
	// finalizing transaction), a closed one's payment canceled.
	svc.billing.SetPayments(svc.pays.BillingHook(p.river))
	svc.notices = svc.pays.Notifier(payments.NotifierConfig{Mailer: mailer, Profiles: svc.billing, PublicURL: cp.publicURL})
	if cp.pricingDir != "" {
		if st, err := os.Stat(cp.pricingDir); err != nil || !st.IsDir() {
			return svc, fmt.Errorf("VEIL_PRICING_DIR %s: not a readable directory", cp.pricingDir)
		}
		if p.planFiles, err = planfiles.New(planfiles.Config{Dir: cp.pricingDir, Pool: p.pool, Logger: logger, Metrics: set, Publisher: svc.hooks}); err != nil {
			return svc, err
		}
	}
	return svc, nil
}

// newPayments builds the payments service with the providers configured:
// Stripe with a secret key, the manual provider with a bank account; a
// payment that fails for good makes its subscription past due through
// dunning (the subscriptions service).
func newPayments(pool *pgxpool.Pool, pf paymentFlags, pub payments.Publisher, dunning payments.Dunning, credits payments.CreditLedger,
	profiles payments.Profiles, logger *slog.Logger, set *metrics.Set) (*payments.Service, error) {
	providers := map[string]metering.PaymentProvider{}
	if pf.stripeSecretKey != "" {
		sp, err := stripepay.New(stripepay.Config{SecretKey: pf.stripeSecretKey, WebhookSecret: pf.stripeWebhookSecret,
			APIBase: pf.stripeAPIBase, Logger: logger.With("component", "stripe")})
		if err != nil {
			return nil, err
		}
		providers[sp.Name()] = sp
		if pf.stripeWebhookSecret == "" {
			logger.Warn("no Stripe webhook secret (VEIL_STRIPE_WEBHOOK_SECRET): Stripe's deliveries are refused, payments settle by reconciliation only")
		}
	}
	if pf.bankIBAN != "" {
		mp, err := manualpay.New(manualpay.Config{AccountHolder: pf.bankHolder, IBAN: pf.bankIBAN, BIC: pf.bankBIC})
		if err != nil {
			return nil, err
		}
		providers[mp.Name()] = mp
	}
	names := make([]string, 0, len(providers))
	for name := range providers {
		names = append(names, name)
	}
	slices.Sort(names)
	logger.Info("payment providers", "configured", names)
	return payments.New(payments.Config{Pool: pool, Providers: providers, Logger: logger, Publisher: pub, Dunning: dunning,
		Credits: credits, Profiles: profiles, Metrics: set})
}

// newMailer sends notices to people through SMTP, or only logs them when no
// server is configured.
func newMailer(smtp notify.SMTPConfig, logger *slog.Logger, set *metrics.Set) (subscriptions.Mailer, error) {
	if smtp.Addr == "" {
		return notify.Discard{Logger: logger}, nil
	}
	smtp.Logger, smtp.Metrics = logger, set
	return notify.NewSMTP(smtp)
}

// apiLimits are the REST API's rate limits and the proxies it believes.
type apiLimits struct {
	ipRate, tokenRate, paymentRate middleware.Rate
	proxies                        middleware.TrustedProxies
}

// limits parses the rate limit and trusted proxy flags.
func (cp controlPlaneFlags) limits() (apiLimits, error) {
	var l apiLimits
	var err error
	if l.ipRate, err = parseRate(cp.ipRate); err != nil {
		return l, err
	}
	if l.tokenRate, err = parseRate(cp.tokenRate); err != nil {
		return l, err
	}
	if l.paymentRate, err = parseRate(cp.paymentRate); err != nil {
		return l, err
	}
	l.proxies, err = middleware.ParseTrustedProxies(splitList(cp.trustedProxies))
	return l, err
}

// apiHandler builds the REST API with its rate limits and idempotency keys
// on Redis.
func (p *controlPlane) apiHandler(cp controlPlaneFlags, limits apiLimits, svc services, verifier *identity.Verifier, logger *slog.Logger, set *metrics.Set) (http.Handler, error) {
	limiter, err := middleware.NewRateLimiter(middleware.RateLimitConfig{Client: p.redis, Logger: logger, Metrics: set, FailOpen: true})
	if err != nil {
		return nil, err
	}
	idem, err := middleware.NewIdempotency(middleware.IdempotencyConfig{
		Client: p.redis, Logger: logger, Metrics: set,
		Scope: func(r *http.Request) string {
			pr, ok := identity.FromContext(r.Context())
			if !ok {
				return ""
			}
			return pr.Org + "/" + pr.Subject
		},
	})
	if err != nil {
		return nil, err
	}
	var usageReader httpapi.UsageReader
	if p.clickhouse != nil {
		usageReader = metering.NewReader(p.clickhouse)
	}
	insights, err := analytics.New(analytics.Config{Pool: p.pool, ClickHouse: p.clickhouse, Billing: svc.billing, Logger: logger,
		Kafka: p.kafka.lagger(), ProcessorGroup: cp.processorGroup,
		ExportClickHouse: p.exportCH, MaxExports: cp.exportsMax, MaxExportsPerOrg: cp.exportsPerOrg, ExportTimeout: cp.exportTimeout})
	if err != nil {
		return nil, err
	}
	return httpapi.New(httpapi.Config{
		Pool: p.pool, Catalog: svc.catalog, Subscriptions: svc.subs, Usage: usageReader, Quota: p.quota, Drift: p.drift, Webhooks: svc.hooks, PromotionCodes: svc.promos, Directory: accounts.New(p.pool), Authenticator: verifier,
		RateLimiter: limiter, IPRate: limits.ipRate, TokenRate: limits.tokenRate, PaymentRate: limits.paymentRate, Idempotency: idem,
		CORS: middleware.CORSConfig{AllowedOrigins: splitList(cp.corsOrigins)}, TrustedProxies: limits.proxies,
		OpenAPI: schemas.OpenAPI, Logger: logger, Metrics: set, PlanFiles: p.planFilesReloader(), Billing: svc.billing,
		Payments: svc.pays, Analytics: insights, Budgets: svc.budgets,
	}), nil
}

// planFilesReloader is the plan loader for the API, or nil (not a nil
// *planfiles.Loader in an interface) when there is none.
func (p *controlPlane) planFilesReloader() httpapi.PlanFilesReloader {
	if p.planFiles == nil {
		return nil
	}
	return p.planFiles
}

// ready reports whether Postgres and Redis answer.
func (p *controlPlane) ready(ctx context.Context) error {
	if err := p.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := p.redis.Do(ctx, p.redis.B().Ping().Build()).Error(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// addr is where the REST API listens.
func (p *controlPlane) addr() net.Addr { return p.server.Addr() }

// run serves the API and runs the jobs until ctx ends.
func (p *controlPlane) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := p.river.Start(ctx); err != nil {
			return fmt.Errorf("start jobs: %w", err)
		}
		<-ctx.Done()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if err := p.river.Stop(stopCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("stop jobs: %w", err)
		}
		return nil
	})
	g.Go(func() error { return p.server.Serve(ctx) })
	if p.planFiles != nil {
		// Every replica watches: the loader's advisory lock makes them
		// take turns, and the later ones find each file loaded already.
		g.Go(func() error { return p.planFiles.Watch(ctx) })
	}
	if p.consumeQuota {
		g.Go(func() error { return p.quota.RunConsumer(ctx) })
	} else {
		p.log.WarnContext(ctx, "no Kafka brokers configured: quota threshold notices are not sent")
	}
	p.log.InfoContext(ctx, "control plane listening", "addr", p.addr().String())
	return g.Wait()
}

func (p *controlPlane) close() {
	p.kafka.close()
	if p.clickhouse != nil {
		_ = p.clickhouse.Close()
	}
	if p.exportCH != nil {
		_ = p.exportCH.Close()
	}
	if p.redis != nil {
		p.redis.Close()
	}
	if p.pool != nil {
		p.pool.Close()
	}
}
