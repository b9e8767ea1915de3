// Package analytics answers what a subscription, a key, an API or a
// provider used, read from ClickHouse's roll-ups, and streams raw usage
// rows out as exports. Consumer views (consumer*.go) and exports
// (export*.go) are for a subscription's members, its API's provider and
// admins; provider views (provider.go) and the admin overview (admin.go)
// for providers and admins. Days are cut in the caller's time zone
// (tz*.go), exactly, whatever its offset.
package analytics

import (
	"errors"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/metering"
)

// Config configures the Service.
type Config struct {
	Pool *pgxpool.Pool
	// ClickHouse holds the usage; nil when the control plane runs without
	// it (every view then answers ErrUnavailable).
	ClickHouse driver.Conn
	// Billing prices a subscription's usage by day (CostByDay) and reads
	// its outlook; nil leaves cost out (null).
	Billing *billing.Service
	Logger  *slog.Logger
	// Kafka reads the processors' consumer group lag for the admin
	// overview (a *kadm.Client); nil leaves the lag out (null).
	Kafka GroupLagger
	// ProcessorGroup is the processors' consumer group (default
	// processors.DefaultGroup, veil-processors).
	ProcessorGroup string
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
	// ExportClickHouse, when set, is the connection exports read through
	// instead of ClickHouse: a pool of their own, so that exports held
	// open by slow readers never take the connections of analytics and
	// billing.
	ExportClickHouse driver.Conn
	// MaxExports and MaxExportsPerOrg bound the exports running at once,
	// overall and per caller organization (defaults 4 and 2); beyond
	// them StartExport refuses with ErrTooManyExports.
	MaxExports, MaxExportsPerOrg int
	// ExportTimeout ends an export, however fast its client reads
	// (default metering.DefaultExportTimeout).
	ExportTimeout time.Duration
}

// Service answers the analytics and export routes.
type Service struct {
	cfg     Config
	pool    *pgxpool.Pool
	ch      driver.Conn
	billing *billing.Service
	log     *slog.Logger
	now     func() time.Time
	exports exportGate
}

// ErrUnavailable says that ClickHouse is not configured.
var ErrUnavailable = errors.New("usage analytics unavailable: no ClickHouse connection")

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil {
		return nil, errors.New("new analytics: pool is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProcessorGroup == "" {
		cfg.ProcessorGroup = "veil-processors"
	}
	if cfg.MaxExports <= 0 {
		cfg.MaxExports = DefaultMaxExports
	}
	if cfg.MaxExportsPerOrg <= 0 {
		cfg.MaxExportsPerOrg = DefaultMaxExportsPerOrg
	}
	if cfg.ExportTimeout <= 0 {
		cfg.ExportTimeout = metering.DefaultExportTimeout
	}
	if cfg.ExportClickHouse == nil {
		cfg.ExportClickHouse = cfg.ClickHouse
	}
	return &Service{cfg: cfg, pool: cfg.Pool, ch: cfg.ClickHouse, billing: cfg.Billing, log: cfg.Logger, now: cfg.Now,
		exports: exportGate{max: cfg.MaxExports, perOrg: cfg.MaxExportsPerOrg, byOrg: map[uuid.UUID]int{}}}, nil
}
