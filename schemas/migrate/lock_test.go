package migrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/migrate"
)

// TestClickHouseMigrationsWaitForTheLock: a run with LockURL waits while
// another session holds the ClickHouse migrations' advisory lock, and
// goes on once it is released.
func TestClickHouseMigrationsWaitForTheLock(t *testing.T) {
	ctx := t.Context()
	url := testenv.PostgresURL(t)
	addr, db := testenv.ClickHouseAddr(t)
	holder, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.WithoutCancel(ctx))
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock($1)", migrate.ClickHouseLockID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := migrate.ClickHouse(ctx, migrate.ClickHouseConfig{Addr: addr, Database: db, LockURL: url}, testenv.Logger(t))
		done <- err
	}()
	// The run is seen waiting for the lock in pg_locks before anything
	// is migrated.
	for deadline := time.Now().Add(30 * time.Second); ; {
		var waiting int
		if err := holder.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
AND ((classid::bigint << 32) | objid::bigint) = $1`, migrate.ClickHouseLockID).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the run ended (%v) while another session held the lock", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no run waits for the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if versions, err := migrate.ClickHouseVersions(ctx, migrate.ClickHouseConfig{Addr: addr, Database: db}); err == nil && len(versions) > 0 {
		t.Fatalf("versions %v applied while the lock was held", versions)
	}
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_unlock($1)", migrate.ClickHouseLockID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the run did not go on after the lock was released")
	}
}
