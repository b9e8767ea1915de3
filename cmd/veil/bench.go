package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/httpserver"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "ingest":
			return benchIngest(ctx, args[1:], stdout, stderr)
		case "pipeline":
			return benchPipeline(ctx, args[1:], stdout, stderr)
		case "gateway":
			return benchGateway(ctx, args[1:], stdout, stderr)
		case "enforcement":
			return benchEnforcement(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintln(stdout, `Usage: veil bench ingest|pipeline|gateway|enforcement [flags]

Benchmarks:
  ingest       POST /v1/events throughput and latency against franz-go's raw produce rate
  pipeline     events/s through a processor into ClickHouse and Redis, against raw produce and raw insert rates
  gateway      requests/s and latency through the veil Caddy handler against plain Caddy reverse_proxy
  enforcement  time from the event that uses a hard quota up to the gateway's first 429, and the overshoot`)
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		return nil
	}
	return errors.New("bench: name a benchmark: ingest, pipeline, gateway or enforcement")
}

// benchBroker returns the named brokers, or starts an in-process kfake
// broker when none is named; the caller calls closeBroker when done.
func benchBroker(brokers string, logger *slog.Logger) (seeds []string, name string, closeBroker func(), err error) {
	seeds = broker.ParseBrokers(brokers)
	if len(seeds) > 0 {
		return seeds, "Apache Kafka at " + strings.Join(seeds, ","), func() {}, nil
	}
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{Logger: logger})
	if err != nil {
		return nil, "", nil, err
	}
	return emb.Addrs(), "kfake (in-process) at " + strings.Join(emb.Addrs(), ","), emb.Close, nil
}

type benchResult struct {
	name      string
	events    int64
	requests  int64
	failures  int64
	elapsed   time.Duration
	latencies []time.Duration
}

func (r benchResult) eventsPerSec() float64 { return float64(r.events) / r.elapsed.Seconds() }

func (r benchResult) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[int(q*float64(len(r.latencies)-1))]
}

func benchIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		brokers     string
		duration    time.Duration
		concurrency int
		batches     string
		log         logFlags
	)
	f := newFlags("bench ingest", `Loads POST /v1/events of an in-process ingest service over loopback, once per batch size, then
measures franz-go's raw produce rate to the same broker with the same events, and prints both and their ratio.
With no brokers it runs against an in-process kfake broker; name the real one with --kafka-brokers.`, stdout)
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", "", "Kafka seed brokers; empty runs an in-process kfake broker")
	f.Duration(&duration, "duration", "", 10*time.Second, "how long each phase runs")
	f.Int(&concurrency, "concurrency", "", 16, "concurrent HTTP clients")
	f.String(&batches, "batch-sizes", "", "100,1", "comma-separated events per request")
	log.level = "warn"
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	var sizes []int
	for _, s := range broker.ParseBrokers(batches) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > ingest.DefaultMaxEvents {
			return fmt.Errorf("--batch-sizes: %q is not a batch size between 1 and %d", s, ingest.DefaultMaxEvents)
		}
		sizes = append(sizes, n)
	}

	seeds, brokerName, closeBroker, err := benchBroker(brokers, logger)
	if err != nil {
		return err
	}
	defer closeBroker()

	admin, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-admin", Logger: logger})
	if err != nil {
		return err
	}
	defer admin.Close()
	topic := fmt.Sprintf("veil.bench.%d", time.Now().UnixNano())
	if err := broker.EnsureTopics(ctx, admin, []broker.TopicSpec{{Name: topic, Partitions: broker.DefaultPartitions}}); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(admin).DeleteTopics(dctx, topic)
	}()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = broker.WaitForTopic(wctx, admin, topic)
	cancel()
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "veil bench ingest: %s, %d cores, %s/%s, %s, %s per phase, %d clients\n\n",
		brokerName, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), duration, concurrency)

	var results []benchResult
	for _, size := range sizes {
		r, err := benchHTTP(ctx, seeds, topic, size, concurrency, duration, logger)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	raw, err := benchRawProduce(ctx, seeds, topic, duration, logger)
	if err != nil {
		return err
	}
	results = append(results, raw)

	fmt.Fprintf(stdout, "%-22s %12s %12s %10s %10s %9s %s\n", "phase", "events/s", "requests/s", "p50", "p99", "failures", "vs raw")
	for _, r := range results {
		fmt.Fprintf(stdout, "%-22s %12.0f %12.0f %10s %10s %9d %6.1f%%\n", r.name, r.eventsPerSec(),
			float64(r.requests)/r.elapsed.Seconds(), r.quantile(0.5).Round(time.Microsecond), r.quantile(0.99).Round(time.Microsecond),
			r.failures, 100*r.eventsPerSec()/raw.eventsPerSec())
	}
	fmt.Fprintln(stdout, "\np50/p99: request latency for HTTP phases (until Kafka acknowledged), produce-to-ack latency for raw produce.")
	return nil
}

// benchEvents returns n distinct encoded events.
func benchEvents(n int, prefix string) [][]byte {
	now := time.Now().UTC().Format(time.RFC3339)
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, `{"specversion":"1.0","id":"%s-%d","source":"/bench","type":"veil.api.request","time":%q,"subject":"00000000-0000-4000-8000-%012d","data":{"api_id":"api_bench","key_id":"key_%d","method":"GET","route":"/v1/items/{id}","path":"/v1/items/%d","status":200,"latency_ms":7,"request_bytes":120,"response_bytes":2048,"units":1}}`,
			prefix, i, now, i%500, i%2000, i)
	}
	return out
}

func benchHTTP(ctx context.Context, seeds []string, topic string, batch, concurrency int, d time.Duration, logger *slog.Logger) (benchResult, error) {
	set := metrics.NewSet()
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-ingest", Logger: logger,
		Opts: ingestProducerOpts()})
	if err != nil {
		return benchResult{}, err
	}
	defer cl.Close()
	const token = "bench-token-0123456789"
	h, err := ingest.New(ingest.Config{Logger: logger, Metrics: set, Producer: cl, Topic: topic, Tokens: []string{token}})
	if err != nil {
		return benchResult{}, err
	}
	srv, err := httpserver.Listen(httpserver.Config{Name: "bench-ingest", Addr: "127.0.0.1:0", Handler: h.Routes(), Logger: logger, Metrics: set})
	if err != nil {
		return benchResult{}, err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = srv.Serve(sctx) }()

	// A pool of distinct request bodies, cycled.
	events := benchEvents(64*batch, fmt.Sprintf("b%d", batch))
	var bodies [][]byte
	for i := 0; i+batch <= len(events); i += batch {
		if batch == 1 {
			bodies = append(bodies, events[i])
			continue
		}
		bodies = append(bodies, append(append([]byte("["), bytes.Join(events[i:i+batch], []byte(","))...), ']'))
	}
	ctype := ingest.MediaTypeBatch
	if batch == 1 {
		ctype = ingest.MediaTypeEvent
	}
	url := "http://" + srv.Addr().String() + "/v1/events"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency}}

	var (
		mu       sync.Mutex
		res      = benchResult{name: fmt.Sprintf("POST batch=%d", batch)}
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
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(bodies[i%len(bodies)]))
				req.Header.Set("Content-Type", ctype)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusAccepted {
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
	res.events = res.requests * int64(batch)
	slices.Sort(res.latencies)
	return res, nil
}

// benchRawProduce produces the same kind of events straight from a franz-go
// client, asynchronously with a bounded number in flight, for d.
func benchRawProduce(ctx context.Context, seeds []string, topic string, d time.Duration, logger *slog.Logger) (benchResult, error) {
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-raw", Logger: logger,
		Opts: ingestProducerOpts()})
	if err != nil {
		return benchResult{}, err
	}
	defer cl.Close()
	events := benchEvents(10_000, "raw")
	keys := make([][]byte, len(events))
	for i := range keys {
		keys[i] = []byte("sub_" + strconv.Itoa(i%500))
	}
	const sampleEvery = 64
	var (
		mu       sync.Mutex
		res      = benchResult{name: "raw franz-go produce"}
		acked    atomic.Int64
		failures atomic.Int64
	)
	start := time.Now()
	deadline := start.Add(d)
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
		return benchResult{}, fmt.Errorf("flush raw producer: %w", err)
	}
	res.elapsed = time.Since(start)
	res.events = acked.Load()
	res.requests = res.events
	res.failures = failures.Load()
	slices.Sort(res.latencies)
	return res, nil
}
