// Package migrate applies Veil's embedded Postgres and ClickHouse migrations.
// Both are idempotent, record the versions they applied, and are safe to run
// from several processes at once.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/veil-platform/veil/schemas"
)

// Applied lists the migrations one run applied.
type Applied struct {
	Versions []int64
}

// Postgres applies the pending Postgres migrations to the database at url,
// creating the database first if it does not exist. goose records versions in
// goose_db_version; a session advisory lock serialises concurrent runs.
func Postgres(ctx context.Context, url string, logger *slog.Logger) (Applied, error) {
	if err := ensurePostgresDatabase(ctx, url); err != nil {
		return Applied{}, err
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return Applied{}, fmt.Errorf("parse postgres url: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	applied, err := postgresUp(ctx, db, logger)
	if err != nil {
		return applied, err
	}
	if err := riverUp(ctx, url, logger); err != nil {
		return applied, err
	}
	return applied, nil
}

// riverLockID is the advisory lock that serialises River's schema migrations
// between concurrent `veil migrate` runs ("veil-river" in ASCII).
const riverLockID = 0x7665696c2d7276

// riverUp applies the job queue's own schema (River's river_job and friends)
// under an advisory lock, so concurrent runs queue up
// instead of racing to create the same tables.
func riverUp(ctx context.Context, url string, logger *slog.Logger) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer pool.Close()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: logger})
	if err != nil {
		return fmt.Errorf("new river migrator: %w", err)
	}
	// River's migrations cannot share one transaction (a later one uses an
	// enum value an earlier one adds), so the lock is a session lock held on
	// a connection of its own while the migrator runs on the pool.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire lock connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(riverLockID)); err != nil {
		return fmt.Errorf("lock river migrations: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(riverLockID)) //nolint:errcheck // the session ends with the connection anyway
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("migrate river schema: %w", err)
	}
	for _, v := range res.Versions {
		logger.InfoContext(ctx, "river migration applied", "version", v.Version, "name", v.Name)
	}
	return nil
}

func postgresUp(ctx context.Context, db *sql.DB, logger *slog.Logger) (Applied, error) {
	migrations, err := fs.Sub(schemas.Postgres, "postgres")
	if err != nil {
		return Applied{}, fmt.Errorf("open embedded migrations: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return Applied{}, fmt.Errorf("new postgres locker: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations, goose.WithSessionLocker(locker))
	if err != nil {
		return Applied{}, fmt.Errorf("new migration provider: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return Applied{}, fmt.Errorf("migrate postgres: %w", err)
	}
	var out Applied
	for _, r := range results {
		out.Versions = append(out.Versions, r.Source.Version)
		logger.InfoContext(ctx, "postgres migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	return out, nil
}

// PostgresVersion returns the highest applied Postgres migration version.
func PostgresVersion(ctx context.Context, url string) (int64, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return 0, fmt.Errorf("parse postgres url: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	migrations, err := fs.Sub(schemas.Postgres, "postgres")
	if err != nil {
		return 0, fmt.Errorf("open embedded migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations)
	if err != nil {
		return 0, fmt.Errorf("new migration provider: %w", err)
	}
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("postgres schema version: %w", err)
	}
	return v, nil
}

// ensurePostgresDatabase creates the URL's database when it is missing, by
// connecting to the maintenance database "postgres" on the same server.
func ensurePostgresDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parse postgres url: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("connect to postgres %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to postgres maintenance database: %w", err)
	}
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if err != nil && !isDuplicateDatabase(err) {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func isDuplicateDatabase(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505")
}
