package e2e

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
)

// crashEnv is a pipeline whose processors run as separate processes.
type crashEnv struct {
	kafka  *testenv.Kafka
	raw    string
	dlq    string
	db     string
	chAddr string
	sinks  pipelinetest.Sinks
	prefix string
	group  string
}

func newCrashEnv(t *testing.T) *crashEnv {
	t.Helper()
	k := testenv.NewKafka(t)
	conn, addr, db := testenv.ClickHouseDB(t)
	e := &crashEnv{kafka: k, raw: k.Topic(t, 6), dlq: k.Topic(t, 1), db: db, chAddr: addr, prefix: "c" + testenv.Suffix()}
	e.group = "g-" + e.prefix
	e.sinks = pipelinetest.Sinks{ClickHouse: conn, Redis: testenv.Redis(t), Kafka: k, RawTopic: e.raw, DLQTopic: e.dlq}
	return e
}

// processor starts a veil processor process.
func (e *crashEnv) processor(t *testing.T, instanceID string) *proc {
	t.Helper()
	return startVeil(t, nil, "processor",
		"--kafka-brokers", e.kafka.Brokers[0], "--processor-topic", e.raw, "--processor-dlq-topic", e.dlq,
		"--processor-group", e.group, "--clickhouse-addr", e.chAddr, "--clickhouse-database", e.db,
		"--redis-addr", testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"),
		"--processor-addr", "127.0.0.1:0", "--processor-batch-records", "20000", "--log-level", "error",
		"--processor-instance-id", instanceID, "--processor-session-timeout", "6s")
}

// produceInBackground sends the workload in chunks while the test disturbs
// the processors, and returns a wait function.
func (e *crashEnv) produceInBackground(t *testing.T, events int, seed uint64) (pipelinetest.Expectation, func()) {
	t.Helper()
	recs, exp := pipelinetest.Generate(pipelinetest.Workload{Topic: e.raw, Prefix: e.prefix, Events: events,
		DupRate: 0.10, InvalidRate: 0.01, Subjects: 200, Seed: seed})
	cl := e.kafka.Client(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		const chunks = 10
		for i := 0; i < chunks; i++ {
			part := recs[i*len(recs)/chunks : (i+1)*len(recs)/chunks]
			if err := cl.ProduceSync(t.Context(), part...).FirstErr(); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
		}
	}()
	return exp, wg.Wait
}

func crashEvents() int {
	n, err := strconv.Atoi(testenv.Env("VEIL_CRASH_EVENTS", "1000000"))
	if err != nil || n <= 0 {
		return 1_000_000
	}
	return n
}

// TestProcessorSurvivesSIGKILL kills the processor at random moments while
// events with duplicates and invalid records flow; afterwards ClickHouse,
// Redis and the DLQ hold exactly the unique valid events and every invalid
// record: 0 lost, 0 double.
func TestProcessorSurvivesSIGKILL(t *testing.T) {
	e := newCrashEnv(t)
	exp, produced := e.produceInBackground(t, crashEvents(), 42)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 6; i++ {
		p := e.processor(t, "crash-1")
		time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Millisecond) // the random moment of the crash
		p.kill()
	}
	produced()
	final := e.processor(t, "crash-1")
	e.sinks.Check(t, exp, 5*time.Minute)
	final.kill()
}

// TestTwoProcessesRebalancingWithKills runs two processor processes in one
// group and keeps killing and restarting one of them, so partitions move
// between them mid-batch.
func TestTwoProcessesRebalancingWithKills(t *testing.T) {
	e := newCrashEnv(t)
	exp, produced := e.produceInBackground(t, crashEvents(), 43)
	steady := e.processor(t, "steady")
	rng := rand.New(rand.NewPCG(8, 8))
	for i := 0; i < 4; i++ {
		// Dynamic membership: each restart is a new member, so the group
		// rebalances both when it joins and when its death is noticed.
		p := e.processor(t, "")
		time.Sleep(time.Duration(1000+rng.IntN(2000)) * time.Millisecond)
		p.kill()
	}
	produced()
	e.sinks.Check(t, exp, 5*time.Minute)
	steady.kill()
}
