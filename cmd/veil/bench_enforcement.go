package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/migrate"
)

// enforcementFigures is the final JSON line of veil bench enforcement.
type enforcementFigures struct {
	Broker      string  `json:"broker"`
	Cores       int     `json:"cores"`
	Trials      int     `json:"trials"`
	Quota       int     `json:"quota"`
	RatePerSec  int     `json:"rate_per_sec"`
	BatchWaitMS int64   `json:"processor_batch_wait_ms"`
	P50MS       float64 `json:"p50_ms"`
	P99MS       float64 `json:"p99_ms"`
	MaxMS       float64 `json:"max_ms"`
	// Overshoot is what the gateway admitted beyond the quota, per trial.
	OvershootMean float64 `json:"overshoot_mean"`
	OvershootMax  int     `json:"overshoot_max"`
	GoalMet       bool    `json:"goal_p99_under_1s"`
}

func benchEnforcement(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		mig       migrateFlags
		redisAddr string
		redisDB   int
		brokers   string
		trials    int
		quota     int
		rate      int
		batchWait time.Duration
		log       logFlags
	)
	f := newFlags("bench enforcement", `Measures how long a used-up quota takes to stop traffic at the gateway: a veil gateway run
child (the veil handler before a local upstream) sends usage events to Kafka, a processor in this
process counts them into Redis, and its counting script sets the block the gateway reads through
client-side caching. Each trial is a fresh subscription with a hard quota, called at a steady rate
until the first 429 quota-exhausted; the figure is the time from the answer to the request that used
the quota up (its event is the one that crosses it) to that first 429, and the overshoot is what was
admitted in between. Prints p50/p99/max and a final JSON line. Uses a scratch ClickHouse database
and topics, dropped after, and empties the Redis database it is given.`, stdout)
	mig.register(f)
	f.String(&redisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.Int(&redisDB, "redis-db", "", 14, "Redis logical database for the bench's records and counters; emptied first")
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers; empty runs an in-process kfake broker")
	f.Int(&trials, "trials", "", 30, "subscriptions run into their quota, one after the other")
	f.Int(&quota, "quota", "", 200, "each subscription's hard request quota")
	f.Int(&rate, "rate", "", 500, "requests per second each trial sends")
	f.Duration(&batchWait, "processor-batch-wait", "VEIL_PROCESSOR_BATCH_WAIT", processors.DefaultBatchWait, "the processor's longest wait to fill a batch")
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	switch {
	case trials < 1 || quota < 1 || rate < 1:
		return fmt.Errorf("--trials %d, --quota %d, --rate %d: want each 1 or more", trials, quota, rate)
	case redisDB < 0:
		return fmt.Errorf("--redis-db %d: want 0 or more", redisDB)
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	seeds, brokerName, closeBroker, err := benchBroker(brokers, logger)
	if err != nil {
		return err
	}
	defer closeBroker()
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, dlq, quotaTopic := "veil.bench.enforce."+stamp, "veil.bench.enforce.dlq."+stamp, "veil.bench.enforce.quota."+stamp
	db := "veil_bench_" + stamp
	mig.clickhouseDB = db

	admin, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench-enforcement", Logger: logger})
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := broker.EnsureTopics(ctx, admin, []broker.TopicSpec{
		{Name: topic, Partitions: broker.DefaultPartitions}, {Name: dlq, Partitions: 1}, {Name: quotaTopic, Partitions: 1},
	}); err != nil {
		return err
	}
	if _, err := migrate.ClickHouse(ctx, migrate.ClickHouseConfig{Addr: mig.clickhouseAddr, Database: db}, logger); err != nil {
		return err
	}
	ch, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: mig.clickhouseAddr, Database: db})
	if err != nil {
		return err
	}
	defer ch.Close()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = ch.Exec(cctx, "DROP DATABASE IF EXISTS "+db)
		_, _ = kadm.NewClient(admin).DeleteTopics(cctx, topic, dlq, quotaTopic)
	}()
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{redisAddr}, SelectDB: redisDB, DisableCache: true})
	if err != nil {
		return fmt.Errorf("connect to redis at %s: %w", redisAddr, err)
	}
	defer rc.Close()
	// One subscription and key per trial, and one to warm up with.
	apiKeys, err := enforcementRecords(ctx, rc, redisDB, trials+1, quota)
	if err != nil {
		return err
	}

	gw, stopGateway, err := startBenchStack(ctx, "enforcement", benchGatewayConfig{
		redisAddr: redisAddr, redisDB: redisDB, brokers: seeds, source: "/bench/enforcement-" + stamp, topic: topic,
	}, stderr)
	if err != nil {
		return err
	}
	defer stopGateway()

	p, err := processors.New(processors.Config{Logger: logger, Metrics: metrics.NewSet(), Brokers: seeds,
		Group: "veil-bench-" + stamp, Topic: topic, DLQTopic: dlq, QuotaTopic: quotaTopic, ClickHouse: ch, Redis: rc, BatchWait: batchWait})
	if err != nil {
		return err
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	defer func() {
		stop()
		<-done
	}()

	fmt.Fprintf(stdout, "veil bench enforcement: %s, %d cores, %s/%s, %s; %d trials, hard quota %d, %d requests/s, processor batch wait %s\n",
		brokerName, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), trials, quota, rate, batchWait)
	url := gw.veilURL + "/bench/items/42"
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	// The warm-up trial waits for the processor to join its group.
	if _, _, err := enforcementTrial(ctx, client, url, apiKeys[0], quota, rate, 2*time.Minute); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	var (
		lat        []time.Duration
		overshoots []int
	)
	for i := 1; i <= trials; i++ {
		d, over, err := enforcementTrial(ctx, client, url, apiKeys[i], quota, rate, time.Minute)
		if err != nil {
			return fmt.Errorf("trial %d: %w", i, err)
		}
		lat, overshoots = append(lat, d), append(overshoots, over)
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[int(f*float64(len(lat)-1))] }
	fig := enforcementFigures{
		Broker: brokerName, Cores: runtime.NumCPU(), Trials: trials, Quota: quota, RatePerSec: rate, BatchWaitMS: batchWait.Milliseconds(),
		P50MS: ms(q(0.5)), P99MS: ms(q(0.99)), MaxMS: ms(lat[len(lat)-1]), OvershootMax: slices.Max(overshoots),
	}
	sum := 0
	for _, o := range overshoots {
		sum += o
	}
	fig.OvershootMean = float64(sum) / float64(len(overshoots))
	fig.GoalMet = q(0.99) < time.Second
	fmt.Fprintf(stdout, "quota used up → first 429 at the gateway: p50 %.1f ms, p99 %.1f ms, max %.1f ms (goal p99 < 1 s: %s)\n",
		fig.P50MS, fig.P99MS, fig.MaxMS, map[bool]string{true: "met", false: "not met"}[fig.GoalMet])
	fmt.Fprintf(stdout, "overshoot (admitted beyond the quota at %d requests/s): mean %.1f, max %d\n", rate, fig.OvershootMean, fig.OvershootMax)
	return json.NewEncoder(stdout).Encode(fig)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// enforcementRecords empties the Redis database and writes n subscriptions
// with a hard quota and one key each; it returns the keys.
func enforcementRecords(ctx context.Context, rc rueidis.Client, db, n, quota int) ([]string, error) {
	if err := rc.Do(ctx, rc.B().Flushdb().Build()).Error(); err != nil {
		return nil, fmt.Errorf("empty redis database %d: %w", db, err)
	}
	store := enforcement.New(rc)
	now := time.Now().Truncate(time.Second)
	out := make([]string, n)
	for i := range n {
		sub := fmt.Sprintf("sub_enforce_%d", i)
		if _, err := store.PutSubscription(ctx, enforcement.SubscriptionRecord{
			ID: sub, APIID: benchAPI, PlanID: "plan_bench", Status: enforcement.SubscriptionActive,
			PeriodStart: now.Add(-time.Hour), PeriodEnd: now.Add(30 * 24 * time.Hour), QuotaRequests: int64(quota), QuotaHard: true, Version: 1,
		}); err != nil {
			return nil, err
		}
		k, err := apikey.Generate(apikey.EnvTest)
		if err != nil {
			return nil, err
		}
		if _, err := store.PutKey(ctx, enforcement.KeyRecord{
			Hash: k.Hash, KeyID: fmt.Sprintf("key_enforce_%d", i), SubscriptionID: sub, APIID: benchAPI, Status: enforcement.KeyActive, Version: 1,
		}); err != nil {
			return nil, err
		}
		out[i] = k.Plaintext
	}
	return out, nil
}

// enforcementTrial calls url with key at rate until the first 429
// quota-exhausted. It returns the time from the answer to the request that
// used the quota up to that 429, and how many requests were admitted
// beyond the quota.
func enforcementTrial(ctx context.Context, client *http.Client, url, key string, quota, rate int, limit time.Duration) (time.Duration, int, error) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	deadline := time.Now().Add(limit)
	admitted := 0
	var usedUp time.Time
	for {
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("no quota refusal after %s and %d admitted requests (quota %d)", limit, admitted, quota)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, 0, err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		now := time.Now()
		switch resp.StatusCode {
		case http.StatusOK:
			admitted++
			if admitted == quota {
				usedUp = now
			}
		case http.StatusTooManyRequests:
			var p struct{ Type string }
			_ = json.Unmarshal(body, &p)
			if !strings.HasSuffix(p.Type, "/quota-exhausted") || admitted < quota {
				return 0, 0, fmt.Errorf("429 %s after %d admitted requests; want quota-exhausted after %d", p.Type, admitted, quota)
			}
			return now.Sub(usedUp), admitted - quota, nil
		default:
			return 0, 0, fmt.Errorf("GET %s = %d %s; want 200 or 429", url, resp.StatusCode, body)
		}
	}
}
