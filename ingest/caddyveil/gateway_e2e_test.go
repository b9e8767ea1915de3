package caddyveil_test

// End-to-end tests of the gateway as it runs in production: `veil gateway
// run` child processes in front of a real upstream, reading key records and
// rate limits from the real Redis and sending events to a Kafka broker.
// Their names contain "Gateway", so make test runs them once, in the pass
// against the real broker.
//
// The file is an external test package on purpose: it needs nothing of the
// package's internals, and its helpers (e2e…) cannot collide with those of
// the package's own tests.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/testenv"
)

// e2eWait bounds the wait for a gateway's first events: generous for a
// loaded CI machine.
const e2eWait = 60 * time.Second

// e2eAPI is the API behind the gateways' /api route.
const e2eAPI = "api_e2e"

// TestGatewaysShareRateLimit hammers one subscription through three
// gateway processes at once: together they admit what one limit allows,
// because the limit lives in Redis and is decided on Redis's clock.
func TestGatewaysShareRateLimit(t *testing.T) {
	t.Parallel()
	const (
		rate      = 50 // per second; the burst is the rate
		gateways  = 3
		workers   = 4 // per gateway
		hammerFor = 3 * time.Second
	)
	rdb, db := testenv.RedisDB(t)
	k := testenv.NewKafka(t)
	topic := k.Topic(t, 3)
	up := e2eUpstream(t)
	store := enforcement.New(rdb)
	sub := uuid.NewString()
	e2ePutSubscription(t, store, sub, rate, 0)
	key := e2eNewKey(t, store, sub)

	gws := make([]*e2eGateway, gateways)
	for i := range gws {
		gws[i] = spawnE2EGateway(t, e2eGatewayConfig{
			redisDB: db, brokers: k.Brokers, topic: topic, upstream: up,
			// A decision Redis could not make must not pass for a
			// shared one: refuse rather than admit locally.
			onRedisError: "deny",
		})
	}
	for _, gw := range gws {
		gw.WaitReady(t)
	}

	// Warm each gateway up (connections, client-side caches) with one
	// admitted request, then wait until the limit's budget is full again:
	// its state expires from Redis at that moment.
	clients := make([]*http.Client, gateways)
	for i, gw := range gws {
		clients[i] = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
		t.Cleanup(clients[i].CloseIdleConnections)
		if status, _ := e2eGet(t, clients[i], gw.url+"/api/warm", key); status != http.StatusOK {
			t.Fatalf("warm-up GET through gateway %d = %d; want 200", i, status)
		}
	}
	limitState := "veil:rl:{" + sub + "}:s:s"
	testenv.Deadline(t, 10*time.Second, func() error {
		n, err := rdb.Do(t.Context(), rdb.B().Exists().Key(limitState).Build()).AsInt64()
		if err == nil && n != 0 {
			err = fmt.Errorf("%s still exists: the budget is not full yet", limitState)
		}
		return err
	})

	var (
		wg                sync.WaitGroup
		admitted, refused atomic.Int64
		degraded          atomic.Int64 // 503: Redis did not answer in time
		mu                sync.Mutex
		bad               []string // answers other than 200 or a proper 429
	)
	report := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if len(bad) < 10 {
			bad = append(bad, s)
		}
	}
	start := time.Now()
	stop := start.Add(hammerFor)
	for i, gw := range gws {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) && t.Context().Err() == nil {
					status, h := e2eGet(t, clients[i], gw.url+"/api/items/1", key)
					switch {
					case status == http.StatusOK:
						admitted.Add(1)
					case status == http.StatusTooManyRequests:
						refused.Add(1)
						if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 {
							report(fmt.Sprintf("429 with Retry-After %q; want whole seconds, at least 1", h.Get("Retry-After")))
						}
					case status == http.StatusServiceUnavailable && h.Get("Retry-After") != "":
						// Redis did not answer within the limiter's
						// timeout (a starved machine): deny mode refuses,
						// but the script may still have run and spent
						// the slot, so such a call may count either way.
						degraded.Add(1)
					default:
						report(fmt.Sprintf("gateway %d answered %d; want 200 or 429", i, status))
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, s := range bad {
		t.Error(s)
	}

	// GCRA admits the burst at once, then one request every 1/rate.
	want := rate + elapsed.Seconds()*rate
	got := admitted.Load()
	t.Logf("%d gateways, %d clients: %d admitted, %d refused (429), %d degraded (503) in %s; theoretical %.1f (burst %d + %.3fs × %d/s)",
		gateways, gateways*workers, got, refused.Load(), degraded.Load(), elapsed.Round(time.Millisecond), want, rate, elapsed.Seconds(), rate)
	// Never more than the limit; and short of it by no more than 1% once
	// the timed-out calls (each of which may have spent a slot) are
	// counted as spent.
	if float64(got) > 1.01*want || float64(got+degraded.Load()) < 0.99*want {
		t.Errorf("admitted = %d (+%d timed out); want %.1f ± 1%% (burst %d + %s × %d/s)", got, degraded.Load(), want, rate, elapsed.Round(time.Millisecond), rate)
	}
	if refused.Load() == 0 {
		t.Errorf("refused = 0; want the hammering to run into the limit")
	}
	if total := got + refused.Load() + degraded.Load(); degraded.Load()*100 > total {
		t.Errorf("degraded = %d of %d requests; want at most 1%%: Redis rarely answered in time, the limit was not what decided", degraded.Load(), total)
	}
}

// TestGatewayBrokerDownUnderLoad keeps a steady load on a gateway while its
// Kafka broker is down for a minute. Every request is answered as fast as
// before, and once the broker is back every request's event arrives,
// exactly once by (id, path) — replays may repeat an event, but only with
// its own id.
//
// The broker is a kfake cluster of the test's own, in every pass: the
// test must stop and restart it, and the real broker of make kafka is
// shared with every other test. kfake restarts on the same port and data
// directory, as a real broker restarts, so the gateway's client and
// emitter see a real outage: refused connections, then a broker with the
// topic's earlier records.
func TestGatewayBrokerDownUnderLoad(t *testing.T) {
	t.Parallel()
	const (
		perSecond = 200
		before    = 5 * time.Second
		outage    = 60 * time.Second
		after     = 5 * time.Second
		deliver   = 90 * time.Second // for every event, once the load stopped
	)
	data := t.TempDir()
	_, p, _ := net.SplitHostPort(testenv.FreeLoopbackAddr(t))
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	topic := "veil.test." + testenv.Suffix()
	startKafka := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(data), kfake.SeedTopics(3, topic))
		if err != nil {
			t.Fatalf("start kfake on port %d: %v", port, err)
		}
		return c
	}
	cluster := startKafka()
	t.Cleanup(func() {
		if cluster != nil {
			cluster.Close()
		}
	})
	brokers := cluster.ListenAddrs()

	rdb, db := testenv.RedisDB(t)
	store := enforcement.New(rdb)
	sub := uuid.NewString()
	e2ePutSubscription(t, store, sub, 0, 0) // no limits: every request passes
	key := e2eNewKey(t, store, sub)
	gw := spawnE2EGateway(t, e2eGatewayConfig{redisDB: db, brokers: brokers, topic: topic, upstream: e2eUpstream(t)})
	gw.WaitReady(t)

	// The load: perSecond requests a second, each on its own, whatever
	// the previous ones do, so a slow answer cannot hide by slowing the
	// load down. Each carries a unique id in X-Request-Id and in its path.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(client.CloseIdleConnections)
	var (
		mu       sync.Mutex
		sent     []e2eRequest
		inFlight sync.WaitGroup
	)
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	run := testenv.Suffix()
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(time.Second / perSecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stopLoad:
				return
			case <-t.Context().Done():
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("%s-%06d", run, n)
			inFlight.Add(1)
			go func() {
				defer inFlight.Done()
				r := e2eRequest{id: id, at: time.Now()}
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.url+"/api/items/"+id, nil)
				if err == nil {
					req.Header.Set("Authorization", "Bearer "+key)
					req.Header.Set("X-Request-Id", id)
					var resp *http.Response
					if resp, err = client.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						r.status = resp.StatusCode
					}
				}
				r.latency, r.err = time.Since(r.at), err
				mu.Lock()
				sent = append(sent, r)
				mu.Unlock()
			}()
		}
	}()
	sentSoFar := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(sent)
	}

	// Before: the broker is up and takes the events as they come.
	time.Sleep(before) // the load runs meanwhile: this is its duration, not a wait for a condition
	testenv.Deadline(t, e2eWait, func() error {
		m := gw.metrics(t)
		if m["veil_gateway_events_produced_total"] == 0 || m["veil_gateway_broker_available"] != 1 {
			return fmt.Errorf("gateway metrics %v; want events produced and the broker available", m)
		}
		return nil
	})

	// The outage.
	outageFrom := time.Now()
	cluster.Close()
	cluster = nil
	testenv.Deadline(t, 30*time.Second, func() error {
		m := gw.metrics(t)
		if m["veil_gateway_broker_available"] != 0 || m["veil_gateway_events_spooled_total"] == 0 {
			return fmt.Errorf("gateway metrics %v; want the broker unavailable and events spooled", m)
		}
		return nil
	})
	time.Sleep(time.Until(outageFrom.Add(outage))) // the outage lasts a minute under load
	outageTo := time.Now()
	cluster = startKafka()

	// After: the broker is back, the load goes on.
	time.Sleep(after)
	close(stopLoad)
	<-loadDone
	inFlight.Wait()
	loadStopped := time.Now()
	t.Logf("load: %d requests at %d/s; broker down for %s", sentSoFar(), perSecond, outageTo.Sub(outageFrom).Round(time.Millisecond))

	// Every request was answered, and as fast during the outage as before.
	var lat [3][]time.Duration // before, during, after the outage
	for _, r := range sent {
		if r.err != nil || r.status != http.StatusOK {
			t.Errorf("GET /api/items/%s = %d, %v; want 200", r.id, r.status, r.err)
			continue
		}
		phase := 1
		switch {
		case r.at.Before(outageFrom):
			phase = 0
		case !r.at.Before(outageTo):
			phase = 2
		}
		lat[phase] = append(lat[phase], r.latency)
	}
	if t.Failed() {
		t.FailNow()
	}
	p99 := func(d []time.Duration) time.Duration {
		if len(d) == 0 {
			return 0
		}
		slices.Sort(d)
		return d[(len(d)-1)*99/100]
	}
	pb, pd, pa := p99(lat[0]), p99(lat[1]), p99(lat[2])
	t.Logf("p99 latency: %s before the outage (%d requests), %s during it (%d), %s after it (%d)",
		pb, len(lat[0]), pd, len(lat[1]), pa, len(lat[2]))
	// Slowed by the outage would mean waiting on Kafka: seconds, the
	// emitter's stall timeout or the outage itself. The bound leaves
	// room for a loaded machine and none for that.
	if limit := max(10*pb, 500*time.Millisecond); pd > limit {
		t.Errorf("p99 latency during the outage = %s; want at most %s (p99 before: %s): requests waited for Kafka", pd, limit, pb)
	}

	// Every request's event arrives once the broker is back.
	want := make(map[string]bool, len(sent)) // event path → seen
	for _, r := range sent {
		want["/items/"+r.id] = false
	}
	reader, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ids := map[string]string{} // event path → CloudEvent id
	var records, duplicates, missing int
	for seen := 0; seen < len(want); {
		if time.Since(loadStopped) > deliver {
			for p, ok := range want {
				if !ok {
					missing++
					if missing <= 5 {
						t.Errorf("no event for %s", p)
					}
				}
			}
			m := gw.metrics(t)
			t.Fatalf("%d of %d events arrived within %s of the load's end; %d missing (gateway metrics %v)",
				seen, len(want), deliver, missing, m)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		fs := reader.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			records++
			var e struct {
				ID     string `json:"id"`
				Source string `json:"source"`
				Data   struct {
					Path   string `json:"path"`
					Status int    `json:"status"`
				} `json:"data"`
			}
			if err := json.Unmarshal(r.Value, &e); err != nil {
				t.Errorf("record at %d/%d is no event: %v: %s", r.Partition, r.Offset, err, r.Value)
				return
			}
			got, known := want[e.Data.Path]
			switch {
			case !known:
				t.Errorf("event %s for %s: no such request", e.ID, e.Data.Path)
			case got && ids[e.Data.Path] != e.ID:
				t.Errorf("events %s and %s for %s: one request, two events", ids[e.Data.Path], e.ID, e.Data.Path)
			case got:
				duplicates++
			default:
				want[e.Data.Path], ids[e.Data.Path] = true, e.ID
				seen++
				if e.Data.Status != http.StatusOK {
					t.Errorf("event %s for %s has status %d; want 200", e.ID, e.Data.Path, e.Data.Status)
				}
			}
		})
	}
	m := gw.metrics(t)
	t.Logf("events: all %d arrived %s after the load ended, in %d records: %d duplicates, each with its original id; "+
		"gateway: %v spooled, %v replayed, %v dropped",
		len(want), time.Since(loadStopped).Round(time.Millisecond), records, duplicates,
		m["veil_gateway_events_spooled_total"], m["veil_gateway_events_replayed_total"], m["veil_gateway_events_dropped_total"])
	if m["veil_gateway_events_dropped_total"] != 0 {
		t.Errorf("veil_gateway_events_dropped_total = %v; want 0", m["veil_gateway_events_dropped_total"])
	}
}

// e2eRequest is one request of the steady load.
type e2eRequest struct {
	id      string
	at      time.Time
	latency time.Duration
	status  int
	err     error
}

// e2eGatewayConfig is what one gateway's Caddy config is made of.
type e2eGatewayConfig struct {
	redisDB      int
	brokers      []string
	topic        string
	upstream     string // host:port
	onRedisError string // default local
}

// e2eGateway is `veil gateway run --config <file>`, a child of the test.
type e2eGateway struct {
	*testenv.GatewayProcess
	url string // where it serves traffic
}

// spawnE2EGateway starts a gateway serving /healthz, /metrics and, under
// /api, the veil handler in front of the upstream, with a spool and an
// event source of its own; it stops the gateway when the test ends. Wait
// for it with WaitReady: gateways spawned first and waited for after
// start in parallel.
func spawnE2EGateway(t *testing.T, c e2eGatewayConfig) *e2eGateway {
	t.Helper()
	addr, admin := testenv.FreeLoopbackAddr(t), testenv.FreeLoopbackAddr(t)
	app := map[string]any{
		"redis_address": testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379"),
		"redis_db":      c.redisDB,
		"brokers":       c.brokers,
		"topic":         c.topic,
		"spool_dir":     t.TempDir(),
		"source":        "/gateway/e2e-" + testenv.Suffix(),
	}
	if c.onRedisError != "" {
		app["on_redis_error"] = c.onRedisError
	}
	route := func(path string, handlers ...map[string]any) map[string]any {
		return map[string]any{
			"match":    []any{map[string]any{"path": []string{path}}},
			"handle":   handlers,
			"terminal": true,
		}
	}
	cfg := map[string]any{
		"admin": map[string]any{"listen": admin, "config": map[string]any{"persist": false}},
		"apps": map[string]any{
			"veil": app,
			"http": map[string]any{
				"grace_period": "2s",
				"servers": map[string]any{"gateway": map[string]any{
					"listen":          []string{addr},
					"automatic_https": map[string]any{"disable": true},
					"routes": []any{
						route("/healthz", map[string]any{"handler": "static_response", "status_code": 200}),
						route("/metrics", map[string]any{"handler": "veil_metrics"}),
						route("/api/*",
							gatewayroute.VeilHandler{APIID: e2eAPI, PathPrefix: "/api"}.Handle(),
							map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": c.upstream}}}),
					},
				}},
			},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr
	gw := testenv.GatewayRun(t, b, url+"/healthz", testenv.GatewayNoWait(),
		// Stopping flushes the events or spools them: allow for a broker
		// that has just come back.
		testenv.GatewayStopTimeout(30*time.Second))
	return &e2eGateway{GatewayProcess: gw, url: url}
}

// metrics returns the gateway's veil_gateway_* metrics without labels;
// labelled series are summed under their name.
func (g *e2eGateway) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(g.url + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		series, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(series, "veil_gateway_") {
			continue
		}
		name, _, _ := strings.Cut(series, "{")
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] += v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return out
}

// e2eGet sends GET url with the key and returns the status and headers.
// A request that gets no answer fails the test.
func e2eGet(t *testing.T, c *http.Client, url, key string) (int, http.Header) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		if t.Context().Err() == nil {
			t.Errorf("GET %s: %v", url, err)
		}
		return 0, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// e2eUpstream is the API behind the gateways: 200 with a small JSON body.
func e2eUpstream(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// e2ePutSubscription writes an active subscription to e2eAPI with the
// given limits (0 = none) and no quota.
func e2ePutSubscription(t *testing.T, s *enforcement.Store, id string, perSecond, perMinute int) {
	t.Helper()
	now := time.Now()
	if _, err := s.PutSubscription(t.Context(), enforcement.SubscriptionRecord{
		ID: id, APIID: e2eAPI, PlanID: "plan_e2e", Status: enforcement.SubscriptionActive,
		PeriodStart: now.Add(-time.Hour), PeriodEnd: now.Add(30 * 24 * time.Hour), QuotaRequests: -1,
		RatePerSecond: perSecond, RatePerMinute: perMinute, Version: 1,
	}); err != nil {
		t.Fatal(err)
	}
}

// e2eNewKey writes an active key of the subscription without limits of
// its own and returns it.
func e2eNewKey(t *testing.T, s *enforcement.Store, sub string) string {
	t.Helper()
	k, err := apikey.Generate(apikey.EnvTest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutKey(t.Context(), enforcement.KeyRecord{
		Hash: k.Hash, KeyID: "key_" + testenv.Suffix(), SubscriptionID: sub, APIID: e2eAPI,
		Status: enforcement.KeyActive, Version: 1,
	}); err != nil {
		t.Fatal(err)
	}
	return k.Plaintext
}
