package budgets_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/budgets"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/control-plane/webhooks/webhookstest"
	"github.com/veil-platform/veil/internal/testenv"
)

// fixture is a budgets service over a fresh database with the real
// webhooks service (deliveries are rows to count) and Mailpit, a
// provider's API, and a clock the organization-wide budgets' month
// follows.
type fixture struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	jobs    *river.Client[pgx.Tx]
	workers *river.Workers
	hooks   *webhooks.Service
	hookURL string
	mail    *testenv.MailpitServer
	mailer  notify.Mailer
	clock   *testenv.Clock
	records *syncer
	// metrics is the set of every service the fixture makes.
	metrics *metrics.Set
	svc     *budgets.Service
	apiID   uuid.UUID
	// periodStart and periodEnd bound every test subscription's period.
	periodStart, periodEnd time.Time
}

// syncer records the subscriptions whose gateway record a budget change
// asked to rewrite.
type syncer struct {
	mu   sync.Mutex
	subs []uuid.UUID
}

func (s *syncer) BudgetChanged(_ context.Context, _ pgx.Tx, sub uuid.UUID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, sub)
	return nil
}

func (s *syncer) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// consumer is a consumer organization with one member.
type consumer struct {
	orgID uuid.UUID
	email string
	actor identity.Actor
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pool := testenv.Postgres(t)
	workers := river.NewWorkers()
	jobs := testenv.River(t, pool, workers)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(receiver.Close)
	mail := testenv.Mailpit(t)
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Addr: mail.SMTPAddr(), From: "Veil <noreply@veil.test>", TLS: notify.TLSNone, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(time.Now().Unix()-3*24*3600, 0).UTC()
	f := &fixture{
		t: t, ctx: t.Context(), pool: pool, jobs: jobs, workers: workers, hooks: webhookstest.New(t, pool, jobs),
		hookURL: receiver.URL + "/hooks", mail: mail, mailer: mailer, clock: testenv.NewClock(time.Now()), records: &syncer{}, metrics: metrics.NewSet(),
		periodStart: start, periodEnd: start.AddDate(0, 1, 0),
	}
	f.svc = f.service()
	river.AddWorker(workers, f.hooks.Worker())
	river.AddWorker(workers, f.svc.EmailWorker())
	provider := testenv.Org(t, pool, "provider-"+testenv.Suffix())
	if err := pool.QueryRow(f.ctx, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		VALUES ($1, 'Weather', $2, 'http://127.0.0.1:1', '1', 'active', 'provider-user') RETURNING id`,
		provider, "weather-"+testenv.Suffix()).Scan(&f.apiID); err != nil {
		t.Fatal(err)
	}
	return f
}

// service is a budgets service on the fixture's database: each call is a
// new one, as after a restart.
func (f *fixture) service() *budgets.Service {
	f.t.Helper()
	svc, err := budgets.New(budgets.Config{
		Pool: f.pool, Publisher: f.hooks, Mailer: f.mailer, Jobs: f.jobs, Records: f.records,
		Logger: testenv.Logger(f.t), Metrics: f.metrics, Now: f.clock.Now,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return svc
}

// consumer makes an organization with a member (a fresh address) and a
// webhook endpoint that takes budget notices.
func (f *fixture) consumer() consumer {
	f.t.Helper()
	sfx := testenv.Suffix()
	c := consumer{email: "budget-" + sfx + "@example.test"}
	c.orgID = testenv.Org(f.t, f.pool, "consumer-"+sfx)
	user := testenv.User(f.t, f.pool, c.email, "consumer-"+sfx)
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'consumer')`, c.orgID, user); err != nil {
		f.t.Fatal(err)
	}
	c.actor = identity.Actor{Subject: "consumer-" + sfx, Role: identity.RoleConsumer, OrgID: c.orgID}
	if _, _, err := f.hooks.CreateEndpoint(f.ctx, c.actor, webhooks.EndpointInput{
		URL: f.hookURL, EventTypes: []string{budgets.EventThresholdCrossed},
	}); err != nil {
		f.t.Fatal(err)
	}
	return c
}

// subscribe subscribes c to a new plan of the fixture's API priced in
// currency, in the fixture's period.
func (f *fixture) subscribe(c consumer, currency string) uuid.UUID {
	f.t.Helper()
	sfx := testenv.Suffix()
	var api, plan, version, sub uuid.UUID
	// An organization subscribes to an API once: each subscription is to
	// an API of its own.
	if err := f.pool.QueryRow(f.ctx, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		SELECT organization_id, name, $2, upstream_url, version, state, created_by FROM apis WHERE id = $1 RETURNING id`,
		f.apiID, "weather-"+sfx).Scan(&api); err != nil {
		f.t.Fatal(err)
	}
	if err := f.pool.QueryRow(f.ctx, `INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Starter', $2, 'active') RETURNING id`,
		api, "starter-"+sfx).Scan(&plan); err != nil {
		f.t.Fatal(err)
	}
	if err := f.pool.QueryRow(f.ctx, `INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
		VALUES ($1, 1, 'subscription', $2, 'provider-user') RETURNING id`, plan, currency).Scan(&version); err != nil {
		f.t.Fatal(err)
	}
	if err := f.pool.QueryRow(f.ctx, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id,
			current_period_start, current_period_end) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		c.orgID, c.actor.Subject, api, version, f.periodStart, f.periodEnd).Scan(&sub); err != nil {
		f.t.Fatal(err)
	}
	return sub
}

// outlook writes the subscription's outlook as billing's job would at the
// fixture clock's time: its period of a month from start, the cost so far
// and the projection.
func (f *fixture) outlook(sub uuid.UUID, start time.Time, currency, cost, projected string) {
	f.t.Helper()
	f.outlookOf(sub, start, start.AddDate(0, 1, 0), currency, cost, projected)
}

// outlookOf writes the subscription's outlook of the period [start, end)
// at the fixture clock's time.
func (f *fixture) outlookOf(sub uuid.UUID, start, end time.Time, currency, cost, projected string) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO subscription_outlooks (subscription_id, period_start, period_end, currency,
			cost_so_far, projected, projected_low, projected_high, computed_at)
		VALUES ($1, $2, $3, $4, $5, $6, $5, $6, $7)
		ON CONFLICT (subscription_id) DO UPDATE SET period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
			currency = EXCLUDED.currency, cost_so_far = EXCLUDED.cost_so_far, projected = EXCLUDED.projected,
			projected_low = EXCLUDED.projected_low, projected_high = EXCLUDED.projected_high, computed_at = EXCLUDED.computed_at`,
		sub, start, end, currency, cost, projected, f.clock.Now()); err != nil {
		f.t.Fatal(err)
	}
}

// invoice writes an invoice of the subscription's period [start, end) with
// total and status (a finalized one numbered, a void one voided), issued
// by the API's provider to the subscribing organization.
func (f *fixture) invoice(sub uuid.UUID, start, end time.Time, currency, total, status string) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency,
			period_start, period_end, subtotal, total, finalized_at, voided_at)
		SELECT a.organization_id, s.organization_id, s.id, $2::invoice_status, CASE WHEN $2 <> 'draft' THEN $3 END, $4,
			$5, $6, $7, $7, CASE WHEN $2 <> 'draft' THEN now() END, CASE WHEN $2 = 'void' THEN now() END
		FROM subscriptions s JOIN apis a ON a.id = s.api_id WHERE s.id = $1`,
		sub, status, "T-"+testenv.Suffix(), currency, start, end, total); err != nil {
		f.t.Fatal(err)
	}
}

// budget creates a budget through the service.
func (f *fixture) budget(c consumer, in budgets.Input) budgets.Budget {
	f.t.Helper()
	b, err := f.svc.Create(f.ctx, c.actor, in)
	if err != nil {
		f.t.Fatalf("create budget: %v", err)
	}
	return b
}

// evaluate runs one evaluation with svc and returns the notices it sent.
func (f *fixture) evaluate(svc *budgets.Service) int {
	f.t.Helper()
	rep, err := svc.Evaluate(f.ctx)
	if err != nil {
		f.t.Fatalf("evaluate: %v", err)
	}
	return rep.Notices
}

// delivered lists the budget notices published to c's organization, in
// the order they were published.
func (f *fixture) delivered(c consumer) []budgets.Notice {
	f.t.Helper()
	rows, err := f.pool.Query(f.ctx, `SELECT d.payload FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
		WHERE e.organization_id = $1 AND d.event_type = $2 ORDER BY d.created_at, d.id`, c.orgID, budgets.EventThresholdCrossed)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []budgets.Notice
	for rows.Next() {
		var raw []byte
		var env struct{ Data budgets.Notice }
		if err := rows.Scan(&raw); err != nil {
			f.t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &env); err != nil {
			f.t.Fatalf("payload %s: %v", raw, err)
		}
		out = append(out, env.Data)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// emailJobs counts the queued budget emails of b.
func (f *fixture) emailJobs(b budgets.Budget) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM river_job WHERE kind = $1 AND args->>'budget_id' = $2`,
		budgets.EmailArgs{}.Kind(), b.ID.String()).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// key is what makes a notice once: its threshold, basis and period.
type key struct {
	threshold int
	basis     string
	period    time.Time
}

func keys(ns []budgets.Notice) []key {
	out := make([]key, len(ns))
	for i, n := range ns {
		out[i] = key{n.Threshold, n.Basis, n.PeriodStart.UTC()}
	}
	return out
}

func amount(s string) *decimal.Decimal {
	d := decimal.RequireFromString(s)
	return &d
}

func ptr[T any](v T) *T { return &v }
