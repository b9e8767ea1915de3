package processors_test

import (
	"fmt"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
)

// meteredEvent is the JSON of a gateway's request event with every field
// a meter can select or aggregate.
type meteredEvent struct {
	method, path     string
	status           int
	key              string
	latency, respond int
	units, refusal   string
}

func (m meteredEvent) json(id, subject string, at time.Time) []byte {
	refusal, key := "", ""
	if m.refusal != "" {
		refusal = fmt.Sprintf(`,"refusal":%q`, m.refusal)
	}
	if m.key != "" {
		key = fmt.Sprintf(`"key_id":%q,`, m.key)
	}
	return fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"source":"/gateway/test","type":"veil.api.request","time":%q,"subject":%q,"data":{"api_id":"api_1",%s"method":%q,"route":"/r","path":%q,"status":%d,"latency_ms":%d,"request_bytes":1,"response_bytes":%d,"units":%s%s}}`,
		id, at.Format(time.RFC3339), subject, key, m.method, m.path, m.status, m.latency, m.respond, m.units, refusal)
}

// testMeters is the meters field of the test records: one meter per
// aggregation, with filters of each kind, and a hard quota of 200
// response bytes.
const testMeters = `[` +
	`{"slug":"gets","aggregation":"count","field":"","filter":{"methods":["GET"],"routes":[],"status_classes":["2xx"]},"quota_hard":false},` +
	`{"slug":"v1-units","aggregation":"sum","field":"units","filter":{"methods":[],"routes":["/v1/*"],"status_classes":[]},"quota_hard":false},` +
	`{"slug":"peak","aggregation":"max","field":"latency_ms","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false},` +
	`{"slug":"post-keys","aggregation":"unique_count","field":"key_id","filter":{"methods":["POST"],"routes":[],"status_classes":[]},"quota_hard":false},` +
	`{"slug":"bytes","aggregation":"sum","field":"response_bytes","filter":{"methods":[],"routes":[],"status_classes":[]},"quota":"200","quota_hard":true}]`

// meterValues reads every meter of testMeters from subject's counter.
func (e *env) meterValues(t *testing.T, subject string, start time.Time) (map[string]int64, error) {
	specs, err := enforcement.DecodeMeters(testMeters)
	if err != nil {
		t.Fatal(err)
	}
	st, err := enforcement.ReadMeterCounters(t.Context(), e.redis, []enforcement.MetersOf{{ID: subject, Start: start, Meters: specs}})
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, m := range specs {
		if out[m.Slug], err = st[0].Value(m.Slug); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TestMetersCounted: through a running processor, each meter of the
// subscription record counts the billable events its filter selects (a
// 5xx, a gateway refusal and events outside the filter add nothing), a
// group that reads the whole topic again changes no meter, and the hard
// quota of a meter blocks the subscription and is announced naming it.
func TestMetersCounted(t *testing.T) {
	e := setupQuota(t)
	quotaTopic := e.kafka.Topic(t, 1)
	subject := e.sub("meters")
	now := time.Now().UTC().Truncate(time.Second)
	start, end := now.Add(-time.Hour), now.Add(30*24*time.Hour)
	e.putRecord(t, subject, start, end, "api_id", "api_1", "quota_requests", "-1", "quota_hard", "0", "meters", testMeters)

	events := []meteredEvent{
		{"GET", "/v1/a", 200, "k1", 10, 100, "1.5", ""},
		{"GET", "/v1/b", 404, "k2", 30, 50, "2", ""},
		{"POST", "/v2/x", 201, "k1", 5, 10, "0.25", ""},
		{"POST", "/v1/c", 500, "k3", 999, 1000, "7", ""},            // 5xx: never billable
		{"GET", "/v1/d", 429, "k4", 800, 1000, "9", "rate_limited"}, // refused by the gateway
		{"POST", "/v2/y", 302, "k2", 20, 5, "1", ""},
		{"DELETE", "/v1/e", 204, "", 7, 0, "0", ""},
		{"POST", "/v1/f", 200, "k1", 1, 35, "0.000001", ""},
	}
	var recs []*kgo.Record
	for i, ev := range events {
		recs = append(recs, &kgo.Record{Topic: e.raw, Key: []byte(subject), Value: ev.json(e.prefix+"-"+strconv.Itoa(i), subject, now.Add(-time.Minute))})
	}
	e.send(t, recs...)
	want := map[string]int64{"gets": 1, "v1-units": 3_500_001, "peak": 30, "post-keys": 2, "bytes": 200}

	run := func(group string) {
		t.Helper()
		stop := e.startWith(t, group, func(c *processors.Config) { c.QuotaTopic = quotaTopic; c.QuotaSweepInterval = time.Hour })
		defer stop()
		testenv.Deadline(t, 60*time.Second, func() error {
			if err := e.caughtUp(t, group)(); err != nil {
				return err
			}
			got, err := e.meterValues(t, subject, start)
			if err != nil || !maps.Equal(got, want) {
				return fmt.Errorf("meters = %v, %v; want %v", got, err, want)
			}
			if l := outboxLen(t, e.redis, subject); l != 0 {
				return fmt.Errorf("outbox holds %d lines; want 0", l)
			}
			return nil
		})
	}
	run("g1-" + e.prefix)
	// A group that reads the topic from its start replays every batch.
	run("g2-" + e.prefix)
	if got, err := e.meterValues(t, subject, start); err != nil || !maps.Equal(got, want) {
		t.Fatalf("after the replay: meters = %v, %v; want %v", got, err, want)
	}
	if err := e.checkCounters(t, counterWant{enforcement.PeriodCounterName(subject, start), 7, 11_750_001}); err != nil {
		t.Fatal(err)
	}

	until, err := enforcement.New(e.redis).BlockedUntilCached(t.Context(), subject, time.Second)
	if err != nil || !until.Equal(end) {
		t.Fatalf("BlockedUntilCached = %v, %v; want %v: the bytes meter's hard quota is used up", until, err, end)
	}
	got := quotaEvents(t, e.kafka, quotaTopic)
	if len(got) != 3 {
		t.Fatalf("quota events = %+v; want the three thresholds of the bytes meter, once each", got)
	}
	for i, pct := range enforcement.Thresholds {
		if c := got[i]; c.Meter != "bytes" || c.Threshold != pct || c.Quota != 200 || !c.Hard || c.SubscriptionID != subject {
			t.Errorf("quota event %d = %+v; want the bytes meter's %d%% of 200, hard", i, c, pct)
		}
	}
}
