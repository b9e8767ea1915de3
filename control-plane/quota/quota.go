// Package quota is the control plane's side of the quota loop: it consumes
// the processors' threshold crossings from veil.quota.events and turns each
// into a webhook (exactly once, through the webhook outbox) and an email
// (a River job, at least once) to the consumer (consumer.go, notices.go);
// it answers what a subscription has used of its quota this period
// (status.go); and it credits and resets a period's quota (adjust.go,
// Adjuster), in one transaction that locks the subscription, queues the
// sync of its gateway record and audits the change. The quota rule itself
// (limit, thresholds, block) is internal/enforcement's; the check of the
// counters against ClickHouse is control-plane/drift.
package quota

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/broker"
)

// Publisher announces events to webhook endpoints inside the caller's
// transaction (a *webhooks.Service).
type Publisher interface {
	Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error
}

// Mailer sends email.
type Mailer interface {
	Send(ctx context.Context, m notify.Message) error
}

// Inserter enqueues jobs inside a transaction (a *river.Client[pgx.Tx]).
type Inserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}

// Defaults for Config.
const (
	DefaultGroup = "veil-control-plane-quota"
)

// Config configures the Service.
type Config struct {
	Pool *pgxpool.Pool
	// Redis holds the gateway's records and the processors' counters.
	Redis rueidis.Client
	// Publisher sends the webhook notices.
	Publisher Publisher
	// Mailer sends the email notices; nil sends none.
	Mailer Mailer
	// Jobs enqueues the email notices (QuotaEmailArgs, worked by
	// QuotaEmailWorker) in the transaction that claims them, so the
	// consumer never waits on a mail server. Required when Mailer is set.
	Jobs Inserter
	// Brokers, Topic (default veil.quota.events) and Group (default
	// veil-control-plane-quota) are where crossings are consumed from.
	Brokers   []string
	Topic     string
	Group     string
	KafkaOpts []kgo.Opt
	Logger    *slog.Logger
	Metrics   *metrics.Set
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Service is the quota service.
type Service struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger
	now  func() time.Time
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Redis == nil || cfg.Publisher == nil {
		return nil, errors.New("new quota service: pool, redis and publisher are required")
	}
	if cfg.Mailer != nil && cfg.Jobs == nil {
		return nil, errors.New("new quota service: jobs are required to send email notices")
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	cfg.Topic = cmp.Or(cfg.Topic, broker.TopicQuotaEvents)
	cfg.Group = cmp.Or(cfg.Group, DefaultGroup)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: cfg.Now}, nil
}
