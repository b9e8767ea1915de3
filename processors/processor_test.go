package processors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/migrate"
)

// env is one test's pipeline: its own topics, ClickHouse database and
// subjects, on the real services.
type env struct {
	kafka  *testenv.Kafka
	raw    string
	dlq    string
	ch     driver.Conn
	chCfg  migrate.ClickHouseConfig
	redis  rueidis.Client
	prefix string
}

func setup(t *testing.T) *env {
	t.Helper()
	k := testenv.NewKafka(t)
	addr, db := testenv.ClickHouseAddr(t)
	cfg := migrate.ClickHouseConfig{Addr: addr, Database: db}
	if _, err := migrate.ClickHouse(t.Context(), cfg, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	conn, err := migrate.OpenClickHouse(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &env{kafka: k, raw: k.Topic(t, 4), dlq: k.Topic(t, 1), ch: conn, chCfg: cfg, redis: testenv.Redis(t), prefix: "t" + testenv.Suffix()}
}

// start runs a processor until the returned stop is called.
func (e *env) start(t *testing.T, group string) (stop func()) {
	t.Helper()
	p, err := processors.New(processors.Config{
		Logger: testenv.Logger(t), Metrics: metrics.NewSet(), Brokers: e.kafka.Brokers,
		Group: group, Topic: e.raw, DLQTopic: e.dlq, ClickHouse: e.ch, Redis: e.redis,
		BatchRecords: 2000, BatchWait: 100 * time.Millisecond,
		KafkaOpts: []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.RebalanceTimeout(10 * time.Second), kgo.HeartbeatInterval(500 * time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("processor Run = %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("processor did not stop within 30s")
		}
	}
}

// expectation tracks what the sinks must end up holding.
type expectation struct {
	unique  int
	invalid int
	units   map[string]decimal.Decimal // per subject
	count   map[string]int
}

// produce sends n events over subjects, with duplicate and invalid shares,
// and returns what the sinks must hold.
func (e *env) produce(t *testing.T, n int, dupRate, invalidRate float64, seed uint64) expectation {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	cl := e.kafka.Client(t)
	exp := expectation{units: map[string]decimal.Decimal{}, count: map[string]int{}}
	var (
		recs []*kgo.Record
		sent []string
	)
	now := time.Now().UTC()
	for i := 0; i < n; i++ {
		if len(sent) > 0 && rng.Float64() < dupRate {
			j := rng.IntN(len(sent))
			var m struct{ Subject string }
			_ = json.Unmarshal([]byte(sent[j]), &m)
			recs = append(recs, &kgo.Record{Topic: e.raw, Key: []byte(m.Subject), Value: []byte(sent[j])})
			continue
		}
		subject := fmt.Sprintf("%s-sub-%d", e.prefix, rng.IntN(7))
		if rng.Float64() < invalidRate {
			recs = append(recs, &kgo.Record{Topic: e.raw, Key: []byte(subject), Value: []byte(`{"specversion":"1.0","id":"bad-` + strconv.Itoa(i) + `"}`)})
			exp.invalid++
			continue
		}
		units := decimal.New(int64(1+rng.IntN(2500)), -3) // 0.001 .. 2.5
		ev := fmt.Sprintf(`{"specversion":"1.0","id":"%s-%d-%d","source":"/test","type":"veil.api.request","time":%q,"subject":%q,"data":{"api_id":"api_1","key_id":"key_%d","method":"GET","route":"/r","path":"/r","status":200,"latency_ms":%d,"request_bytes":1,"response_bytes":2,"units":%s}}`,
			e.prefix, seed, i, now.Add(-time.Duration(rng.IntN(3600))*time.Second).Format(time.RFC3339), subject, rng.IntN(3), rng.IntN(100), units)
		sent = append(sent, ev)
		recs = append(recs, &kgo.Record{Topic: e.raw, Key: []byte(subject), Value: []byte(ev)})
		exp.unique++
		exp.units[subject] = exp.units[subject].Add(units)
		exp.count[subject]++
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	return exp
}

// check waits until ClickHouse, Redis and the DLQ hold exactly what exp says.
func (e *env) check(t *testing.T, exp expectation) {
	t.Helper()
	var total decimal.Decimal
	for _, u := range exp.units {
		total = total.Add(u)
	}
	testenv.Deadline(t, 60*time.Second, func() error {
		var (
			rows  uint64
			units decimal.Decimal
		)
		if err := e.ch.QueryRow(t.Context(), "SELECT count(), sum(units) FROM usage_events").Scan(&rows, &units); err != nil {
			return err
		}
		if rows != uint64(exp.unique) || !units.Equal(total) {
			return fmt.Errorf("usage_events holds %d rows, %s units; want %d, %s", rows, units, exp.unique, total)
		}
		var rejects uint64
		if err := e.ch.QueryRow(t.Context(), "SELECT count() FROM usage_rejects").Scan(&rejects); err != nil {
			return err
		}
		if rejects != uint64(exp.invalid) {
			return fmt.Errorf("usage_rejects holds %d rows; want %d", rejects, exp.invalid)
		}
		for subject, want := range exp.units {
			key := processors.PeriodKey(subject, monthStart(time.Now()))
			vals, err := e.redis.Do(t.Context(), e.redis.B().Hmget().Key(key).Field("requests", "units_micro").Build()).ToArray()
			if err != nil {
				return err
			}
			req, _ := vals[0].AsInt64()
			micro, _ := vals[1].AsInt64()
			if req != int64(exp.count[subject]) || !decimal.New(micro, -6).Equal(want) {
				return fmt.Errorf("redis %s: %d requests, %s units; want %d, %s", key, req, decimal.New(micro, -6), exp.count[subject], want)
			}
		}
		return nil
	})
	dlq := e.kafka.ReadAll(t, e.dlq)
	offsets := map[string]bool{}
	for _, r := range dlq {
		h := map[string]string{}
		for _, kv := range r.Headers {
			h[kv.Key] = string(kv.Value)
		}
		if h[processors.HeaderError] == "" || h[processors.HeaderSourceTopic] != e.raw || h[processors.HeaderSourceOffset] == "" {
			t.Fatalf("dead letter without its headers: %v", h)
		}
		offsets[h[processors.HeaderSourcePartition]+"/"+h[processors.HeaderSourceOffset]] = true
	}
	if len(offsets) != exp.invalid {
		t.Fatalf("DLQ holds %d distinct records; want every one of the %d invalid", len(offsets), exp.invalid)
	}
}

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

func TestExactlyOnceWithDuplicatesAndInvalid(t *testing.T) {
	e := setup(t)
	exp := e.produce(t, 3000, 0.1, 0.02, 1)
	stop := e.start(t, "g-"+e.prefix)
	defer stop()
	e.check(t, exp)
}

// TestRestartResumesExactly stops the processor mid-stream, sends more, and
// starts a new one in the same group: nothing is lost or doubled.
func TestRestartResumesExactly(t *testing.T) {
	e := setup(t)
	group := "g-" + e.prefix
	first := e.produce(t, 2000, 0.1, 0.01, 2)
	stop := e.start(t, group)
	e.check(t, first)
	stop()
	second := e.produce(t, 2000, 0.1, 0.01, 3)
	stop = e.start(t, group)
	defer stop()
	e.check(t, merge(first, second))
}

// TestReplayFromScratchWritesNothingTwice makes a second group read the
// whole topic again into the same sinks, as a processor does whose offsets
// were lost: the sinks already hold everything, so nothing changes.
func TestReplayFromScratchWritesNothingTwice(t *testing.T) {
	e := setup(t)
	exp := e.produce(t, 2000, 0.1, 0.01, 4)
	stop := e.start(t, "g1-"+e.prefix)
	e.check(t, exp)
	stop()
	stop = e.start(t, "g2-"+e.prefix)
	defer stop()
	// Wait until the second group has caught up, then check again.
	testenv.Deadline(t, 60*time.Second, func() error {
		lag, err := e.kafka.GroupLag(t, "g2-"+e.prefix, e.raw)
		if err != nil {
			return err
		}
		if lag != 0 {
			return fmt.Errorf("group lag %d", lag)
		}
		return nil
	})
	e.check(t, exp)
}

func merge(a, b expectation) expectation {
	out := expectation{unique: a.unique + b.unique, invalid: a.invalid + b.invalid, units: map[string]decimal.Decimal{}, count: map[string]int{}}
	for _, x := range []expectation{a, b} {
		for k, v := range x.units {
			out.units[k] = out.units[k].Add(v)
		}
		for k, v := range x.count {
			out.count[k] += v
		}
	}
	return out
}
