package quota_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
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
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/control-plane/webhooks/webhookstest"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

// quotaFixture is a quota service over a fresh database, a Redis database
// of its own, the real webhooks service (deliveries are rows to count, sent
// to a receiver that takes them all) and Mailpit, with a provider's API
// that test subscriptions subscribe to. Its River client works the email
// and webhook jobs once started.
type quotaFixture struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	redis   rueidis.Client
	jobs    *river.Client[pgx.Tx]
	hooks   *webhooks.Service
	hookURL string
	mail    *testenv.MailpitServer
	metrics *metrics.Set
	svc     *quota.Service
	apiID   uuid.UUID
	// periodStart and periodEnd bound every test subscription's current
	// period.
	periodStart, periodEnd time.Time
}

// testSub is a consumer organization's subscription to the fixture's API.
type testSub struct {
	id, orgID, planID uuid.UUID
	email             string
}

// newFixture builds the fixture; configure, when given, adjusts the
// service's Config before New.
func newFixture(t *testing.T, configure func(*quota.Config)) *quotaFixture {
	t.Helper()
	ctx := t.Context()
	logger := testenv.Logger(t)
	pool := testenv.Postgres(t)
	workers := river.NewWorkers()
	jobs := testenv.River(t, pool, workers, func(c *river.Config) {
		c.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}}
	})
	hooks := webhookstest.New(t, pool, jobs)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	mail := testenv.Mailpit(t)
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Addr: mail.SMTPAddr(), From: "Veil <noreply@veil.test>", TLS: notify.TLSNone, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	redis, _ := testenv.RedisDB(t)
	start := time.Unix(time.Now().Unix()-3*24*3600, 0).UTC()
	f := &quotaFixture{
		t: t, ctx: ctx, pool: pool, redis: redis, jobs: jobs, hooks: hooks, hookURL: receiver.URL + "/hooks",
		mail: mail, metrics: metrics.NewSet(), periodStart: start, periodEnd: start.AddDate(0, 1, 0),
	}
	cfg := quota.Config{Pool: pool, Redis: redis, Publisher: hooks, Mailer: mailer, Jobs: jobs, Logger: logger, Metrics: f.metrics}
	if configure != nil {
		configure(&cfg)
	}
	if f.svc, err = quota.New(cfg); err != nil {
		t.Fatal(err)
	}
	river.AddWorker(workers, hooks.Worker())
	river.AddWorker(workers, f.svc.QuotaEmailWorker())
	provider := f.org("provider-"+testenv.Suffix(), "provider-"+testenv.Suffix(), "provider-"+testenv.Suffix()+"@example.test")
	if err := pool.QueryRow(ctx, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		VALUES ($1, 'Weather', $2, 'http://127.0.0.1:1', '1', 'active', 'provider-user') RETURNING id`,
		provider, "weather-"+testenv.Suffix()).Scan(&f.apiID); err != nil {
		t.Fatal(err)
	}
	return f
}

// org inserts an organization and a user with that subject and email.
func (f *quotaFixture) org(slug, subject, email string) uuid.UUID {
	f.t.Helper()
	testenv.User(f.t, f.pool, email, subject)
	return testenv.Org(f.t, f.pool, slug)
}

// subscribe creates a consumer organization whose user has email (a fresh
// address when ""), a plan version with that quota (nil: unlimited), a
// subscription to it in the fixture's period, and a webhook endpoint of
// the organization that takes quota notices.
func (f *quotaFixture) subscribe(planQuota *int64, hard bool, email string) testSub {
	f.t.Helper()
	sfx := testenv.Suffix()
	if email == "" {
		email = "consumer-" + sfx + "@example.test"
	}
	s := testSub{email: email}
	subject := "consumer-" + sfx
	s.orgID = f.org("consumer-"+sfx, subject, email)
	if err := f.pool.QueryRow(f.ctx, `INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Starter', $2, 'active') RETURNING id`,
		f.apiID, "starter-"+sfx).Scan(&s.planID); err != nil {
		f.t.Fatal(err)
	}
	var version uuid.UUID
	if err := f.pool.QueryRow(f.ctx, `INSERT INTO plan_versions (plan_id, version, type, currency, quota_requests, quota_hard, created_by)
		VALUES ($1, 1, 'subscription', 'USD', $2, $3, 'provider-user') RETURNING id`, s.planID, planQuota, hard).Scan(&version); err != nil {
		f.t.Fatal(err)
	}
	if err := f.pool.QueryRow(f.ctx, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id,
			current_period_start, current_period_end) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		s.orgID, subject, f.apiID, version, f.periodStart, f.periodEnd).Scan(&s.id); err != nil {
		f.t.Fatal(err)
	}
	member := identity.Actor{Subject: subject, Role: identity.RoleConsumer, OrgID: s.orgID}
	if _, _, err := f.hooks.CreateEndpoint(f.ctx, member, webhooks.EndpointInput{
		URL: f.hookURL, EventTypes: []string{quota.EventThresholdCrossed},
	}); err != nil {
		f.t.Fatal(err)
	}
	return s
}

// crossing is the event of s crossing threshold percent of q requests.
func (f *quotaFixture) crossing(s testSub, threshold int, q int64, hard bool) enforcement.Crossing {
	return enforcement.Crossing{
		SubscriptionID: s.id.String(), PeriodStart: f.periodStart, PeriodEnd: f.periodEnd,
		Threshold: threshold, Quota: q, Used: q * int64(threshold) / 100, Hard: hard, At: time.Now().UTC(),
	}
}

// crossingData is the data of a quota.threshold_crossed webhook.
type crossingData struct {
	Subscription struct {
		ID     uuid.UUID `json:"id"`
		APIID  uuid.UUID `json:"api_id"`
		PlanID uuid.UUID `json:"plan_id"`
		Status string    `json:"status"`
	} `json:"subscription"`
	Threshold   int       `json:"threshold"`
	Quota       int64     `json:"quota"`
	Used        int64     `json:"used"`
	Hard        bool      `json:"hard"`
	Blocked     bool      `json:"blocked"`
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
	ResetsAt    time.Time `json:"resets_at"`
	Meter       string    `json:"meter"`
	MeterQuota  string    `json:"meter_quota"`
	MeterUsed   string    `json:"meter_used"`
}

// deliveries returns the quota notices published to s's organization, in
// the order they were published.
func (f *quotaFixture) deliveries(s testSub) []crossingData {
	f.t.Helper()
	rows, err := f.pool.Query(f.ctx, `SELECT d.payload FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
		WHERE e.organization_id = $1 AND d.event_type = $2 ORDER BY d.created_at, d.id`, s.orgID, quota.EventThresholdCrossed)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []crossingData
	for rows.Next() {
		var env struct {
			Type string       `json:"type"`
			Data crossingData `json:"data"`
		}
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			f.t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &env); err != nil {
			f.t.Fatalf("delivery payload %s: %v", raw, err)
		}
		out = append(out, env.Data)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// notices counts s's quota_notices rows.
func (f *quotaFixture) notices(s testSub) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM quota_notices WHERE subscription_id = $1`, s.id).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// start runs the River client, which sends the queued emails and
// webhooks, until the test ends.
func (f *quotaFixture) start() {
	f.t.Helper()
	testenv.StartRiver(f.t, f.jobs)
}

// emailJob is a quota_email job as River stored it.
type emailJob struct {
	row  *rivertype.JobRow
	args quota.QuotaEmailArgs
	// errors counts the failed attempts River recorded.
	errors int
}

// emailJobs returns the quota_email jobs of s, oldest first.
func (f *quotaFixture) emailJobs(s testSub) []emailJob {
	f.t.Helper()
	rows, err := f.pool.Query(f.ctx, `SELECT id, state::text, attempt, max_attempts, args, coalesce(array_length(errors, 1), 0)
		FROM river_job WHERE kind = $1 AND args->>'subscription_id' = $2 ORDER BY id`, quota.QuotaEmailArgs{}.Kind(), s.id.String())
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []emailJob
	for rows.Next() {
		j := emailJob{row: &rivertype.JobRow{Kind: quota.QuotaEmailArgs{}.Kind()}}
		var state string
		if err := rows.Scan(&j.row.ID, &state, &j.row.Attempt, &j.row.MaxAttempts, &j.row.EncodedArgs, &j.errors); err != nil {
			f.t.Fatal(err)
		}
		j.row.State = rivertype.JobState(state)
		if err := json.Unmarshal(j.row.EncodedArgs, &j.args); err != nil {
			f.t.Fatalf("quota_email args %s: %v", j.row.EncodedArgs, err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// crossingEmail subscribes a consumer to a hard quota of 10 requests,
// handles its crossing of threshold percent (a webhook and an email) and
// returns the one email job that queued.
func (f *quotaFixture) crossingEmail(t *testing.T, threshold int) emailJob {
	t.Helper()
	s := f.subscribe(requests(10), true, "")
	if sent, err := f.svc.HandleCrossing(f.ctx, f.crossing(s, threshold, 10, true)); sent != 2 || err != nil {
		t.Fatalf("HandleCrossing() = %d, %v; want 2, nil", sent, err)
	}
	jobs := f.emailJobs(s)
	if len(jobs) != 1 {
		t.Fatalf("email jobs = %d; want 1", len(jobs))
	}
	return jobs[0]
}

// work runs the email worker once on j, as River would on its next
// attempt, without recording the outcome.
func (f *quotaFixture) work(j emailJob) error {
	f.t.Helper()
	row := *j.row
	row.Attempt++
	return f.svc.QuotaEmailWorker().Work(f.ctx, &river.Job[quota.QuotaEmailArgs]{JobRow: &row, Args: j.args})
}

// noticeCount is veil_controlplane_quota_notices_total of a channel and
// result.
func (f *quotaFixture) noticeCount(channel, result string) uint64 {
	return f.metrics.GetOrCreateCounter(fmt.Sprintf(`veil_controlplane_quota_notices_total{channel=%q,result=%q}`, channel, result)).Get()
}

// requests is a plan quota of n requests.
func requests(n int64) *int64 { return &n }

// smtpServer is an SMTP server that answers RCPT TO with the reply its
// test sets, and every other command with success.
type smtpServer struct {
	ln     net.Listener
	reply  atomic.Value // string: the answer to RCPT TO
	sender atomic.Value // string: the answer to MAIL FROM
}

// newSMTPServer starts a server until the test ends; RCPT TO is accepted
// until setRecipientReply says otherwise.
func newSMTPServer(t *testing.T) *smtpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &smtpServer{ln: ln}
	srv.reply.Store("250 2.1.5 ok")
	srv.sender.Store("250 2.1.0 ok")
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.serve(c)
		}
	}()
	return srv
}

func (s *smtpServer) addr() string { return s.ln.Addr().String() }

// setRecipientReply sets the answer to RCPT TO, such as "550 5.1.1 no
// such user".
func (s *smtpServer) setRecipientReply(reply string) { s.reply.Store(reply) }

// setSenderReply sets the answer to MAIL FROM.
func (s *smtpServer) setSenderReply(reply string) { s.sender.Store(reply) }

func (s *smtpServer) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	say := func(line string) bool {
		_, err := fmt.Fprintf(c, "%s\r\n", line)
		return err == nil
	}
	if !say("220 smtp.test ESMTP") {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		var ok bool
		switch verb {
		case "EHLO", "HELO":
			ok = say("250 smtp.test")
		case "MAIL":
			ok = say(s.sender.Load().(string))
		case "RCPT":
			ok = say(s.reply.Load().(string))
		case "DATA":
			ok = say("354 end with .") && skipData(r) && say("250 2.0.0 queued")
		case "QUIT":
			say("221 bye")
			return
		default:
			ok = say("250 ok")
		}
		if !ok {
			return
		}
	}
}

// skipData reads a message's lines up to the lone "." that ends it, and
// reports whether it got there.
func skipData(r *bufio.Reader) bool {
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return false
		}
		if l == ".\r\n" {
			return true
		}
	}
}
