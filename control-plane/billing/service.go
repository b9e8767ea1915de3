package billing

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Publisher announces invoice events to webhook endpoints inside the
// caller's transaction (a *webhooks.Service).
type Publisher interface {
	Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error
}

// Config configures the Service.
type Config struct {
	Pool *pgxpool.Pool
	// ClickHouse serves the usage counts of period snapshots; nil when the
	// control plane runs without it (periods then stay open).
	ClickHouse driver.Conn
	Logger     *slog.Logger
	// SnapshotBaseTable makes usage snapshots read usage_events alone,
	// not the billing roll-up: the figures are the same, only slower to
	// get (a benchmark compares the two). VEIL_BILLING_SNAPSHOT_SOURCE=base
	// sets it, so an operator can turn the roll-up off.
	SnapshotBaseTable bool
	// Grace is how long after a period's end its usage is counted, so that
	// events still in flight land first (VEIL_BILLING_GRACE, default 1h).
	Grace time.Duration
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
	// Publisher announces invoice.finalized, invoice.voided,
	// invoice.overdue and invoice.paid; nil announces nothing.
	Publisher Publisher
	// Payments collects an invoice once it is finalized and stops
	// collecting it once it is closed (the payments service); nil leaves
	// invoices to be paid by hand.
	Payments Payments
	// Mailer sends finalized invoices (the PDF attached) and their
	// reminders to the customer's billing email; nil sends none, and the
	// notices wait until a mailer is configured.
	Mailer Mailer
	// Review is how long a draft invoice waits after it is built before
	// the finalize job finalizes it, for a provider to look at it (and
	// add adjustments, which the draft picks up until then). Default 0:
	// drafts are finalized by the first finalize run after the close.
	Review time.Duration
	// Workers is how many periods the billing cycle builds, and how many
	// drafts it finalizes, at once (default 4); an issuer's finalizations
	// still take their numbers one after the other.
	Workers int
}

// Service is the billing service, shared by periods, invoices, credits,
// adjustments, tax and rendering.
type Service struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger
	now  func() time.Time
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil {
		return nil, errors.New("new billing: pool is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Grace <= 0 {
		cfg.Grace = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	return &Service{cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: cfg.Now}, nil
}

// inTx runs fn in a transaction on the pool, committed when fn returns nil.
func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}
