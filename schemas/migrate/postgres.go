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
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

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
	return postgresUp(ctx, db, logger)
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
