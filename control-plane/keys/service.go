package keys

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
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
)

// Sentinel errors of the key lifecycle; the HTTP layer maps each to one
// problem type.
var (
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyLimit: the subscription holds its maximum of live keys.
	ErrKeyLimit = errors.New("subscription has its maximum number of live keys")
	// ErrSubscriptionInactive: the subscription is canceled or suspended.
	ErrSubscriptionInactive = errors.New("subscription is not active")
	// ErrAlreadyRotated: the key was rotated already and is in its grace period.
	ErrAlreadyRotated = errors.New("key already rotated")
	// ErrNothingToReveal: the key holds no sealed plaintext (it was never
	// sealed, or was revealed already).
	ErrNothingToReveal = errors.New("no sealed key to reveal")
	// ErrAdminPlaintext: an admin asked for a new key of another
	// organization; plaintexts are shown to the key's organization only.
	ErrAdminPlaintext = errors.New("a new key's plaintext is shown only to its own organization")
	// ErrAdminSuspended: a key an admin suspended is resumed by an admin only.
	ErrAdminSuspended = errors.New("an admin suspended this key; only an admin may resume it")
)

// Subscriptions is the subscription side of a key change (a
// *subscriptions.Service). Every key change that depends on its
// subscription locks it in the change's transaction, so that the check and
// the change see the same subscription and the same keys.
type Subscriptions interface {
	// LockSubscription locks subscription id in tx for a key change actor
	// asks for: the subscription's not-found error when actor may not see
	// it, identity.ErrForbidden when actor may see it but not change it.
	LockSubscription(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID) (Holder, error)
	// CheckSubscription returns nil when actor may see subscription id,
	// and the subscription's not-found error otherwise.
	CheckSubscription(ctx context.Context, actor identity.Actor, id uuid.UUID) error
}

// Holder is what a key change needs of the subscription that holds the
// key.
type Holder struct {
	ID             uuid.UUID
	OrganizationID uuid.UUID
	// Status is the subscription's status; Usable is false when it is
	// canceled or suspended, and no key is issued for it then.
	Status string
	Usable bool
	// MaxActiveKeys is its limit of live keys.
	MaxActiveKeys int
}

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

// Records is the gateway's Redis records of keys (a *enforcement.Store).
type Records interface {
	PutKey(ctx context.Context, r enforcement.KeyRecord) (bool, error)
	DeleteKey(ctx context.Context, hash string, version int64) (bool, error)
	ScanKeys(ctx context.Context, fn func(enforcement.KeyRecord) error) error
}

// Config configures the Service.
type Config struct {
	Pool          *pgxpool.Pool
	Jobs          Inserter
	Records       Records
	Publisher     Publisher
	Subscriptions Subscriptions
	// Mailer sends the notices; nil sends none (webhooks still go).
	Mailer  Mailer
	Logger  *slog.Logger
	Metrics *metrics.Set
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
	Options
}

// Options are the choices of the key lifecycle that the operator makes
// (subscriptions.Config carries them to the Service it builds).
type Options struct {
	// Env is the environment keys are issued for: live (default) or test.
	Env apikey.Env
	// SyncFailAfter is how many failed attempts to write a new key to the
	// gateway turn it failed_sync (default 3). Retries go on after that.
	SyncFailAfter int
	// RetryBase and RetryMax bound the retry backoff of record syncs
	// (defaults 1 s, 1 min): a failed sync is tried again after between
	// half and all of RetryBase doubled per attempt, RetryMax at most.
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
}

// Service is the key lifecycle: issue, change, suspend, resume, revoke,
// rotate, reveal and delete, the sync of each change to the gateway, and
// the key steps of maintenance and reconciliation.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *slog.Logger
	now     func() time.Time
	seal    *Sealer
	metrics serviceMetrics
}

type serviceMetrics struct {
	synced, syncErrors, failedSync    *metrics.Counter
	expired, renewed, rotated, graced *metrics.Counter
	noticesSent, noticeErrors         *metrics.Counter
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Jobs == nil || cfg.Records == nil || cfg.Publisher == nil || cfg.Subscriptions == nil {
		return nil, errors.New("new keys: pool, jobs, records, publisher and subscriptions are required")
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
		return nil, fmt.Errorf("new keys: unknown key environment %q", cfg.Env)
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
		if s.seal, err = NewSealer(sum[:]); err != nil {
			return nil, fmt.Errorf("new keys: %w", err)
		}
	}
	m := cfg.Metrics
	s.metrics = serviceMetrics{
		synced:       m.NewCounter(`veil_controlplane_key_syncs_total{result="written"}`),
		syncErrors:   m.GetOrCreateCounter(`veil_controlplane_key_syncs_total{result="error"}`),
		failedSync:   m.NewCounter(`veil_controlplane_keys_failed_sync_total`),
		expired:      m.NewCounter(`veil_controlplane_keys_expired_total`),
		renewed:      m.NewCounter(`veil_controlplane_keys_renewed_total`),
		rotated:      m.NewCounter(`veil_controlplane_keys_auto_rotated_total`),
		graced:       m.NewCounter(`veil_controlplane_keys_grace_ended_total`),
		noticesSent:  m.NewCounter(`veil_controlplane_key_notices_total{result="sent"}`),
		noticeErrors: m.NewCounter(`veil_controlplane_key_notices_total{result="error"}`),
	}
	return s, nil
}

func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// record audits a change to key id and, when event is set, announces it to
// the organization's webhooks, both inside tx.
func (s *Service) record(ctx context.Context, tx pgx.Tx, actor identity.Actor, org uuid.UUID, action string, id uuid.UUID,
	before, after any, event string, data any) error {
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: org,
		Action: action, TargetType: "key", TargetID: id.String(), Before: before, After: after,
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

// Backoff is the delay before retry attempt n (1-based) of a job that
// writes a gateway record: exponential from RetryBase, capped at RetryMax,
// with full jitter. The subscriptions' record syncs use it too.
func (s *Service) Backoff(attempt int) time.Duration {
	d := s.cfg.RetryBase << min(attempt-1, 30)
	if d <= 0 || d > s.cfg.RetryMax {
		d = s.cfg.RetryMax
	}
	return d/2 + rand.N(d/2+1)
}

// each runs fn for every id in its own transaction, collecting errors.
func (s *Service) each(ctx context.Context, ids []uuid.UUID, fn func(tx pgx.Tx, id uuid.UUID) error) error {
	var errs []error
	for _, id := range ids {
		if err := s.inTx(ctx, func(tx pgx.Tx) error { return fn(tx, id) }); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
