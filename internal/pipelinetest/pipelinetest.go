// Package pipelinetest generates usage-event workloads with known totals,
// runs processors in the test's process and checks that the processors'
// sinks hold exactly those totals: what every exactly-once test of the
// pipeline needs.
package pipelinetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/usage"
)

// Expectation is what the sinks must end up holding.
type Expectation struct {
	Unique  int
	Invalid int
	Units   map[string]decimal.Decimal // per subject
	Count   map[string]int             // per subject
}

// Merge adds o to e.
func (e *Expectation) Merge(o Expectation) {
	if e.Units == nil {
		e.Units, e.Count = map[string]decimal.Decimal{}, map[string]int{}
	}
	e.Unique += o.Unique
	e.Invalid += o.Invalid
	for k, v := range o.Units {
		e.Units[k] = e.Units[k].Add(v)
	}
	for k, v := range o.Count {
		e.Count[k] += v
	}
}

// Workload describes events to generate.
type Workload struct {
	Topic       string
	Prefix      string // makes subjects and ids unique to the test
	Events      int
	DupRate     float64
	InvalidRate float64
	Subjects    int
	Seed        uint64
}

// Subject is the subscription id of a workload's n-th subject: a UUID, as
// the usage event requires, stable for a prefix and n.
func Subject(prefix string, n int) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%s-sub-%d", prefix, n)).String()
}

// Generate returns the records and what the sinks must hold once every one
// is processed. Duplicates repeat an earlier record of the same call.
func Generate(w Workload) ([]*kgo.Record, Expectation) {
	rng := rand.New(rand.NewPCG(w.Seed, 1))
	exp := Expectation{Units: map[string]decimal.Decimal{}, Count: map[string]int{}}
	recs := make([]*kgo.Record, 0, w.Events)
	var valid []*kgo.Record
	now := time.Now().UTC()
	for i := 0; i < w.Events; i++ {
		subject := Subject(w.Prefix, rng.IntN(max(w.Subjects, 1)))
		switch r := rng.Float64(); {
		case r < w.InvalidRate && i%2 == 0:
			recs = append(recs, &kgo.Record{Topic: w.Topic, Key: []byte(subject),
				Value: []byte(`{"specversion":"1.0","id":"bad-` + strconv.Itoa(i) + `"}`)})
			exp.Invalid++
		case r < w.InvalidRate:
			// Complete, but its subject is no subscription id: a Redis
			// Cluster hash tag, which must never reach a key name.
			bad := "{" + w.Prefix + "}"
			recs = append(recs, &kgo.Record{Topic: w.Topic, Key: []byte(bad), Value: usage.AppendEvent(nil, &usage.Event{
				ID: "bad-" + strconv.Itoa(i), Source: "/test", Type: usage.TypeUsageRecord, Time: now.Truncate(time.Second),
				Subject: bad, Data: usage.Data{APIID: "api_1"},
			})})
			exp.Invalid++
		case r < w.InvalidRate+w.DupRate && len(valid) > 0:
			d := valid[rng.IntN(len(valid))]
			recs = append(recs, &kgo.Record{Topic: w.Topic, Key: d.Key, Value: d.Value})
		default:
			units := decimal.New(int64(1+rng.IntN(2500)), -3) // 0.001 .. 2.5
			// The random draws in the order the event's fields take them.
			at := now.Add(-time.Duration(rng.IntN(3600)) * time.Second).Truncate(time.Second)
			key, latency := rng.IntN(3), rng.IntN(100)
			ev := usage.AppendEvent(nil, &usage.Event{
				ID: fmt.Sprintf("%s-%d-%d", w.Prefix, w.Seed, i), Source: "/test", Type: usage.TypeAPIRequest, Time: at, Subject: subject,
				Data: usage.Data{APIID: "api_1", KeyID: "key_" + strconv.Itoa(key), Method: "GET", Route: "/r", Path: "/r", Status: 200,
					LatencyMS: uint32(latency), RequestBytes: 1, ResponseBytes: 2, Units: units},
			})
			rec := &kgo.Record{Topic: w.Topic, Key: []byte(subject), Value: ev}
			recs = append(recs, rec)
			valid = append(valid, rec)
			exp.Unique++
			exp.Units[subject] = exp.Units[subject].Add(units)
			exp.Count[subject]++
		}
	}
	return recs, exp
}

// Sinks are the stores a check reads.
type Sinks struct {
	ClickHouse driver.Conn // with the test's database selected
	Redis      rueidis.Client
	Kafka      *testenv.Kafka
	RawTopic   string
	DLQTopic   string
}

// Diff returns nil when ClickHouse and Redis hold exactly exp, or what differs.
func (s Sinks) Diff(ctx context.Context, exp Expectation) error {
	var total decimal.Decimal
	for _, u := range exp.Units {
		total = total.Add(u)
	}
	var (
		rows  uint64
		units decimal.Decimal
	)
	if err := s.ClickHouse.QueryRow(ctx, "SELECT count(), sum(units) FROM usage_events").Scan(&rows, &units); err != nil {
		return err
	}
	if rows != uint64(exp.Unique) || !units.Equal(total) {
		return fmt.Errorf("usage_events holds %d rows, %s units; want %d, %s", rows, units, exp.Unique, total)
	}
	var distinct uint64
	if err := s.ClickHouse.QueryRow(ctx, "SELECT uniqExact(source, id) FROM usage_events").Scan(&distinct); err != nil {
		return err
	}
	if distinct != rows {
		return fmt.Errorf("usage_events holds %d rows but %d distinct events", rows, distinct)
	}
	var rejects uint64
	if err := s.ClickHouse.QueryRow(ctx, "SELECT count() FROM usage_rejects").Scan(&rejects); err != nil {
		return err
	}
	if rejects != uint64(exp.Invalid) {
		return fmt.Errorf("usage_rejects holds %d rows; want %d", rejects, exp.Invalid)
	}
	month := enforcement.CalendarMonth(time.Now()).Start
	for subject, want := range exp.Units {
		key := enforcement.PeriodCounterName(subject, month)
		vals, err := s.Redis.Do(ctx, s.Redis.B().Hmget().Key(key).Field("requests", "units_micro").Build()).ToArray()
		if err != nil {
			return err
		}
		req, _ := vals[0].AsInt64()
		micro, _ := vals[1].AsInt64()
		if req != int64(exp.Count[subject]) || !decimal.New(micro, -6).Equal(want) {
			return fmt.Errorf("redis %s: %d requests, %s units; want %d, %s", key, req, decimal.New(micro, -6), exp.Count[subject], want)
		}
	}
	return nil
}

// Check waits up to d for the sinks to hold exactly exp and the dead-letter
// topic every invalid record, with its headers. (The processor writes its
// sinks at once, so the dead letters may land after ClickHouse and Redis.)
func (s Sinks) Check(t *testing.T, exp Expectation, d time.Duration) {
	t.Helper()
	testenv.Deadline(t, d, func() error {
		if err := s.Diff(t.Context(), exp); err != nil {
			return err
		}
		offsets := map[string]bool{}
		for _, r := range s.Kafka.ReadAll(t, s.DLQTopic) {
			h := map[string]string{}
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			if h[processors.HeaderError] == "" || h[processors.HeaderSourceTopic] != s.RawTopic || h[processors.HeaderSourceOffset] == "" {
				t.Fatalf("dead letter without its headers: %v", h)
			}
			offsets[h[processors.HeaderSourcePartition]+"/"+h[processors.HeaderSourceOffset]] = true
		}
		if len(offsets) != exp.Invalid {
			return fmt.Errorf("DLQ holds %d distinct records; want every one of the %d invalid", len(offsets), exp.Invalid)
		}
		return nil
	})
}

// QuickRebalance returns the consumer options of a test processor whose
// group sees members stop, crash or join: a member gone is noticed within
// seconds, not after the default 45.
func QuickRebalance() []kgo.Opt {
	return []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.RebalanceTimeout(10 * time.Second), kgo.HeartbeatInterval(500 * time.Millisecond)}
}

// StartProcessor runs a processor with cfg in this process until stop is
// called or the test ends. Stop waits for Run to return, 30s at the most,
// and fails the test if it returned an error or did not return.
func StartProcessor(t testing.TB, cfg processors.Config) (stop func()) {
	t.Helper()
	p, err := processors.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("processor Run = %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("processor did not stop within 30s")
		}
	})
	t.Cleanup(stop)
	return stop
}
