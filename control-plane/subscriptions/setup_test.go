package subscriptions_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/internal/gatewayrecord"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/migrate"
)

// clock is the service's controllable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// faultyRecords is the real Redis store with writes that fail on demand,
// the way they do when Redis is unreachable.
type faultyRecords struct {
	*gatewayrecord.Store
	failing atomic.Bool
}

var errRedisDown = errors.New("dial tcp 127.0.0.1:6379: connection refused")

func (f *faultyRecords) PutKey(ctx context.Context, r gatewayrecord.KeyRecord) (bool, error) {
	if f.failing.Load() {
		return false, errRedisDown
	}
	return f.Store.PutKey(ctx, r)
}

type fixture struct {
	t        *testing.T
	ctx      context.Context
	pool     *pgxpool.Pool
	svc      *subscriptions.Service
	store    *gatewayrecord.Store
	redis    rueidis.Client
	records  *faultyRecords
	clock    *clock
	mail     *testenv.MailpitServer
	email    string
	provider subscriptions.Actor
	consumer subscriptions.Actor
	apiID    uuid.UUID
	plan     subscriptions.Plan
	sub      subscriptions.Subscription
}

// setup is a service over a fresh database, its own Redis database and
// mailpit, with a provider's active API, a plan and a consumer's
// subscription to it.
func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := t.Context()
	url := testenv.PostgresURL(t)
	if _, err := migrate.Postgres(ctx, url, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	logger := testenv.Logger(t)
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := webhooks.New(webhooks.Config{Pool: pool, Jobs: jobs, Logger: logger, AllowPrivateNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	redis, _ := testenv.RedisDB(t)
	store := gatewayrecord.New(redis)
	mail := testenv.Mailpit(t)
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Addr: mail.SMTPAddr(), From: "Veil <noreply@veil.test>", TLS: notify.TLSNone, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		t: t, ctx: ctx, pool: pool, store: store, redis: redis, records: &faultyRecords{Store: store},
		clock: &clock{now: time.Now().UTC().Truncate(time.Second)}, mail: mail,
		email: "consumer-" + testenv.Suffix() + "@example.test",
	}
	f.svc, err = subscriptions.New(subscriptions.Config{
		Pool: pool, Jobs: jobs, Records: f.records, Publisher: hooks, Mailer: mailer, Logger: logger,
		Env: keys.EnvTest, SealSecret: []byte("subscriptions-test-seal"), Now: f.clock.Now,
		RetryBase: time.Millisecond, RetryMax: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.provider = subscriptions.Actor{Subject: "provider-user", Role: catalog.RoleProvider, OrgID: f.org("provider", "provider-user", "provider@example.test")}
	f.consumer = subscriptions.Actor{Subject: "consumer-user", Role: catalog.RoleConsumer, OrgID: f.org("consumer", "consumer-user", f.email)}
	if err := pool.QueryRow(ctx, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		VALUES ($1, 'Weather', 'weather', 'http://127.0.0.1:1', '1', 'active', 'provider-user') RETURNING id`,
		f.provider.OrgID).Scan(&f.apiID); err != nil {
		t.Fatal(err)
	}
	quota, rps := int64(1000), 10
	f.plan, err = f.svc.CreatePlan(ctx, f.provider, f.apiID, subscriptions.PlanInput{
		Name: "Starter", Slug: "starter",
		Terms: subscriptions.Terms{Currency: "USD", QuotaRequests: &quota, QuotaHard: true, RatePerSecond: &rps},
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.sub, err = f.svc.Subscribe(ctx, f.consumer, subscriptions.SubscribeInput{PlanID: f.plan.ID}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) org(slug, subject, email string) uuid.UUID {
	f.t.Helper()
	var id uuid.UUID
	if err := f.pool.QueryRow(f.ctx, `INSERT INTO organizations (slug, name) VALUES ($1, $1) RETURNING id`, slug).Scan(&id); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO users (email, subject) VALUES ($1, $2)`, email, subject); err != nil {
		f.t.Fatal(err)
	}
	return id
}

// key issues a key with in and, when active, syncs it so it is active.
func (f *fixture) key(in subscriptions.KeySettings, active bool) subscriptions.Key {
	f.t.Helper()
	k, err := f.svc.CreateKey(f.ctx, f.consumer, f.sub.ID, in)
	if err != nil {
		f.t.Fatal(err)
	}
	if k.Plaintext == "" || k.State != keys.StatePending {
		f.t.Fatalf("CreateKey = state %s, plaintext %q; want pending with the plaintext", k.State, k.Plaintext)
	}
	if active {
		f.sync(k.ID)
		if got := f.get(k.ID); got.State != keys.StateActive {
			f.t.Fatalf("key after sync = %s; want active", got.State)
		}
	}
	return k
}

func (f *fixture) sync(id uuid.UUID) {
	f.t.Helper()
	if err := f.svc.SyncKey(f.ctx, id); err != nil {
		f.t.Fatalf("SyncKey(%s) = %v", id, err)
	}
}

func (f *fixture) get(id uuid.UUID) subscriptions.Key {
	f.t.Helper()
	k, err := f.svc.GetKey(f.ctx, f.consumer, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return k
}

// record is the gateway's record of a plaintext key.
func (f *fixture) record(plaintext string) gatewayrecord.KeyRecord {
	f.t.Helper()
	r, err := f.store.GetKey(f.ctx, gatewayrecord.Hash(plaintext))
	if err != nil {
		f.t.Fatalf("gateway record: %v", err)
	}
	return r
}

func (f *fixture) maintain() subscriptions.MaintenanceReport {
	f.t.Helper()
	rep, err := f.svc.RunMaintenance(f.ctx)
	if err != nil || len(rep.Errors) > 0 {
		f.t.Fatalf("RunMaintenance = %+v, %v", rep, err)
	}
	return rep
}

// auditCount counts audit entries of action on a key.
func (f *fixture) auditCount(id uuid.UUID, action string) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM audit_log WHERE target_type = 'key' AND target_id = $1 AND action = $2`,
		id.String(), action).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}
