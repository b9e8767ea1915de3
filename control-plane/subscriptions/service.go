// Package subscriptions holds what consumers buy and hold: an API's plans
// and their versioned terms, subscriptions to a plan, and the API keys of a
// subscription through their life (issue, rotate, suspend, revoke, reveal),
// each change in one transaction with its subscription locked. The rules of
// a key that need no transaction (its state machine, settings, actions and
// sealing) are control-plane/keys; quota credits and resets are
// control-plane/quota. It keeps the gateway's Redis records
// (internal/enforcement) in step with Postgres through outbox jobs and a
// reconciliation, and runs the maintenance that expires keys, ends
// rotation grace periods, rotates keys on a schedule, rolls billing periods
// and sends the notices that go with them, one job per maintenance_*.go
// file.
package subscriptions

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
)

// Sentinel errors; the HTTP layer maps each to one problem type.
var (
	ErrPlanNotFound         = errors.New("plan not found")
	ErrSubscriptionNotFound = errors.New("subscription not found")
	ErrKeyNotFound          = errors.New("key not found")
	// ErrPlanUnavailable: the plan, or its API, takes no new subscriptions.
	ErrPlanUnavailable = errors.New("plan takes no new subscriptions")
	// ErrAlreadySubscribed: the organization has a live subscription to the API.
	ErrAlreadySubscribed = errors.New("organization already has a live subscription to this api")
	// ErrKeyLimit: the subscription holds its maximum of live keys.
	ErrKeyLimit = errors.New("subscription has its maximum number of live keys")
	// ErrSubscriptionInactive: the subscription is canceled or suspended.
	ErrSubscriptionInactive = errors.New("subscription is not active")
	// ErrAlreadyRotated: the key was rotated already and is in its grace period.
	ErrAlreadyRotated = errors.New("key already rotated")
	// ErrNothingToReveal: the key holds no sealed plaintext (it was never
	// sealed, or was revealed already).
	ErrNothingToReveal = errors.New("no sealed key to reveal")
	// ErrInvalidTransition is the key state machine's refusal.
	ErrInvalidTransition = keys.ErrInvalidTransition
	// ErrSamePlan: a plan change to the version the subscription is on.
	ErrSamePlan = errors.New("subscription is on that plan version already")
	// ErrSubscriptionTransition: the subscription's status does not allow the change.
	ErrSubscriptionTransition = errors.New("invalid subscription status transition")
	// ErrSubscriptionHeld: the organization canceled a subscription to the
	// API while it was suspended or past_due, and no admin has released the
	// hold; it may not subscribe to that API again until one does.
	ErrSubscriptionHeld = errors.New("a suspended or past-due subscription to this api was canceled; an admin must release it first")
	// ErrAdminPlaintext: an admin asked for a new key of another
	// organization; plaintexts are shown to the key's organization only.
	ErrAdminPlaintext = errors.New("a new key's plaintext is shown only to its own organization")
	// ErrAdminSuspended: a key an admin suspended is resumed by an admin only.
	ErrAdminSuspended = errors.New("an admin suspended this key; only an admin may resume it")
	ErrForbidden      = catalog.ErrForbidden
)

// Inserter enqueues jobs inside a transaction (a *river.Client[pgx.Tx]).
type Inserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}

// Publisher announces changes to webhook endpoints inside the caller's
// transaction.
type Publisher interface {
	Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error
}

// Mailer sends email.
type Mailer interface {
	Send(ctx context.Context, m notify.Message) error
}

// Records is the gateway's Redis records (a *enforcement.Store).
type Records interface {
	PutKey(ctx context.Context, r enforcement.KeyRecord) (bool, error)
	DeleteKey(ctx context.Context, hash string, version int64) (bool, error)
	ScanKeys(ctx context.Context, fn func(enforcement.KeyRecord) error) error
	PutSubscription(ctx context.Context, r enforcement.SubscriptionRecord) (bool, error)
	GetSubscription(ctx context.Context, id string) (enforcement.SubscriptionRecord, error)
	PeriodRequests(ctx context.Context, id string, start time.Time) (int64, error)
}

// Config configures the Service.
type Config struct {
	Pool      *pgxpool.Pool
	Jobs      Inserter
	Records   Records
	Publisher Publisher
	// Mailer sends the notices; nil sends none (webhooks still go).
	Mailer  Mailer
	Logger  *slog.Logger
	Metrics *metrics.Set
	// Env is the environment keys are issued for: live (default) or test.
	Env apikey.Env
	// MaxActiveKeys is each new subscription's limit of live keys (default 5).
	MaxActiveKeys int
	// SyncFailAfter is how many failed attempts to write a new key to the
	// gateway turn it failed_sync (default 3). Retries go on after that.
	SyncFailAfter int
	// RetryBase and RetryMax bound the sync retry backoff (defaults 1 s, 1 min).
	RetryBase, RetryMax time.Duration
	// DefaultGrace is how long a rotated-out key keeps working when the
	// caller names no grace (default 24 h).
	DefaultGrace time.Duration
	// AutoRotateGrace is the grace of keys rotated by the automatic policy
	// (default 7 days: the consumer must reveal and deploy the successor).
	AutoRotateGrace time.Duration
	// RotationNotice is how long before an automatic rotation the consumer
	// is told (default 7 days).
	RotationNotice time.Duration
	// SealSecret seals the successor keys of automatic rotations until they
	// are revealed. Without it automatic rotation is off (notices still go).
	SealSecret []byte
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// Service is the subscriptions and keys service.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *slog.Logger
	now     func() time.Time
	seal    *keys.Sealer
	metrics serviceMetrics
}

type serviceMetrics struct {
	synced, syncErrors, failedSync    *metrics.Counter
	reconcileFixed, reconcileLeft     *metrics.Counter
	expired, renewed, rotated, graced *metrics.Counter
	noticesSent, noticeErrors         *metrics.Counter
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Jobs == nil || cfg.Records == nil || cfg.Publisher == nil {
		return nil, errors.New("new subscriptions: pool, jobs, records and publisher are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.Env == "" {
		cfg.Env = apikey.EnvLive
	}
	if !cfg.Env.Valid() {
		return nil, fmt.Errorf("new subscriptions: unknown key environment %q", cfg.Env)
	}
	defaults := []struct {
		d   *time.Duration
		def time.Duration
	}{
		{&cfg.RetryBase, time.Second}, {&cfg.RetryMax, time.Minute}, {&cfg.DefaultGrace, 24 * time.Hour},
		{&cfg.AutoRotateGrace, 7 * 24 * time.Hour}, {&cfg.RotationNotice, 7 * 24 * time.Hour},
	}
	for _, d := range defaults {
		if *d.d <= 0 {
			*d.d = d.def
		}
	}
	if cfg.MaxActiveKeys <= 0 {
		cfg.MaxActiveKeys = 5
	}
	if cfg.SyncFailAfter <= 0 {
		cfg.SyncFailAfter = 3
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: cfg.Now}
	if len(cfg.SealSecret) > 0 {
		sum := sha256.Sum256(cfg.SealSecret)
		var err error
		if s.seal, err = keys.NewSealer(sum[:]); err != nil {
			return nil, fmt.Errorf("new subscriptions: %w", err)
		}
	}
	m := cfg.Metrics
	s.metrics = serviceMetrics{
		synced:         m.NewCounter(`veil_controlplane_key_syncs_total{result="written"}`),
		syncErrors:     m.NewCounter(`veil_controlplane_key_syncs_total{result="error"}`),
		failedSync:     m.NewCounter(`veil_controlplane_keys_failed_sync_total`),
		reconcileFixed: m.NewCounter(`veil_controlplane_reconcile_healed_total{kind="keys"}`),
		reconcileLeft:  m.NewCounter(`veil_controlplane_reconcile_unhealed_total{kind="keys"}`),
		expired:        m.NewCounter(`veil_controlplane_keys_expired_total`),
		renewed:        m.NewCounter(`veil_controlplane_keys_renewed_total`),
		rotated:        m.NewCounter(`veil_controlplane_keys_auto_rotated_total`),
		graced:         m.NewCounter(`veil_controlplane_keys_grace_ended_total`),
		noticesSent:    m.NewCounter(`veil_controlplane_key_notices_total{result="sent"}`),
		noticeErrors:   m.NewCounter(`veil_controlplane_key_notices_total{result="error"}`),
	}
	return s, nil
}

func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// record audits a change and, when event is set, announces it to the
// organization's webhooks, both inside tx.
func (s *Service) record(ctx context.Context, tx pgx.Tx, actor identity.Actor, org uuid.UUID, action, targetType string, id uuid.UUID,
	before, after any, event string, data any) error {
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: org,
		Action: action, TargetType: targetType, TargetID: id.String(), Before: before, After: after,
	}); err != nil {
		return err
	}
	if event == "" {
		return nil
	}
	if err := s.cfg.Publisher.Publish(ctx, tx, org, event, data); err != nil {
		return fmt.Errorf("publish %s: %w", event, err)
	}
	return nil
}

// backoff is the delay before retry attempt n (1-based): exponential from
// RetryBase, capped at RetryMax, with full jitter.
func (s *Service) backoff(attempt int) time.Duration {
	d := s.cfg.RetryBase << min(attempt-1, 30)
	if d <= 0 || d > s.cfg.RetryMax {
		d = s.cfg.RetryMax
	}
	return d/2 + rand.N(d/2+1)
}

func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}
