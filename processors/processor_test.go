package processors_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
)

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
	first.Merge(second)
	e.check(t, first)
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
	testenv.Deadline(t, 60*time.Second, e.caughtUp(t, "g2-"+e.prefix))
	e.check(t, exp)
}

// TestTwoProcessorsRebalancing runs two processors in one group while one
// of them stops and starts again, moving partitions back and forth.
func TestTwoProcessorsRebalancing(t *testing.T) {
	e := setup(t)
	group := "g-" + e.prefix
	stopA := e.start(t, group)
	defer func() { stopA() }()
	var exp pipelinetest.Expectation
	for round := 0; round < 4; round++ {
		stopB := e.start(t, group)
		exp.Merge(e.produce(t, 1500, 0.1, 0.01, uint64(10+round)))
		time.Sleep(time.Duration(200+100*round) * time.Millisecond) // let B take partitions mid-stream
		stopB()
	}
	e.check(t, exp)
}

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }

func mustDecimal(t *testing.T, s string) decimal.Decimal {
	t.Helper()
	d, err := decimal.NewFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func nopLogger(t *testing.T) *slog.Logger { return testenv.Logger(t) }

// TestCountsIntoTheSubscriptionsPeriod: when the control plane has written a
// subscription record with its billing period, the counter is that period's,
// and Period reports it; without one, the calendar month applies.
func TestCountsIntoTheSubscriptionsPeriod(t *testing.T) {
	e := setup(t)
	now := time.Now().UTC()
	start, end := now.Add(-10*24*time.Hour).Truncate(time.Second), now.Add(20*24*time.Hour).Truncate(time.Second)
	subject := pipelinetest.Subject(e.prefix, 0) // the generator's subjects
	e.putRecord(t, subject, start, end)

	exp := e.produce(t, 300, 0, 0, 21)
	if exp.Count[subject] == 0 {
		t.Fatalf("the workload has no events for %s", subject)
	}
	stop := e.start(t, "g-"+e.prefix)
	defer stop()

	got, err := enforcement.CurrentPeriod(t.Context(), e.redis, subject, now)
	if err != nil || !got.Start.Equal(start) || !got.End.Equal(end) {
		t.Fatalf("CurrentPeriod = %s, %s, %v; want %s, %s", got.Start, got.End, err, start, end)
	}
	testenv.Deadline(t, 60*time.Second, func() error {
		n, err := e.redis.Do(t.Context(), e.redis.B().Hget().Key(enforcement.PeriodCounterName(subject, start)).Field("requests").Build()).AsInt64()
		if err != nil || n != int64(exp.Count[subject]) {
			return fmt.Errorf("counter of the subscription's period holds %d (%v); want %d", n, err, exp.Count[subject])
		}
		return nil
	})
	// Other subjects have no record: the calendar month.
	other := pipelinetest.Subject(e.prefix, 1)
	if p, err := enforcement.CurrentPeriod(t.Context(), e.redis, other, now); err != nil || !p.Start.Equal(monthStart(now)) {
		t.Fatalf("CurrentPeriod(%s) start = %s, %v; want the calendar month %s", other, p.Start, err, monthStart(now))
	}
}
