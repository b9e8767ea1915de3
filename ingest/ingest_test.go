package ingest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/usage"
)

const token = "test-token-0123456789abcdef"

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

type fixture struct {
	kafka *testenv.Kafka
	topic string
	srv   *httptest.Server
}

// setup starts an ingest handler that produces to a fresh topic on the
// broker selected by VEIL_TEST_BROKER (or on kfake when fake is true).
func setup(t *testing.T, fake bool, mod func(*ingest.Config)) *fixture {
	t.Helper()
	k := testenv.NewKafka(t)
	if fake {
		k = testenv.NewFakeKafka(t)
	}
	topic := k.Topic(t, 3)
	cfg := ingest.Config{
		Logger:     testenv.Logger(t),
		Metrics:    metrics.NewSet(),
		Producer:   k.Client(t, kgo.RecordRetries(1<<30)),
		Topic:      topic,
		Tokens:     []string{token},
		Now:        func() time.Time { return now },
		AckTimeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := ingest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Routes())
	t.Cleanup(srv.Close)
	return &fixture{kafka: k, topic: topic, srv: srv}
}

// event is a usage record of the subscription that name stands for.
func event(id, name string, at time.Time) string {
	return fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/test","type":"veil.usage.record","time":%q,"subject":%q,"data":{"api_id":"api_1","units":2.5}}`,
		id, at.Format(time.RFC3339), subscriptionID(name))
}

// subscriptionID is a stable subscription id for a name.
func subscriptionID(name string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)).String()
}

type answer struct {
	Status     int
	RetryAfter string
	CType      string
	Body       map[string]any
}

func (f *fixture) post(t *testing.T, contentType, body string, auth string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/events", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), CType: resp.Header.Get("Content-Type")}
	if err := json.Unmarshal(raw, &a.Body); err != nil {
		t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return a
}

func ids(recs []*kgo.Record) map[string]*kgo.Record {
	out := map[string]*kgo.Record{}
	for _, r := range recs {
		var e struct{ ID string }
		_ = json.Unmarshal(r.Value, &e)
		out[e.ID] = r
	}
	return out
}

func TestAcceptsEachMediaType(t *testing.T) {
	f := setup(t, false, nil)
	tests := []struct {
		name, ctype, body string
		ids               []string
	}{
		{"single", "application/cloudevents+json; charset=utf-8", event("s1", "sub_a", now), []string{"s1"}},
		{"batch", ingest.MediaTypeBatch, "[" + event("b1", "sub_a", now) + "," + event("b2", "sub_b", now) + "]", []string{"b1", "b2"}},
		{"ndjson with blank lines", ingest.MediaTypeNDJSON, event("n1", "sub_c", now) + "\n\n" + event("n2", "sub_c", now) + "\r\n", []string{"n1", "n2"}},
	}
	want := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := f.post(t, tc.ctype, tc.body, "Bearer "+token)
			if a.Status != http.StatusAccepted || a.Body["accepted"] != float64(len(tc.ids)) {
				t.Fatalf("POST = %d %v; want 202 with accepted %d", a.Status, a.Body, len(tc.ids))
			}
		})
		for _, id := range tc.ids {
			want[id] = true
		}
	}
	got := ids(f.kafka.ReadAll(t, f.topic))
	if len(got) != len(want) {
		t.Fatalf("topic holds %d events; want %d", len(got), len(want))
	}
	for id := range want {
		r, ok := got[id]
		if !ok {
			t.Fatalf("event %s acknowledged but not in the topic", id)
		}
		e, err := usage.Decode(r.Value)
		if err != nil {
			t.Fatalf("record %s does not decode: %v", id, err)
		}
		if string(r.Key) != e.Subject {
			t.Fatalf("record key = %q; want the subject %q", r.Key, e.Subject)
		}
	}
}

func TestPartialBatch(t *testing.T) {
	f := setup(t, false, nil)
	body := "[" + strings.Join([]string{
		event("ok1", "sub_a", now),
		`{"specversion":"1.0","id":"bad1"}`,
		event("ok2", "sub_a", now),
		event("late", "sub_a", now.Add(-40*24*time.Hour)),
	}, ",") + "]"
	a := f.post(t, ingest.MediaTypeBatch, body, "Bearer "+token)
	if a.Status != http.StatusMultiStatus || a.CType != "application/problem+json" {
		t.Fatalf("POST = %d %s; want 207 problem+json", a.Status, a.CType)
	}
	if a.Body["accepted"] != float64(2) || a.Body["rejected"] != float64(2) {
		t.Fatalf("body = %v; want accepted 2, rejected 2", a.Body)
	}
	errs := a.Body["errors"].([]any)
	first, second := errs[0].(map[string]any), errs[1].(map[string]any)
	if first["index"] != float64(1) || first["reason"] != "missing_field" || first["id"] != "bad1" {
		t.Fatalf("errors[0] = %v; want index 1 missing_field id bad1", first)
	}
	if second["index"] != float64(3) || second["reason"] != "time_too_old" || second["id"] != "late" {
		t.Fatalf("errors[1] = %v; want index 3 time_too_old id late", second)
	}
	got := ids(f.kafka.ReadAll(t, f.topic))
	if len(got) != 2 || got["ok1"] == nil || got["ok2"] == nil {
		t.Fatalf("topic holds %v; want exactly ok1 and ok2", slices.Sorted(maps.Keys(got)))
	}
}

func TestRefusals(t *testing.T) {
	f := setup(t, false, func(c *ingest.Config) {
		c.MaxBodyBytes = 4096
		c.MaxEvents = 3
	})
	big := event("big", "sub", now)
	big = big[:len(big)-1] + `,"ext":"` + strings.Repeat("x", 5000) + `"}`
	four := strings.Repeat(event("x", "s", now)+"\n", 4)
	tests := []struct {
		name, ctype, body, auth string
		status                  int
		typ                     string
		reason                  string
	}{
		{"no token", ingest.MediaTypeEvent, event("a", "s", now), "", 401, "unauthorized", ""},
		{"wrong token", ingest.MediaTypeEvent, event("a", "s", now), "Bearer nope-nope-nope-nope", 401, "unauthorized", ""},
		{"basic auth", ingest.MediaTypeEvent, event("a", "s", now), "Basic " + token, 401, "unauthorized", ""},
		{"unsupported type", "text/plain", event("a", "s", now), "Bearer " + token, 415, "unsupported-media-type", ""},
		{"missing type", "", event("a", "s", now), "Bearer " + token, 415, "unsupported-media-type", ""},
		{"body too large", ingest.MediaTypeEvent, big, "Bearer " + token, 413, "body-too-large", ""},
		{"too many events ndjson", ingest.MediaTypeNDJSON, four, "Bearer " + token, 413, "too-many-events", ""},
		{"too many events batch", ingest.MediaTypeBatch, "[" + strings.Repeat(event("x", "s", now)+",", 3) + event("x", "s", now) + "]", "Bearer " + token, 413, "too-many-events", ""},
		{"batch not an array", ingest.MediaTypeBatch, event("a", "s", now), "Bearer " + token, 400, "malformed-body", ""},
		{"empty", ingest.MediaTypeNDJSON, "\n\n", "Bearer " + token, 400, "empty-request", ""},
		{"malformed json", ingest.MediaTypeEvent, `{"id":`, "Bearer " + token, 400, "invalid-events", "malformed_json"},
		{"in the future", ingest.MediaTypeEvent, event("f", "s", now.Add(6*time.Minute)), "Bearer " + token, 400, "invalid-events", "time_in_future"},
		{"too old", ingest.MediaTypeEvent, event("o", "s", now.Add(-36*24*time.Hour)), "Bearer " + token, 400, "invalid-events", "time_too_old"},
		{"negative units", ingest.MediaTypeEvent, strings.Replace(event("u", "s", now), "2.5", "-1", 1), "Bearer " + token, 400, "invalid-events", "invalid_units"},
		{"unknown type", ingest.MediaTypeEvent, strings.Replace(event("u", "s", now), "veil.usage.record", "x.y", 1), "Bearer " + token, 400, "invalid-events", "unknown_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := f.post(t, tc.ctype, tc.body, tc.auth)
			if a.Status != tc.status || a.Body["type"] != "https://veil.dev/problems/"+tc.typ {
				t.Fatalf("POST = %d %v; want %d %s", a.Status, a.Body, tc.status, tc.typ)
			}
			if a.CType != "application/problem+json" {
				t.Fatalf("Content-Type = %q; want application/problem+json", a.CType)
			}
			if tc.reason != "" {
				errs, _ := a.Body["errors"].([]any)
				if len(errs) != 1 || errs[0].(map[string]any)["reason"] != tc.reason || errs[0].(map[string]any)["index"] != float64(0) {
					t.Fatalf("errors = %v; want one at index 0 with reason %s", errs, tc.reason)
				}
			}
		})
	}
	if got := f.kafka.ReadAll(t, f.topic); len(got) != 0 {
		t.Fatalf("topic holds %d records after refusals only; want 0", len(got))
	}
}

// TestBrokerOutage makes the broker refuse produces while clients keep
// posting: requests during the outage get 503 with Retry-After and report
// nothing accepted; every event ever reported accepted is in the topic.
func TestBrokerOutage(t *testing.T) {
	f := setup(t, true, func(c *ingest.Config) { c.AckTimeout = 300 * time.Millisecond })

	post := func(id string) answer {
		return f.post(t, ingest.MediaTypeBatch, "["+event(id+"-a", "sub_"+id, now)+","+event(id+"-b", "sub_z", now)+"]", "Bearer "+token)
	}
	if a := post("before"); a.Status != http.StatusAccepted {
		t.Fatalf("before the outage: %d %v; want 202", a.Status, a.Body)
	}

	fault := f.kafka.Fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	a := post("during")
	if a.Status != http.StatusServiceUnavailable || a.RetryAfter == "" || a.Body["accepted"] != float64(0) {
		t.Fatalf("during the outage: %d Retry-After=%q %v; want 503 with Retry-After and accepted 0", a.Status, a.RetryAfter, a.Body)
	}

	// Concurrent posts while the broker is down and as it comes back: each
	// worker posts until it has seen three 202s after the recovery, within a
	// deadline. Whatever got 202 must be in the topic.
	var (
		mu       sync.Mutex
		acked    []string
		statuses = map[int]int{}
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(60 * time.Second)
	time.AfterFunc(500*time.Millisecond, fault.Remove)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, ok := 0, 0; ok < 3 && time.Now().Before(deadline); i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				a := post(id)
				mu.Lock()
				statuses[a.Status]++
				if a.Status == http.StatusAccepted {
					ok++
					acked = append(acked, id+"-a", id+"-b")
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if statuses[http.StatusServiceUnavailable] == 0 || statuses[http.StatusAccepted] != 12 {
		t.Fatalf("statuses = %v; want 503s during the outage and 12 202s after it", statuses)
	}
	if a := post("after"); a.Status != http.StatusAccepted {
		t.Fatalf("after the outage: %d %v; want 202", a.Status, a.Body)
	}
	acked = append(acked, "before-a", "before-b", "after-a", "after-b")

	got := ids(f.kafka.ReadAll(t, f.topic))
	for _, id := range acked {
		if got[id] == nil {
			t.Fatalf("event %s was reported accepted but is not in the topic", id)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	base := ingest.Config{Logger: testenv.Logger(t), Metrics: metrics.NewSet(), Producer: &kgo.Client{}, Tokens: []string{token}}
	tests := []struct {
		name string
		mod  func(*ingest.Config)
		ok   bool
	}{
		{"valid", func(*ingest.Config) {}, true},
		{"no tokens", func(c *ingest.Config) { c.Tokens = nil }, false},
		{"short token", func(c *ingest.Config) { c.Tokens = []string{"short"} }, false},
		{"no producer", func(c *ingest.Config) { c.Producer = nil }, false},
		{"negative limit", func(c *ingest.Config) { c.MaxEvents = -1 }, false},
	}
	for _, tc := range tests {
		c := base
		tc.mod(&c)
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v; want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestMetricsCountRejections(t *testing.T) {
	set := metrics.NewSet()
	f := setup(t, true, func(c *ingest.Config) { c.Metrics = set })
	f.post(t, ingest.MediaTypeEvent, event("f", "s", now.Add(time.Hour)), "Bearer "+token)
	f.post(t, ingest.MediaTypeEvent, event("g", "s", now), "Bearer "+token)
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	for _, want := range []string{
		`veil_ingest_events_rejected_total{reason="time_in_future"} 1`,
		`veil_ingest_events_accepted_total 1`,
		`veil_ingest_requests_total{code="400"} 1`,
		`veil_ingest_requests_total{code="202"} 1`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, buf.String())
		}
	}
}
