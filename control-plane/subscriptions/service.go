package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/internal/enforcement"
)

// Sentinel errors; the HTTP layer maps each to one problem type. The key
// lifecycle's are control-plane/keys'.
var (
	ErrPlanNotFound         = errors.New("plan not found")
	ErrSubscriptionNotFound = errors.New("subscription not found")
	// ErrPlanUnavailable: the plan, or its API, takes no new subscriptions.
	ErrPlanUnavailable = errors.New("plan takes no new subscriptions")
	// ErrAlreadySubscribed: the organization has a live subscription to the API.
	ErrAlreadySubscribed = errors.New("organization already has a live subscription to this api")
	// ErrSubscriptionInactive: the subscription is canceled or suspended
	// (keys.ErrSubscriptionInactive, which refuses a key for it).
	ErrSubscriptionInactive = keys.ErrSubscriptionInactive
	// ErrSamePlan: a plan change to the version the subscription is on.
	ErrSamePlan = errors.New("subscription is on that plan version already")
	// ErrPlanChangeLimit: a plan change beyond MaxPlanChangesPerPeriod in
	// the subscription's billing period.
	ErrPlanChangeLimit = errors.New("plan change limit of the billing period reached")
	// ErrSubscriptionTransition: the subscription's status does not allow the change.
	ErrSubscriptionTransition = errors.New("invalid subscription status transition")
	// ErrSubscriptionHeld: the organization canceled a subscription to the
	// API while it was suspended or past_due, and no admin has released the
	// hold; it may not subscribe to that API again until one does.
	ErrSubscriptionHeld = errors.New("a suspended or past-due subscription to this api was canceled; an admin must release it first")
)

// Inserter enqueues jobs inside a transaction (a *river.Client[pgx.Tx]).
type Inserter = keys.Inserter

// Publisher announces changes to webhook endpoints inside the caller's
// transaction.
type Publisher = keys.Publisher

// Mailer sends email.
type Mailer = keys.Mailer

// Records is the gateway's Redis records (a *enforcement.Store): the keys'
// (keys.Records) and the subscriptions'.
type Records interface {
	keys.Records
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
	// Mailer sends the key notices; nil sends none (webhooks still go).
	Mailer  Mailer
	Logger  *slog.Logger
	Metrics *metrics.Set
	// MaxActiveKeys is each new subscription's limit of live keys (default 5).
	MaxActiveKeys int
	// Keys are the options of the subscriptions' keys, handed to the
	// keys.Service that New builds; its RetryBase and RetryMax bound the
	// retries of subscription syncs too.
	Keys keys.Options
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// Service is the subscriptions service. It builds the key lifecycle's
// service (Keys), whose key changes lock their subscription through it.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *slog.Logger
	now     func() time.Time
	keys    *keys.Service
	metrics serviceMetrics
	// promotions redeems the codes given at subscribe time (SetPromotions).
	promotions Promotions
}

type serviceMetrics struct {
	syncErrors                    *metrics.Counter
	reconcileFixed, reconcileLeft *metrics.Counter
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
	if cfg.MaxActiveKeys <= 0 {
		cfg.MaxActiveKeys = 5
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: cfg.Now}
	var err error
	s.keys, err = keys.New(keys.Config{
		Pool: cfg.Pool, Jobs: cfg.Jobs, Records: cfg.Records, Publisher: cfg.Publisher, Subscriptions: s, Mailer: cfg.Mailer,
		Logger: cfg.Logger, Metrics: cfg.Metrics, Now: cfg.Now, Options: cfg.Keys,
	})
	if err != nil {
		return nil, fmt.Errorf("new subscriptions: %w", err)
	}
	m := cfg.Metrics
	s.metrics = serviceMetrics{
		syncErrors:     m.GetOrCreateCounter(`veil_controlplane_key_syncs_total{result="error"}`),
		reconcileFixed: m.NewCounter(`veil_controlplane_reconcile_healed_total{kind="keys"}`),
		reconcileLeft:  m.NewCounter(`veil_controlplane_reconcile_unhealed_total{kind="keys"}`),
	}
	return s, nil
}

// Keys is the key lifecycle of the subscriptions' keys.
func (s *Service) Keys() *keys.Service { return s.keys }

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

func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}
