package processors_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/usage"
)

// env is one test's pipeline: its own topics, ClickHouse database and
// subjects, on the real services.
type env struct {
	kafka  *testenv.Kafka
	raw    string
	dlq    string
	ch     driver.Conn
	redis  rueidis.Client
	prefix string
}

func setup(t *testing.T) *env {
	t.Helper()
	k := testenv.NewKafka(t)
	conn, _, _ := testenv.ClickHouseDB(t)
	return &env{kafka: k, raw: k.Topic(t, 4), dlq: k.Topic(t, 1), ch: conn, redis: testenv.Redis(t), prefix: "t" + testenv.Suffix()}
}

// sub returns the test's subscription id called name: a UUID, as usage
// events require, unique to the test.
func (e *env) sub(name string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(e.prefix+"-"+name)).String()
}

// start runs a processor until the returned stop is called.
func (e *env) start(t *testing.T, group string) (stop func()) {
	t.Helper()
	return e.startWith(t, group, nil)
}

// startWith is start with the config adjusted by tune.
func (e *env) startWith(t *testing.T, group string, tune func(*processors.Config)) (stop func()) {
	t.Helper()
	cfg := processors.Config{
		Logger: testenv.Logger(t), Metrics: metrics.NewSet(), Brokers: e.kafka.Brokers,
		Group: group, Topic: e.raw, DLQTopic: e.dlq, ClickHouse: e.ch, Redis: e.redis,
		BatchRecords: 2000, BatchWait: 100 * time.Millisecond,
		KafkaOpts: pipelinetest.QuickRebalance(),
	}
	if tune != nil {
		tune(&cfg)
	}
	return pipelinetest.StartProcessor(t, cfg)
}

// produce sends a generated workload and returns what the sinks must hold.
func (e *env) produce(t *testing.T, n int, dupRate, invalidRate float64, seed uint64) pipelinetest.Expectation {
	t.Helper()
	recs, exp := pipelinetest.Generate(pipelinetest.Workload{Topic: e.raw, Prefix: e.prefix, Events: n,
		DupRate: dupRate, InvalidRate: invalidRate, Subjects: 7, Seed: seed})
	e.send(t, recs...)
	return exp
}

func (e *env) check(t *testing.T, exp pipelinetest.Expectation) {
	t.Helper()
	e.checkWithin(t, exp, 60*time.Second)
}

// checkWithin is check with its own deadline.
func (e *env) checkWithin(t *testing.T, exp pipelinetest.Expectation, d time.Duration) {
	t.Helper()
	pipelinetest.Sinks{ClickHouse: e.ch, Redis: e.redis, Kafka: e.kafka, RawTopic: e.raw, DLQTopic: e.dlq}.Check(t, exp, d)
}

// send produces recs and returns once the broker holds them.
func (e *env) send(t *testing.T, recs ...*kgo.Record) {
	t.Helper()
	if err := e.kafka.Client(t).ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// caughtUp is a check for testenv.Deadline: group has read the raw topic
// to its end.
func (e *env) caughtUp(t *testing.T, group string) func() error {
	return func() error {
		lag, err := e.kafka.GroupLag(t, group, e.raw)
		if err == nil && lag != 0 {
			err = fmt.Errorf("group %s lag %d", group, lag)
		}
		return err
	}
}

// rejects counts the rows of usage_rejects with reason.
func (e *env) rejects(t *testing.T, reason string) (uint64, error) {
	var n uint64
	err := e.ch.QueryRow(t.Context(), "SELECT count() FROM usage_rejects WHERE reason = ?", reason).Scan(&n)
	return n, err
}

// deadReasons returns the error header of every record on the dead-letter
// topic, in order.
func (e *env) deadReasons(t *testing.T) []string {
	var reasons []string
	for _, r := range e.kafka.ReadAll(t, e.dlq) {
		for _, h := range r.Headers {
			if h.Key == processors.HeaderError {
				reasons = append(reasons, string(h.Value))
			}
		}
	}
	return reasons
}

// deadLetters maps the id, without the test's prefix, of every event on
// the dead-letter topic to the reason in its error header.
func (e *env) deadLetters(t *testing.T) (map[string]string, error) {
	dead := map[string]string{}
	for _, r := range e.kafka.ReadAll(t, e.dlq) {
		ev, err := usage.Decode(r.Value)
		if err != nil {
			return nil, fmt.Errorf("dead letter %s: %w", r.Value, err)
		}
		for _, h := range r.Headers {
			if h.Key == processors.HeaderError {
				dead[strings.TrimPrefix(ev.ID, e.prefix+"-")] = string(h.Value)
			}
		}
	}
	return dead, nil
}

// putRecord writes the fields of subject's subscription record that the
// processors read, as the control plane would: the period from start to
// end and fields, name and value pairs, beside it. The record is deleted
// when the test ends.
func (e *env) putRecord(t *testing.T, subject string, start, end time.Time, fields ...string) {
	t.Helper()
	name := enforcement.SubscriptionName(subject)
	cmd := e.redis.B().Hset().Key(name).FieldValue().
		FieldValue("period_start", strconv.FormatInt(start.Unix(), 10)).
		FieldValue("period_end", strconv.FormatInt(end.Unix(), 10))
	for i := 0; i+1 < len(fields); i += 2 {
		cmd = cmd.FieldValue(fields[i], fields[i+1])
	}
	if err := e.redis.Do(t.Context(), cmd.Build()).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.redis.Do(context.Background(), e.redis.B().Del().Key(name).Build())
	})
}

// counterWant is what a Redis counter hash must hold.
type counterWant struct {
	key              string
	requests, micros int64
}

// checkCounters compares each counter with what it must hold.
func (e *env) checkCounters(t *testing.T, wants ...counterWant) error {
	for _, w := range wants {
		requests, micros, err := counter(t, e.redis, w.key)
		if err != nil {
			return err
		}
		if requests != w.requests || micros != w.micros {
			return fmt.Errorf("redis %s = %d requests, %d units_micro; want %d, %d", w.key, requests, micros, w.requests, w.micros)
		}
	}
	return nil
}

// counter reads a Redis counter hash; a missing hash reads as zeros.
func counter(t *testing.T, client rueidis.Client, key string) (requests, micros int64, err error) {
	vals, err := client.Do(t.Context(), client.B().Hmget().Key(key).Field("requests", "units_micro").Build()).ToArray()
	if err != nil {
		return 0, 0, err
	}
	read := func(v rueidis.RedisMessage) (int64, error) {
		n, err := v.AsInt64()
		if rueidis.IsRedisNil(err) {
			return 0, nil
		}
		return n, err
	}
	if requests, err = read(vals[0]); err != nil {
		return 0, 0, errors.Join(fmt.Errorf("read %s requests", key), err)
	}
	if micros, err = read(vals[1]); err != nil {
		return 0, 0, errors.Join(fmt.Errorf("read %s units_micro", key), err)
	}
	return requests, micros, nil
}

// requestEvent is the JSON of a gateway's request event: id is the whole
// event id, refusal empty for an admitted request.
func requestEvent(id, subject string, at time.Time, status int, units, refusal string) []byte {
	if refusal != "" {
		refusal = fmt.Sprintf(`,"refusal":%q`, refusal)
	}
	return fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"source":"/gateway/test","type":"veil.api.request","time":%q,"subject":%q,"data":{"api_id":"api_1","key_id":"key_1","method":"GET","route":"/r","path":"/r","status":%d,"latency_ms":1,"request_bytes":1,"response_bytes":2,"units":%s%s}}`,
		id, at.Format(time.RFC3339), subject, status, units, refusal)
}

// recordEvent is the JSON of a usage record event of the API apiID, with
// id the whole event id.
func recordEvent(id, subject, apiID string, at time.Time, units string) []byte {
	return fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"source":"/test","type":"veil.usage.record","time":%q,"subject":%q,"data":{"api_id":%q,"units":%s}}`,
		id, at.Format(time.RFC3339), subject, apiID, units)
}

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// eventIDs returns the ids of the rows in usage_events, in order, without
// the test's prefix.
func (e *env) eventIDs(t *testing.T) ([]string, error) {
	rows, err := e.ch.Query(t.Context(), "SELECT id FROM usage_events ORDER BY id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, strings.TrimPrefix(id, e.prefix+"-"))
	}
	return ids, rows.Err()
}
