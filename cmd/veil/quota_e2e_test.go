package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/rueidis"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/migrate"
)

// quotaView is GET /v1/subscriptions/{id}/quota.
type quotaView struct {
	Used              int64     `json:"used"`
	Limit             *int64    `json:"limit"`
	Remaining         *int64    `json:"remaining"`
	ThresholdsCrossed []int     `json:"thresholds_crossed"`
	Blocked           bool      `json:"blocked"`
	ResetsAt          time.Time `json:"resets_at"`
}

// TestQuotaLoopEndToEnd closes the quota loop with every real part: a
// Caddy gateway process sends usage events to Kafka, a processor counts
// them into Redis and ClickHouse and blocks the subscription at its hard
// quota, the gateway refuses from then on, the control plane turns the
// 80/90/100% crossings into one webhook and one email each, a Redis flush
// is healed from ClickHouse with the block restored, and the next period
// unblocks.
func TestQuotaLoopEndToEnd(t *testing.T) {
	const quota, sent = 1000, 1200
	ctx := t.Context()
	m := newMeteredPlane(t, 4, "/gateway/quota-e2e")
	kafka, quotaTopic, ch, rc := m.kafka, m.quotaTopic, m.ch, m.rc
	e, flags := m.e, m.flags
	mail := testenv.Mailpit(t)
	flags.smtp = notify.SMTPConfig{Addr: mail.SMTPAddr(), From: "Veil <noreply@veil.test>", TLS: notify.TLSNone}
	plane, c := e.runControlPlane(t, flags)
	startProcessor(t, m.processorConfig(t, "quota-e2e", 5000))

	// A provider's API, a hard quota of 1,000 requests, a consumer with a
	// key and an email address, and a webhook endpoint for its notices.
	email := "quota-" + testenv.Suffix() + "@example.test"
	prov := token(t, "acme", "alice", identity.RoleProvider)
	admin := token(t, "platform", "operator", identity.RoleAdmin)
	consumer, err := identity.Mint([]byte(testJWTSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: "bob", Org: "globex", Role: identity.RoleConsumer, Email: email, EmailVerified: true}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	apiID, approvalID := e.register(c, prov, "metered")
	c.must(http.StatusOK, "POST", "/v1/admin/approvals/"+approvalID+"/approve", admin, nil, nil)
	waitState(t, c, prov, apiID, "active", 30*time.Second, "failed")
	var plan, sub struct {
		ID string `json:"id"`
	}
	c.must(http.StatusCreated, "POST", "/v1/apis/"+apiID+"/plans", prov, map[string]any{
		"name": "Metered", "slug": "metered", "status": "active",
		"terms": map[string]any{"currency": "USD", "quota_requests": quota, "quota_hard": true},
	}, &plan)
	sink := newWebhookSink(t)
	var hook struct{ Secret string }
	c.must(http.StatusCreated, "POST", "/v1/webhooks", consumer, map[string]any{"url": sink.srv.URL, "event_types": []string{"quota.threshold_crossed"}}, &hook)
	sink.mu.Lock()
	sink.secret = hook.Secret
	sink.mu.Unlock()
	c.must(http.StatusCreated, "POST", "/v1/subscriptions", consumer, map[string]any{"plan_id": plan.ID}, &sub)
	var key keyView
	c.must(http.StatusCreated, "POST", "/v1/subscriptions/"+sub.ID+"/keys", consumer, map[string]any{"name": "load"}, &key)
	waitKey(t, c, consumer, key.ID, "active")

	call := func() (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.gw.URL+"/metered/hello", nil)
		req.Header.Set("Authorization", "Bearer "+key.Plaintext)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("call through the gateway: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var p struct{ Type string }
		_ = json.Unmarshal(body, &p)
		return resp.StatusCode, p.Type
	}

	// 1,200 requests at 200 a second: the quota runs out at the 1,000th
	// admitted one and the gateway refuses once the block reaches it.
	var (
		admitted, refused int
		crossedAt         time.Time // when the 1,000th admitted request was answered
		firstRefusal      time.Time
	)
	tick := time.NewTicker(5 * time.Millisecond)
	for range sent {
		<-tick.C
		status, typ := call()
		switch {
		case status == http.StatusOK:
			if !firstRefusal.IsZero() {
				t.Fatalf("request admitted after the first quota refusal: the block was lifted")
			}
			admitted++
			if admitted == quota {
				crossedAt = time.Now()
			}
		case status == http.StatusTooManyRequests && strings.HasSuffix(typ, "/quota-exhausted"):
			if admitted < quota {
				t.Fatalf("quota-exhausted after %d admitted requests; want none before %d", admitted, quota)
			}
			if firstRefusal.IsZero() {
				firstRefusal = time.Now()
			}
			refused++
		default:
			t.Fatalf("request %d = %d %s; want 200 or 429 quota-exhausted", admitted+refused+1, status, typ)
		}
	}
	tick.Stop()
	if refused == 0 {
		rec, _ := rc.Do(ctx, rc.B().Hgetall().Key(enforcement.SubscriptionName(sub.ID)).Build()).AsStrMap()
		cnt, _ := rc.Do(ctx, rc.B().Hgetall().Key(enforcement.PeriodCounterName(sub.ID, periodStart(t, c, consumer, sub.ID))).Build()).AsStrMap()
		blk, _ := rc.Do(ctx, rc.B().Get().Key(enforcement.BlockName(sub.ID)).Build()).ToString()
		t.Fatalf("all %d requests admitted; want the gateway to refuse once the quota of %d was used (record %v, counter %v, block %q)",
			sent, quota, rec, cnt, blk)
	}
	t.Logf("quota %d, %d requests at 200/s: %d admitted (overshoot %d), %d refused; first refusal %s after the quota ran out",
		quota, sent, admitted, admitted-quota, refused, firstRefusal.Sub(crossedAt).Round(time.Millisecond))

	// Every request is in ClickHouse, the refusals marked; the Redis
	// counter holds the admitted ones only.
	counter := enforcement.PeriodCounterName(sub.ID, periodStart(t, c, consumer, sub.ID))
	testenv.Deadline(t, 30*time.Second, func() error {
		var all, ok uint64
		if err := ch.QueryRow(ctx, `SELECT count(), countIf(refusal = '') FROM usage_events WHERE subject = ?`, sub.ID).Scan(&all, &ok); err != nil {
			return err
		}
		n, err := rc.Do(ctx, rc.B().Hget().Key(counter).Field("requests").Build()).AsInt64()
		if err != nil {
			return fmt.Errorf("read counter: %w", err)
		}
		if all != sent || ok != uint64(admitted) || n != int64(admitted) {
			return fmt.Errorf("clickhouse %d rows, %d admitted; redis counter %d; want %d, %d, %d", all, ok, n, sent, admitted, admitted)
		}
		return nil
	})

	// One webhook and one email per threshold.
	wantNotices := func(t *testing.T) {
		t.Helper()
		msgs := mail.WaitMessages(t, email, 3, 30*time.Second)
		var notices []string
		for _, m := range msgs {
			notices = append(notices, strings.Join(m.Headers["X-Veil-Notice"], ","))
		}
		slices.Sort(notices)
		if want := []string{"quota_100", "quota_80", "quota_90"}; !slices.Equal(notices, want) {
			t.Errorf("quota emails = %q; want %q, once each", notices, want)
		}
		testenv.Deadline(t, 30*time.Second, func() error {
			sink.mu.Lock()
			defer sink.mu.Unlock()
			var got []int
			for _, ev := range sink.events {
				data, _ := ev["data"].(map[string]any)
				th, _ := data["threshold"].(float64)
				got = append(got, int(th))
			}
			slices.Sort(got)
			if !slices.Equal(got, []int{80, 90, 100}) || len(sink.bad) > 0 {
				return fmt.Errorf("quota webhooks for thresholds %v (bad signatures %q); want 80, 90 and 100 once each", got, sink.bad)
			}
			return nil
		})
	}
	wantNotices(t)
	// Once each: with every crossing consumed, nothing more is sent.
	settled := func() {
		t.Helper()
		testenv.Deadline(t, 30*time.Second, func() error {
			outboxes, err := rc.Do(ctx, rc.B().Exists().Key(enforcement.QuotaOutboxName(sub.ID)).Build()).AsInt64()
			if err != nil || outboxes != 0 {
				return fmt.Errorf("quota outbox still holds crossings (%v)", err)
			}
			lag, err := kafka.GroupLag(t, "veil-control-plane-quota", quotaTopic)
			if err != nil || lag != 0 {
				return fmt.Errorf("control plane's quota consumer lag = %d, %v; want 0", lag, err)
			}
			return nil
		})
	}
	settled()
	wantNotices(t)

	var q quotaView
	c.must(http.StatusOK, "GET", "/v1/subscriptions/"+sub.ID+"/quota", consumer, nil, &q)
	if q.Used != int64(admitted) || q.Limit == nil || *q.Limit != quota || q.Remaining == nil || *q.Remaining != 0 ||
		!slices.Equal(q.ThresholdsCrossed, []int{80, 90, 100}) || !q.Blocked {
		t.Errorf("quota = %+v; want used %d of %d, none remaining, 80/90/100 crossed, blocked", q, admitted, quota)
	}

	// Redis loses everything mid-period: the key and subscription records
	// come back from Postgres, the counter and the block from ClickHouse.
	// Until the counters are healed the block is gone, so the consumer's
	// next call gets through; the processor counts it into a fresh counter
	// and offset watermark, and the drift check finds the counter short of
	// what ClickHouse holds up to that watermark. (A subscription that stays
	// idle after a flush is healed once its newest row is a minute old: a
	// missing watermark with fresh rows may be a first batch Redis has not
	// applied yet.)
	if err := rc.Do(ctx, rc.B().Flushdb().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	c.must(http.StatusOK, "POST", "/v1/admin/reconcile/keys", admin, nil, nil)
	testenv.Deadline(t, 10*time.Second, func() error {
		if status, typ := call(); status != http.StatusOK {
			return fmt.Errorf("call after the flush = %d %s; want 200 (the block is gone until the heal)", status, typ)
		}
		return nil
	})
	admitted++
	testenv.Deadline(t, 30*time.Second, func() error {
		n, err := rc.Do(ctx, rc.B().Hlen().Key(enforcement.WatermarkName(sub.ID)).Build()).AsInt64()
		if err != nil || n == 0 {
			return fmt.Errorf("no offset watermark after the call (%v)", err)
		}
		return nil
	})
	// The processor writes ClickHouse and Redis at once: while ClickHouse
	// is behind the watermark the subscription is in flight, and the check
	// leaves it for the next run.
	testenv.Deadline(t, 30*time.Second, func() error {
		var rep struct {
			Drifted, Healed int
			InFlight        int `json:"in_flight"`
		}
		c.must(http.StatusOK, "POST", "/v1/admin/reconcile/usage", admin, nil, &rep)
		if rep.Drifted < 1 || rep.Healed < 1 {
			return fmt.Errorf("usage reconcile after a flush = %+v; want the subscription drifted and healed", rep)
		}
		return nil
	})
	c.must(http.StatusOK, "GET", "/v1/subscriptions/"+sub.ID+"/quota", consumer, nil, &q)
	if q.Used != int64(admitted) || !q.Blocked {
		t.Errorf("quota after the heal = %+v; want used %d (ClickHouse's count), blocked", q, admitted)
	}
	testenv.Deadline(t, 10*time.Second, func() error {
		if status, typ := call(); status != http.StatusTooManyRequests || !strings.HasSuffix(typ, "/quota-exhausted") {
			return fmt.Errorf("call after the heal = %d %s; want 429 quota-exhausted", status, typ)
		}
		return nil
	})
	// The heal announced the thresholds again; the control plane knew them.
	settled()
	wantNotices(t)

	// The next period unblocks: the period ends, maintenance rolls it and
	// the new record lifts the block with it.
	if _, err := plane.pool.Exec(ctx, `UPDATE subscriptions SET current_period_start = now() - interval '31 days',
		current_period_end = now() - interval '1 second' WHERE id = $1`, sub.ID); err != nil {
		t.Fatal(err)
	}
	if rep, err := plane.subs.RunMaintenance(ctx); err != nil || rep.PeriodsRolled != 1 {
		t.Fatalf("RunMaintenance = %+v, %v; want one period rolled", rep, err)
	}
	testenv.Deadline(t, 10*time.Second, func() error {
		if status, typ := call(); status != http.StatusOK {
			return fmt.Errorf("call in the next period = %d %s; want 200", status, typ)
		}
		return nil
	})
	c.must(http.StatusOK, "GET", "/v1/subscriptions/"+sub.ID+"/quota", consumer, nil, &q)
	if q.Blocked || q.Remaining == nil || *q.Remaining < quota-1 || len(q.ThresholdsCrossed) != 0 {
		t.Errorf("quota in the next period = %+v; want unblocked, the whole quota left", q)
	}
}

// periodStart reads the subscription's current period start.
func periodStart(t *testing.T, c cpClient, tok, id string) time.Time {
	t.Helper()
	var s struct {
		Start time.Time `json:"current_period_start"`
	}
	c.must(http.StatusOK, "GET", "/v1/subscriptions/"+id, tok, nil, &s)
	return s.Start
}

// startProcessor runs a processor with cfg in this process until the test ends.
func startProcessor(t *testing.T, cfg processors.Config) {
	t.Helper()
	proc, err := processors.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- proc.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("processor: %v", err)
		}
	})
}

// meteredPlane is what the end-to-end tests of the metered loop run on:
// Kafka topics, ClickHouse and Redis databases of their own, a gateway
// producing to the raw topic, and the control plane's flags wired to them.
type meteredPlane struct {
	kafka                *testenv.Kafka
	raw, dlq, quotaTopic string
	ch                   driver.Conn
	rc                   rueidis.Client
	e                    *cpEnv
	flags                controlPlaneFlags
}

// newMeteredPlane migrates a fresh Postgres and starts the gateway with
// events from source into a raw topic of partitions partitions; the test
// adjusts m.flags, then starts the control plane and startProcessor.
func newMeteredPlane(t *testing.T, partitions int32, source string) *meteredPlane {
	t.Helper()
	m := &meteredPlane{kafka: testenv.NewKafka(t)}
	m.raw, m.dlq, m.quotaTopic = m.kafka.Topic(t, partitions), m.kafka.Topic(t, 1), m.kafka.Topic(t, 1)
	ch, chAddr, chDB := testenv.ClickHouseDB(t)
	rc, db := testenv.RedisDB(t)
	m.ch, m.rc = ch, rc
	pgURL := testenv.PostgresURL(t)
	if _, err := migrate.Postgres(t.Context(), pgURL, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	brokers := strings.Join(m.kafka.Brokers, ",")
	gw := startGateway(t, "VEIL_REDIS_DB="+strconv.Itoa(db), "VEIL_KAFKA_BROKERS="+brokers, "VEIL_GATEWAY_TOPIC="+m.raw,
		"VEIL_GATEWAY_SPOOL_DIR="+t.TempDir(), "VEIL_GATEWAY_EVENT_SOURCE="+source)
	m.e = &cpEnv{pgURL: pgURL, redisDB: db, gw: gw, admin: newFaultyAdmin(t, gw.AdminURL), upstream: newUpstream(t)}
	m.flags = m.e.flags(t, 4)
	m.flags.gatewayKeyAuth, m.flags.kafkaBrokers, m.flags.quotaTopic = true, brokers, m.quotaTopic
	m.flags.clickhouseAddr, m.flags.clickhouseDB = chAddr, chDB
	return m
}

// processorConfig is a processor of the plane's topics and stores in
// consumer group group, quick to batch and to rebalance.
func (m *meteredPlane) processorConfig(t *testing.T, group string, batchRecords int) processors.Config {
	return processors.Config{
		Logger: testenv.Logger(t), Metrics: metrics.NewSet(), Brokers: m.kafka.Brokers, Group: group + "-" + testenv.Suffix(),
		Topic: m.raw, DLQTopic: m.dlq, QuotaTopic: m.quotaTopic, ClickHouse: m.ch, Redis: m.rc,
		BatchRecords: batchRecords, BatchWait: 50 * time.Millisecond, QuotaSweepInterval: 200 * time.Millisecond,
		KafkaOpts: []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.RebalanceTimeout(10 * time.Second), kgo.HeartbeatInterval(500 * time.Millisecond)},
	}
}
