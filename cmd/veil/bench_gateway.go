package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/ingesttoken"
)

// benchGatewayTopic receives the events of the veil phase. It is the
// bench's own and is kept between runs: each run counts only the records
// past the end offsets it found and carrying its own event source.
const benchGatewayTopic = "veil.bench.gateway"

// The bench's subscription may never refuse a request, so the figures are
// those of an admitted call. The rate limiter takes at most one request per
// microsecond of a limit's period, hence these ceilings; at the loads a
// loopback run reaches, neither is ever hit.
const (
	benchRatePerSecond = 1_000_000
	benchRatePerMinute = 60_000_000
)

// The bench's API and subscription.
const (
	benchAPI          = "api_bench"
	benchSubscription = "sub_bench"
)

// gatewayFigures is the final JSON line of veil bench gateway.
type gatewayFigures struct {
	Cores          int     `json:"cores"`
	Concurrency    int     `json:"concurrency"`
	PlainPerSec    float64 `json:"plain_requests_per_sec"`
	VeilPerSec     float64 `json:"veil_requests_per_sec"`
	Ratio          float64 `json:"ratio_veil_to_plain"`
	PlainP50Micros int64   `json:"plain_p50_us"`
	PlainP99Micros int64   `json:"plain_p99_us"`
	VeilP50Micros  int64   `json:"veil_p50_us"`
	VeilP99Micros  int64   `json:"veil_p99_us"`
	AddedP50Micros int64   `json:"added_p50_us"`
	AddedP99Micros int64   `json:"added_p99_us"`
	VeilRequests   int64   `json:"veil_requests_sent"`
	EventsInKafka  int64   `json:"events_in_kafka"`
	UniqueEventIDs int64   `json:"unique_event_ids"`
}

func benchGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		redisAddr   string
		redisDB     int
		brokers     string
		concurrency int
		duration    time.Duration
		warmup      time.Duration
		log         logFlags
	)
	f := newFlags("bench gateway", `Runs veil gateway run with two servers on loopback in front of the same local upstream: plain
Caddy reverse_proxy, and the veil handler (key auth, a per-second and a per-minute rate limit,
one usage event per request to Kafka) before the same reverse_proxy. Loads each with the same
keep-alive clients, after a warm-up, and prints throughput, p50/p99 latency, the veil handler's
cost against plain Caddy, and how many of the veil phase's events reached the topic
veil.bench.gateway (which it creates). It empties the Redis database it is given.`, stdout)
	f.String(&redisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.Int(&redisDB, "redis-db", "", 15, "Redis logical database for the bench's key and subscription; emptied first")
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers; empty runs an in-process kfake broker")
	f.Int(&concurrency, "requests-concurrency", "", 32, "concurrent keep-alive HTTP clients")
	f.Duration(&duration, "duration", "", 10*time.Second, "how long each phase is measured")
	f.Duration(&warmup, "warmup", "", 2*time.Second, "unmeasured load before each phase")
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	switch {
	case concurrency < 1:
		return fmt.Errorf("--requests-concurrency %d: want 1 or more", concurrency)
	case duration <= 0 || warmup < 0:
		return fmt.Errorf("--duration %s, --warmup %s: want a positive duration and no negative warm-up", duration, warmup)
	case redisDB < 0:
		return fmt.Errorf("--redis-db %d: want 0 or more", redisDB)
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	source := ingesttoken.GatewaySourcePrefix + "bench-" + stamp // the gateway refuses a source outside /gateway/

	// Kafka: the topic, and where this run's records will start.
	seeds, brokerName, closeBroker, err := benchBroker(brokers, logger)
	if err != nil {
		return err
	}
	defer closeBroker()
	admin, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-gateway", Logger: logger})
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := broker.EnsureTopics(ctx, admin, []broker.TopicSpec{{Name: benchGatewayTopic, Partitions: broker.DefaultPartitions}}); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = broker.WaitForTopic(wctx, admin, benchGatewayTopic)
	cancel()
	if err != nil {
		return err
	}
	startOffsets, err := kadm.NewClient(admin).ListEndOffsets(ctx, benchGatewayTopic)
	if err != nil {
		return fmt.Errorf("list end offsets of %s: %w", benchGatewayTopic, err)
	}

	// Redis: one subscription with two limits, one key.
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{redisAddr}, SelectDB: redisDB, DisableCache: true})
	if err != nil {
		return fmt.Errorf("connect to redis at %s: %w", redisAddr, err)
	}
	defer rc.Close()
	apiKey, err := benchGatewayRecords(ctx, rc, redisDB)
	if err != nil {
		return err
	}

	gw, stopGateway, err := startBenchStack(ctx, "gateway", benchGatewayConfig{
		redisAddr: redisAddr, redisDB: redisDB, brokers: seeds, source: source,
	}, stderr)
	if err != nil {
		return err
	}
	defer stopGateway()

	fmt.Fprintf(stdout, "veil bench gateway: %s, %d cores, %s/%s, %s, %d clients, %s warm-up + %s per phase\n",
		brokerName, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), concurrency, warmup, duration)
	fmt.Fprintf(stdout, "note: the load generator, the upstream, the gateway (and Redis and Kafka) share this machine's %d cores:\n"+
		"      absolute figures understate what the gateway does on a machine of its own; compare the two phases.\n\n", runtime.NumCPU())

	const path = "/bench/items/42"
	if err := checkBenchVeilRoute(ctx, gw.veilURL+path, apiKey); err != nil {
		return err
	}
	plain, _, err := benchGatewayLoad(ctx, "plain reverse_proxy", gw.plainURL+path, apiKey, concurrency, warmup, duration)
	if err != nil {
		return err
	}
	veil, sent, err := benchGatewayLoad(ctx, "veil + reverse_proxy", gw.veilURL+path, apiKey, concurrency, warmup, duration)
	if err != nil {
		return err
	}
	sent++ // the check's request

	fmt.Fprintf(stdout, "%-24s %12s %10s %10s %9s\n", "phase", "requests/s", "p50", "p99", "failures")
	for _, r := range []benchResult{plain, veil} {
		fmt.Fprintf(stdout, "%-24s %12.0f %10s %10s %9d\n", r.name, float64(r.requests)/r.elapsed.Seconds(),
			r.quantile(0.5).Round(time.Microsecond), r.quantile(0.99).Round(time.Microsecond), r.failures)
	}
	fig := gatewayFigures{
		Cores: runtime.NumCPU(), Concurrency: concurrency,
		PlainPerSec: float64(plain.requests) / plain.elapsed.Seconds(), VeilPerSec: float64(veil.requests) / veil.elapsed.Seconds(),
		PlainP50Micros: plain.quantile(0.5).Microseconds(), PlainP99Micros: plain.quantile(0.99).Microseconds(),
		VeilP50Micros: veil.quantile(0.5).Microseconds(), VeilP99Micros: veil.quantile(0.99).Microseconds(),
		VeilRequests: sent,
	}
	fig.Ratio = fig.VeilPerSec / fig.PlainPerSec
	fig.AddedP50Micros = fig.VeilP50Micros - fig.PlainP50Micros
	fig.AddedP99Micros = fig.VeilP99Micros - fig.PlainP99Micros
	fmt.Fprintf(stdout, "\nveil vs plain: %.1f%% of the throughput, p50 %+.3fms, p99 %+.3fms\n",
		100*fig.Ratio, float64(fig.AddedP50Micros)/1000, float64(fig.AddedP99Micros)/1000)

	// Every answered request of the veil phase, warm-up included, emitted
	// one event; the emitter sends them in the background.
	fig.EventsInKafka, fig.UniqueEventIDs, err = countBenchEvents(ctx, seeds, startOffsets, source, sent, logger)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "events in %s: %d for %d requests sent through the veil server (check and warm-up included), %d unique ids\n",
		benchGatewayTopic, fig.EventsInKafka, sent, fig.UniqueEventIDs)
	if err := json.NewEncoder(stdout).Encode(fig); err != nil {
		return err
	}
	if fig.EventsInKafka != sent || fig.UniqueEventIDs != sent {
		return fmt.Errorf("bench gateway: %d events (%d unique) reached %s; want %d, one per request", fig.EventsInKafka, fig.UniqueEventIDs, benchGatewayTopic, sent)
	}
	return nil
}

// benchGatewayRecords empties the Redis database and writes the bench's
// subscription and key; it returns the key.
func benchGatewayRecords(ctx context.Context, rc rueidis.Client, db int) (string, error) {
	if err := rc.Do(ctx, rc.B().Flushdb().Build()).Error(); err != nil {
		return "", fmt.Errorf("empty redis database %d: %w", db, err)
	}
	store := enforcement.New(rc)
	now := time.Now()
	if _, err := store.PutSubscription(ctx, enforcement.SubscriptionRecord{
		ID: benchSubscription, APIID: benchAPI, PlanID: "plan_bench", Status: enforcement.SubscriptionActive,
		PeriodStart: now.Add(-time.Hour), PeriodEnd: now.Add(30 * 24 * time.Hour), QuotaRequests: -1,
		RatePerSecond: benchRatePerSecond, RatePerMinute: benchRatePerMinute, Version: 1,
	}); err != nil {
		return "", err
	}
	k, err := apikey.Generate(apikey.EnvTest)
	if err != nil {
		return "", err
	}
	if _, err := store.PutKey(ctx, enforcement.KeyRecord{
		Hash: k.Hash, KeyID: "key_bench", SubscriptionID: benchSubscription, APIID: benchAPI, Status: enforcement.KeyActive, Version: 1,
	}); err != nil {
		return "", err
	}
	return k.Plaintext, nil
}

// checkBenchVeilRoute makes sure the veil phase measures what it says: a
// request with the key passes the rate limits. The handler checks both of
// the subscription's limits in one script and advertises the tightest, the
// per-second one. (Their state cannot be looked at afterwards: with a
// budget this large it expires from Redis a millisecond later.)
func checkBenchVeilRoute(ctx context.Context, url, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("check the veil server: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `"second";q=` + strconv.Itoa(benchRatePerSecond) + ";w=1"
	if got := resp.Header.Get("RateLimit-Policy"); resp.StatusCode != http.StatusOK || got != want {
		return fmt.Errorf("check the veil server: GET %s = %d with RateLimit-Policy %q; want 200 with %q (%s)",
			url, resp.StatusCode, got, want, body)
	}
	return nil
}

// benchUpstreamBody is the upstream's answer: small, like a typical JSON
// API response.
var benchUpstreamBody = []byte(`{"id":42,"name":"bench item","tags":["a","b","c"],"price":"9.99"}` + "\n")

// startBenchUpstream serves 200 with benchUpstreamBody on loopback.
func startBenchUpstream() (*benchServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(benchUpstreamBody)))
		_, _ = w.Write(benchUpstreamBody)
	})}
	go func() { _ = srv.Serve(ln) }()
	return &benchServer{Server: srv, Listener: ln}, nil
}

type benchServer struct {
	*http.Server
	Listener net.Listener
}

// startBenchStack starts a small upstream and a veil gateway run child in
// front of it with c (dir and upstream are filled in); stop ends both and
// reports a gateway that did not stop cleanly on stderr.
func startBenchStack(ctx context.Context, bench string, c benchGatewayConfig, stderr io.Writer) (*benchGatewayProcess, func(), error) {
	up, err := startBenchUpstream()
	if err != nil {
		return nil, nil, err
	}
	tmp, err := os.MkdirTemp("", "veil-bench-"+bench+"-")
	if err != nil {
		up.Close()
		return nil, nil, err
	}
	c.dir, c.upstream = tmp, up.Listener.Addr().String()
	gw, err := startBenchGateway(ctx, c)
	if err != nil {
		up.Close()
		os.RemoveAll(tmp)
		return nil, nil, err
	}
	return gw, func() {
		if err := gw.stop(); err != nil {
			fmt.Fprintf(stderr, "veil bench %s: stop the gateway: %v\n%s", bench, err, gw.out.String())
		}
		up.Close()
		os.RemoveAll(tmp)
	}, nil
}

// benchGatewayConfig is what the gateway's Caddy config is made of.
type benchGatewayConfig struct {
	dir       string // the gateway's data, config and spool
	upstream  string
	redisAddr string
	redisDB   int
	brokers   []string
	source    string
	// topic receives the events; default benchGatewayTopic.
	topic string
}

// benchGatewayProcess is the `veil gateway run` child of the bench.
type benchGatewayProcess struct {
	plainURL, veilURL string
	cmd               *exec.Cmd
	out               *benchBuffer
	exited            chan struct{}
	err               error // set before exited closes
}

// startBenchGateway runs this binary's `gateway run` on a config with two
// servers, plain and veil, and waits until both answer.
func startBenchGateway(ctx context.Context, c benchGatewayConfig) (*benchGatewayProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the veil binary: %w", err)
	}
	var addrs [2]string
	for i := range addrs {
		if addrs[i], err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
	}
	plainAddr, veilAddr := addrs[0], addrs[1]
	proxy := map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": c.upstream}}}
	veil := map[string]any{"handler": "veil", "api_id": benchAPI, "path_prefix": "/bench"}
	server := func(addr string, handlers ...map[string]any) map[string]any {
		return map[string]any{
			"listen":          []string{addr},
			"automatic_https": map[string]any{"disable": true},
			"routes": []any{
				map[string]any{
					"match":  []any{map[string]any{"path": []string{"/healthz"}}},
					"handle": []any{map[string]any{"handler": "static_response", "status_code": 200}},
				},
				map[string]any{
					"match":    []any{map[string]any{"path": []string{"/bench/*"}}},
					"handle":   handlers,
					"terminal": true,
				},
			},
		}
	}
	if c.topic == "" {
		c.topic = benchGatewayTopic
	}
	cfg := map[string]any{
		// Nothing changes this config: no admin API at all.
		"admin": map[string]any{"disabled": true},
		"apps": map[string]any{
			"veil": map[string]any{
				"redis_address": c.redisAddr, "redis_db": c.redisDB, "brokers": c.brokers, "topic": c.topic,
				"spool_dir": filepath.Join(c.dir, "spool"), "source": c.source,
			},
			"http": map[string]any{"servers": map[string]any{
				"plain": server(plainAddr, proxy),
				"veil":  server(veilAddr, veil, proxy),
			}},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(c.dir, "caddy.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return nil, err
	}
	p := &benchGatewayProcess{plainURL: "http://" + plainAddr, veilURL: "http://" + veilAddr, out: &benchBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(exe, "gateway", "run", "--config", file)
	p.cmd.Env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(c.dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(c.dir, "config"),
	)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start veil gateway run: %w", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for _, u := range []string{p.plainURL + "/healthz", p.veilURL + "/healthz"} {
		for {
			resp, err := client.Get(u)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				err = fmt.Errorf("GET %s = %d; want 200", u, resp.StatusCode)
			}
			var stop error
			select {
			case <-p.exited:
				stop = fmt.Errorf("veil gateway run exited before it served: %v\n%s", p.err, p.out.String())
			case <-ctx.Done():
				stop = ctx.Err()
			case <-time.After(20 * time.Millisecond):
				if time.Now().After(deadline) {
					stop = fmt.Errorf("veil gateway run does not serve after 60s: %w\n%s", err, p.out.String())
				}
			}
			if stop != nil {
				_ = p.stop()
				return nil, stop
			}
		}
	}
	return p, nil
}

// stop sends SIGTERM (Caddy flushes the emitter) and kills the gateway
// when it has not exited 30 s later.
func (p *benchGatewayProcess) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.exited:
		return p.err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return errors.New("did not exit within 30s of SIGTERM; killed")
	}
}

// benchGatewayLoad sends GET url with the key from concurrency keep-alive
// clients: warmup unmeasured, then d measured. It returns the measured
// phase and how many requests got an answer, warm-up included.
func benchGatewayLoad(ctx context.Context, name, url, key string, concurrency int, warmup, d time.Duration) (benchResult, int64, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var (
		mu       sync.Mutex
		res      = benchResult{name: name}
		answered atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(d)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<16)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					failures.Add(1)
					return
				}
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					failures.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				answered.Add(1)
				if resp.StatusCode != http.StatusOK {
					firstErr.CompareAndSwap(nil, fmt.Errorf("GET %s = %d; want 200", url, resp.StatusCode))
					failures.Add(1)
					continue
				}
				if !t0.Before(measureFrom) {
					lat = append(lat, time.Since(t0))
				}
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return benchResult{}, 0, err
	}
	res.elapsed = time.Since(measureFrom)
	res.requests = int64(len(res.latencies))
	res.events = res.requests
	res.failures = failures.Load()
	slices.Sort(res.latencies)
	if res.requests == 0 {
		err, _ := firstErr.Load().(error)
		return benchResult{}, 0, fmt.Errorf("bench gateway: %s: no request succeeded: %v", name, err)
	}
	return res, answered.Load(), nil
}

// countBenchEvents reads the topic from the offsets the run started at
// until it holds want events of source or a minute passes, and returns how
// many it found and how many distinct ids they carry.
func countBenchEvents(ctx context.Context, seeds []string, from kadm.ListedOffsets, source string, want int64, logger *slog.Logger) (events, unique int64, err error) {
	offsets := map[string]map[int32]kgo.Offset{benchGatewayTopic: {}}
	from.Each(func(o kadm.ListedOffset) { offsets[benchGatewayTopic][o.Partition] = kgo.NewOffset().At(o.Offset) })
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-gateway-reader", Logger: logger,
		Opts: []kgo.Opt{kgo.ConsumePartitions(offsets)}})
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	var (
		ids    = make(map[string]struct{}, want)
		mine   = []byte(`"source":` + strconv.Quote(source))
		ev     struct{ ID, Source string }
		cctx   context.Context
		cancel context.CancelFunc
	)
	cctx, cancel = context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for int64(len(ids)) < want {
		fs := cl.PollFetches(cctx)
		if cctx.Err() != nil {
			if ctx.Err() != nil {
				return events, int64(len(ids)), ctx.Err()
			}
			break
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err) })
		if ferr != nil {
			return events, int64(len(ids)), ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if !bytes.Contains(r.Value, mine) {
				return
			}
			if json.Unmarshal(r.Value, &ev) != nil || ev.Source != source {
				return
			}
			events++
			ids[ev.ID] = struct{}{}
		})
	}
	return events, int64(len(ids)), nil
}

// freeLoopbackAddr returns a loopback address with a port free a moment
// ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// benchBuffer takes the gateway's output while the bench may read it.
type benchBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *benchBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *benchBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
