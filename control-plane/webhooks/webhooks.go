// Package webhooks sends the control plane's events to the HTTP endpoints an
// organization registers, signed by the Standard Webhooks scheme
// (https://www.standardwebhooks.com).
//
// Publish writes one delivery per subscribed endpoint, and the River job that
// sends it, inside the caller's transaction: an event goes out if and only if
// the change that caused it commits. The DeliveryWorker then POSTs it,
// retrying with exponential backoff, and records every attempt. Every change
// an actor makes to an endpoint is audited in the transaction that makes it.
// The queries are in internal/db (sqlc).
package webhooks

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/validation"
)

// Event types an endpoint can subscribe to.
const (
	EventAPICreated        = "api.created"
	EventAPIUpdated        = "api.updated"
	EventAPIDeleted        = "api.deleted"
	EventAPIStateChanged   = "api.state_changed"
	EventAPIActivated      = "api.activated"
	EventAPIFailed         = "api.failed"
	EventApprovalSubmitted = "approval.submitted"
	EventApprovalDecided   = "approval.decided"
	EventApprovalEscalated = "approval.escalated"
	EventApprovalCommented = "approval.commented"
	EventApprovalExpired   = "approval.expired"

	// EventAll subscribes an endpoint to every event type, including types
	// added later.
	EventAll = "*"
)

// EventTypes lists every event type Publish accepts.
var EventTypes = []string{
	EventAPICreated, EventAPIUpdated, EventAPIDeleted, EventAPIStateChanged, EventAPIActivated, EventAPIFailed,
	EventApprovalSubmitted, EventApprovalDecided, EventApprovalEscalated, EventApprovalCommented, EventApprovalExpired,
	// Plans, subscriptions and keys (the subscriptions service).
	"plan.created", "plan.updated", "plan.version_created",
	"subscription.created", "subscription.updated", "subscription.renewed", "subscription.active",
	"subscription.past_due", "subscription.suspended", "subscription.canceled",
	"key.created", "key.updated", "key.deleted", "key.activated", "key.sync_failed", "key.suspended",
	"key.revoked", "key.expired", "key.renewed", "key.rotated", "key.expiring", "key.rotation_due",
	// The quota loop.
	"subscription.plan_changed", "quota.threshold_crossed", "quota.adjusted",
	// Promotions (the promotions service).
	"promotion.created", "promotion.updated", "promotion.redeemed", "promotion.ended",
	// Invoices (the billing service), to the issuer and the customer.
	"invoice.finalized", "invoice.voided", "invoice.overdue", "invoice.paid",
	// Payments (the payments service), to the issuer and the customer.
	"payment.succeeded", "payment.failed", "payment.refunded", "payment.refund_failed", "payment.dispute_lost",
	"payment.needs_attention",
	// Budgets (the budgets service), to the budget's organization.
	"budget.threshold_crossed",
}

// Errors.
var (
	// ErrEndpointNotFound: no such endpoint in the caller's organization
	// (another organization's endpoint is not found either).
	ErrEndpointNotFound = errors.New("webhook endpoint not found")
	// ErrDeliveryNotFound: no such delivery to the caller's endpoints.
	ErrDeliveryNotFound = errors.New("webhook delivery not found")
	// ErrBadCursor: a list cursor this service did not issue.
	ErrBadCursor = pagination.ErrBadCursor
	// ErrUnknownEventType: Publish was given a type outside EventTypes.
	ErrUnknownEventType = errors.New("unknown event type")
)

// ValidationError lists input fields that are wrong.
type ValidationError = validation.Error

// FieldError is one wrong field.
type FieldError = validation.Field

// Inserter enqueues jobs inside a transaction (a *river.Client[pgx.Tx]).
type Inserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}

// Config configures the Service.
type Config struct {
	Pool *pgxpool.Pool
	Jobs Inserter
	// HTTPClient sends the deliveries. Default: 10 s timeout. Redirects are
	// never followed, whatever the client says: a 3xx is a failed attempt.
	// Its Transport must be nil or an *http.Transport; its dialer is
	// replaced by Egress's, and the default transport ignores HTTP_PROXY:
	// a proxy's address is what would be dialed and checked.
	HTTPClient *http.Client
	Logger     *slog.Logger
	Metrics    *metrics.Set
	// MaxAttempts is how many times one delivery is tried before it is
	// marked failed (default 10).
	MaxAttempts int
	// RetryBase is the delay before the second attempt (default 5 s); each
	// later one doubles, capped at one hour, with full jitter.
	RetryBase time.Duration
	// Egress decides every address an endpoint's URL may name when it is
	// saved and every connection a delivery makes, so that customers
	// cannot make the control plane call its own network or services
	// (SSRF). Default: EgressPolicy(AllowPrivateNetworks, no deny list),
	// which refuses Veil's default ports on loopback and this host's
	// addresses; `veil control-plane` passes one that also refuses the
	// endpoints it is configured with. Build it with EgressPolicy.
	Egress *egress.Policy
	// AllowPrivateNetworks lets endpoints resolve to loopback, private and
	// link-local addresses (Egress must allow them too, as EgressPolicy
	// does), and lets a URL whose name does not resolve be saved. Off by
	// default: such URLs are refused when an endpoint is saved and again
	// when a delivery dials. Veil's own services stay refused either way.
	// Only `veil dev` and tests turn it on.
	AllowPrivateNetworks bool
	// Now is the clock of event and attempt timestamps (default time.Now).
	Now func() time.Time
}

// Service manages endpoints and deliveries.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *slog.Logger
	now     func() time.Time
	client  *http.Client
	egress  *egress.Policy
	metrics serviceMetrics
}

type serviceMetrics struct {
	published      *metrics.Counter
	attemptsOK     *metrics.Counter
	attemptsFailed *metrics.Counter
	succeeded      *metrics.Counter
	failed         *metrics.Counter
	duration       *metrics.PrometheusHistogram
}

// Defaults.
const (
	defaultTimeout     = 10 * time.Second
	defaultMaxAttempts = 10
	defaultRetryBase   = 5 * time.Second
	maxRetryDelay      = time.Hour
)

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Jobs == nil {
		return nil, errors.New("new webhooks: pool and jobs are required")
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = defaultMaxAttempts
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = defaultRetryBase
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Egress == nil {
		// Without a deny list there is no name to look up, so the
		// context is never used.
		p, err := EgressPolicy(context.Background(), cfg.AllowPrivateNetworks, nil)
		if err != nil {
			return nil, fmt.Errorf("new webhooks: %w", err)
		}
		cfg.Egress = p
	}
	client, err := deliveryClient(cfg.HTTPClient, cfg.Egress)
	if err != nil {
		return nil, fmt.Errorf("new webhooks: %w", err)
	}
	m := cfg.Metrics
	return &Service{
		cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: cfg.Now, client: client, egress: cfg.Egress,
		metrics: serviceMetrics{
			published:      m.GetOrCreateCounter(`veil_controlplane_webhook_deliveries_created_total`),
			attemptsOK:     m.GetOrCreateCounter(`veil_controlplane_webhook_attempts_total{result="success"}`),
			attemptsFailed: m.GetOrCreateCounter(`veil_controlplane_webhook_attempts_total{result="failure"}`),
			succeeded:      m.GetOrCreateCounter(`veil_controlplane_webhook_deliveries_total{status="succeeded"}`),
			failed:         m.GetOrCreateCounter(`veil_controlplane_webhook_deliveries_total{status="failed"}`),
			duration:       m.GetOrCreatePrometheusHistogram(`veil_controlplane_webhook_delivery_seconds`),
		},
	}, nil
}

// deliveryClient returns a copy of c (or the default client) that never
// follows redirects and dials only where p allows: p's dialer resolves the
// host itself, refuses it if any answer is refused and dials the checked
// address, with a Control hook checking the socket's address once more.
func deliveryClient(c *http.Client, p *egress.Policy) (*http.Client, error) {
	var out http.Client
	if c != nil {
		out = *c
	} else {
		out.Timeout = defaultTimeout
	}
	out.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var tr *http.Transport
	switch t := out.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
		// A proxy would be the address dialed, hiding the endpoint's own.
		tr.Proxy = nil
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("http client transport %T cannot be put under the egress policy", t)
	}
	dialer := &egress.Dialer{Policy: p, Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = dialer.DialContext
	tr.DialTLSContext = nil
	out.Transport = tr
	return &out, nil
}

// secretPrefix marks a symmetric Standard Webhooks secret.
const secretPrefix = "whsec_"

// newSecret returns "whsec_" + base64 of 32 random bytes (the spec asks for
// at least 24).
func newSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return secretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// msgIDEncoding spells message ids in lower-case letters and digits: the
// spec forbids "." in them, and this keeps them easy to copy.
var msgIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newMessageID returns "msg_" followed by 120 random bits.
func newMessageID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return "msg_" + msgIDEncoding.EncodeToString(b[:])
}

func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}
