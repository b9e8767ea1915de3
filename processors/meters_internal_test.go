package processors

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/usage"
)

// bytesMeter is a meters field with one meter adding response bytes.
const bytesMeter = `[{"slug":"bytes","aggregation":"sum","field":"response_bytes","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false}]`

// meteredItem is an admitted GET of subject at offset that responded
// with n bytes.
func meteredItem(subject string, offset int64, at time.Time, n uint64) item {
	return item{subject: subject, partition: 0, offset: offset, time: at, unitsMicro: 1,
		event: &usage.Event{Subject: subject, Time: at, Data: usage.Data{APIID: "api_1", Method: "GET", Path: "/", Status: 200,
			ResponseBytes: n, Units: decimal.New(1, -6)}}}
}

// TestApplyRefusesWhatOverflowsAMeter: a meter field the batch's sum would
// take past the counter cap refuses the batch as a request counter would:
// the events are applied one by one, those that fit count (their meter
// and their requests), the others are refused whole and reported, and a
// replay reports the same and changes nothing.
func TestApplyRefusesWhatOverflowsAMeter(t *testing.T) {
	client, _ := testenv.RedisDB(t)
	at := time.Now().UTC()
	start := at.Add(-time.Hour).Truncate(time.Second)
	putRecord(t, client, "sub", start, start.AddDate(0, 1, 0), "meters", bytesMeter)
	counter := enforcement.PeriodCounterName("sub", start)
	near := usage.MaxCounterMicro - 100
	if err := client.Do(t.Context(), client.B().Hset().Key(counter).FieldValue().FieldValue("m:bytes", strconv.FormatInt(near, 10)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	items := []item{meteredItem("sub", 0, at, 60), meteredItem("sub", 1, at, 60), meteredItem("sub", 2, at, 40)}
	for _, name := range []string{"first apply", "replay"} {
		_, refused, err := newRedisSink(client).apply(t.Context(), items)
		if err != nil {
			t.Fatal(err)
		}
		if len(refused) != 1 || refused[0].offset != 1 || refused[0].apiMismatch {
			t.Fatalf("%s: refused %+v; want the event at offset 1 alone, as an overflow", name, refused)
		}
		wantCounterFields(t, client, name, counter, "2", "2")
		got, err := client.Do(t.Context(), client.B().Hget().Key(counter).Field("m:bytes").Build()).AsInt64()
		if err != nil || got != usage.MaxCounterMicro {
			t.Fatalf("%s: m:bytes = %d, %v; want %d", name, got, err, usage.MaxCounterMicro)
		}
	}
}

// TestCompensateTakesBackMeters: an event taken back out of its counters
// takes its contribution back out of the meters that add, once.
func TestCompensateTakesBackMeters(t *testing.T) {
	client, _ := testenv.RedisDB(t)
	at := time.Now().UTC()
	start := at.Add(-time.Hour).Truncate(time.Second)
	putRecord(t, client, "sub", start, start.AddDate(0, 1, 0), "meters", bytesMeter)
	items := []item{meteredItem("sub", 0, at, 60), meteredItem("sub", 1, at, 40)}
	s := newRedisSink(client)
	if _, _, err := s.apply(t.Context(), items); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.compensate(t.Context(), items[1:], "topic"); err != nil {
			t.Fatal(err)
		}
	}
	counter := enforcement.PeriodCounterName("sub", start)
	got, err := client.Do(t.Context(), client.B().Hget().Key(counter).Field("m:bytes").Build()).AsInt64()
	if err != nil || got != 60 {
		t.Fatalf("m:bytes = %d, %v; want 60", got, err)
	}
	wantCounterFields(t, client, "compensated", counter, "1", "1")
}

// TestCompensateRefundsTheMetersCounted: a plan change between the count
// and ClickHouse's refusal replaces the record's meters; the compensation
// takes back what the event added to the meters it was counted with, and
// adds nothing to those of the new record.
func TestCompensateRefundsTheMetersCounted(t *testing.T) {
	client, _ := testenv.RedisDB(t)
	at := time.Now().UTC()
	start := at.Add(-time.Hour).Truncate(time.Second)
	putRecord(t, client, "sub", start, start.AddDate(0, 1, 0), "meters", bytesMeter)
	items := []item{meteredItem("sub", 0, at, 60), meteredItem("sub", 1, at, 40)}
	s := newRedisSink(client)
	if _, _, err := s.apply(t.Context(), items); err != nil {
		t.Fatal(err)
	}
	changed := strings.ReplaceAll(bytesMeter, `"bytes"`, `"out"`)
	putRecord(t, client, "sub", start, start.AddDate(0, 1, 0), "meters", changed)
	// The records are read through the client-side cache, which learns of
	// the change from Redis's invalidation.
	for deadline := time.Now().Add(5 * time.Second); ; {
		p, err := s.periods(t.Context(), []subjectPartition{{"sub", 0}})
		if err == nil && p["sub"].Meters == changed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record meters after the change = %+v, %v; want %s", p["sub"], err, changed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.compensate(t.Context(), items[1:], "topic"); err != nil {
		t.Fatal(err)
	}
	counter := enforcement.PeriodCounterName("sub", start)
	got, err := client.Do(t.Context(), client.B().Hmget().Key(counter).Field("m:bytes", "m:out").Build()).ToArray()
	if err != nil {
		t.Fatal(err)
	}
	bytes, _ := got[0].ToString()
	if _, outErr := got[1].ToString(); bytes != "60" || outErr == nil {
		t.Fatalf("m:bytes, m:out = %v; want 60 and none", got)
	}
}
