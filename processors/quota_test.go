package processors_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
)

func outboxLen(t *testing.T, rc rueidis.Client, subject string) int64 {
	t.Helper()
	n, err := rc.Do(t.Context(), rc.B().Llen().Key(enforcement.QuotaOutboxName(subject)).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// quotaEvents decodes every record of the quota topic.
func quotaEvents(t *testing.T, k *testenv.Kafka, topic string) []enforcement.Crossing {
	t.Helper()
	var out []enforcement.Crossing
	for _, r := range k.ReadAll(t, topic) {
		e, err := enforcement.UnmarshalCrossing(r.Value)
		if err != nil {
			t.Fatalf("enforcement.UnmarshalCrossing(%s) = %v", r.Value, err)
		}
		if string(r.Key) != e.SubscriptionID {
			t.Fatalf("quota event keyed %q; want its subscription %q", r.Key, e.SubscriptionID)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b enforcement.Crossing) int { return a.Threshold - b.Threshold })
	return out
}

// setupQuota is setup with a Redis database of the test's own: a quota
// test's processor drains quota outboxes, and its sweep takes every one it
// finds, which on the shared database could be another test's.
func setupQuota(t *testing.T) *env {
	t.Helper()
	e := setup(t)
	e.redis, _ = testenv.RedisDB(t)
	return e
}

// TestQuotaEventsProduced: requests past a hard quota of 10, through a
// running processor, put exactly one event per threshold on the quota
// topic, block the subscription, and leave the outbox empty.
func TestQuotaEventsProduced(t *testing.T) {
	e := setupQuota(t)
	quotaTopic := e.kafka.Topic(t, 1)
	subject := e.sub("quota")
	now := time.Now().UTC().Truncate(time.Second)
	start, end := now.Add(-time.Hour), now.Add(30*24*time.Hour)
	e.putRecord(t, subject, start, end, "quota_requests", "10", "quota_hard", "1")

	const requests = 12
	var recs []*kgo.Record
	for i := range requests {
		value := requestEvent(fmt.Sprintf("%s-%d", e.prefix, i), subject, now.Add(-time.Minute), 200, "1", "")
		recs = append(recs, &kgo.Record{Topic: e.raw, Key: []byte(subject), Value: value})
	}
	e.send(t, recs...)
	stop := e.startWith(t, "g-"+e.prefix, func(c *processors.Config) {
		c.QuotaTopic = quotaTopic
		c.QuotaSweepInterval = time.Hour // only the drain after the batch produces here
	})
	defer stop()

	// The drain removes the lines once the broker holds them: a full
	// counter and an empty outbox mean the events are on the topic.
	testenv.Deadline(t, 60*time.Second, func() error {
		n, err := e.redis.Do(t.Context(), e.redis.B().Hget().Key(enforcement.PeriodCounterName(subject, start)).Field("requests").Build()).AsInt64()
		if err != nil || n != requests {
			return fmt.Errorf("counter = %d (%v); want %d", n, err, requests)
		}
		if l := outboxLen(t, e.redis, subject); l != 0 {
			return fmt.Errorf("outbox holds %d lines; want 0", l)
		}
		return nil
	})
	got := quotaEvents(t, e.kafka, quotaTopic)
	if len(got) != 3 {
		t.Fatalf("quota events = %+v; want one per threshold", got)
	}
	for i, pct := range enforcement.Thresholds {
		ev := got[i]
		at := int64((10*pct + 99) / 100)
		if ev.Threshold != pct || ev.SubscriptionID != subject || ev.Quota != 10 || !ev.Hard ||
			ev.Used < at || ev.Used > requests || !ev.PeriodStart.Equal(start) || !ev.PeriodEnd.Equal(end) || ev.At.IsZero() {
			t.Errorf("quota event %d = %+v; want threshold %d of quota 10 (hard) for %s in [%s, %s), used %d to %d",
				i, ev, pct, subject, start, end, at, requests)
		}
	}
	until, err := enforcement.New(e.redis).BlockedUntilCached(t.Context(), subject, time.Second)
	if err != nil || !until.Equal(end) {
		t.Fatalf("BlockedUntilCached(%s) = %v, %v; want %v", subject, until, err, end)
	}
}

// TestQuotaSweepAfterCrash: lines a processor left in an outbox (it crashed
// after the counting script, before producing them) are produced by the
// sweep of a processor that starts afterwards, and by its periodic sweep
// when more arrive; a malformed line is dropped and counted.
func TestQuotaSweepAfterCrash(t *testing.T) {
	e := setupQuota(t)
	quotaTopic := e.kafka.Topic(t, 1)
	subject := e.prefix + "-crashed"
	start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	end := start.AddDate(0, 1, 0)
	event := func(pct int, used int64) enforcement.Crossing {
		return enforcement.Crossing{SubscriptionID: subject, PeriodStart: start, PeriodEnd: end, Threshold: pct, Quota: 10, Used: used, Hard: true}
	}
	push := func(lines ...string) {
		t.Helper()
		if err := e.redis.Do(t.Context(), e.redis.B().Rpush().Key(enforcement.QuotaOutboxName(subject)).Element(lines...).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	push(enforcement.OutboxLine(event(80, 8)), "v1|garbage", enforcement.OutboxLine(event(90, 9)))

	set := metrics.NewSet()
	stop := e.startWith(t, "g-"+e.prefix, func(c *processors.Config) {
		c.Metrics = set
		c.QuotaTopic = quotaTopic
		c.QuotaSweepInterval = 200 * time.Millisecond
	})
	defer stop()

	waitDrained := func(want []enforcement.Crossing) {
		t.Helper()
		testenv.Deadline(t, 30*time.Second, func() error {
			if l := outboxLen(t, e.redis, subject); l != 0 {
				return fmt.Errorf("outbox holds %d lines; want 0", l)
			}
			return nil
		})
		got := quotaEvents(t, e.kafka, quotaTopic)
		if len(got) != len(want) {
			t.Fatalf("quota events = %+v; want %d", got, len(want))
		}
		for i := range want {
			if got[i].ID() != want[i].ID() || got[i].Used != want[i].Used || !got[i].Hard {
				t.Fatalf("quota event %d = %+v; want %+v", i, got[i], want[i])
			}
		}
	}
	waitDrained([]enforcement.Crossing{event(80, 8), event(90, 9)})

	push(enforcement.OutboxLine(event(100, 10)))
	waitDrained([]enforcement.Crossing{event(80, 8), event(90, 9), event(100, 10)})

	// The sweep adds up what it produced once its pass ends.
	testenv.Deadline(t, 10*time.Second, func() error {
		var buf bytes.Buffer
		set.WritePrometheus(&buf)
		for _, want := range []string{
			"veil_processor_quota_outbox_errors_total 1\n",
			"veil_processor_quota_events_produced_total 3\n",
			"veil_processor_quota_sweep_produced_total 3\n",
			`veil_processor_quota_produced_by_threshold_total{threshold="100"} 1` + "\n",
		} {
			if !strings.Contains(buf.String(), want) {
				return fmt.Errorf("metrics lack %q:\n%s", strings.TrimSpace(want), buf.String())
			}
		}
		return nil
	})
}
