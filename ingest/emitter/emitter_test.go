package emitter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/veil-platform/veil/ingest/emitter"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/testenv"
)

// wait bounds every poll: generous for a loaded CI machine, while the tests
// normally finish in well under a second each.
const wait = 20 * time.Second

type fixture struct {
	em      *emitter.Emitter
	dir     string
	metrics *metrics.Set
}

// setup starts an emitter producing to topic through a Veil producer client
// for brokers, spooling to dir (a fresh one when empty). Probes run every
// 20ms so that a healed outage is noticed at once; tests that cause an
// outage also shorten StallTimeout, the others keep the default so that a
// slow machine never fakes one.
func setup(t *testing.T, brokers []string, topic, dir string, mod func(*emitter.Config), opts ...kgo.Opt) *fixture {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: brokers, ClientID: "veil-gateway-test", Logger: testenv.Logger(t), Opts: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	set := metrics.NewSet()
	cfg := emitter.Config{
		Client:        cl,
		Topic:         topic,
		SpoolDir:      dir,
		SegmentBytes:  8 << 10,
		ProbeInterval: 20 * time.Millisecond,
		Logger:        testenv.Logger(t),
		Metrics:       set,
	}
	if mod != nil {
		mod(&cfg)
	}
	em, err := emitter.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanup runs last-in first-out: the emitter closes before its client.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = em.Close(ctx)
	})
	return &fixture{em: em, dir: dir, metrics: set}
}

// records returns n records spread over keys subjects, numbered from
// first; the value names its key and number, like a CloudEvent id would.
func records(first, n, keys int) []emitter.Record {
	out := make([]emitter.Record, n)
	for i := range out {
		seq := first + i
		key := fmt.Sprintf("sub_%d", seq%keys)
		out[i] = emitter.Record{
			Key:   []byte(key),
			Value: fmt.Appendf(nil, `{"id":"%s/%d","subject":%q}`, key, seq, key),
		}
	}
	return out
}

func emitAll(em *emitter.Emitter, recs []emitter.Record) {
	for _, r := range recs {
		em.Emit(r)
	}
}

// checkDelivered compares what the topic holds with want, the records in
// emit order. Every record must arrive, with its key, and per key the first
// arrivals must keep emit order; duplicates (byte-identical, as a resend
// is) are an error only when exact is set.
func checkDelivered(t *testing.T, got []*kgo.Record, want []emitter.Record, exact bool) {
	t.Helper()
	wantKey := map[string]string{}
	wantOrder := map[string][]string{}
	for _, r := range want {
		wantKey[string(r.Value)] = string(r.Key)
		wantOrder[string(r.Key)] = append(wantOrder[string(r.Key)], string(r.Value))
	}
	seen := map[string]bool{}
	gotOrder := map[string][]string{}
	dups := 0
	for _, r := range got {
		v := string(r.Value)
		k, ok := wantKey[v]
		if !ok {
			t.Fatalf("topic holds %s, which was never emitted", v)
		}
		if string(r.Key) != k {
			t.Fatalf("record %s has key %q; want %q", v, r.Key, k)
		}
		if seen[v] {
			dups++
			continue
		}
		seen[v] = true
		gotOrder[k] = append(gotOrder[k], v)
	}
	if len(seen) != len(wantKey) {
		t.Fatalf("topic holds %d distinct records; want %d", len(seen), len(wantKey))
	}
	if exact && dups > 0 {
		t.Fatalf("topic holds %d duplicates; want none", dups)
	}
	for k, w := range wantOrder {
		if g := gotOrder[k]; !slices.Equal(g, w) {
			t.Fatalf("records of key %s arrived as %v; want %v", k, g, w)
		}
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// drained waits until everything emitted is acknowledged and the spool is
// gone.
func drained(t *testing.T, f *fixture, produced uint64) {
	t.Helper()
	testenv.Deadline(t, wait, func() error {
		s := f.em.Stats()
		if s.Spooling || s.Queued > 0 || s.InFlight > 0 || s.SpoolSegments > 0 || s.Produced < produced {
			return fmt.Errorf("emitter not drained: %+v; want %d produced", s, produced)
		}
		if segs := segments(t, f.dir); len(segs) > 0 {
			return fmt.Errorf("spool still holds %v", segs)
		}
		return nil
	})
}

func TestEmitDeliversInOrder(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.Topic(t, 3)
	f := setup(t, k.Brokers, topic, "", nil)
	// More records than the client buffers by default (10,000); the
	// in-flight limit itself is pinned by TestEmitSpoolsOnOverflow.
	want := records(0, 20_000, 17)
	emitAll(f.em, want)
	drained(t, f, uint64(len(want)))

	checkDelivered(t, k.ReadAll(t, topic), want, true)
	s := f.em.Stats()
	if s.Spooled != 0 || s.DroppedTotal() != 0 || s.Emitted != uint64(len(want)) || !s.BrokerAvailable {
		t.Fatalf("Stats() = %+v; want %d emitted, none spooled or dropped, broker available", s, len(want))
	}
	var buf bytes.Buffer
	f.metrics.WritePrometheus(&buf)
	for _, line := range []string{
		"veil_gateway_events_emitted_total 20000",
		"veil_gateway_events_produced_total 20000",
		"veil_gateway_events_spooled_total 0",
		"veil_gateway_events_replayed_total 0",
		`veil_gateway_events_dropped_total{reason="spool_full"} 0`,
		`veil_gateway_events_dropped_total{reason="queue_full"} 0`,
		"veil_gateway_spool_bytes 0",
		"veil_gateway_event_queue_length",
		"veil_gateway_broker_available 1",
	} {
		if !strings.Contains(buf.String(), line) {
			t.Errorf("metrics lack %q:\n%s", line, buf.String())
		}
	}
}

// TestEmitSpoolsWhileProduceFails makes the broker refuse every produce
// request while it still answers probes, then heals it.
func TestEmitSpoolsWhileProduceFails(t *testing.T) {
	k := testenv.NewFakeKafka(t)
	topic := k.Topic(t, 3)
	f := setup(t, k.Brokers, topic, "", nil)

	before := records(0, 100, 7)
	emitAll(f.em, before)
	drained(t, f, 100)

	fault := k.Fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.UnknownServerError, Count: -1})
	during := records(100, 1000, 7)
	emitAll(f.em, during) // returns although no produce can succeed
	testenv.Deadline(t, wait, func() error {
		if s := f.em.Stats(); !s.Spooling || s.Spooled < uint64(len(during)) || s.Queued > 0 {
			return fmt.Errorf("Stats() = %+v; want spooling with at least %d spooled", s, len(during))
		}
		return nil
	})
	if len(segments(t, f.dir)) == 0 {
		t.Fatal("spooling, but the spool dir holds no segment")
	}
	if fault.Hits() == 0 {
		t.Fatal("the produce fault was never hit")
	}

	fault.Remove()
	drained(t, f, 1100)
	after := records(1100, 100, 7)
	emitAll(f.em, after)
	drained(t, f, 1200)

	all := slices.Concat(before, during, after)
	checkDelivered(t, k.ReadAll(t, topic), all, false)
	if s := f.em.Stats(); s.Replayed < uint64(len(during)) || s.DroppedTotal() != 0 {
		t.Fatalf("Stats() = %+v; want at least %d replayed and nothing dropped", s, len(during))
	}
}

// TestEmitSpoolsWhileBrokerIsDown stops the broker, so that records hang in
// the client until the emitter gives up on them, then restarts it on the
// same port and data.
func TestEmitSpoolsWhileBrokerIsDown(t *testing.T) {
	data, port := t.TempDir(), freePort(t)
	topic := "veil.test." + testenv.Suffix()
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(data), kfake.SeedTopics(3, topic))
		if err != nil {
			t.Fatalf("start kfake: %v", err)
		}
		return c
	}
	c := start()
	k := &testenv.Kafka{Brokers: c.ListenAddrs(), Fake: c}
	f := setup(t, k.Brokers, topic, "", func(c *emitter.Config) { c.StallTimeout = 300 * time.Millisecond })

	before := records(0, 100, 5)
	emitAll(f.em, before)
	drained(t, f, 100)

	c.Close()
	during := records(100, 500, 5)
	emitAll(f.em, during)
	testenv.Deadline(t, wait, func() error {
		s := f.em.Stats()
		if !s.Spooling || s.BrokerAvailable || s.Spooled < uint64(len(during)) || s.Queued > 0 {
			return fmt.Errorf("Stats() = %+v; want spooling, broker unavailable, at least %d spooled", s, len(during))
		}
		return nil
	})
	if len(segments(t, f.dir)) == 0 {
		t.Fatal("spooling, but the spool dir holds no segment")
	}

	c = start()
	t.Cleanup(c.Close)
	drained(t, f, 600)
	checkDelivered(t, k.ReadAll(t, topic), slices.Concat(before, during), false)
}

// TestEmitSpoolsOnOverflow holds Kafka's answers, so that records pile up
// until the memory queue overflows and the rest goes to the spool, then
// lets them through: the spool replays behind the records in flight, and
// nothing is lost, duplicated or reordered.
func TestEmitSpoolsOnOverflow(t *testing.T) {
	k := testenv.NewFakeKafka(t)
	topic := k.Topic(t, 3)
	release := make(chan struct{})
	k.Fake.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-release:
			k.Fake.DropControl()
		default:
			k.Fake.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	// At most 9 records in flight; the queues hold 1,000 each, so 1,500
	// records overflow the memory queue without dropping any. No linger:
	// with 9 records a round trip, it would dominate the test.
	f := setup(t, k.Brokers, topic, "", func(c *emitter.Config) { c.MemoryRecords = 1000 },
		kgo.MaxBufferedRecords(10), kgo.ProducerLinger(0))
	want := records(0, 1500, 13)
	emitAll(f.em, want)
	testenv.Deadline(t, wait, func() error {
		if s := f.em.Stats(); !s.Spooling || s.Queued > 0 || s.Spooled+uint64(s.InFlight) != uint64(len(want)) {
			return fmt.Errorf("Stats() = %+v; want spooling, every record in flight or spooled", s)
		}
		return nil
	})
	if s := f.em.Stats(); s.DroppedTotal() != 0 || !s.BrokerAvailable {
		t.Fatalf("Stats() = %+v; want nothing dropped and the broker available", s)
	}

	close(release)
	drained(t, f, uint64(len(want)))
	checkDelivered(t, k.ReadAll(t, topic), want, true)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// deadBroker is an address where no broker listens.
func deadBroker(t *testing.T) []string {
	return []string{fmt.Sprintf("127.0.0.1:%d", freePort(t))}
}

func TestEmitDropsWhenSpoolIsFull(t *testing.T) {
	const maxSpool = 16 << 10
	f := setup(t, deadBroker(t), "veil.test.unreachable", "", func(c *emitter.Config) {
		c.StallTimeout = 50 * time.Millisecond
		c.SegmentBytes = 4 << 10
		c.MaxSpoolBytes = maxSpool
	})
	recs := records(0, 2000, 3)
	emitAll(f.em, recs)
	testenv.Deadline(t, wait, func() error {
		s := f.em.Stats()
		if s.Spooled+s.Dropped[emitter.DropSpoolFull] < uint64(len(recs)) || s.Queued > 0 {
			return fmt.Errorf("Stats() = %+v; want all %d records spooled or dropped", s, len(recs))
		}
		return nil
	})
	s := f.em.Stats()
	if s.Dropped[emitter.DropSpoolFull] == 0 || s.Spooled == 0 {
		t.Fatalf("Stats() = %+v; want some records spooled and some dropped as spool_full", s)
	}
	if s.SpoolBytes > maxSpool {
		t.Fatalf("spool holds %d bytes; want at most %d", s.SpoolBytes, maxSpool)
	}
	var buf bytes.Buffer
	f.metrics.WritePrometheus(&buf)
	want := fmt.Sprintf(`veil_gateway_events_dropped_total{reason="spool_full"} %d`, s.Dropped[emitter.DropSpoolFull])
	if !strings.Contains(buf.String(), want) {
		t.Fatalf("metrics lack %q:\n%s", want, buf.String())
	}
	if err := f.em.Close(context.Background()); err != nil {
		t.Fatalf("Close() = %v; want nil (the drops happened before Close)", err)
	}
}

// TestEmitterReplaysSpoolAfterRestart spools records with the broker down,
// shuts down with no time left, tears the last record as a crash would, and
// checks that a new emitter on the same directory replays the rest before
// the records emitted to it.
func TestEmitterReplaysSpoolAfterRestart(t *testing.T) {
	dir := t.TempDir()
	f := setup(t, deadBroker(t), "veil.test.unreachable", dir, func(c *emitter.Config) {
		c.SegmentBytes = 2 << 10
		c.StallTimeout = time.Hour // records stay in flight: Close must spool them
	})
	spooled := records(0, 300, 4)
	emitAll(f.em, spooled)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.em.Close(ctx); err != nil {
		t.Fatalf("Close(expired) = %v; want nil", err)
	}
	if s := f.em.Stats(); s.Spooled != uint64(len(spooled)) || s.DroppedTotal() != 0 {
		t.Fatalf("Stats() after Close = %+v; want %d spooled, none dropped", s, len(spooled))
	}
	segs := segments(t, dir)
	if len(segs) < 2 {
		t.Fatalf("spool holds %d segments; want several", len(segs))
	}
	last := segs[len(segs)-1]
	st, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, st.Size()-3); err != nil {
		t.Fatal(err)
	}

	k := testenv.NewFakeKafka(t)
	topic := k.Topic(t, 3)
	g := setup(t, k.Brokers, topic, dir, nil)
	fresh := records(300, 100, 4)
	emitAll(g.em, fresh)
	drained(t, g, uint64(len(spooled)-1+len(fresh)))

	// The torn record is the last one emitted before the shutdown.
	want := slices.Concat(spooled[:len(spooled)-1], fresh)
	checkDelivered(t, k.ReadAll(t, topic), want, true)
	// Records emitted while the old spool replays queue behind it on disk.
	if s := g.em.Stats(); s.Replayed < uint64(len(spooled)-1) {
		t.Fatalf("Stats().Replayed = %d; want at least %d", s.Replayed, len(spooled)-1)
	}
}

func TestCloseFlushes(t *testing.T) {
	k := testenv.NewKafka(t)
	topic := k.Topic(t, 3)
	// A broker slowed by a loaded machine is not a broker down: with the
	// default stall timeout the loop may give up on it and leave the rest in
	// the spool for the next run, which is right for a shutdown but not what
	// this test is about.
	f := setup(t, k.Brokers, topic, "", func(c *emitter.Config) { c.StallTimeout = time.Minute })
	want := records(0, 2000, 11)
	emitAll(f.em, want)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := f.em.Close(ctx); err != nil {
		t.Fatalf("Close() = %v; want nil", err)
	}
	checkDelivered(t, k.ReadAll(t, topic), want, true)
	if segs := segments(t, f.dir); len(segs) > 0 {
		t.Fatalf("spool holds %v after Close with the broker up; want nothing", segs)
	}

	f.em.Emit(records(2000, 1, 1)[0])
	if s := f.em.Stats(); s.Dropped[emitter.DropClosed] != 1 {
		t.Fatalf("Stats().Dropped after Emit past Close = %v; want 1 closed", s.Dropped)
	}
	if err := f.em.Close(ctx); err != nil {
		t.Fatalf("second Close() = %v; want nil", err)
	}
}

func TestNewRefusesSharedSpool(t *testing.T) {
	f := setup(t, deadBroker(t), "veil.test.unreachable", "", nil)
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: deadBroker(t), Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, err = emitter.New(emitter.Config{Client: cl, SpoolDir: f.dir})
	if !errors.Is(err, emitter.ErrSpoolLocked) {
		t.Fatalf("New(dir in use) = %v; want ErrSpoolLocked", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: deadBroker(t), Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tests := []struct {
		name string
		cfg  emitter.Config
		want string
	}{
		{"valid", emitter.Config{Client: cl, SpoolDir: "x"}, ""},
		{"valid fsync", emitter.Config{Client: cl, SpoolDir: "x", Fsync: emitter.FsyncAlways}, ""},
		{"no client", emitter.Config{SpoolDir: "x"}, "kafka client is required"},
		{"no spool dir", emitter.Config{Client: cl}, "spool dir is required"},
		{"negative size", emitter.Config{Client: cl, SpoolDir: "x", MaxSpoolBytes: -1}, "must not be negative"},
		{"unknown fsync", emitter.Config{Client: cl, SpoolDir: "x", Fsync: "sometimes"}, `fsync "sometimes"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v; want %q", err, tt.want)
			}
		})
	}
}

// BenchmarkEmit measures Emit on the request path: a send on the memory
// queue. The timer stops while the producer loop empties the queue, so that
// every measured call finds room.
func BenchmarkEmit(b *testing.B) {
	k := testenv.NewFakeKafka(b)
	topic := k.Topic(b, 3)
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: k.Brokers, ClientID: "bench", Logger: testenv.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	em, err := emitter.New(emitter.Config{Client: cl, Topic: topic, SpoolDir: b.TempDir(), Logger: testenv.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer em.Close(context.Background())
	recs := records(0, 1024, 64)
	const chunk = 10_000
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%chunk == 0 && i > 0 {
			b.StopTimer()
			testenv.Deadline(b, wait, func() error {
				if q := em.Stats().Queued; q > 0 {
					return fmt.Errorf("%d records queued", q)
				}
				return nil
			})
			b.StartTimer()
		}
		em.Emit(recs[i%len(recs)])
	}
}
