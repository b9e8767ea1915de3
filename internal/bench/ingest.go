package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/httpserver"
	"github.com/veil-platform/veil/schemas/usage"
)

// IngestConfig configures Ingest.
type IngestConfig struct {
	// Brokers are Kafka seed brokers; empty runs an in-process kfake broker.
	Brokers []string
	// Duration is how long each phase runs.
	Duration time.Duration
	// Concurrency is the number of concurrent HTTP clients.
	Concurrency int
	// BatchSizes are the events per request of the HTTP phases, one phase
	// each.
	BatchSizes []int
	// ProducerOpts tune the ingest service's producer, and the raw
	// producer the same way: those of veil ingest.
	ProducerOpts []kgo.Opt
	Logger       *slog.Logger
}

// Ingest loads POST /v1/events of an in-process ingest service over
// loopback, once per batch size, then measures franz-go's raw produce rate
// to the same broker with the same events, and prints both and their
// ratio.
func Ingest(ctx context.Context, cfg IngestConfig, stdout io.Writer) error {
	seeds, brokerName, closeBroker, err := startBroker(cfg.Brokers, cfg.Logger)
	if err != nil {
		return err
	}
	defer closeBroker()
	topic, dropTopic, err := ingestTopic(ctx, seeds, cfg.Logger)
	if err != nil {
		return err
	}
	defer dropTopic()

	fmt.Fprintf(stdout, "veil bench ingest: %s, %d cores, %s/%s, %s, %s per phase, %d clients\n\n",
		brokerName, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), cfg.Duration, cfg.Concurrency)

	var results []result
	for _, size := range cfg.BatchSizes {
		r, err := ingestHTTP(ctx, cfg, seeds, topic, size)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	raw, err := rawProduce(ctx, cfg, seeds, topic)
	if err != nil {
		return err
	}
	results = append(results, raw)

	fmt.Fprintf(stdout, "%-22s %12s %12s %10s %10s %9s %s\n", "phase", "events/s", "requests/s", "p50", "p99", "failures", "vs raw")
	for _, r := range results {
		fmt.Fprintf(stdout, "%-22s %12.0f %12.0f %10s %10s %9d %6.1f%%\n", r.name, r.eventsPerSec(),
			r.requestsPerSec(), r.quantile(0.5).Round(time.Microsecond), r.quantile(0.99).Round(time.Microsecond),
			r.failures, 100*r.eventsPerSec()/raw.eventsPerSec())
	}
	fmt.Fprintln(stdout, "\np50/p99: request latency for HTTP phases (until Kafka acknowledged), produce-to-ack latency for raw produce.")
	return nil
}

// ingestTopic creates a topic of the run's own and waits until it is
// ready; drop deletes it.
func ingestTopic(ctx context.Context, seeds []string, logger *slog.Logger) (topic string, drop func(), err error) {
	admin, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-admin", Logger: logger})
	if err != nil {
		return "", nil, err
	}
	topic = fmt.Sprintf("veil.bench.%d", time.Now().UnixNano())
	drop = func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(admin).DeleteTopics(dctx, topic)
		admin.Close()
	}
	if err := broker.EnsureTopics(ctx, admin, []broker.TopicSpec{{Name: topic, Partitions: broker.DefaultPartitions}}); err != nil {
		admin.Close()
		return "", nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = broker.WaitForTopic(wctx, admin, topic)
	cancel()
	if err != nil {
		drop()
		return "", nil, err
	}
	return topic, drop, nil
}

// ingestEvents returns n distinct encoded events, each encoded once here,
// before the load, so that the load loop only sends bytes.
func ingestEvents(n int, prefix string) [][]byte {
	now := time.Now().UTC().Truncate(time.Second)
	out := make([][]byte, n)
	for i := range out {
		out[i] = usage.AppendEvent(make([]byte, 0, 384), &usage.Event{
			ID: fmt.Sprintf("%s-%d", prefix, i), Source: "/bench", Type: usage.TypeAPIRequest, Time: now,
			Subject: fmt.Sprintf("00000000-0000-4000-8000-%012d", i%500),
			Data: usage.Data{APIID: "api_bench", KeyID: fmt.Sprintf("key_%d", i%2000), Method: "GET", Route: "/v1/items/{id}",
				Path: fmt.Sprintf("/v1/items/%d", i), Status: 200, LatencyMS: 7, RequestBytes: 120, ResponseBytes: 2048,
				Units: decimal.NewFromInt(1)},
		})
	}
	return out
}

// ingestBodies returns a pool of distinct request bodies of batch events,
// to cycle through, and their content type.
func ingestBodies(batch int) ([][]byte, string) {
	events := ingestEvents(64*batch, fmt.Sprintf("b%d", batch))
	if batch == 1 {
		return events, ingest.MediaTypeEvent
	}
	var bodies [][]byte
	for i := 0; i+batch <= len(events); i += batch {
		bodies = append(bodies, append(append([]byte("["), bytes.Join(events[i:i+batch], []byte(","))...), ']'))
	}
	return bodies, ingest.MediaTypeBatch
}

// ingestHTTP runs an ingest service on loopback and loads it with requests
// of batch events for cfg.Duration.
func ingestHTTP(ctx context.Context, cfg IngestConfig, seeds []string, topic string, batch int) (result, error) {
	set := metrics.NewSet()
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-ingest", Logger: cfg.Logger, Opts: cfg.ProducerOpts})
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	const token = "bench-token-0123456789"
	h, err := ingest.New(ingest.Config{Logger: cfg.Logger, Metrics: set, Producer: cl, Topic: topic, Tokens: []string{token}})
	if err != nil {
		return result{}, err
	}
	srv, err := httpserver.Listen(httpserver.Config{Name: "bench-ingest", Addr: "127.0.0.1:0", Handler: h.Routes(), Logger: cfg.Logger, Metrics: set})
	if err != nil {
		return result{}, err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = srv.Serve(sctx) }()

	bodies, ctype := ingestBodies(batch)
	url := "http://" + srv.Addr().String() + "/v1/events"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency, MaxConnsPerHost: cfg.Concurrency}}
	post := func(i int) bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusAccepted
	}
	res := loadFor(ctx, cfg.Concurrency, cfg.Duration, post)
	res.name = fmt.Sprintf("POST batch=%d", batch)
	res.events = res.requests * int64(batch)
	return res, nil
}

// loadFor calls send from concurrency goroutines for d, worker w with i =
// w, w+concurrency, …, and measures the calls that return true.
func loadFor(ctx context.Context, concurrency int, d time.Duration, send func(i int) bool) result {
	var (
		mu       sync.Mutex
		res      result
		requests atomic.Int64
		failures atomic.Int64
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			for i := w; time.Now().Before(deadline) && ctx.Err() == nil; i += concurrency {
				t0 := time.Now()
				if !send(i) {
					failures.Add(1)
					continue
				}
				lat = append(lat, time.Since(t0))
				requests.Add(1)
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.requests = requests.Load()
	res.failures = failures.Load()
	slices.Sort(res.latencies)
	return res
}

// rawProduce produces the same kind of events straight from a franz-go
// client, asynchronously with a bounded number in flight, for cfg.Duration.
func rawProduce(ctx context.Context, cfg IngestConfig, seeds []string, topic string) (result, error) {
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-raw", Logger: cfg.Logger, Opts: cfg.ProducerOpts})
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	events := ingestEvents(10_000, "raw")
	keys := make([][]byte, len(events))
	for i := range keys {
		keys[i] = []byte("sub_" + strconv.Itoa(i%500))
	}
	const sampleEvery = 64
	var (
		mu       sync.Mutex
		res      = result{name: "raw franz-go produce"}
		acked    atomic.Int64
		failures atomic.Int64
	)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		t0 := time.Now()
		sample := i%sampleEvery == 0
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: keys[i%len(keys)], Value: events[i%len(events)]}, func(_ *kgo.Record, err error) {
			if err != nil {
				failures.Add(1)
				return
			}
			acked.Add(1)
			if sample {
				mu.Lock()
				res.latencies = append(res.latencies, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return result{}, fmt.Errorf("flush raw producer: %w", err)
	}
	res.elapsed = time.Since(start)
	res.events = acked.Load()
	res.requests = res.events
	res.failures = failures.Load()
	slices.Sort(res.latencies)
	return res, nil
}
