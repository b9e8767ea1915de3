package datastore_test

import (
	"context"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/testenv"
)

func TestOpenPostgresRaisesPoolSize(t *testing.T) {
	url := testenv.PostgresURL(t)
	for _, tc := range []struct {
		url  string
		min  int32
		want int32
	}{
		{url, 20, 20},
		{url + "&pool_max_conns=3", 20, 3},
	} {
		pool, err := datastore.OpenPostgres(t.Context(), datastore.Postgres{URL: tc.url, MinMaxConns: tc.min})
		if err != nil {
			t.Fatal(err)
		}
		if got := pool.Config().MaxConns; got != tc.want {
			t.Errorf("OpenPostgres(%s, %d).MaxConns = %d; want %d", tc.url, tc.min, got, tc.want)
		}
		if err := pool.Ping(t.Context()); err != nil {
			t.Errorf("ping: %v", err)
		}
		pool.Close()
	}
}

func TestOpenClickHouseSelectsDatabase(t *testing.T) {
	addr, db := testenv.ClickHouseAddr(t)
	admin, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Exec(t.Context(), "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	conn, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: addr, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got string
	if err := conn.QueryRow(t.Context(), "SELECT currentDatabase()").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != db {
		t.Errorf("currentDatabase() = %q; want %q", got, db)
	}
}

func TestOpenRedis(t *testing.T) {
	c, err := datastore.OpenRedis(datastore.Redis{Addr: testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"), DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
		t.Errorf("ping: %v", err)
	}
	if _, err := datastore.OpenRedis(datastore.Redis{Addr: "127.0.0.1:1"}); err == nil {
		t.Error("OpenRedis(127.0.0.1:1) = nil error; want a connection error")
	}
}
