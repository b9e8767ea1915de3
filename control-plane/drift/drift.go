// Package drift checks the Redis period counters the gateway enforces
// quotas from against the admitted rows ClickHouse holds, up to the Kafka
// offsets Redis says it applied, and heals the counters, their watermarks,
// threshold crossings and the quota block when they drifted (a Redis
// flush, a lost batch, a tampered counter). It compares the meter
// counters of the current period too, healing those that add or keep a
// maximum and reporting a unique_count's (meters.go). It reads and writes
// Redis through internal/enforcement, which owns the layout and the heal
// scripts; a run is stored in Postgres (usage_reconcile_runs) and runs on a
// schedule as a River job (Args, Checker.Worker) or on demand
// (Checker.Check).
//
// Files: drift.go (configuration and report), check.go (a run, chunk by
// chunk), postgres.go (the subscriptions and the stored runs), compare.go
// (the verdict on one subscription), clickhouse.go (ClickHouse's figures),
// heal.go (healing and reporting), meters.go (the meters' comparison and
// heal), worker.go (the scheduled job's
// worker), jobs.go (its registration and schedule).
package drift

import (
	"cmp"
	"errors"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/schemas/usage"
)

// ErrNoClickHouse: the drift check needs Config.ClickHouse, and it is nil.
var ErrNoClickHouse = errors.New("no ClickHouse connection (Config.ClickHouse)")

// DefaultSettle is Config.Settle's default: how long the drift
// check waits, once it found a subscription drifted with a watermark
// missing or unreadable, before it looks at Redis again and heals. It
// outlasts a processor batch (500 ms at most by default), so a batch
// ClickHouse already holds and Redis is applying shows up as a change
// rather than as drift. Drift with every watermark readable is not waited
// on: rows beyond the watermarks are left out of the comparison anyway.
const DefaultSettle = 2 * time.Second

// ErrUnitsPastCounter: ClickHouse's units for a subscription's period pass
// what a Redis counter of micro-units holds (usage.MaxCounterMicro), which
// only rows written before the units cap can do. The drift is reported,
// never written: the rows need an operator.
var ErrUnitsPastCounter = errors.New("units past what a counter holds")

// Config configures the Checker.
type Config struct {
	// Pool is the control plane's Postgres: subscriptions, plans, quota
	// adjustments and the stored runs. Required.
	Pool *pgxpool.Pool
	// Redis holds the processors' counters and the gateway's records.
	// Required.
	Redis rueidis.Client
	// ClickHouse is a connection with the Veil database selected; nil
	// makes every check fail with ErrNoClickHouse.
	ClickHouse driver.Conn
	Logger     *slog.Logger
	Metrics    *metrics.Set
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Settle is how long the check waits before healing a subscription
	// that lost a watermark (a Redis flush) and looking at its Redis state
	// again (default DefaultSettle, 2 s): one whose state moved meanwhile
	// is in flight, not healed. Drift with every watermark readable is
	// healed at once, by compare-and-set. Each chunk with such
	// subscriptions waits once.
	Settle time.Duration
}

// Checker checks and heals usage drift.
type Checker struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger
	now  func() time.Time
}

// New returns a Checker.
func New(cfg Config) (*Checker, error) {
	if cfg.Pool == nil || cfg.Redis == nil {
		return nil, errors.New("new drift checker: pool and redis are required")
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Checker{cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: cfg.Now}, nil
}

// Report is what one usage drift check found and did.
type Report struct {
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// Checked is the number of live subscriptions looked at.
	Checked int `json:"checked"`
	// InFlight counts subscriptions left for the next run because
	// ClickHouse is behind Redis or the processors moved while they were
	// checked.
	InFlight int `json:"in_flight"`
	// Drifted counts subscriptions whose counter or watermarks disagreed
	// with ClickHouse; Healed those repaired.
	Drifted int `json:"drifted"`
	Healed  int `json:"healed"`
	// Unhealed lists the drift that could not be repaired, with why.
	Unhealed []Unhealed `json:"unhealed"`
	// Drift describes every drifted subscription.
	Drift []Drifted `json:"drift"`
	// MeterDrift describes every meter counter that disagreed with
	// ClickHouse (see Checker.Check).
	MeterDrift []MeterDrifted `json:"meter_drift"`
	// setsFull counts the unique_count meters compared whose set is at
	// enforcement.MaxMeterSetMembers, a metric only.
	setsFull int
}

// MeterDrifted is one meter of a subscription's period counter that
// disagreed with ClickHouse. Values are the meter's quantities as decimal
// strings.
type MeterDrifted struct {
	SubscriptionID uuid.UUID `json:"subscription_id"`
	PeriodStart    time.Time `json:"period_start"`
	Meter          string    `json:"meter"`
	Redis          string    `json:"redis"`
	ClickHouse     string    `json:"clickhouse"`
	// Healed: the counter was rewritten from ClickHouse. A unique_count
	// meter is never (its set of key ids cannot be rebuilt from a count).
	Healed bool `json:"healed"`
}

// Unhealed is drift the check could not repair.
type Unhealed struct {
	SubscriptionID uuid.UUID `json:"subscription_id"`
	Reason         string    `json:"reason"`
}

// Drifted is one subscription whose Redis period counter disagreed with
// ClickHouse. Units are decimal strings, exact to the micro-unit.
type Drifted struct {
	SubscriptionID     uuid.UUID `json:"subscription_id"`
	PeriodStart        time.Time `json:"period_start"`
	RedisRequests      int64     `json:"redis_requests"`
	ClickHouseRequests int64     `json:"clickhouse_requests"`
	RedisUnits         string    `json:"redis_units"`
	ClickHouseUnits    string    `json:"clickhouse_units"`
	// WatermarksBehind: Redis had no readable watermark for a partition
	// ClickHouse holds rows of (after a flush, say), whatever the counter
	// said.
	WatermarksBehind bool `json:"watermarks_behind"`
	// Blocked reports whether the subscription is blocked after the heal.
	Blocked bool `json:"blocked"`
	Healed  bool `json:"healed"`
}

// chunkSize is how many subscriptions are read from Postgres and Redis,
// and asked of ClickHouse in one query, at a time.
const chunkSize = 500

// runsKept is how many runs usage_reconcile_runs keeps.
const runsKept = 100

// lookback is how far before a period's start the usage query
// looks. The processors refuse events older than the late window or
// further ahead than the future allowance, judged when they process
// them, and process a partition in offset order. So every row from a
// partition at or after a row of the period (time ≥ start, processed no
// earlier than start minus the allowance) is younger than start minus
// both: for every partition with rows of the period, the bounded maximum
// is the true one. Older rows are only scanned, not needed.
const lookback = usage.DefaultLateWindow + usage.DefaultMaxFuture

// healAttempts is how many compare-and-set heals a drifted
// subscription gets in one run, each after a fresh read when the
// processors moved, before it is left in flight.
const healAttempts = 3

// freshness: a partition ClickHouse holds rows of and Redis has no
// watermark for is lost only when ClickHouse ingested its newest row
// longer ago than this. A younger row is most likely a first batch whose
// Redis apply is still under way.
const freshness = time.Minute

// deadlineMargin is the time a run keeps in hand before its
// context's deadline: it checks no further chunk past it, so that what it
// checked is still stored.
const deadlineMargin = 5 * time.Second
