// Package subscriptionstest builds the subscriptions and keys services for
// tests: over a fresh database, their own Redis database and mailpit, with
// a provider's active API, a plan and a consumer's subscription to it (the
// setup(t) of River's tests). The tests of control-plane/subscriptions and
// control-plane/keys share it.
package subscriptionstest

import (
	"context"
	"encoding/json"
	"errors"
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

// FaultyRecords is the real Redis store with writes that fail on demand,
// the way they do when Redis is unreachable.
type FaultyRecords struct {
	*enforcement.Store
	// Failing makes PutKey fail, as it does when Redis is unreachable.
	Failing atomic.Bool
}

// ErrRedisDown is the error of a PutKey that fails.
var ErrRedisDown = errors.New("dial tcp 127.0.0.1:6379: connection refused")

func (f *FaultyRecords) PutKey(ctx context.Context, r enforcement.KeyRecord) (bool, error) {
	if f.Failing.Load() {
		return false, ErrRedisDown
	}
	return f.Store.PutKey(ctx, r)
}

// Fixture is the services under test and what they were set up with.
type Fixture struct {
	T        *testing.T
	Ctx      context.Context
	Pool     *pgxpool.Pool
	Jobs     *river.Client[pgx.Tx]
	Svc      *subscriptions.Service
	Keys     *keys.Service
	Store    *enforcement.Store
	Redis    rueidis.Client
	Records  *FaultyRecords
	Clock    *testenv.Clock
	Metrics  *metrics.Set
	Mail     *testenv.MailpitServer
	Email    string
	Provider identity.Actor
	Consumer identity.Actor
	APIID    uuid.UUID
	Plan     subscriptions.Plan
	Sub      subscriptions.Subscription
}

// Setup is a service over a fresh database, its own Redis database and
// mailpit, with a provider's active API, a plan and a consumer's
// subscription to it. Each opt changes the service's Config before it is
// built.
func Setup(t *testing.T, opts ...func(*subscriptions.Config)) *Fixture {
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
	f := &Fixture{
		T: t, Ctx: ctx, Pool: pool, Jobs: jobs, Store: store, Redis: redis, Records: &FaultyRecords{Store: store},
		Clock: testenv.NewClock(time.Now().UTC().Truncate(time.Second)), Metrics: metrics.NewSet(), Mail: mail,
		Email: "consumer-" + testenv.Suffix() + "@example.test",
	}
	cfg := subscriptions.Config{
		Pool: pool, Jobs: jobs, Records: f.Records, Publisher: hooks, Mailer: mailer, Logger: logger, Metrics: f.Metrics,
		Now: f.Clock.Now, Keys: keys.Options{
			Env: apikey.EnvTest, SealSecret: []byte("subscriptions-test-seal"), RetryBase: time.Millisecond, RetryMax: time.Millisecond,
		},
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	f.Svc, err = subscriptions.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.Keys = f.Svc.Keys()
	f.Provider = identity.Actor{Subject: "provider-user", Role: identity.RoleProvider, OrgID: f.Org("provider", "provider-user", "provider@example.test")}
	f.Consumer = identity.Actor{Subject: "consumer-user", Role: identity.RoleConsumer, OrgID: f.Org("consumer", "consumer-user", f.Email)}
	if err := pool.QueryRow(ctx, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		VALUES ($1, 'Weather', 'weather', 'http://127.0.0.1:1', '1', 'active', 'provider-user') RETURNING id`,
		f.Provider.OrgID).Scan(&f.APIID); err != nil {
		t.Fatal(err)
	}
	quota, rps := int64(1000), 10
	f.Plan, err = f.Svc.CreatePlan(ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Starter", Slug: "starter",
		Terms: subscriptions.Terms{Currency: "USD", QuotaRequests: &quota, QuotaHard: true, RatePerSecond: &rps},
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.Sub, err = f.Svc.Subscribe(ctx, f.Consumer, subscriptions.SubscribeInput{PlanID: f.Plan.ID}); err != nil {
		t.Fatal(err)
	}
	return f
}

// Org inserts an organization with one user, and returns its id.
func (f *Fixture) Org(slug, subject, email string) uuid.UUID {
	f.T.Helper()
	id := testenv.Org(f.T, f.Pool, slug)
	testenv.User(f.T, f.Pool, email, subject)
	return id
}

// Key issues a key with in and, when active, syncs it so it is active.
func (f *Fixture) Key(in keys.Settings, active bool) keys.Key {
	f.T.Helper()
	k, err := f.Keys.CreateKey(f.Ctx, f.Consumer, f.Sub.ID, in)
	if err != nil {
		f.T.Fatal(err)
	}
	if k.Plaintext == "" || k.State != keys.StatePending {
		f.T.Fatalf("CreateKey = state %s, plaintext %q; want pending with the plaintext", k.State, k.Plaintext)
	}
	if active {
		f.Sync(k.ID)
		if got := f.Get(k.ID); got.State != keys.StateActive {
			f.T.Fatalf("key after sync = %s; want active", got.State)
		}
	}
	return k
}

// Sync writes the key's record, as its outbox job does.
func (f *Fixture) Sync(id uuid.UUID) {
	f.T.Helper()
	if err := f.Keys.SyncKey(f.Ctx, id); err != nil {
		f.T.Fatalf("SyncKey(%s) = %v", id, err)
	}
}

// Get reads a key as the consumer.
func (f *Fixture) Get(id uuid.UUID) keys.Key {
	f.T.Helper()
	k, err := f.Keys.GetKey(f.Ctx, f.Consumer, id)
	if err != nil {
		f.T.Fatal(err)
	}
	return k
}

// Record is the gateway's record of a plaintext key.
func (f *Fixture) Record(plaintext string) enforcement.KeyRecord {
	f.T.Helper()
	r, err := f.Store.GetKey(f.Ctx, apikey.Hash(plaintext))
	if err != nil {
		f.T.Fatalf("gateway record: %v", err)
	}
	return r
}

// Maintain runs maintenance and fails the test on any error.
func (f *Fixture) Maintain() subscriptions.MaintenanceReport {
	f.T.Helper()
	rep, err := f.Svc.RunMaintenance(f.Ctx)
	if err != nil || len(rep.Errors) > 0 {
		f.T.Fatalf("RunMaintenance = %+v, %v", rep, err)
	}
	return rep
}

// AuditCount counts audit entries of action on a key.
func (f *Fixture) AuditCount(id uuid.UUID, action string) int {
	f.T.Helper()
	var n int
	if err := f.Pool.QueryRow(f.Ctx, `SELECT count(*) FROM audit_log WHERE target_type = 'key' AND target_id = $1 AND action = $2`,
		id.String(), action).Scan(&n); err != nil {
		f.T.Fatal(err)
	}
	return n
}

// EmailJob is a key_notice_email job as River stored it.
type EmailJob struct {
	Row  *rivertype.JobRow
	Args keys.KeyNoticeEmailArgs
}

// EmailJobs returns the key_notice_email jobs in state, oldest first.
func (f *Fixture) EmailJobs(state rivertype.JobState) []EmailJob {
	f.T.Helper()
	return f.queryEmailJobs(`state = $2::river_job_state`, string(state))
}

// Job returns the key_notice_email job id.
func (f *Fixture) Job(id int64) EmailJob {
	f.T.Helper()
	jobs := f.queryEmailJobs(`id = $2`, id)
	if len(jobs) != 1 {
		f.T.Fatalf("key_notice_email job %d not found", id)
	}
	return jobs[0]
}

func (f *Fixture) queryEmailJobs(where string, arg any) []EmailJob {
	f.T.Helper()
	kind := keys.KeyNoticeEmailArgs{}.Kind()
	rows, err := f.Pool.Query(f.Ctx, `SELECT id, state::text, attempt, max_attempts, args FROM river_job
		WHERE kind = $1 AND `+where+` ORDER BY id`, kind, arg)
	if err != nil {
		f.T.Fatal(err)
	}
	defer rows.Close()
	var out []EmailJob
	for rows.Next() {
		j := EmailJob{Row: &rivertype.JobRow{Kind: kind}}
		var state string
		if err := rows.Scan(&j.Row.ID, &state, &j.Row.Attempt, &j.Row.MaxAttempts, &j.Row.EncodedArgs); err != nil {
			f.T.Fatal(err)
		}
		j.Row.State = rivertype.JobState(state)
		if err := json.Unmarshal(j.Row.EncodedArgs, &j.Args); err != nil {
			f.T.Fatalf("%s args %s: %v", kind, j.Row.EncodedArgs, err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		f.T.Fatal(err)
	}
	return out
}

// Work runs the email worker on j as River's next attempt would, with
// ctx, and records the outcome as River does: completed, cancelled on
// river.JobCancel, retryable otherwise.
func (f *Fixture) Work(ctx context.Context, j EmailJob) error {
	f.T.Helper()
	row := *j.Row
	row.Attempt++
	err := f.Keys.KeyNoticeEmailWorker().Work(ctx, &river.Job[keys.KeyNoticeEmailArgs]{JobRow: &row, Args: j.Args})
	var cancel *river.JobCancelError
	state := rivertype.JobStateRetryable
	switch {
	case err == nil:
		state = rivertype.JobStateCompleted
	case errors.As(err, &cancel):
		state = rivertype.JobStateCancelled
	}
	if _, err := f.Pool.Exec(f.Ctx, `UPDATE river_job SET state = $2::river_job_state, attempt = $3, attempted_at = now(),
			finalized_at = CASE WHEN $2::river_job_state IN ('completed', 'cancelled') THEN now() END WHERE id = $1`,
		row.ID, string(state), row.Attempt); err != nil {
		f.T.Fatal(err)
	}
	return err
}

// SendQueuedEmails runs every available key_notice_email job, oldest
// first, as the control plane's River client would, and fails the test if
// one does not complete. It returns how many it ran.
func (f *Fixture) SendQueuedEmails() int {
	f.T.Helper()
	jobs := f.EmailJobs(rivertype.JobStateAvailable)
	for _, j := range jobs {
		if err := f.Work(f.Ctx, j); err != nil {
			f.T.Fatalf("KeyNoticeEmailWorker.Work(%s) = %v; want nil", j.Row.EncodedArgs, err)
		}
	}
	return len(jobs)
}

// NoticeCount is veil_controlplane_key_notices_total of result.
func (f *Fixture) NoticeCount(result string) uint64 {
	return f.Metrics.GetOrCreateCounter(`veil_controlplane_key_notices_total{result="` + result + `"}`).Get()
}
