package caddyveil

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/usage"
)

// anonymousFixture is a handler with the real emitter on a fresh topic of
// the test broker; requests without a key touch nothing else.
type anonymousFixture struct {
	h     *Handler
	kafka *testenv.Kafka
	topic string
	er    *eventResources
}

func newAnonymousFixture(t *testing.T, partitions int32, sampleRate, perIP int) *anonymousFixture {
	return newAnonymousFixtureLimited(t, partitions, sampleRate, perIP, DefaultAnonymousEventsPerMinute)
}

// newAnonymousFixtureLimited is newAnonymousFixture with an overall bound
// of perMinute events.
func newAnonymousFixtureLimited(t *testing.T, partitions int32, sampleRate, perIP, perMinute int) *anonymousFixture {
	t.Helper()
	k := testenv.NewKafka(t)
	topic := k.Topic(t, partitions)
	app := App{Brokers: k.Brokers, Topic: topic, SpoolDir: t.TempDir(), Source: "/gateway/anon-" + testenv.Suffix()}
	er, err := newEventResources(app, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	app.anon = newAnonymousGate(sampleRate, perIP, perMinute)
	h := &Handler{APIID: testAPI, PathPrefix: "/weather", app: &app, res: &resources{
		redisResources: &redisResources{m: newHandlerMetrics(metrics.NewSet())}, eventResources: er, log: testenv.Logger(t)}}
	return &anonymousFixture{h: h, kafka: k, topic: topic, er: er}
}

// flood sends n requests without a key, from the client IP ip(i), and
// checks each gets the usual 401.
func (f *anonymousFixture) flood(t *testing.T, n int, ip func(int) string) {
	t.Helper()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Fatal("a request without a key reached the upstream")
		return nil
	})
	for i := range n {
		r := httptest.NewRequest(http.MethodGet, "/weather/alerts", nil)
		r.RemoteAddr = ip(i) + ":40000"
		w := httptest.NewRecorder()
		if err := f.h.ServeHTTP(w, r, next); err != nil || w.Code != http.StatusUnauthorized {
			t.Fatalf("request %d without a key = %d, %v; want 401", i, w.Code, err)
		}
	}
}

// events flushes the emitter and returns what reached the topic, by partition.
func (f *anonymousFixture) events(t *testing.T) (total int, byPartition map[int32]int) {
	t.Helper()
	// Under load the emitter may spool instead of producing, and Close does
	// not replay the spool: wait until everything emitted is acknowledged.
	testenv.Deadline(t, 30*time.Second, func() error {
		s := f.er.emitter.Stats()
		if s.DroppedTotal() > 0 {
			t.Fatalf("emitter dropped events: %+v", s)
		}
		if s.Spooling || s.Queued > 0 || s.InFlight > 0 || s.SpoolSegments > 0 || s.Produced < s.Emitted {
			return fmt.Errorf("emitter not drained: %+v", s)
		}
		return nil
	})
	if err := f.er.Destruct(); err != nil {
		t.Fatal(err)
	}
	byPartition = map[int32]int{}
	for _, r := range f.kafka.ReadAll(t, f.topic) {
		e, err := usage.Decode(r.Value)
		if err != nil {
			t.Fatalf("event on the topic does not decode: %v", err)
		}
		if e.Subject != anonymousSubject || e.Data.Refusal != "missing_key" || !strings.HasPrefix(string(r.Key), anonymousSubject+"/") {
			t.Fatalf("event subject %q, refusal %q, key %q; want anonymous, missing_key, a key anonymous/…", e.Subject, e.Data.Refusal, r.Key)
		}
		byPartition[r.Partition]++
		total++
	}
	return total, byPartition
}

// TestAnonymousFloodSampledAndSpread: 2,000 requests without a key from 400
// addresses, sampled 1 in 20: every one is counted and answered 401, exactly
// 100 become events, and those are spread over the topic's partitions
// instead of piling onto the one the key "anonymous" hashes to.
func TestAnonymousFloodSampledAndSpread(t *testing.T) {
	f := newAnonymousFixture(t, 8, 20, DefaultAnonymousEventsPerIPMinute)
	f.flood(t, 2000, func(i int) string { return fmt.Sprintf("198.51.%d.%d", i%400/200, i%200) })
	if got := f.h.res.m.anonymousRefusals.Get(); got != 2000 {
		t.Fatalf("veil_gateway_anonymous_refusals_total = %d; want 2000", got)
	}
	total, byPartition := f.events(t)
	if total != 100 {
		t.Fatalf("the topic holds %d anonymous events; want 100 (1 in 20 of 2000)", total)
	}
	most := 0
	for _, n := range byPartition {
		most = max(most, n)
	}
	// Spread at random over 8 partitions, 100 events leave each about 12;
	// one partition holding half of them would take odds below 10^-20.
	if len(byPartition) < 4 || most > 50 {
		t.Fatalf("anonymous events by partition = %v; want them spread over the 8 partitions", byPartition)
	}
}

// TestAnonymousEventsLimitedPerIP: every anonymous refusal sampled, at most
// 5 events per client IP and minute: a flood from one address yields 5
// events, another address keeps its own 5, and every request is still
// answered 401 and counted.
func TestAnonymousEventsLimitedPerIP(t *testing.T) {
	f := newAnonymousFixture(t, 3, 1, 5)
	f.flood(t, 50, func(int) string { return "203.0.113.7" })
	f.flood(t, 3, func(int) string { return "203.0.113.8" })
	if got, limited := f.h.res.m.anonymousRefusals.Get(), f.h.res.m.anonymousIPLimited.Get(); got != 53 || limited != 45 {
		t.Fatalf("anonymous refusals counted %d, IP-limited %d; want 53, 45", got, limited)
	}
	if total, _ := f.events(t); total != 8 {
		t.Fatalf("the topic holds %d anonymous events; want 8 (5 from the flooding address, 3 from the other)", total)
	}
}

// TestAnonymousEventsLimitedOverall: a flood whose client IPs are all
// different (forged X-Forwarded-For through a trusted proxy) passes every
// per-IP budget, yet at most the overall bound of events a minute is
// written; every request is still answered 401 and counted.
func TestAnonymousEventsLimitedOverall(t *testing.T) {
	f := newAnonymousFixtureLimited(t, 3, 1, 5, 20)
	f.flood(t, 200, func(i int) string { return fmt.Sprintf("198.51.100.%d", i) })
	m := f.h.res.m
	if got, limited, ipLimited := m.anonymousRefusals.Get(), m.anonymousLimited.Get(), m.anonymousIPLimited.Get(); got != 200 || limited != 180 || ipLimited != 0 {
		t.Fatalf("anonymous refusals counted %d, limited overall %d, IP-limited %d; want 200, 180, 0", got, limited, ipLimited)
	}
	if total, _ := f.events(t); total > 20 {
		t.Fatalf("the topic holds %d anonymous events; want at most 20", total)
	}
}
