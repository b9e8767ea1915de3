package processors_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
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
		refusal := ""
		if ev.refusal != "" {
			refusal = fmt.Sprintf(`,"refusal":%q`, ev.refusal)
		}
		value := fmt.Sprintf(`{"specversion":"1.0","id":"%s-%s","source":"/gateway/test","type":"veil.api.request","time":%q,"subject":%q,"data":{"api_id":"api_1","key_id":"key_1","method":"GET","route":"/r","path":"/r","status":%d,"latency_ms":1,"request_bytes":1,"response_bytes":2,"units":%s%s}}`,
			e.prefix, ev.id, at.Format(time.RFC3339), ev.subject, ev.status, ev.units, refusal)
		recs = append(recs, &kgo.Record{Topic: e.raw, Key: []byte(ev.subject), Value: []byte(value)})
	}
	if err := e.kafka.Client(t).ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
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
		for _, c := range []struct {
			key              string
			requests, micros int64
		}{
			{processors.PeriodKey(mixed, monthStart(at)), 2, 1_750_000},
			{"veil:usage:{" + mixed + "}:k:key_1:" + day, 2, 1_750_000},
			{processors.PeriodKey(refusedOnly, monthStart(at)), 0, 0},
			{"veil:usage:{" + refusedOnly + "}:k:key_1:" + day, 0, 0},
		} {
			requests, micros, err := counter(t, e.redis, c.key)
			if err != nil {
				return err
			}
			if requests != c.requests || micros != c.micros {
				return fmt.Errorf("redis %s = %d requests, %d units_micro; want %d, %d", c.key, requests, micros, c.requests, c.micros)
			}
		}
		for subject, pos := range lastUnique {
			wm, err := e.redis.Do(t.Context(), e.redis.B().Hget().Key(processors.WatermarkKey(subject)).
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
	testenv.Deadline(t, 60*time.Second, func() error {
		lag, err := e.kafka.GroupLag(t, "g2-"+e.prefix, e.raw)
		if err != nil {
			return err
		}
		if lag != 0 {
			return fmt.Errorf("group lag %d", lag)
		}
		return nil
	})
	if err := check(); err != nil {
		t.Fatalf("after a replay from the start: %v", err)
	}
}

// counter reads a Redis counter hash; a missing hash reads as zeros.
func counter(t *testing.T, client rueidis.Client, key string) (requests, micros int64, err error) {
	vals, err := client.Do(t.Context(), client.B().Hmget().Key(key).Field("requests", "units_micro").Build()).ToArray()
	if err != nil {
		return 0, 0, err
	}
	read := func(v rueidis.RedisMessage) (int64, error) {
		n, err := v.AsInt64()
		if rueidis.IsRedisNil(err) {
			return 0, nil
		}
		return n, err
	}
	if requests, err = read(vals[0]); err != nil {
		return 0, 0, errors.Join(fmt.Errorf("read %s requests", key), err)
	}
	if micros, err = read(vals[1]); err != nil {
		return 0, 0, errors.Join(fmt.Errorf("read %s units_micro", key), err)
	}
	return requests, micros, nil
}
