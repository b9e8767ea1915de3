package processors_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/usage"
)

// TestSubjectOfAnotherAPIDeadLettered: a producer allowed to write for one
// API names as subject a subscription of another. The event goes to the
// dead-letter queue and usage_rejects with reason subject_api_mismatch and
// counts nowhere; the subscription's own API's event counts, and so does an
// event of a subject without a record (a canceled subscription's late
// event).
func TestSubjectOfAnotherAPIDeadLettered(t *testing.T) {
	e := setup(t)
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	victim, norecord := e.sub("victim"), e.sub("norecord")
	start, end := at.Add(-24*time.Hour), at.Add(24*time.Hour)
	if err := e.redis.Do(t.Context(), e.redis.B().Hset().Key(enforcement.SubscriptionName(victim)).FieldValue().
		FieldValue("api_id", "api_y").
		FieldValue("period_start", strconv.FormatInt(start.Unix(), 10)).
		FieldValue("period_end", strconv.FormatInt(end.Unix(), 10)).
		FieldValue("quota_requests", "1").FieldValue("quota_hard", "1").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.redis.Do(context.Background(), e.redis.B().Del().Key(enforcement.SubscriptionName(victim)).Build())
	})
	value := func(id, subject, api string) []byte {
		return fmt.Appendf(nil, `{"specversion":"1.0","id":"%s-%s","source":"/test","type":"veil.usage.record","time":%q,"subject":%q,"data":{"api_id":%q,"units":5}}`,
			e.prefix, id, at.Format(time.RFC3339), subject, api)
	}
	recs := []*kgo.Record{
		{Topic: e.raw, Key: []byte(victim), Value: value("spoof1", victim, "api_x")},
		{Topic: e.raw, Key: []byte(victim), Value: value("own", victim, "api_y")},
		{Topic: e.raw, Key: []byte(victim), Value: value("spoof2", victim, "api_x")},
		{Topic: e.raw, Key: []byte(norecord), Value: value("late", norecord, "api_x")},
	}
	if err := e.kafka.Client(t).ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	stop := e.start(t, "g-"+e.prefix)
	defer stop()
	testenv.Deadline(t, 60*time.Second, func() error {
		var rejects uint64
		if err := e.ch.QueryRow(t.Context(), "SELECT count() FROM usage_rejects WHERE reason = ?", string(processors.ReasonSubjectAPIMismatch)).Scan(&rejects); err != nil {
			return err
		}
		if rejects != 2 {
			return fmt.Errorf("usage_rejects holds %d %s rows; want 2", rejects, processors.ReasonSubjectAPIMismatch)
		}
		ids, err := e.eventIDs(t)
		if err != nil {
			return err
		}
		if fmt.Sprint(ids) != "[late own]" {
			return fmt.Errorf("usage_events ids = %v; want [late own]", ids)
		}
		for _, c := range []struct {
			key    string
			micros int64
		}{{processors.PeriodKey(victim, start), 5_000_000}, {processors.PeriodKey(norecord, monthStart(at)), 5_000_000}} {
			requests, micros, err := counter(t, e.redis, c.key)
			if err != nil {
				return err
			}
			if requests != 1 || micros != c.micros {
				return fmt.Errorf("redis %s = %d requests, %d units_micro; want 1, %d", c.key, requests, micros, c.micros)
			}
		}
		return nil
	})
	testenv.Deadline(t, 30*time.Second, func() error {
		dead := map[string]string{}
		for _, r := range e.kafka.ReadAll(t, e.dlq) {
			ev, err := usage.Decode(r.Value)
			if err != nil {
				return fmt.Errorf("dead letter %s: %w", r.Value, err)
			}
			for _, hd := range r.Headers {
				if hd.Key == processors.HeaderError {
					dead[strings.TrimPrefix(ev.ID, e.prefix+"-")] = string(hd.Value)
				}
			}
		}
		want := string(processors.ReasonSubjectAPIMismatch)
		if len(dead) != 2 || dead["spoof1"] != want || dead["spoof2"] != want {
			return fmt.Errorf("dead letters = %v; want spoof1 and spoof2 with %s", dead, want)
		}
		return nil
	})
}
