package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestEmbeddedBrokerPersists produces to the embedded broker, restarts it on
// the same data directory and reads the events back.
func TestEmbeddedBrokerPersists(t *testing.T) {
	dir := t.TempDir()
	start := func() *broker.Embedded {
		emb, err := broker.StartEmbedded(broker.EmbeddedConfig{DataDir: dir, Partitions: 3, Logger: testenv.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return emb
	}
	emb := start()
	k := &testenv.Kafka{Brokers: emb.Addrs()}
	cl, err := kgo.NewClient(kgo.SeedBrokers(emb.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		r := &kgo.Record{Topic: broker.TopicUsageRaw, Key: []byte{byte('a' + i%5)}, Value: []byte{byte(i)}}
		if err := cl.ProduceSync(t.Context(), r).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	cl.Close()
	emb.Close()

	emb = start()
	defer emb.Close()
	k.Brokers = emb.Addrs()
	got := k.ReadAll(t, broker.TopicUsageRaw)
	if len(got) != 20 {
		t.Fatalf("after a restart the topic holds %d records; want 20", len(got))
	}
}

// TestEnsureTopicsIsIdempotent creates the topics from several goroutines at
// once, then again, against the broker VEIL_TEST_BROKER selects.
func TestEnsureTopicsIsIdempotent(t *testing.T) {
	k := testenv.NewKafka(t)
	name := "veil.test.ensure." + testenv.Suffix()
	specs := []broker.TopicSpec{{Name: name, Partitions: 4}}
	cl := k.Client(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(cl).DeleteTopics(ctx, name)
	})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := broker.EnsureTopics(t.Context(), cl, specs); err != nil {
				t.Errorf("EnsureTopics: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := broker.EnsureTopics(t.Context(), cl, specs); err != nil {
		t.Fatalf("EnsureTopics again: %v", err)
	}
	if err := broker.WaitForTopic(t.Context(), cl, name); err != nil {
		t.Fatal(err)
	}
	md, err := kadm.NewClient(cl).Metadata(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(md.Topics[name].Partitions); n != 4 {
		t.Fatalf("topic has %d partitions; want 4", n)
	}
}

func TestHooksExportClientMetrics(t *testing.T) {
	k := testenv.NewFakeKafka(t)
	topic := k.Topic(t, 1)
	set := metrics.NewSet()
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: k.Brokers, ClientID: "hooktest", Logger: testenv.Logger(t), Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < 3; i++ {
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// Batch hooks may run just after the acknowledgement: poll.
	testenv.Deadline(t, 10*time.Second, func() error {
		var buf bytes.Buffer
		set.WritePrometheus(&buf)
		for _, want := range []string{
			`veil_kafka_produced_records_total{client="hooktest",topic="` + topic + `"} 3`,
			`veil_kafka_connects_total{client="hooktest",node=`,
			`veil_kafka_request_duration_seconds_bucket{client="hooktest",node=`,
		} {
			if !bytes.Contains(buf.Bytes(), []byte(want)) {
				return fmt.Errorf("metrics lack %q:\n%s", want, buf.String())
			}
		}
		return nil
	})
}

func TestNewClientNeedsBrokers(t *testing.T) {
	if _, err := broker.NewClient(broker.ClientConfig{Logger: testenv.Logger(t)}); err != broker.ErrNoBrokers {
		t.Fatalf("NewClient without brokers = %v; want ErrNoBrokers", err)
	}
}
