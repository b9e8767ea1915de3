package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/ingesttoken"
	"github.com/veil-platform/veil/processors"
)

// EnforcementConfig configures Enforcement.
type EnforcementConfig struct {
	// Brokers are Kafka seed brokers; empty runs an in-process kfake broker.
	Brokers []string
	// ClickHouseAddr is where the scratch database is made.
	ClickHouseAddr string
	// RedisAddr and RedisDB are the Redis database of the bench's records
	// and counters; it is emptied first.
	RedisAddr string
	RedisDB   int
	// Trials is how many subscriptions are run into their quota, one after
	// the other; Quota is each one's hard request quota, and Rate the
	// requests per second a trial sends. Each must be 1 or more.
	Trials, Quota, Rate int
	// BatchWait is the processor's longest wait to fill a batch.
	BatchWait time.Duration
	Logger    *slog.Logger
}

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

// Enforcement measures how long a used-up quota takes to stop traffic at
// the gateway: a veil gateway run child sends usage events to Kafka, a
// processor in this process counts them into Redis, and its counting
// script sets the block the gateway reads. Each trial is a fresh
// subscription with a hard quota, called at a steady rate until the first
// 429 quota-exhausted. It prints p50/p99/max and the overshoot, and a
// final JSON line.
func Enforcement(ctx context.Context, cfg EnforcementConfig, stdout, stderr io.Writer) error {
	if cfg.Trials < 1 || cfg.Quota < 1 || cfg.Rate < 1 {
		return fmt.Errorf("bench enforcement: %d trials, quota %d, rate %d: want each 1 or more", cfg.Trials, cfg.Quota, cfg.Rate)
	}
	seeds, brokerName, closeBroker, err := startBroker(cfg.Brokers, cfg.Logger)
	if err != nil {
		return err
	}
	defer closeBroker()
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, dlq, quotaTopic := "veil.bench.enforce."+stamp, "veil.bench.enforce.dlq."+stamp, "veil.bench.enforce.quota."+stamp
	s, err := newScratch(ctx, seeds, "veil-bench-enforcement", nil, []broker.TopicSpec{
		{Name: topic, Partitions: broker.DefaultPartitions}, {Name: dlq, Partitions: 1}, {Name: quotaTopic, Partitions: 1},
	}, cfg.ClickHouseAddr, stamp, cfg.Logger)
	if err != nil {
		return err
	}
	defer s.drop(ctx)
	rc, err := datastore.OpenRedis(datastore.Redis{Addr: cfg.RedisAddr, DB: cfg.RedisDB, DisableCache: true})
	if err != nil {
		return err
	}
	defer rc.Close()
	// One subscription and key per trial, and one to warm up with.
	apiKeys, err := enforcementRecords(ctx, rc, cfg.RedisDB, cfg.Trials+1, cfg.Quota)
	if err != nil {
		return err
	}
	gw, stopGateway, err := startStack(ctx, "enforcement", stackConfig{
		redisAddr: cfg.RedisAddr, redisDB: cfg.RedisDB, brokers: seeds, source: ingesttoken.GatewaySourcePrefix + "bench-enforcement-" + stamp, topic: topic,
	}, stderr)
	if err != nil {
		return err
	}
	defer stopGateway()
	p, err := processors.New(processors.Config{Logger: cfg.Logger, Metrics: metrics.NewSet(), Brokers: seeds,
		Group: "veil-bench-" + stamp, Topic: topic, DLQTopic: dlq, QuotaTopic: quotaTopic, ClickHouse: s.ch, Redis: rc, BatchWait: cfg.BatchWait})
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
		brokerName, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), cfg.Trials, cfg.Quota, cfg.Rate, cfg.BatchWait)
	lat, overshoots, err := enforcementTrials(ctx, cfg, gw.veilURL+"/bench/items/42", apiKeys)
	if err != nil {
		return err
	}
	fig := enforcementSummary(cfg, brokerName, lat, overshoots)
	fmt.Fprintf(stdout, "quota used up → first 429 at the gateway: p50 %.1f ms, p99 %.1f ms, max %.1f ms (goal p99 < 1 s: %s)\n",
		fig.P50MS, fig.P99MS, fig.MaxMS, map[bool]string{true: "met", false: "not met"}[fig.GoalMet])
	fmt.Fprintf(stdout, "overshoot (admitted beyond the quota at %d requests/s): mean %.1f, max %d\n", cfg.Rate, fig.OvershootMean, fig.OvershootMax)
	return json.NewEncoder(stdout).Encode(fig)
}

// enforcementTrials runs a warm-up trial with the first key, which waits
// for the processor to join its group, then one trial per other key; it
// returns the trials' times to the first 429, sorted, and overshoots.
func enforcementTrials(ctx context.Context, cfg EnforcementConfig, url string, apiKeys []string) ([]time.Duration, []int, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	if _, _, err := enforcementTrial(ctx, client, url, apiKeys[0], cfg.Quota, cfg.Rate, 2*time.Minute); err != nil {
		return nil, nil, fmt.Errorf("warm-up: %w", err)
	}
	var (
		lat        []time.Duration
		overshoots []int
	)
	for i := 1; i < len(apiKeys); i++ {
		d, over, err := enforcementTrial(ctx, client, url, apiKeys[i], cfg.Quota, cfg.Rate, time.Minute)
		if err != nil {
			return nil, nil, fmt.Errorf("trial %d: %w", i, err)
		}
		lat, overshoots = append(lat, d), append(overshoots, over)
	}
	slices.Sort(lat)
	return lat, overshoots, nil
}

// enforcementSummary computes the figures of the trials.
func enforcementSummary(cfg EnforcementConfig, brokerName string, lat []time.Duration, overshoots []int) enforcementFigures {
	q := func(f float64) time.Duration { return lat[int(f*float64(len(lat)-1))] }
	fig := enforcementFigures{
		Broker: brokerName, Cores: runtime.NumCPU(), Trials: cfg.Trials, Quota: cfg.Quota, RatePerSec: cfg.Rate, BatchWaitMS: cfg.BatchWait.Milliseconds(),
		P50MS: ms(q(0.5)), P99MS: ms(q(0.99)), MaxMS: ms(lat[len(lat)-1]), OvershootMax: slices.Max(overshoots),
	}
	sum := 0
	for _, o := range overshoots {
		sum += o
	}
	fig.OvershootMean = float64(sum) / float64(len(overshoots))
	fig.GoalMet = q(0.99) < time.Second
	return fig
}

// enforcementRecords empties the Redis database and writes n subscriptions
// with a hard quota and one key each; it returns the keys.
func enforcementRecords(ctx context.Context, rc rueidis.Client, db, n, quota int) ([]string, error) {
	if err := emptyRedis(ctx, rc, db); err != nil {
		return nil, err
	}
	now := time.Now().Truncate(time.Second)
	subs := make([]enforcement.SubscriptionRecord, n)
	for i := range subs {
		subs[i] = enforcement.SubscriptionRecord{
			// Subscription ids are UUIDs: the processors refuse an event
			// whose subject is not one.
			ID: uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "veil-bench-enforcement-%d", i)).String(), APIID: benchAPI, PlanID: "plan_bench", Status: enforcement.SubscriptionActive,
			PeriodStart: now.Add(-time.Hour), PeriodEnd: now.Add(30 * 24 * time.Hour), QuotaRequests: int64(quota), QuotaHard: true, Version: 1,
		}
	}
	return putSubscriptions(ctx, rc, subs, func(i int) string { return fmt.Sprintf("key_enforce_%d", i) })
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
		status, _, body, err := getWithKey(ctx, client, url, key)
		if err != nil {
			return 0, 0, err
		}
		now := time.Now()
		switch status {
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
			return 0, 0, fmt.Errorf("GET %s = %d %s; want 200 or 429", url, status, body)
		}
	}
}
