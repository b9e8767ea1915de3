package migrate

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/schemas"
)

// ClickHouseConfig names the server and database to migrate.
type ClickHouseConfig struct {
	Addr     string // host:port of the native protocol, e.g. 127.0.0.1:9000
	Database string // e.g. veil
	Username string // default "default"
	Password string
	// UpTo stops after this version (0: apply every migration); tests use
	// it to hold data that predates a migration.
	UpTo uint32
	// BackfillGrace: how long after a new roll-up's cutoff its backfill
	// waits for batches stamped before the cutoff (0: DefaultBackfillGrace;
	// negative: no wait). See backfill.go.
	BackfillGrace time.Duration
	// BackfillSliceRows: the most rows of usage_events one INSERT of a
	// backfill copies (0: DefaultBackfillSliceRows). See backfill.go.
	BackfillSliceRows int
	// LockURL, when set, is a Postgres URL: the run holds a session
	// advisory lock there from start to end, so that runs sharing that
	// Postgres (veil migrate from several places) wait for each other. A
	// backfill done twice at once would count its rows twice.
	LockURL string
}

// open connects to the server with database selected (empty: none).
func open(cfg ClickHouseConfig, database string) (driver.Conn, error) {
	return datastore.OpenClickHouse(datastore.ClickHouse{Addr: cfg.Addr, Database: database, Username: cfg.Username, Password: cfg.Password})
}

var validDatabase = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Migration is one numbered ClickHouse migration file.
type Migration struct {
	Version    uint32
	Name       string
	Statements []string
}

// ClickHouseMigrations returns the embedded migrations in version order.
func ClickHouseMigrations() ([]Migration, error) {
	entries, err := fs.ReadDir(schemas.ClickHouse, "clickhouse")
	if err != nil {
		return nil, fmt.Errorf("read embedded clickhouse migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil || !strings.HasSuffix(name, ".sql") {
			return nil, fmt.Errorf("clickhouse migration %q: name must be NNNN_description.sql", name)
		}
		b, err := fs.ReadFile(schemas.ClickHouse, "clickhouse/"+name)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		out = append(out, Migration{Version: uint32(v), Name: name, Statements: SplitStatements(string(b))})
	}
	slices.SortFunc(out, func(a, b Migration) int { return int(a.Version) - int(b.Version) })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("clickhouse migrations %s and %s share version %d", out[i-1].Name, out[i].Name, out[i].Version)
		}
	}
	return out, nil
}

// SplitStatements cuts a migration file into statements: lines starting
// with -- are comments, and a statement ends with ; at the end of a line.
func SplitStatements(sql string) []string {
	var (
		out []string
		cur strings.Builder
	)
	sc := bufio.NewScanner(strings.NewReader(sql))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t\r")
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		if strings.TrimSpace(line) == "" && cur.Len() == 0 {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(line, ";") {
			stmt := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			out = append(out, stmt)
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// ClickHouse applies the pending ClickHouse migrations, creating the
// database first. Every statement is idempotent (IF NOT EXISTS; see
// execStatement for ADD COLUMN IF NOT EXISTS, which ClickHouse 18.16 lacks),
// and versions are recorded in schema_migrations, a ReplacingMergeTree that
// collapses duplicate rows: running it again is safe. Running it twice at
// once is not (a roll-up's backfill would copy its rows twice) unless both
// runs take the same lock (LockURL), as veil migrate does.
func ClickHouse(ctx context.Context, cfg ClickHouseConfig, logger *slog.Logger) (Applied, error) {
	if !validDatabase.MatchString(cfg.Database) {
		return Applied{}, fmt.Errorf("clickhouse database name %q is not a plain identifier", cfg.Database)
	}
	migrations, err := ClickHouseMigrations()
	if err != nil {
		return Applied{}, err
	}
	if cfg.LockURL != "" {
		unlock, err := lockClickHouse(ctx, cfg.LockURL)
		if err != nil {
			return Applied{}, err
		}
		defer unlock()
	}
	admin, err := open(cfg, "")
	if err != nil {
		return Applied{}, err
	}
	defer admin.Close()
	if err := admin.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+cfg.Database); err != nil {
		return Applied{}, fmt.Errorf("create clickhouse database %s: %w", cfg.Database, err)
	}
	conn, err := open(cfg, cfg.Database)
	if err != nil {
		return Applied{}, err
	}
	defer conn.Close()
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version`); err != nil {
		return Applied{}, fmt.Errorf("create schema_migrations: %w", err)
	}
	done, err := clickHouseApplied(ctx, conn)
	if err != nil {
		return Applied{}, err
	}
	var out Applied
	for _, m := range migrations {
		if done[m.Version] || (cfg.UpTo > 0 && m.Version > cfg.UpTo) {
			continue
		}
		start := time.Now()
		bf := newBackfiller(conn, cfg.BackfillGrace, cfg.BackfillSliceRows)
		for i, stmt := range m.Statements {
			if err := bf.exec(ctx, stmt); err != nil {
				return out, fmt.Errorf("clickhouse migration %s, statement %d: %w", m.Name, i+1, err)
			}
		}
		if err := recordClickHouseVersion(ctx, conn, m); err != nil {
			return out, err
		}
		out.Versions = append(out.Versions, int64(m.Version))
		logger.InfoContext(ctx, "clickhouse migration applied", "version", m.Version, "file", m.Name, "duration", time.Since(start))
	}
	return out, nil
}

// addColumnIfNotExists matches ALTER TABLE t ADD COLUMN IF NOT EXISTS c ...
// with plain identifiers: group 1 is the table, group 2 the IF NOT EXISTS
// to cut out, group 3 the column.
var addColumnIfNotExists = regexp.MustCompile(`(?is)^ALTER\s+TABLE\s+([A-Za-z_][A-Za-z0-9_]*)\s+ADD\s+COLUMN\s+(IF\s+NOT\s+EXISTS\s+)([A-Za-z_][A-Za-z0-9_]*)\s`)

// execStatement runs one migration statement. ClickHouse 18.16 cannot parse
// ADD COLUMN IF NOT EXISTS, which current releases need for the same
// statement to be idempotent; so for an ALTER TABLE adding one column that
// way, it looks the column up in system.columns and, when it is missing,
// adds it without IF NOT EXISTS. A concurrent run may add it in between:
// an ADD COLUMN that fails while the column exists has nothing left to do.
func execStatement(ctx context.Context, conn driver.Conn, stmt string) error {
	m := addColumnIfNotExists.FindStringSubmatchIndex(stmt)
	if m == nil {
		return conn.Exec(ctx, stmt)
	}
	table, column := stmt[m[2]:m[3]], stmt[m[6]:m[7]]
	exists := func() (bool, error) {
		var n uint64
		if err := conn.QueryRow(ctx,
			"SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ?",
			table, column).Scan(&n); err != nil {
			return false, fmt.Errorf("look up column %s.%s: %w", table, column, err)
		}
		return n > 0, nil
	}
	if ok, err := exists(); err != nil || ok {
		return err
	}
	err := conn.Exec(ctx, stmt[:m[4]]+stmt[m[5]:])
	if err == nil {
		return nil
	}
	if ok, qerr := exists(); qerr == nil && ok {
		return nil
	}
	return err
}

// recordClickHouseVersion inserts the migration's row through a native
// batch: the form of INSERT every server version since 18.16 takes.
func recordClickHouseVersion(ctx context.Context, conn driver.Conn, m Migration) error {
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, applied_at)")
	if err != nil {
		return fmt.Errorf("record clickhouse migration %s: %w", m.Name, err)
	}
	if err := batch.Append(m.Version, m.Name, time.Now().UTC().Truncate(time.Second)); err != nil {
		return fmt.Errorf("record clickhouse migration %s: %w", m.Name, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record clickhouse migration %s: %w", m.Name, err)
	}
	return nil
}

// ClickHouseVersions returns the applied ClickHouse migration versions.
func ClickHouseVersions(ctx context.Context, cfg ClickHouseConfig) (map[uint32]bool, error) {
	conn, err := open(cfg, cfg.Database)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return clickHouseApplied(ctx, conn)
}

func clickHouseApplied(ctx context.Context, conn driver.Conn) (map[uint32]bool, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	done := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("scan schema_migrations: %w", err)
		}
		done[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return done, nil
}

// ClickHouseLockID is the Postgres advisory lock ClickHouse migrations run
// under (LockURL).
const ClickHouseLockID int64 = 0x7665696c4348 // "veilCH"

// lockClickHouse takes the ClickHouse migrations' advisory lock on a
// connection of its own, waiting for another run to release it; unlock
// ends that session.
func lockClickHouse(ctx context.Context, url string) (unlock func(), err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("lock clickhouse migrations: connect to postgres: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", ClickHouseLockID); err != nil {
		conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing after a failure
		return nil, fmt.Errorf("lock clickhouse migrations: %w", err)
	}
	return func() {
		// Closing the session releases the lock.
		conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // the session ends either way
	}, nil
}
