// Package datastore opens the runtime connections of Veil's services: the
// Postgres pool, the ClickHouse connection and the Redis client, with the
// settings every service shares. Migrations (schemas/migrate) open theirs
// through it too, so a connection setting is written once.
package datastore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	pgxdecimal "github.com/jackc/pgx-shopspring-decimal"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
)

// ClickHouse names a ClickHouse server and the database a connection uses.
type ClickHouse struct {
	// Addr is host:port of the native protocol, e.g. 127.0.0.1:9000.
	Addr string
	// Database is selected on every connection; empty selects none (the
	// server's default), which is what creating a database needs.
	Database string
	// Username defaults to "default".
	Username string
	Password string
	// MaxOpenConns bounds the pool; 0 keeps the driver's default (10).
	MaxOpenConns int
}

// OpenClickHouse opens a connection pool to the server. It does not dial:
// the first query (or Ping) does, giving up after 5 seconds.
func OpenClickHouse(cfg ClickHouse) (driver.Conn, error) {
	user := cfg.Username
	if user == "" {
		user = "default"
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:         []string{cfg.Addr},
		Auth:         clickhouse.Auth{Database: cfg.Database, Username: user, Password: cfg.Password},
		DialTimeout:  5 * time.Second,
		MaxOpenConns: cfg.MaxOpenConns,
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", cfg.Addr, err)
	}
	return conn, nil
}

// Postgres says how to open a Postgres pool.
type Postgres struct {
	// URL is the connection URL; its pool_max_conns, when present, wins.
	URL string
	// MinMaxConns raises the pool's size to at least this many connections
	// when the URL does not set pool_max_conns. Zero keeps pgxpool's
	// default, max(4, CPUs), which is too small for a process running job
	// workers, their lock connections, River's listener and an API at once.
	MinMaxConns int32
}

// OpenPostgres opens a pool. Like pgxpool, it does not wait for a
// connection: callers that must fail early ping it.
func OpenPostgres(ctx context.Context, cfg Postgres) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	if !strings.Contains(cfg.URL, "pool_max_conns") && pcfg.MaxConns < cfg.MinMaxConns {
		pcfg.MaxConns = cfg.MinMaxConns
	}
	WithNativeTypes(pcfg)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return pool, nil
}

// WithNativeTypes makes the pool's connections encode decimal.Decimal
// and uuid.UUID in Postgres's binary form directly. Without it pgx takes
// both as driver.Valuer: it formats each value as text, fails to encode
// the text in binary, builds an error, parses the text and encodes that,
// for every element of an array parameter; most of the CPU of writing
// thousands of invoices in a few statements.
func WithNativeTypes(pcfg *pgxpool.Config) {
	after := pcfg.AfterConnect
	pcfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		registerNativeTypes(conn.TypeMap())
		if after != nil {
			return after(ctx, conn)
		}
		return nil
	}
}

func registerNativeTypes(m *pgtype.Map) {
	pgxdecimal.Register(m)
	m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{tryWrapUUID}, m.TryWrapEncodePlanFuncs...)
}

// tryWrapUUID encodes a uuid.UUID as the [16]byte it is.
func tryWrapUUID(value any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	if u, ok := value.(uuid.UUID); ok {
		return &uuidPlan{}, [16]byte(u), true
	}
	return nil, nil, false
}

type uuidPlan struct{ next pgtype.EncodePlan }

func (p *uuidPlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *uuidPlan) Encode(value any, buf []byte) ([]byte, error) {
	return p.next.Encode([16]byte(value.(uuid.UUID)), buf)
}

// Redis names a Redis server and logical database.
type Redis struct {
	Addr string
	DB   int
	// DisableCache turns off rueidis's client-side caching; the control
	// plane sets it, the processors keep rueidis's default.
	DisableCache bool
}

// OpenRedis connects to Redis; rueidis dials at once, so an unreachable
// server fails here, with a hint for local work.
func OpenRedis(cfg Redis) (rueidis.Client, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{cfg.Addr}, SelectDB: cfg.DB, DisableCache: cfg.DisableCache})
	if err != nil {
		return nil, fmt.Errorf("connect to redis at %s (make services starts it): %w", cfg.Addr, err)
	}
	return c, nil
}
