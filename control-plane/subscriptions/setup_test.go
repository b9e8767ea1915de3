package subscriptions_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/webhooks/webhookstest"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
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
	*enforcement.Store
	failing atomic.Bool
}

var errRedisDown = errors.New("dial tcp 127.0.0.1:6379: connection refused")

func (f *faultyRecords) PutKey(ctx context.Context, r enforcement.KeyRecord) (bool, error) {
	if f.failing.Load() {
		return false, errRedisDown
	}
	return f.Store.PutKey(ctx, r)
}

type fixture struct {
	t        *testing.T
	ctx      context.Context
	pool     *pgxpool.Pool
	jobs     *river.Client[pgx.Tx]
	svc      *subscriptions.Service
	store    *enforcement.Store
	redis    rueidis.Client
	records  *faultyRecords
	clock    *clock
	metrics  *metrics.Set
	mail     *testenv.MailpitServer
	email    string
	provider identity.Actor
	consumer identity.Actor
	apiID    uuid.UUID
	plan     subscriptions.Plan
	sub      subscriptions.Subscription
}

// setup is a service over a fresh database, its own Redis database and
// mailpit, with a provider's active API, a plan and a consumer's
// subscription to it. Each opt changes the service's Config before it is
// built.
func setup(t *testing.T, opts ...func(*subscriptions.Config)) *fixture {
	t.Helper()
	ctx := t.Context()
	pool := testenv.Postgres(t)
	logger := testenv.Logger(t)
	jobs := testenv.River(t, pool, nil)
	hooks := webhookstest.New(t, pool, jobs)
	redis, _ := testenv.RedisDB(t)
	store := enforcement.New(redis)
	mail := testenv.Mailpit(t)
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Addr: mail.SMTPAddr(), From: "Veil <noreply@veil.test>", TLS: notify.TLSNone, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		t: t, ctx: ctx, pool: pool, jobs: jobs, store: store, redis: redis, records: &faultyRecords{Store: store},
		clock: &clock{now: time.Now().UTC().Truncate(time.Second)}, metrics: metrics.NewSet(), mail: mail,
		email: "consumer-" + testenv.Suffix() + "@example.test",
	}
	cfg := subscriptions.Config{
		Pool: pool, Jobs: jobs, Records: f.records, Publisher: hooks, Mailer: mailer, Logger: logger, Metrics: f.metrics,
		Env: apikey.EnvTest, SealSecret: []byte("subscriptions-test-seal"), Now: f.clock.Now,
		RetryBase: time.Millisecond, RetryMax: time.Millisecond,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	f.svc, err = subscriptions.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.provider = identity.Actor{Subject: "provider-user", Role: identity.RoleProvider, OrgID: f.org("provider", "provider-user", "provider@example.test")}
	f.consumer = identity.Actor{Subject: "consumer-user", Role: identity.RoleConsumer, OrgID: f.org("consumer", "consumer-user", f.email)}
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
func (f *fixture) key(in keys.Settings, active bool) subscriptions.Key {
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
func (f *fixture) record(plaintext string) enforcement.KeyRecord {
	f.t.Helper()
	r, err := f.store.GetKey(f.ctx, enforcement.Hash(plaintext))
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

// emailJob is a key_notice_email job as River stored it.
type emailJob struct {
	row  *rivertype.JobRow
	args subscriptions.KeyNoticeEmailArgs
}

// emailJobs returns the key_notice_email jobs in state, oldest first.
func (f *fixture) emailJobs(state rivertype.JobState) []emailJob {
	f.t.Helper()
	return f.queryEmailJobs(`state = $2::river_job_state`, string(state))
}

// job returns the key_notice_email job id.
func (f *fixture) job(id int64) emailJob {
	f.t.Helper()
	jobs := f.queryEmailJobs(`id = $2`, id)
	if len(jobs) != 1 {
		f.t.Fatalf("key_notice_email job %d not found", id)
	}
	return jobs[0]
}

func (f *fixture) queryEmailJobs(where string, arg any) []emailJob {
	f.t.Helper()
	kind := subscriptions.KeyNoticeEmailArgs{}.Kind()
	rows, err := f.pool.Query(f.ctx, `SELECT id, state::text, attempt, max_attempts, args FROM river_job
		WHERE kind = $1 AND `+where+` ORDER BY id`, kind, arg)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []emailJob
	for rows.Next() {
		j := emailJob{row: &rivertype.JobRow{Kind: kind}}
		var state string
		if err := rows.Scan(&j.row.ID, &state, &j.row.Attempt, &j.row.MaxAttempts, &j.row.EncodedArgs); err != nil {
			f.t.Fatal(err)
		}
		j.row.State = rivertype.JobState(state)
		if err := json.Unmarshal(j.row.EncodedArgs, &j.args); err != nil {
			f.t.Fatalf("%s args %s: %v", kind, j.row.EncodedArgs, err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// work runs the email worker on j as River's next attempt would, with
// ctx, and records the outcome as River does: completed, cancelled on
// river.JobCancel, retryable otherwise.
func (f *fixture) work(ctx context.Context, j emailJob) error {
	f.t.Helper()
	row := *j.row
	row.Attempt++
	err := f.svc.KeyNoticeEmailWorker().Work(ctx, &river.Job[subscriptions.KeyNoticeEmailArgs]{JobRow: &row, Args: j.args})
	var cancel *river.JobCancelError
	state := rivertype.JobStateRetryable
	switch {
	case err == nil:
		state = rivertype.JobStateCompleted
	case errors.As(err, &cancel):
		state = rivertype.JobStateCancelled
	}
	if _, err := f.pool.Exec(f.ctx, `UPDATE river_job SET state = $2::river_job_state, attempt = $3, attempted_at = now(),
			finalized_at = CASE WHEN $2::river_job_state IN ('completed', 'cancelled') THEN now() END WHERE id = $1`,
		row.ID, string(state), row.Attempt); err != nil {
		f.t.Fatal(err)
	}
	return err
}

// sendQueuedEmails runs every available key_notice_email job, oldest
// first, as the control plane's River client would, and fails the test if
// one does not complete. It returns how many it ran.
func (f *fixture) sendQueuedEmails() int {
	f.t.Helper()
	jobs := f.emailJobs(rivertype.JobStateAvailable)
	for _, j := range jobs {
		if err := f.work(f.ctx, j); err != nil {
			f.t.Fatalf("KeyNoticeEmailWorker.Work(%s) = %v; want nil", j.row.EncodedArgs, err)
		}
	}
	return len(jobs)
}

// noticeCount is veil_controlplane_key_notices_total of result.
func (f *fixture) noticeCount(result string) uint64 {
	return f.metrics.GetOrCreateCounter(`veil_controlplane_key_notices_total{result="` + result + `"}`).Get()
}
