package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
)

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
	e := m.e
	mail := testenv.Mailpit(t)
	m.opts.smtpAddr = mail.SMTPAddr()
	// The control plane rolls ended periods every second: the test ends a
	// period below and waits for the roll.
	m.opts.periodRollEvery = time.Second
	c := e.startControlPlane(t, m.opts)
	pipelinetest.StartProcessor(t, m.processorConfig(t, "quota-e2e", 5000))

	// A provider's API, a hard quota of 1,000 requests, a consumer with a
	// key and an email address, and a webhook endpoint for its notices.
	email := "quota-" + testenv.Suffix() + "@example.test"
	prov := providerToken(t)
	admin := adminToken(t)
	consumer, err := identity.Mint([]byte(testJWTSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: "bob", Org: "globex", Role: identity.RoleConsumer, Email: email, EmailVerified: true}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	apiID := e.activeAPI(t, c, prov, admin, "metered")
	planResp, err := c.CreatePlanWithResponse(ctx, apiID, nil, client.PlanInput{
		Name: "Metered", Slug: "metered", Status: client.Ptr(client.PlanInputStatusActive),
		Terms: client.TermsInput{Currency: "USD", QuotaRequests: client.Ptr[int64](quota), QuotaHard: client.Ptr(true)},
	}, client.Bearer(prov))
	expect(t, http.StatusCreated, planResp, err)
	sink := newWebhookSink(t)
	sink.subscribe(t, c, consumer, client.WebhookEndpointInputEventTypesQuotaThresholdCrossed)
	subResp, err := c.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: planResp.JSON201.Id}, client.Bearer(consumer))
	expect(t, http.StatusCreated, subResp, err)
	sub := subResp.JSON201
	keyResp, err := c.CreateKeyWithResponse(ctx, sub.Id, nil, client.KeySettings{Name: client.Ptr("load")}, client.Bearer(consumer))
	expect(t, http.StatusCreated, keyResp, err)
	key := keyResp.JSON201
	waitKey(t, c, consumer, key.Id, "active")

	call := func() (int, string) { return callGateway(t, e.gw.URL+"/metered/hello", key.Key) }

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
	subID := sub.Id.String()
	if refused == 0 {
		rec, _ := rc.Do(ctx, rc.B().Hgetall().Key(enforcement.SubscriptionName(subID)).Build()).AsStrMap()
		cnt, _ := rc.Do(ctx, rc.B().Hgetall().Key(enforcement.PeriodCounterName(subID, getSubscription(t, c, consumer, sub.Id).CurrentPeriodStart)).Build()).AsStrMap()
		blk, _ := rc.Do(ctx, rc.B().Get().Key(enforcement.BlockName(subID)).Build()).ToString()
		t.Fatalf("all %d requests admitted; want the gateway to refuse once the quota of %d was used (record %v, counter %v, block %q)",
			sent, quota, rec, cnt, blk)
	}
	t.Logf("quota %d, %d requests at 200/s: %d admitted (overshoot %d), %d refused; first refusal %s after the quota ran out",
		quota, sent, admitted, admitted-quota, refused, firstRefusal.Sub(crossedAt).Round(time.Millisecond))

	// Every request is in ClickHouse, the refusals marked; the Redis
	// counter holds the admitted ones only.
	counter := enforcement.PeriodCounterName(subID, getSubscription(t, c, consumer, sub.Id).CurrentPeriodStart)
	testenv.Deadline(t, 30*time.Second, func() error {
		var all, ok uint64
		if err := ch.QueryRow(ctx, `SELECT count(), countIf(refusal = '') FROM usage_events WHERE subject = ?`, subID).Scan(&all, &ok); err != nil {
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
			outboxes, err := rc.Do(ctx, rc.B().Exists().Key(enforcement.QuotaOutboxName(subID)).Build()).AsInt64()
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

	q := getQuota(t, c, consumer, sub.Id)
	if q.Used != int64(admitted) || q.Limit == nil || *q.Limit != quota || q.Remaining == nil || *q.Remaining != 0 ||
		!slices.Equal(thresholds(q), []int{80, 90, 100}) || !q.Blocked {
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
	rk, err := c.ReconcileKeysWithResponse(ctx, nil, client.Bearer(admin))
	expect(t, http.StatusOK, rk, err)
	testenv.Deadline(t, 10*time.Second, func() error {
		if status, typ := call(); status != http.StatusOK {
			return fmt.Errorf("call after the flush = %d %s; want 200 (the block is gone until the heal)", status, typ)
		}
		return nil
	})
	admitted++
	testenv.Deadline(t, 30*time.Second, func() error {
		n, err := rc.Do(ctx, rc.B().Hlen().Key(enforcement.WatermarkName(subID)).Build()).AsInt64()
		if err != nil || n == 0 {
			return fmt.Errorf("no offset watermark after the call (%v)", err)
		}
		return nil
	})
	// The processor writes ClickHouse and Redis at once: while ClickHouse
	// is behind the watermark the subscription is in flight, and the check
	// leaves it for the next run.
	testenv.Deadline(t, 30*time.Second, func() error {
		resp, err := c.ReconcileUsageWithResponse(ctx, nil, client.Bearer(admin))
		expect(t, http.StatusOK, resp, err)
		if rep := resp.JSON200; rep.Drifted < 1 || rep.Healed < 1 {
			return fmt.Errorf("usage reconcile after a flush = %+v; want the subscription drifted and healed", *rep)
		}
		return nil
	})
	q = getQuota(t, c, consumer, sub.Id)
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

	// The next period unblocks: the period ends, the control plane's period
	// roll (every second here) rolls it once, and the new record lifts the
	// block with it.
	conn, err := pgx.Connect(ctx, e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ended time.Time
	if err := conn.QueryRow(ctx, `UPDATE subscriptions SET current_period_start = now() - interval '31 days',
		current_period_end = now() - interval '1 second' WHERE id = $1 RETURNING current_period_end`, sub.Id).Scan(&ended); err != nil {
		t.Fatal(err)
	}
	testenv.Deadline(t, 30*time.Second, func() error {
		s := getSubscription(t, c, consumer, sub.Id)
		if !s.CurrentPeriodStart.Equal(ended) || !s.CurrentPeriodEnd.After(time.Now()) {
			return fmt.Errorf("period after the end = [%s, %s); want one period rolled, from %s", s.CurrentPeriodStart, s.CurrentPeriodEnd, ended)
		}
		return nil
	})
	testenv.Deadline(t, 10*time.Second, func() error {
		if status, typ := call(); status != http.StatusOK {
			return fmt.Errorf("call in the next period = %d %s; want 200", status, typ)
		}
		return nil
	})
	q = getQuota(t, c, consumer, sub.Id)
	if q.Blocked || q.Remaining == nil || *q.Remaining < quota-1 || len(q.ThresholdsCrossed) != 0 {
		t.Errorf("quota in the next period = %+v; want unblocked, the whole quota left", q)
	}
}
