package processors_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/processors"
)

// poisonConn is the real ClickHouse connection, except that any
// usage_events batch holding the poisoned event id is refused as data, the
// way ClickHouse refuses a row it cannot take.
type poisonConn struct {
	driver.Conn
	poison string
}

func (c poisonConn) PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error) {
	b, err := c.Conn.PrepareBatch(ctx, query, opts...)
	if err != nil || !strings.Contains(query, "usage_events") {
		return b, err
	}
	return &poisonBatch{Batch: b, poison: c.poison}, nil
}

type poisonBatch struct {
	driver.Batch
	poison string
	hit    bool
}

func (b *poisonBatch) Append(v ...any) error {
	if id, ok := v[0].(string); ok && id == b.poison {
		b.hit = true
	}
	return b.Batch.Append(v...)
}

func (b *poisonBatch) Send() error {
	if b.hit {
		_ = b.Batch.Abort()
		return &clickhouse.Exception{Code: 27, Name: "DB::Exception", Message: "Cannot parse input: poisoned row"}
	}
	return b.Batch.Send()
}

// TestRecordClickHouseKeepsRefusingGoesToDLQ: after DataAttempts refusals
// the batch is written row by row, the refused row becomes a sink_failed dead
// letter, every other row is written once, and Redis does not count the
// refused one.
func TestRecordClickHouseKeepsRefusingGoesToDLQ(t *testing.T) {
	e := setup(t)
	recs, exp := pipelinetest.Generate(pipelinetest.Workload{Topic: e.raw, Prefix: e.prefix, Events: 500, Subjects: 3, Seed: 9})
	// The first record is valid (no invalid or duplicate share): poison it.
	var first struct {
		ID      string `json:"id"`
		Subject string `json:"subject"`
		Data    struct {
			Units json.Number `json:"units"`
		} `json:"data"`
	}
	if err := jsonDecode(recs[0].Value, &first); err != nil {
		t.Fatal(err)
	}
	e.send(t, recs...)
	exp.Unique--
	exp.Invalid++ // the poisoned row lands in usage_rejects
	exp.Count[first.Subject]--
	exp.Units[first.Subject] = exp.Units[first.Subject].Sub(mustDecimal(t, first.Data.Units.String()))

	p, err := processors.New(processors.Config{
		Logger: nopLogger(t), Metrics: metrics.NewSet(), Brokers: e.kafka.Brokers, Group: "g-" + e.prefix,
		Topic: e.raw, DLQTopic: e.dlq, ClickHouse: poisonConn{Conn: e.ch, poison: first.ID}, Redis: e.redis,
		BatchRecords: 1000, BatchWait: 100 * time.Millisecond, DataAttempts: 2,
		KafkaOpts: []kgo.Opt{kgo.SessionTimeout(6 * time.Second)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Written row by row, the 499 good rows are 499 inserts, each through
	// every materialized view on usage_events (14): about 0.1 s each on
	// 18.16, over a minute in all on the shared cores.
	e.checkWithin(t, exp, 3*time.Minute)
	var reason string
	if err := e.ch.QueryRow(t.Context(), "SELECT reason FROM usage_rejects").Scan(&reason); err != nil {
		t.Fatal(err)
	}
	if reason != string(processors.ReasonSinkFailed) {
		t.Fatalf("usage_rejects reason = %q; want %s", reason, processors.ReasonSinkFailed)
	}
}
