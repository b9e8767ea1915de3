package quota_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/quotaevent"
	"github.com/veil-platform/veil/internal/testenv"
)

func TestHandleCrossingSendsEachNoticeOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	s := f.subscribe(requests(1000), true, "")

	events := []quotaevent.Event{f.crossing(s, 80, 1000, true), f.crossing(s, 90, 1000, true), f.crossing(s, 100, 1000, true)}
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
	for _, c := range []struct {
		channel, result string
		want            uint64
	}{{"webhook", "sent", 4}, {"webhook", "duplicate", 7}, {"email", "sent", 4}, {"email", "duplicate", 7}} {
		name := fmt.Sprintf(`veil_controlplane_quota_notices_total{channel=%q,result=%q}`, c.channel, c.result)
		if got := f.metrics.GetOrCreateCounter(name).Get(); got != c.want {
			t.Errorf("%s = %d; want %d", name, got, c.want)
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
			wantSent: 0, wantErr: quotaevent.ErrInvalid,
		},
		{
			name: "threshold out of range", hard: true, threshold: 50, used: 25,
			wantSent: 0, wantErr: quotaevent.ErrInvalid,
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

func TestRunConsumer(t *testing.T) {
	t.Parallel()
	kafka := testenv.NewKafka(t)
	topic := kafka.Topic(t, 2)
	group := "veil-test-quota-" + testenv.Suffix()
	flaky := &flakyPublisher{}
	flaky.fails.Store(2)
	f := newFixture(t, func(c *quota.Config) {
		flaky.next = c.Publisher
		c.Publisher = flaky
		c.Brokers, c.Topic, c.Group = kafka.Brokers, topic, group
		c.KafkaOpts = []kgo.Opt{kgo.FetchMaxWait(100 * time.Millisecond)}
	})
	hard := f.subscribe(requests(1000), true, "")
	soft := f.subscribe(requests(10), false, "")

	record := func(key string, e quotaevent.Event) *kgo.Record {
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
	records := []*kgo.Record{
		// The garbage comes first in the hard subscription's partition:
		// what follows it must still be handled.
		{Topic: topic, Key: []byte(hard.id.String()), Value: []byte("not json")},
		record(hard.id.String(), h80),
		record(hard.id.String(), h80),
		{Topic: topic, Key: []byte(hard.id.String()), Value: badThreshold},
		record(hard.id.String(), h90),
		record("not-a-uuid", notUUID),
		record(soft.id.String(), s100),
		record(hard.id.String(), h100),
		record(hard.id.String(), h90),
		record(soft.id.String(), s100),
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
		if h, s := f.notices(hard), f.notices(soft); h != 6 || s != 2 {
			return fmt.Errorf("quota_notices rows = %d and %d; want 6 and 2", h, s)
		}
		if got := counter("invalid"); got != 3 {
			return fmt.Errorf("invalid events = %d; want 3", got)
		}
		if got := counter("handled"); got != 7 {
			return fmt.Errorf("handled events = %d; want 7", got)
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
	if got := len(f.mail.WaitMessages(t, hard.email, 3, 10*time.Second)); got != 3 {
		t.Errorf("emails to the hard subscription = %d; want 3", got)
	}
	if got := len(f.mail.WaitMessages(t, soft.email, 1, 10*time.Second)); got != 1 {
		t.Errorf("emails to the soft subscription = %d; want 1", got)
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
