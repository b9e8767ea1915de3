package quota_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

func TestHandleCrossingSendsEachNoticeOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.start()
	s := f.subscribe(requests(1000), true, "")

	events := []enforcement.Crossing{f.crossing(s, 80, 1000, true), f.crossing(s, 90, 1000, true), f.crossing(s, 100, 1000, true)}
	for _, e := range events {
		for i, want := range []int{2, 0} {
			if got, err := f.svc.HandleCrossing(f.ctx, e); err != nil || got != want {
				t.Fatalf("HandleCrossing(%s) #%d = %d, %v; want %d, nil", e.ID(), i+1, got, err, want)
			}
		}
	}
	for _, e := range events {
		e.At = e.At.Add(time.Minute) // a replay is produced anew
		if got, err := f.svc.HandleCrossing(f.ctx, e); err != nil || got != 0 {
			t.Fatalf("HandleCrossing(%s) replayed = %d, %v; want 0, nil", e.ID(), got, err)
		}
	}

	hooks := f.deliveries(s)
	if len(hooks) != 3 {
		t.Fatalf("webhook deliveries = %d; want 3", len(hooks))
	}
	for i, e := range events {
		got := hooks[i]
		if got.Subscription.ID != s.id || got.Subscription.APIID != f.apiID || got.Subscription.PlanID != s.planID ||
			got.Subscription.Status != "active" {
			t.Errorf("webhook %d subscription = %+v; want id %s, api %s, plan %s, active", i, got.Subscription, s.id, f.apiID, s.planID)
		}
		if got.Threshold != e.Threshold || got.Quota != 1000 || got.Used != e.Used || !got.Hard || got.Blocked != (e.Threshold == 100) {
			t.Errorf("webhook %d = threshold %d, quota %d, used %d, hard %t, blocked %t; want %d, 1000, %d, true, %t",
				i, got.Threshold, got.Quota, got.Used, got.Hard, got.Blocked, e.Threshold, e.Used, e.Threshold == 100)
		}
		if !got.PeriodStart.Equal(f.periodStart) || !got.PeriodEnd.Equal(f.periodEnd) || !got.ResetsAt.Equal(f.periodEnd) {
			t.Errorf("webhook %d period = [%s, %s), resets %s; want [%s, %s), resets %s", i,
				got.PeriodStart, got.PeriodEnd, got.ResetsAt, f.periodStart, f.periodEnd, f.periodEnd)
		}
	}

	resets := f.periodEnd.Format("2 Jan 2006 15:04 MST")
	wantMail := map[string]string{
		"quota_80":  "Your Weather quota is 80% used",
		"quota_90":  "Your Weather quota is 90% used",
		"quota_100": "Your Weather quota is used up: requests are refused until " + resets,
	}
	msgs := f.mail.WaitMessages(t, s.email, 3, 10*time.Second)
	if len(msgs) != 3 {
		t.Fatalf("emails to %s = %d; want 3", s.email, len(msgs))
	}
	for _, m := range msgs {
		kind := strings.Join(m.Headers["X-Veil-Notice"], ",")
		want, ok := wantMail[kind]
		if !ok {
			t.Errorf("email %q has X-Veil-Notice %q; want one of quota_80, quota_90, quota_100, each once", m.Subject, kind)
			continue
		}
		delete(wantMail, kind)
		if m.Subject != want {
			t.Errorf("email %s subject = %q; want %q", kind, m.Subject, want)
		}
		if got := m.Headers["X-Veil-Subscription-Id"]; !slices.Equal(got, []string{s.id.String()}) {
			t.Errorf("email %s X-Veil-Subscription-Id = %q; want %s", kind, got, s.id)
		}
		if !strings.Contains(m.Text, "/v1/subscriptions/"+s.id.String()+"/quota") {
			t.Errorf("email %s text = %q; want it to point at the quota status", kind, m.Text)
		}
	}

	// A credit raises the quota to 1200: its thresholds are announced anew.
	credit := f.crossing(s, 80, 1200, true)
	for i, want := range []int{2, 0} {
		if got, err := f.svc.HandleCrossing(f.ctx, credit); err != nil || got != want {
			t.Fatalf("HandleCrossing(%s) #%d = %d, %v; want %d, nil", credit.ID(), i+1, got, err, want)
		}
	}
	if hooks := f.deliveries(s); len(hooks) != 4 || hooks[3].Quota != 1200 || hooks[3].Threshold != 80 || hooks[3].Used != 960 {
		t.Errorf("webhook deliveries after the credit = %+v; want a 4th for 80%% of 1200 at 960", hooks)
	}
	msgs = f.mail.WaitMessages(t, s.email, 4, 10*time.Second)
	if len(msgs) != 4 || msgs[3].Subject != "Your Weather quota is 80% used" {
		t.Errorf("emails after the credit = %d, last %q; want 4, the last for 80%%", len(msgs), msgs[len(msgs)-1].Subject)
	}
	if got := f.notices(s); got != 8 {
		t.Errorf("quota_notices rows = %d; want 8 (4 crossings × 2 channels)", got)
	}
	// Mailpit has the message before Send returns: wait for the worker to
	// count it and River to complete the job.
	testenv.Deadline(t, 10*time.Second, func() error {
		if got := f.noticeCount("email", "sent"); got != 4 {
			return fmt.Errorf("emails sent = %d; want 4", got)
		}
		for _, j := range f.emailJobs(s) {
			if j.row.State != rivertype.JobStateCompleted {
				return fmt.Errorf("email job %d state = %s; want completed", j.row.ID, j.row.State)
			}
		}
		return nil
	})
	if jobs := f.emailJobs(s); len(jobs) != 4 || jobs[0].row.MaxAttempts != 10 || jobs[0].row.Attempt != 1 {
		t.Errorf("email jobs = %d, first on attempt %d of %d; want 4, on attempt 1 of 10", len(jobs), jobs[0].row.Attempt, jobs[0].row.MaxAttempts)
	}
	for _, c := range []struct {
		channel, result string
		want            uint64
	}{
		{"webhook", "sent", 4}, {"webhook", "duplicate", 7},
		{"email", "queued", 4}, {"email", "duplicate", 7}, {"email", "sent", 4}, {"email", "failed", 0}, {"email", "refused", 0},
	} {
		if got := f.noticeCount(c.channel, c.result); got != c.want {
			t.Errorf("veil_controlplane_quota_notices_total{channel=%q,result=%q} = %d; want %d", c.channel, c.result, got, c.want)
		}
	}
}

func TestHandleCrossingCases(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	tests := []struct {
		name string
		// hard is the plan's (quota 50) and the event's; email the
		// subscriber's address ("" for a fresh one).
		hard  bool
		email string
		// threshold and used are the event's; subscriptionID, when set,
		// replaces the subscription's id in it.
		threshold      int
		used           int64
		subscriptionID string
		wantSent       int
		wantErr        error
		// wantHook and wantSubject are the notices expected ("" = no email).
		wantHook    bool
		wantBlocked bool
		wantSubject string
	}{
		{
			name: "soft quota used up", hard: false, threshold: 100, used: 51,
			wantSent: 2, wantHook: true, wantSubject: "Your Weather subscription is over quota: overage is billed",
		},
		{
			name: "soft quota 90%", hard: false, threshold: 90, used: 45,
			wantSent: 2, wantHook: true, wantSubject: "Your Weather quota is 90% used",
		},
		{
			name: "hard quota used up", hard: true, threshold: 100, used: 50,
			wantSent: 2, wantHook: true, wantBlocked: true,
			wantSubject: "Your Weather quota is used up: requests are refused until " + f.periodEnd.Format("2 Jan 2006 15:04 MST"),
		},
		{
			name: "subscriber without an address", hard: true, email: "nobody-" + testenv.Suffix() + "@users.invalid",
			threshold: 80, used: 40, wantSent: 1, wantHook: true,
		},
		{
			name: "deleted subscription", hard: true, threshold: 80, used: 40, subscriptionID: uuid.NewString(),
			wantSent: 0,
		},
		{
			name: "subscription id not a uuid", hard: true, threshold: 80, used: 40, subscriptionID: "sub-1",
			wantSent: 0, wantErr: enforcement.ErrInvalidCrossing,
		},
		{
			name: "threshold out of range", hard: true, threshold: 50, used: 25,
			wantSent: 0, wantErr: enforcement.ErrInvalidCrossing,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := f.subscribe(requests(50), tt.hard, tt.email)
			e := f.crossing(s, tt.threshold, 50, tt.hard)
			e.Used = tt.used
			if tt.subscriptionID != "" {
				e.SubscriptionID = tt.subscriptionID
			}
			sent, err := f.svc.HandleCrossing(f.ctx, e)
			if sent != tt.wantSent || !errors.Is(err, tt.wantErr) {
				t.Fatalf("HandleCrossing(%s) = %d, %v; want %d, %v", e.ID(), sent, err, tt.wantSent, tt.wantErr)
			}
			jobs := f.emailJobs(s)
			if want := btoi(tt.wantSubject != ""); len(jobs) != want {
				t.Fatalf("email jobs = %d; want %d", len(jobs), want)
			}
			for _, j := range jobs {
				if err := f.work(j); err != nil {
					t.Errorf("QuotaEmailWorker.Work(%s) = %v; want nil", j.row.EncodedArgs, err)
				}
			}
			hooks := f.deliveries(s)
			if !tt.wantHook {
				if len(hooks) != 0 {
					t.Errorf("webhook deliveries = %+v; want none", hooks)
				}
			} else if len(hooks) != 1 || hooks[0].Blocked != tt.wantBlocked || hooks[0].Hard != tt.hard || hooks[0].Used != tt.used {
				t.Errorf("webhook deliveries = %+v; want one, blocked %t, hard %t, used %d", hooks, tt.wantBlocked, tt.hard, tt.used)
			}
			if tt.wantSubject == "" {
				if msgs := f.mail.Messages(t, s.email); len(msgs) != 0 {
					t.Errorf("emails to %s = %d; want none", s.email, len(msgs))
				}
				return
			}
			msgs := f.mail.WaitMessages(t, s.email, 1, 10*time.Second)
			if len(msgs) != 1 || msgs[0].Subject != tt.wantSubject {
				t.Errorf("emails to %s = %d, first %q; want 1, %q", s.email, len(msgs), msgs[0].Subject, tt.wantSubject)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fakeMailer fails every send with err.
type fakeMailer struct {
	mu    sync.Mutex
	err   error
	calls int
}

func (m *fakeMailer) Send(context.Context, notify.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	return m.err
}

// set makes the next sends fail with err and starts counting anew.
func (m *fakeMailer) set(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err, m.calls = err, 0
}

func (m *fakeMailer) sends() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

func TestQuotaEmailWorkerErrors(t *testing.T) {
	t.Parallel()
	mailer := &fakeMailer{}
	f := newFixture(t, func(c *quota.Config) { c.Mailer = mailer })
	tests := []struct {
		name string
		err  error
		// wantCancel: the refusal is for good and cancels the job;
		// otherwise Work returns the error for River to retry.
		wantCancel bool
		wantResult string
	}{
		{name: "mailbox unavailable", err: &textproto.Error{Code: 550, Msg: "5.1.1 mailbox unavailable"}, wantCancel: true, wantResult: "refused"},
		{name: "refused wrapped by the mailer", err: fmt.Errorf("send email via smtp:25: %w", &textproto.Error{Code: 554, Msg: "rejected"}), wantCancel: true, wantResult: "refused"},
		{name: "invalid address", err: fmt.Errorf("send email: %w", notify.ErrInvalidAddress), wantCancel: true, wantResult: "refused"},
		{name: "greylisted", err: &textproto.Error{Code: 451, Msg: "4.7.1 try again later"}, wantResult: "failed"},
		{name: "server down", err: errors.New("send email via smtp:25: dial tcp: connection refused"), wantResult: "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := f.crossingEmail(t, 80)
			before := f.noticeCount("email", tt.wantResult)
			mailer.set(tt.err)
			err := f.work(job)
			var cancel *river.JobCancelError
			if got := errors.As(err, &cancel); got != tt.wantCancel || !errors.Is(err, tt.err) {
				t.Errorf("QuotaEmailWorker.Work() = %v; want %v, cancelling the job %t", err, tt.err, tt.wantCancel)
			}
			if got := mailer.sends(); got != 1 {
				t.Errorf("sends = %d; want 1", got)
			}
			if got := f.noticeCount("email", tt.wantResult) - before; got != 1 {
				t.Errorf("emails %s = %d more; want 1 more", tt.wantResult, got)
			}
		})
	}

	t.Run("subscription deleted", func(t *testing.T) {
		mailer.set(nil)
		before := f.noticeCount("email", "skipped")
		job := &river.Job[quota.QuotaEmailArgs]{
			JobRow: &rivertype.JobRow{Attempt: 1, MaxAttempts: 10, Kind: quota.QuotaEmailArgs{}.Kind()},
			Args:   quota.QuotaEmailArgs{SubscriptionID: uuid.New(), PeriodStart: f.periodStart, PeriodEnd: f.periodEnd, Threshold: 80, Quota: 10, Used: 8},
		}
		if err := f.svc.QuotaEmailWorker().Work(f.ctx, job); err != nil {
			t.Errorf("QuotaEmailWorker.Work(deleted subscription) = %v; want nil", err)
		}
		if got := mailer.sends(); got != 0 {
			t.Errorf("sends = %d; want 0", got)
		}
		if got := f.noticeCount("email", "skipped") - before; got != 1 {
			t.Errorf("emails skipped = %d more; want 1 more", got)
		}
	})

	t.Run("a mailer needs jobs", func(t *testing.T) {
		_, err := quota.New(quota.Config{Pool: f.pool, Redis: f.redis, Publisher: f.hooks, Mailer: mailer})
		if err == nil {
			t.Error("New(Config with a Mailer and no Jobs) = nil error; want an error")
		}
	})
}

func TestQuotaEmailWorkerSMTPReplies(t *testing.T) {
	t.Parallel()
	srv := newSMTPServer(t)
	f := newFixture(t, func(c *quota.Config) {
		mailer, err := notify.NewSMTP(notify.SMTPConfig{Addr: srv.addr(), From: "Veil <noreply@veil.test>", TLS: notify.TLSNone})
		if err != nil {
			t.Fatal(err)
		}
		c.Mailer = mailer
	})
	tests := []struct {
		reply, sender string
		wantErr       bool
		wantCancel    bool
	}{
		{reply: "250 2.1.5 ok"},
		// A refused sender is the sending side's configuration: retried.
		{reply: "250 2.1.5 ok", sender: "550 5.7.1 sender not allowed to relay", wantErr: true},
		{reply: "550 5.1.1 no such user", wantErr: true, wantCancel: true},
		{reply: "553 5.1.3 bad recipient address syntax", wantErr: true, wantCancel: true},
		{reply: "451 4.3.0 try again later", wantErr: true},
		{reply: "452 4.2.2 mailbox full", wantErr: true},
	}
	for _, tt := range tests {
		job := f.crossingEmail(t, 90)
		srv.setRecipientReply(tt.reply)
		srv.setSenderReply(cmp.Or(tt.sender, "250 2.1.0 ok"))
		err := f.work(job)
		var cancel *river.JobCancelError
		if (err != nil) != tt.wantErr || errors.As(err, &cancel) != tt.wantCancel {
			t.Errorf("QuotaEmailWorker.Work() with RCPT TO answered %q = %v; want an error %t, cancelling the job %t",
				tt.reply, err, tt.wantErr, tt.wantCancel)
		}
	}
}

// flakyPublisher fails its first calls, as Publish does while Postgres is
// unreachable.
type flakyPublisher struct {
	next  quota.Publisher
	fails atomic.Int32
}

func (p *flakyPublisher) Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error {
	if p.fails.Add(-1) >= 0 {
		return errors.New("write webhook delivery: connection refused")
	}
	return p.next.Publish(ctx, tx, orgID, eventType, data)
}

// routeMailer fails the sends to the addresses in fail with their error
// and hands the others to next.
type routeMailer struct {
	next quota.Mailer
	fail map[string]error
}

func (m *routeMailer) Send(ctx context.Context, msg notify.Message) error {
	if err, ok := m.fail[msg.To[0]]; ok {
		return err
	}
	return m.next.Send(ctx, msg)
}

func TestRunConsumer(t *testing.T) {
	t.Parallel()
	kafka := testenv.NewKafka(t)
	topic := kafka.Topic(t, 2)
	group := "veil-test-quota-" + testenv.Suffix()
	flaky := &flakyPublisher{}
	flaky.fails.Store(2)
	// The hard subscription's mailbox refuses every email for good; the
	// mail server of the third subscription's address is down throughout.
	refusedEmail, downEmail := "refused-"+testenv.Suffix()+"@example.test", "down-"+testenv.Suffix()+"@example.test"
	mailer := &routeMailer{fail: map[string]error{
		refusedEmail: fmt.Errorf("send email: %w", &textproto.Error{Code: 550, Msg: "5.1.1 mailbox unavailable"}),
		downEmail:    errors.New("send email: dial tcp: connection refused"),
	}}
	f := newFixture(t, func(c *quota.Config) {
		flaky.next = c.Publisher
		c.Publisher = flaky
		mailer.next = c.Mailer
		c.Mailer = mailer
		c.Brokers, c.Topic, c.Group = kafka.Brokers, topic, group
		c.KafkaOpts = []kgo.Opt{kgo.FetchMaxWait(100 * time.Millisecond)}
	})
	f.start()
	hard := f.subscribe(requests(1000), true, refusedEmail)
	soft := f.subscribe(requests(10), false, "")
	down := f.subscribe(requests(100), true, downEmail)

	record := func(key string, e enforcement.Crossing) *kgo.Record {
		t.Helper()
		v, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: topic, Key: []byte(key), Value: v}
	}
	h80, h90, h100 := f.crossing(hard, 80, 1000, true), f.crossing(hard, 90, 1000, true), f.crossing(hard, 100, 1000, true)
	s100 := f.crossing(soft, 100, 10, false)
	notUUID := f.crossing(hard, 80, 1000, true)
	notUUID.SubscriptionID = "not-a-uuid"
	badThreshold := fmt.Appendf(nil, `{"subscription_id":%q,"period_start":%q,"period_end":%q,"threshold":50,"quota":10,"used":5}`,
		hard.id, f.periodStart.Format(time.RFC3339), f.periodEnd.Format(time.RFC3339))
	// Every record goes to the same partition, so a record stuck on a
	// failing email would hold up all that follow it.
	key := hard.id.String()
	records := []*kgo.Record{
		// The garbage comes first: what follows it must still be handled.
		{Topic: topic, Key: []byte(key), Value: []byte("not json")},
		record(key, h80),
		record(key, f.crossing(down, 80, 100, true)),
		record(key, h80),
		{Topic: topic, Key: []byte(key), Value: badThreshold},
		record(key, h90),
		record(key, notUUID),
		record(key, f.crossing(down, 100, 100, true)),
		record(key, s100),
		record(key, h100),
		record(key, h90),
		record(key, s100),
	}
	if err := kafka.Client(t).ProduceSync(f.ctx, records...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- f.svc.RunConsumer(ctx) }()
	t.Cleanup(cancel)

	counter := func(result string) uint64 {
		return f.metrics.GetOrCreateCounter(fmt.Sprintf(`veil_controlplane_quota_events_total{result=%q}`, result)).Get()
	}
	testenv.Deadline(t, 30*time.Second, func() error {
		if h, s, d := f.notices(hard), f.notices(soft), f.notices(down); h != 6 || s != 2 || d != 4 {
			return fmt.Errorf("quota_notices rows = %d, %d and %d; want 6, 2 and 4", h, s, d)
		}
		if got := counter("invalid"); got != 3 {
			return fmt.Errorf("invalid events = %d; want 3", got)
		}
		if got := counter("handled"); got != 9 {
			return fmt.Errorf("handled events = %d; want 9", got)
		}
		lag, err := kafka.GroupLag(t, group, topic)
		if err != nil {
			return err
		}
		if lag != 0 {
			return fmt.Errorf("group lag = %d; want 0 (every offset committed)", lag)
		}
		return nil
	})
	if got := counter("retried"); got != 2 {
		t.Errorf("retried events = %d; want 2 (the publisher failed twice)", got)
	}
	if got := len(f.deliveries(hard)); got != 3 {
		t.Errorf("webhook deliveries to the hard subscription = %d; want 3", got)
	}
	if got := f.deliveries(soft); len(got) != 1 || got[0].Blocked || got[0].Hard {
		t.Errorf("webhook deliveries to the soft subscription = %+v; want one, not hard, not blocked", got)
	}
	if got := len(f.deliveries(down)); got != 2 {
		t.Errorf("webhook deliveries to the subscription whose mail server is down = %d; want 2", got)
	}
	if got := len(f.mail.WaitMessages(t, soft.email, 1, 10*time.Second)); got != 1 {
		t.Errorf("emails to the soft subscription = %d; want 1", got)
	}
	// The refused emails are cancelled after one attempt; those to the
	// server that is down wait for their retry.
	testenv.Deadline(t, 10*time.Second, func() error {
		for _, j := range f.emailJobs(hard) {
			if j.row.State != rivertype.JobStateCancelled || j.row.Attempt != 1 || j.errors != 1 {
				return fmt.Errorf("refused email job %d = %s on attempt %d with %d errors; want cancelled on attempt 1 with 1",
					j.row.ID, j.row.State, j.row.Attempt, j.errors)
			}
		}
		for _, j := range f.emailJobs(down) {
			if j.row.Attempt < 1 || j.errors < 1 || j.row.State == rivertype.JobStateCompleted || j.row.State == rivertype.JobStateCancelled {
				return fmt.Errorf("email job %d to the server that is down = %s on attempt %d with %d errors; want failed at least once and to be retried",
					j.row.ID, j.row.State, j.row.Attempt, j.errors)
			}
		}
		return nil
	})
	if got := len(f.emailJobs(hard)); got != 3 {
		t.Errorf("email jobs of the hard subscription = %d; want 3", got)
	}
	if got := len(f.emailJobs(down)); got != 2 {
		t.Errorf("email jobs of the subscription whose mail server is down = %d; want 2", got)
	}
	if got := f.noticeCount("email", "refused"); got != 3 {
		t.Errorf("emails refused = %d; want 3", got)
	}
	if msgs := f.mail.Messages(t, hard.email); len(msgs) != 0 {
		t.Errorf("emails to the refusing mailbox = %d; want none", len(msgs))
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunConsumer() after cancel = %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunConsumer did not return within 10s of its context ending")
	}
}

func TestRunConsumerWithoutBrokers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	if err := f.svc.RunConsumer(f.ctx); !errors.Is(err, broker.ErrNoBrokers) {
		t.Errorf("RunConsumer() without brokers = %v; want %v", err, broker.ErrNoBrokers)
	}
}
