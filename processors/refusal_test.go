package processors_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestGatewayRefusalsStoredNotCounted sends a mix of admitted requests and
// requests the gateway refused itself, with duplicates of both: ClickHouse
// holds every unique event once with its refusal, the Redis counters count
// only the admitted ones, and every event still moves the watermark. A
// second group replaying the topic from the start changes nothing.
func TestGatewayRefusalsStoredNotCounted(t *testing.T) {
	e := setup(t)
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	mixed, refusedOnly := e.sub("mixed"), e.sub("refused")
	type event struct {
		id, subject, refusal string
		status               int
		units                string
	}
	events := []event{
		{"a1", mixed, "", 200, "1.5"},
		{"r1", mixed, "invalid_key", 401, "1"},
		{"a2", mixed, "", 404, "0.25"}, // the upstream's own 404: admitted, counted
		{"r2", mixed, "rate_limited", 429, "1"},
		{"r3", mixed, "quota_exhausted", 429, "2"},
		{"r4", refusedOnly, "key_revoked", 403, "1"},
		{"r5", refusedOnly, "rate_limited", 429, "1"},
		{"r2", mixed, "rate_limited", 429, "1"},       // duplicate of a refusal
		{"a1", mixed, "", 200, "1.5"},                 // duplicate of an admitted request
		{"r5", refusedOnly, "rate_limited", 429, "1"}, // duplicate, last of its subject
	}
	var recs []*kgo.Record
	for _, ev := range events {
		value := requestEvent(e.prefix+"-"+ev.id, ev.subject, at, ev.status, ev.units, ev.refusal)
		recs = append(recs, &kgo.Record{Topic: e.raw, Key: []byte(ev.subject), Value: value})
	}
	e.send(t, recs...)
	// Each subject's records share a partition; its watermark ends at its
	// last unique event.
	type position struct {
		partition int32
		offset    int64
	}
	lastUnique := map[string]position{}
	seen := map[string]bool{}
	for i, r := range recs {
		if id := events[i].id; !seen[id] {
			seen[id] = true
			lastUnique[events[i].subject] = position{r.Partition, r.Offset}
		}
	}

	wantRefusal := map[string]string{}
	for _, ev := range events {
		wantRefusal[e.prefix+"-"+ev.id] = ev.refusal
	}
	day := at.Format("20060102")
	check := func() error {
		rows, err := e.ch.Query(t.Context(), "SELECT id, refusal FROM usage_events")
		if err != nil {
			return err
		}
		defer rows.Close()
		got := map[string]string{}
		n := 0
		for rows.Next() {
			var id, refusal string
			if err := rows.Scan(&id, &refusal); err != nil {
				return err
			}
			got[id] = refusal
			n++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if n != len(wantRefusal) {
			return fmt.Errorf("usage_events holds %d rows; want %d", n, len(wantRefusal))
		}
		for id, want := range wantRefusal {
			if r, ok := got[id]; !ok || r != want {
				return fmt.Errorf("usage_events refusal of %s = %q (present %v); want %q", id, r, ok, want)
			}
		}
		if err := e.checkCounters(t,
			counterWant{enforcement.PeriodCounterName(mixed, monthStart(at)), 2, 1_750_000},
			counterWant{"veil:usage:{" + mixed + "}:k:key_1:" + day, 2, 1_750_000},
			counterWant{enforcement.PeriodCounterName(refusedOnly, monthStart(at)), 0, 0},
			counterWant{"veil:usage:{" + refusedOnly + "}:k:key_1:" + day, 0, 0},
		); err != nil {
			return err
		}
		for subject, pos := range lastUnique {
			wm, err := e.redis.Do(t.Context(), e.redis.B().Hget().Key(enforcement.WatermarkName(subject)).
				Field(fmt.Sprint(pos.partition)).Build()).AsInt64()
			if err != nil || wm != pos.offset {
				return fmt.Errorf("watermark of %s on partition %d = %d (%v); want %d", subject, pos.partition, wm, err, pos.offset)
			}
		}
		return nil
	}

	stop := e.start(t, "g1-"+e.prefix)
	testenv.Deadline(t, 60*time.Second, check)
	stop()

	stop = e.start(t, "g2-"+e.prefix)
	defer stop()
	testenv.Deadline(t, 60*time.Second, e.caughtUp(t, "g2-"+e.prefix))
	if err := check(); err != nil {
		t.Fatalf("after a replay from the start: %v", err)
	}
}
