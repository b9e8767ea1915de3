package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestMain lets the test binary stand in for the veil binary: with
// VEIL_TEST_EXEC=1 it runs the command in its arguments, so tests can start
// real processes and kill them with SIGKILL.
func TestMain(m *testing.M) {
	if os.Getenv("VEIL_TEST_EXEC") == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "veil:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

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
func (e *crashEnv) processor(t *testing.T, instanceID string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "processor",
		"--kafka-brokers", e.kafka.Brokers[0], "--processor-topic", e.raw, "--processor-dlq-topic", e.dlq,
		"--processor-group", e.group, "--clickhouse-addr", e.chAddr, "--clickhouse-database", e.db,
		"--redis-addr", testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"),
		"--processor-addr", "127.0.0.1:0", "--processor-batch-records", "20000", "--log-level", "error",
		"--processor-instance-id", instanceID, "--processor-session-timeout", "6s")
	cmd.Env = append(os.Environ(), "VEIL_TEST_EXEC=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return cmd
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill processor: %v", err)
	}
	_, _ = cmd.Process.Wait()
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
		kill(t, p)
	}
	produced()
	final := e.processor(t, "crash-1")
	e.sinks.Check(t, exp, 5*time.Minute)
	kill(t, final)
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
		kill(t, p)
	}
	produced()
	e.sinks.Check(t, exp, 5*time.Minute)
	kill(t, steady)
}
