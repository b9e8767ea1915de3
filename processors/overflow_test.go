package processors_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/usage"
)

// TestCounterOverflowDeadLettered reproduces the overflow report through
// ingest, the processors and Redis: a subject whose period counter is
// 1.5 × 10^15 micro-units short of int64's maximum receives events at the
// units cap. The ones that would take the counter past it go to the
// dead-letter queue and usage_rejects with reason counter_overflow and are
// counted nowhere (not in ClickHouse, not in requests); every other event
// of the batch, another subject's included, counts once; the processor
// commits and goes on with the next batch instead of retrying for ever;
// and a second group replaying the topic from the start changes nothing.
func TestCounterOverflowDeadLettered(t *testing.T) {
	e := setup(t)
	h, err := ingest.New(ingest.Config{Logger: testenv.Logger(t), Metrics: metrics.NewSet(), Producer: e.kafka.Client(t),
		Topic: e.raw, Tokens: []string{"overflow-test-token-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Routes())
	defer srv.Close()
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	poisoned, other := e.sub("full"), e.sub("other")
	post := func(events ...[3]string) {
		t.Helper()
		var b []string
		for _, ev := range events {
			b = append(b, string(recordEvent(e.prefix+"-"+ev[0], ev[1], "api_1", at, ev[2])))
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/events", strings.NewReader("["+strings.Join(b, ",")+"]"))
		req.Header.Set("Authorization", "Bearer overflow-test-token-0123456789")
		req.Header.Set("Content-Type", ingest.MediaTypeBatch)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /v1/events = %d; want 202", resp.StatusCode)
		}
	}

	period := enforcement.PeriodCounterName(poisoned, monthStart(at))
	base := usage.MaxCounterMicro - 1_500_000_000_000_000
	if err := e.redis.Do(t.Context(), e.redis.B().Hset().Key(period).FieldValue().
		FieldValue("requests", "7").FieldValue("units_micro", strconv.FormatInt(base, 10)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	const atCap = "1000000000"
	post([3]string{"a1", poisoned, atCap}, [3]string{"a2", poisoned, atCap}, [3]string{"a3", poisoned, "1"},
		[3]string{"a4", poisoned, atCap}, [3]string{"q1", other, "1"}, [3]string{"q2", other, "2"}, [3]string{"q3", other, "3"})

	type want struct {
		rows                []string
		requests, micros    int64
		otherReq, otherMicr int64
	}
	check := func(w want) error {
		ids, err := e.eventIDs(t)
		if err != nil {
			return err
		}
		if fmt.Sprint(ids) != fmt.Sprint(w.rows) {
			return fmt.Errorf("usage_events ids = %v; want %v", ids, w.rows)
		}
		rejects, err := e.rejects(t, string(processors.ReasonCounterOverflow))
		if err != nil {
			return err
		}
		if rejects != 2 {
			return fmt.Errorf("usage_rejects holds %d counter_overflow rows; want 2", rejects)
		}
		return e.checkCounters(t,
			counterWant{period, w.requests, w.micros},
			counterWant{enforcement.PeriodCounterName(other, monthStart(at)), w.otherReq, w.otherMicr})
	}

	stop := e.start(t, "g1-"+e.prefix)
	first := want{rows: []string{"a1", "a3", "q1", "q2", "q3"}, requests: 9, micros: base + 1_000_000_000_000_000 + 1_000_000, otherReq: 3, otherMicr: 6_000_000}
	testenv.Deadline(t, 60*time.Second, func() error { return check(first) })
	testenv.Deadline(t, 30*time.Second, e.caughtUp(t, "g1-"+e.prefix))

	// The processor went on: the next batch of the same subject counts.
	post([3]string{"a5", poisoned, "2"})
	second := first
	second.rows = []string{"a1", "a3", "a5", "q1", "q2", "q3"}
	second.requests, second.micros = 10, first.micros+2_000_000
	testenv.Deadline(t, 60*time.Second, func() error { return check(second) })
	testenv.Deadline(t, 30*time.Second, e.caughtUp(t, "g1-"+e.prefix))
	stop()

	dead, err := e.deadLetters(t)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 || dead["a2"] != string(processors.ReasonCounterOverflow) || dead["a4"] != string(processors.ReasonCounterOverflow) {
		t.Fatalf("dead letters = %v; want a2 and a4 with %s", dead, processors.ReasonCounterOverflow)
	}

	stop = e.start(t, "g2-"+e.prefix)
	defer stop()
	testenv.Deadline(t, 60*time.Second, e.caughtUp(t, "g2-"+e.prefix))
	if err := check(second); err != nil {
		t.Fatalf("after a replay from the start: %v", err)
	}
}

// TestUnitsOverTheCapDeadLettered: a record over the units cap that reaches
// the topic without ingest (another producer, an older gateway) goes to
// the dead-letter queue and usage_rejects with reason invalid_units; the
// event of the same subject beside it counts.
func TestUnitsOverTheCapDeadLettered(t *testing.T) {
	e := setup(t)
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	subject := e.sub("big")
	value := func(id, units string) []byte {
		return recordEvent(e.prefix+"-"+id, subject, "api_1", at, units)
	}
	recs := []*kgo.Record{
		{Topic: e.raw, Key: []byte(subject), Value: value("over", "999999999999.999999")},
		{Topic: e.raw, Key: []byte(subject), Value: value("fine", "2")},
	}
	e.send(t, recs...)
	stop := e.start(t, "g-"+e.prefix)
	defer stop()
	testenv.Deadline(t, 60*time.Second, func() error {
		var reason, detail string
		if err := e.ch.QueryRow(t.Context(), "SELECT reason, detail FROM usage_rejects").Scan(&reason, &detail); err != nil {
			return err
		}
		if reason != string(usage.ReasonInvalidUnits) {
			return fmt.Errorf("usage_rejects reason = %q (%s); want %s", reason, detail, usage.ReasonInvalidUnits)
		}
		requests, micros, err := counter(t, e.redis, enforcement.PeriodCounterName(subject, monthStart(at)))
		if err != nil {
			return err
		}
		if requests != 1 || micros != 2_000_000 {
			return fmt.Errorf("redis counter = %d requests, %d units_micro; want 1, 2000000", requests, micros)
		}
		return nil
	})
	// The dead letter and the rejects row are written by separate sinks:
	// the row being there does not mean the record is.
	testenv.Deadline(t, 30*time.Second, func() error {
		reasons := e.deadReasons(t)
		if len(reasons) != 1 || reasons[0] != string(usage.ReasonInvalidUnits) {
			return fmt.Errorf("dead letters' reasons = %q; want one %s", reasons, usage.ReasonInvalidUnits)
		}
		return nil
	})
}
