// Package testenv connects tests to the real services that `make test`
// starts (Postgres, Redis, ClickHouse, Kafka or the in-process kfake broker,
// mailpit), giving each test databases and topics of its own where sharing
// would mix tests up, and starts what tests run beside them: River clients
// and veil gateway processes, and the rows and clock most service tests
// set up (Org, User, Clock). A service that does not answer fails the
// test: tests never skip for lack of a service.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/schemas/migrate"
)

// Env returns the environment variable or def.
func Env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Logger returns a logger that writes through t.Log only when VEIL_TEST_LOG
// is set, so passing tests stay quiet.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("VEIL_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// Suffix returns a random hex string for names unique to one test.
func Suffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Kafka is a broker a test can use: the real one named by VEIL_KAFKA_BROKERS
// when VEIL_TEST_BROKER=kafka, or an in-process kfake cluster (the default,
// VEIL_TEST_BROKER=kfake).
type Kafka struct {
	Brokers []string
	// Fake is the kfake cluster, nil against the real broker.
	Fake *kfake.Cluster
}

// BrokerKind is the broker the tests run against: "kfake" or "kafka".
func BrokerKind() string { return Env("VEIL_TEST_BROKER", "kfake") }

// NewKafka returns the broker selected by VEIL_TEST_BROKER.
func NewKafka(t testing.TB) *Kafka {
	t.Helper()
	switch kind := BrokerKind(); kind {
	case "kfake":
		return NewFakeKafka(t)
	case "kafka":
		brokers := broker.ParseBrokers(Env("VEIL_KAFKA_BROKERS", "127.0.0.1:9092"))
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
		if err != nil {
			t.Fatalf("kafka client: %v", err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := cl.Ping(ctx); err != nil {
			t.Fatalf("real Kafka broker at %v does not answer (start it with make kafka): %v", brokers, err)
		}
		return &Kafka{Brokers: brokers}
	default:
		t.Fatalf("VEIL_TEST_BROKER=%q; want kfake or kafka", kind)
		return nil
	}
}

// NewFakeKafka always returns an in-process kfake cluster, for tests that
// inject faults.
func NewFakeKafka(t testing.TB) *Kafka {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &Kafka{Brokers: c.ListenAddrs(), Fake: c}
}

// Client returns a client for the broker, closed when the test ends.
func (k *Kafka) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.Brokers...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Topic creates a topic unique to the test and deletes it afterwards.
func (k *Kafka) Topic(t testing.TB, partitions int32) string {
	t.Helper()
	name := "veil.test." + Suffix()
	adm := kadm.NewClient(k.Client(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, 1, nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, name)
	})
	cl := k.Client(t)
	if err := broker.WaitForTopic(ctx, cl, name); err != nil {
		t.Fatal(err)
	}
	return name
}

// ReadAll returns every record in topic, from the start to the end offsets
// at the time of the call.
func (k *Kafka) ReadAll(t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(k.Client(t))
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", topic, o.Partition, o.Err)
		}
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			total += o.Offset
		}
	})
	if total == 0 {
		return nil
	}
	cl := k.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var out []*kgo.Record
	reached := map[int32]bool{}
	for len(reached) < len(want) {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %s: got %d records before the deadline; want %d", topic, len(out), total)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < want[r.Partition] {
				out = append(out, r)
			}
			if r.Offset+1 >= want[r.Partition] {
				reached[r.Partition] = true
			}
		})
	}
	return out
}

// Deadline polls cond every 20ms until it returns nil or d passes, then
// fails the test with cond's last error.
func Deadline(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	end := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("condition not met within %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Postgres returns a pool on a new database of the test server with the
// migrations applied, closed and dropped when the test ends. mod, when
// given, changes the pool's config (its size, say) before it connects.
func Postgres(t testing.TB, mod ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	url := MigratedPostgresURL(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	datastore.WithNativeTypes(cfg)
	for _, m := range mod {
		m(cfg)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// MigratedPostgresURL returns the URL of a new database of the test server
// with the migrations applied, dropped when the test ends: for tests that
// hand the database to a process or open their own connections.
func MigratedPostgresURL(t testing.TB) string {
	t.Helper()
	url := PostgresURL(t)
	if _, err := migrate.Postgres(t.Context(), url, Logger(t)); err != nil {
		t.Fatalf("migrate %s: %v", url, err)
	}
	return url
}

// PostgresURL returns the URL of a new, empty database on the test server
// (VEIL_TEST_POSTGRES_URL, default the local one), dropped when the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := Env("VEIL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("Postgres at %s does not answer (start it with make services): %v", base, err)
	}
	defer conn.Close(context.Background())
	name := "veil_test_" + Suffix()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
}

// ClickHouseAddr returns the native address of the test ClickHouse
// (VEIL_TEST_CLICKHOUSE_ADDR, default 127.0.0.1:9000) and a database name
// unique to the test, dropped when it ends. The database is not created.
func ClickHouseAddr(t testing.TB) (addr, database string) {
	t.Helper()
	addr = Env("VEIL_TEST_CLICKHOUSE_ADDR", "127.0.0.1:9000")
	database = "veil_test_" + Suffix()
	conn, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("ClickHouse at %s does not answer (start it with make services): %v", addr, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+database)
		_ = conn.Close()
	})
	return addr, database
}

// Redis returns a client for the test Redis (VEIL_TEST_REDIS_ADDR, default
// 127.0.0.1:6379). Tests keep apart by using subjects unique to them.
func Redis(t testing.TB) rueidis.Client {
	t.Helper()
	addr := Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379")
	c, err := datastore.OpenRedis(datastore.Redis{Addr: addr})
	if err != nil {
		t.Fatalf("Redis at %s does not answer: %v", addr, err)
	}
	t.Cleanup(c.Close)
	return c
}

// RedisDB returns a client for a logical database of the test Redis that
// no other running test uses, emptied, and its number. Tests that scan
// every record of a kind (key reconciliation) or empty their database need
// one: on the shared database 0 they would see, and remove, other tests'
// records. Databases 1–15 are leased across all test processes through a
// key in database 0 (SET NX with an expiry, so a killed test process
// frees its lease in time); the lease ends with the test. When all are
// leased, RedisDB waits for one.
func RedisDB(t testing.TB) (rueidis.Client, int) {
	t.Helper()
	shared := Redis(t)
	token := Suffix()
	var db int
	Deadline(t, 5*time.Minute, func() error {
		start, err := shared.Do(t.Context(), shared.B().Incr().Key("veil:test:next-db").Build()).AsInt64()
		if err != nil {
			return fmt.Errorf("allocate a Redis test database: %w", err)
		}
		for i := range int64(redisTestDBs) {
			n := int(1 + (start+i)%redisTestDBs)
			err := shared.Do(t.Context(), shared.B().Set().Key(redisLeaseKey(n)).Value(token).Nx().Px(redisLeaseTTL).Build()).Error()
			if err == nil {
				db = n
				return nil
			}
			if !rueidis.IsRedisNil(err) {
				return fmt.Errorf("lease Redis test database %d: %w", n, err)
			}
		}
		return fmt.Errorf("all %d Redis test databases are leased by running tests", redisTestDBs)
	})
	t.Cleanup(func() {
		// Release only our own lease: after an expiry another test may hold it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = releaseLease.Exec(ctx, shared, []string{redisLeaseKey(db)}, []string{token}).Error()
	})
	addr := Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379")
	c, err := datastore.OpenRedis(datastore.Redis{Addr: addr, DB: db})
	if err != nil {
		t.Fatalf("Redis at %s database %d: %v", addr, db, err)
	}
	t.Cleanup(c.Close)
	if err := c.Do(t.Context(), c.B().Flushdb().Build()).Error(); err != nil {
		t.Fatalf("empty Redis test database %d: %v", db, err)
	}
	return c, db
}

// redisTestDBs is how many databases (1 to 15) RedisDB leases; database 0
// is shared.
const redisTestDBs = 15

// redisLeaseTTL outlives the longest test run (make test's -timeout).
const redisLeaseTTL = 20 * time.Minute

func redisLeaseKey(db int) string { return fmt.Sprintf("veil:test:db-lease:%d", db) }

var releaseLease = rueidis.NewLuaScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// GroupLag returns how many records of topic the group has not committed.
func (k *Kafka) GroupLag(t testing.TB, group, topic string) (int64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm := kadm.NewClient(k.Client(t))
	lags, err := adm.Lag(ctx, group)
	if err != nil {
		return 0, err
	}
	l, ok := lags[group]
	if !ok || l.Error() != nil {
		return 0, fmt.Errorf("lag of group %s: %v", group, l.Error())
	}
	var total int64
	for _, p := range l.Lag[topic] {
		if p.Err != nil {
			return 0, p.Err
		}
		total += p.Lag
	}
	if len(l.Lag[topic]) == 0 {
		return 0, fmt.Errorf("group %s has no offsets for %s yet", group, topic)
	}
	return total, nil
}

// ClickHouseDB returns a connection to a fresh database on the test
// ClickHouse with Veil's migrations applied, and the database's name; the
// database is dropped when the test ends.
func ClickHouseDB(t testing.TB) (conn driver.Conn, addr, database string) {
	t.Helper()
	addr, database = ClickHouseAddr(t)
	cfg := migrate.ClickHouseConfig{Addr: addr, Database: database}
	if _, err := migrate.ClickHouse(context.Background(), cfg, Logger(t)); err != nil {
		t.Fatal(err)
	}
	conn, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: cfg.Addr, Database: database})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, addr, database
}
