package billing

import (
	"errors"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures the Service.
type Config struct {
	Pool *pgxpool.Pool
	// ClickHouse serves the usage counts of period snapshots; nil when the
	// control plane runs without it (periods then stay open).
	ClickHouse driver.Conn
	Logger     *slog.Logger
	// Grace is how long after a period's end its usage is counted, so that
	// events still in flight land first (VEIL_BILLING_GRACE, default 1h).
	Grace time.Duration
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
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
	return &Service{cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: cfg.Now}, nil
}
