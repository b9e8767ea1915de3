package bench

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/ingesttoken"
)

// gatewayTopic receives the events of the veil phase. It is the
// bench's own and is kept between runs: each run counts only the records
// past the end offsets it found and carrying its own event source.
const gatewayTopic = "veil.bench.gateway"

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

// GatewayConfig configures Gateway.
type GatewayConfig struct {
	// Brokers are Kafka seed brokers; empty runs an in-process kfake broker.
	Brokers []string
	// RedisAddr and RedisDB are the Redis database of the bench's key and
	// subscription; it is emptied first.
	RedisAddr string
	RedisDB   int
	// Concurrency is the number of concurrent keep-alive HTTP clients.
	Concurrency int
	// Duration is how long each phase is measured, after Warmup of
	// unmeasured load.
	Duration, Warmup time.Duration
	Logger           *slog.Logger
}

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

// Gateway runs veil gateway run with two servers on loopback in front of
// the same local upstream, plain Caddy reverse_proxy and the veil handler
// before the same reverse_proxy, loads each with the same keep-alive
// clients, and prints throughput, latency, the veil handler's cost and how
// many of the veil phase's events reached Kafka. It fails when that is not
// one event per request sent.
func Gateway(ctx context.Context, cfg GatewayConfig, stdout, stderr io.Writer) error {
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	source := ingesttoken.GatewaySourcePrefix + "bench-" + stamp // the gateway refuses a source outside /gateway/
	seeds, brokerName, closeBroker, err := startBroker(cfg.Brokers, cfg.Logger)
	if err != nil {
		return err
	}
	defer closeBroker()
	startOffsets, err := gatewayTopicOffsets(ctx, seeds, cfg.Logger)
	if err != nil {
		return err
	}
	// Redis: one subscription with two limits, one key.
	rc, err := datastore.OpenRedis(datastore.Redis{Addr: cfg.RedisAddr, DB: cfg.RedisDB, DisableCache: true})
	if err != nil {
		return err
	}
	defer rc.Close()
	apiKey, err := gatewayRecords(ctx, rc, cfg.RedisDB)
	if err != nil {
		return err
	}
	gw, stopGateway, err := startStack(ctx, "gateway", stackConfig{
		redisAddr: cfg.RedisAddr, redisDB: cfg.RedisDB, brokers: seeds, source: source,
	}, stderr)
	if err != nil {
		return err
	}
	defer stopGateway()

	fmt.Fprintf(stdout, "veil bench gateway: %s, %d cores, %s/%s, %s, %d clients, %s warm-up + %s per phase\n",
		brokerName, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), cfg.Concurrency, cfg.Warmup, cfg.Duration)
	fmt.Fprintf(stdout, "note: the load generator, the upstream, the gateway (and Redis and Kafka) share this machine's %d cores:\n"+
		"      absolute figures understate what the gateway does on a machine of its own; compare the two phases.\n\n", runtime.NumCPU())
	fig, err := gatewayPhases(ctx, cfg, gw, apiKey, stdout)
	if err != nil {
		return err
	}
	// Every answered request of the veil phase, warm-up included, emitted
	// one event; the emitter sends them in the background.
	sent := fig.VeilRequests
	fig.EventsInKafka, fig.UniqueEventIDs, err = countEvents(ctx, seeds, startOffsets, source, sent, cfg.Logger)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "events in %s: %d for %d requests sent through the veil server (check and warm-up included), %d unique ids\n",
		gatewayTopic, fig.EventsInKafka, sent, fig.UniqueEventIDs)
	if err := json.NewEncoder(stdout).Encode(fig); err != nil {
		return err
	}
	if fig.EventsInKafka != sent || fig.UniqueEventIDs != sent {
		return fmt.Errorf("bench gateway: %d events (%d unique) reached %s; want %d, one per request", fig.EventsInKafka, fig.UniqueEventIDs, gatewayTopic, sent)
	}
	return nil
}

// gatewayTopicOffsets creates the bench's topic when missing and returns
// its end offsets: where this run's records will start.
func gatewayTopicOffsets(ctx context.Context, seeds []string, logger *slog.Logger) (kadm.ListedOffsets, error) {
	admin, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-gateway", Logger: logger})
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if err := broker.EnsureTopics(ctx, admin, []broker.TopicSpec{{Name: gatewayTopic, Partitions: broker.DefaultPartitions}}); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = broker.WaitForTopic(wctx, admin, gatewayTopic)
	cancel()
	if err != nil {
		return nil, err
	}
	offsets, err := kadm.NewClient(admin).ListEndOffsets(ctx, gatewayTopic)
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", gatewayTopic, err)
	}
	return offsets, nil
}

// gatewayPhases checks the veil route, measures the plain and the veil
// server, prints the phases and returns the figures but the events'.
func gatewayPhases(ctx context.Context, cfg GatewayConfig, gw *gatewayChild, apiKey string, stdout io.Writer) (gatewayFigures, error) {
	const path = "/bench/items/42"
	if err := checkVeilRoute(ctx, gw.veilURL+path, apiKey); err != nil {
		return gatewayFigures{}, err
	}
	plain, _, err := gatewayLoad(ctx, "plain reverse_proxy", gw.plainURL+path, apiKey, cfg.Concurrency, cfg.Warmup, cfg.Duration)
	if err != nil {
		return gatewayFigures{}, err
	}
	veil, sent, err := gatewayLoad(ctx, "veil + reverse_proxy", gw.veilURL+path, apiKey, cfg.Concurrency, cfg.Warmup, cfg.Duration)
	if err != nil {
		return gatewayFigures{}, err
	}
	sent++ // the check's request

	fmt.Fprintf(stdout, "%-24s %12s %10s %10s %9s\n", "phase", "requests/s", "p50", "p99", "failures")
	for _, r := range []result{plain, veil} {
		fmt.Fprintf(stdout, "%-24s %12.0f %10s %10s %9d\n", r.name, r.requestsPerSec(),
			r.quantile(0.5).Round(time.Microsecond), r.quantile(0.99).Round(time.Microsecond), r.failures)
	}
	fig := gatewayFigures{
		Cores: runtime.NumCPU(), Concurrency: cfg.Concurrency,
		PlainPerSec: plain.requestsPerSec(), VeilPerSec: veil.requestsPerSec(),
		PlainP50Micros: plain.quantile(0.5).Microseconds(), PlainP99Micros: plain.quantile(0.99).Microseconds(),
		VeilP50Micros: veil.quantile(0.5).Microseconds(), VeilP99Micros: veil.quantile(0.99).Microseconds(),
		VeilRequests: sent,
	}
	fig.Ratio = fig.VeilPerSec / fig.PlainPerSec
	fig.AddedP50Micros = fig.VeilP50Micros - fig.PlainP50Micros
	fig.AddedP99Micros = fig.VeilP99Micros - fig.PlainP99Micros
	fmt.Fprintf(stdout, "\nveil vs plain: %.1f%% of the throughput, p50 %+.3fms, p99 %+.3fms\n",
		100*fig.Ratio, float64(fig.AddedP50Micros)/1000, float64(fig.AddedP99Micros)/1000)
	return fig, nil
}

// gatewayRecords empties the Redis database and writes the bench's
// subscription and key; it returns the key.
func gatewayRecords(ctx context.Context, rc rueidis.Client, db int) (string, error) {
	if err := emptyRedis(ctx, rc, db); err != nil {
		return "", err
	}
	now := time.Now()
	keys, err := putSubscriptions(ctx, rc, []enforcement.SubscriptionRecord{{
		ID: benchSubscription, APIID: benchAPI, PlanID: "plan_bench", Status: enforcement.SubscriptionActive,
		PeriodStart: now.Add(-time.Hour), PeriodEnd: now.Add(30 * 24 * time.Hour), QuotaRequests: -1,
		RatePerSecond: benchRatePerSecond, RatePerMinute: benchRatePerMinute, Version: 1,
	}}, func(int) string { return "key_bench" })
	if err != nil {
		return "", err
	}
	return keys[0], nil
}

// checkVeilRoute makes sure the veil phase measures what it says: a
// request with the key passes the rate limits. The handler checks both of
// the subscription's limits in one script and advertises the tightest, the
// per-second one. (Their state cannot be looked at afterwards: with a
// budget this large it expires from Redis a millisecond later.)
func checkVeilRoute(ctx context.Context, url, key string) error {
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	status, header, body, err := getWithKey(ctx, client, url, key)
	if err != nil {
		return fmt.Errorf("check the veil server: %w", err)
	}
	want := `"second";q=` + strconv.Itoa(benchRatePerSecond) + ";w=1"
	if got := header.Get("RateLimit-Policy"); status != http.StatusOK || got != want {
		return fmt.Errorf("check the veil server: GET %s = %d with RateLimit-Policy %q; want 200 with %q (%s)",
			url, status, got, want, body)
	}
	return nil
}

// gatewayLoad sends GET url with the key from concurrency keep-alive
// clients: warmup unmeasured, then d measured. It returns the measured
// phase and how many requests got an answer, warm-up included.
func gatewayLoad(ctx context.Context, name, url, key string, concurrency int, warmup, d time.Duration) (result, int64, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var (
		mu       sync.Mutex
		res      = result{name: name}
		answered atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		firstErr.CompareAndSwap(nil, err)
		failures.Add(1)
	}
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
					fail(err)
					return
				}
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					fail(err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				answered.Add(1)
				if resp.StatusCode != http.StatusOK {
					fail(fmt.Errorf("GET %s = %d; want 200", url, resp.StatusCode))
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
		return result{}, 0, err
	}
	res.elapsed = time.Since(measureFrom)
	res.requests = int64(len(res.latencies))
	res.events = res.requests
	res.failures = failures.Load()
	slices.Sort(res.latencies)
	if res.requests == 0 {
		err, _ := firstErr.Load().(error)
		return result{}, 0, fmt.Errorf("bench gateway: %s: no request succeeded: %v", name, err)
	}
	return res, answered.Load(), nil
}

// countEvents reads the topic from the offsets the run started at until it
// holds want events of source or a minute passes, and returns how many it
// found and how many distinct ids they carry.
func countEvents(ctx context.Context, seeds []string, from kadm.ListedOffsets, source string, want int64, logger *slog.Logger) (events, unique int64, err error) {
	offsets := map[string]map[int32]kgo.Offset{gatewayTopic: {}}
	from.Each(func(o kadm.ListedOffset) { offsets[gatewayTopic][o.Partition] = kgo.NewOffset().At(o.Offset) })
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-gateway-reader", Logger: logger,
		Opts: []kgo.Opt{kgo.ConsumePartitions(offsets)}})
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	var (
		ids  = make(map[string]struct{}, want)
		mine = []byte(`"source":` + strconv.Quote(source))
		ev   struct{ ID, Source string }
	)
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
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
