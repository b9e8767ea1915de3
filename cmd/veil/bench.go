package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/bench"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/processors"
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
		case "billing":
			return benchBilling(ctx, args[1:], stdout, stderr)
		case "analytics":
			return benchAnalytics(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintln(stdout, `Usage: veil bench ingest|pipeline|gateway|enforcement|billing|analytics [flags]

Benchmarks:
  ingest       POST /v1/events throughput and latency against franz-go's raw produce rate
  pipeline     events/s through a processor into ClickHouse and Redis, against raw produce and raw insert rates
  gateway      requests/s and latency through the veil Caddy handler against plain Caddy reverse_proxy
  enforcement  time from the event that uses a hard quota up to the gateway's first 429, and the overshoot
  billing      the billing cycle over N subscriptions: periods recorded, closed, invoiced and finalized per second
  analytics    p50/p99 over HTTP of every analytics endpoint on N skewed usage rows, and the storage per million rows`)
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		return nil
	}
	return errors.New("bench: name a benchmark: ingest, pipeline, gateway, enforcement, billing or analytics")
}

func benchIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg             bench.IngestConfig
		brokers, sizesS string
		log             logFlags
	)
	f := newFlags("bench ingest", `Loads POST /v1/events of an in-process ingest service over loopback, once per batch size, then
measures franz-go's raw produce rate to the same broker with the same events, and prints both and their ratio.
With no brokers it runs against an in-process kfake broker; name the real one with --kafka-brokers.`, stdout)
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", "", "Kafka seed brokers; empty runs an in-process kfake broker")
	f.Duration(&cfg.Duration, "duration", "", 10*time.Second, "how long each phase runs")
	f.Int(&cfg.Concurrency, "concurrency", "", 16, "concurrent HTTP clients")
	f.String(&sizesS, "batch-sizes", "", "100,1", "comma-separated events per request")
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.Logger, err = log.logger(stderr); err != nil {
		return err
	}
	for _, s := range splitList(sizesS) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > ingest.DefaultMaxEvents {
			return fmt.Errorf("--batch-sizes: %q is not a batch size between 1 and %d", s, ingest.DefaultMaxEvents)
		}
		cfg.BatchSizes = append(cfg.BatchSizes, n)
	}
	cfg.Brokers, cfg.ProducerOpts = broker.ParseBrokers(brokers), ingestProducerOpts()
	return bench.Ingest(ctx, cfg, stdout)
}

func benchPipeline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg        bench.PipelineConfig
		mig        migrateFlags
		brokers    string
		dupS, invS string
		log        logFlags
	)
	f := newFlags("bench pipeline", `Produces N events (with duplicates and invalid ones) to a fresh topic, then runs a processor in
this process and measures until every unique event is in ClickHouse and Redis. In the same run it
measures the raw produce rate to the broker and the raw ClickHouse insert rate of the same rows, and
prints the ratios and a final JSON line. Uses a scratch ClickHouse database and topic, dropped after.`, stdout)
	mig.register(f)
	f.String(&cfg.RedisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers; empty runs an in-process kfake broker")
	f.Int(&cfg.Events, "events", "", 1_000_000, "events to produce")
	f.String(&dupS, "dup-rate", "", "0.1", "share of events that repeat an earlier one")
	f.String(&invS, "invalid-rate", "", "0.01", "share of events that are invalid")
	f.Int(&cfg.BatchRecords, "batch-records", "", processors.DefaultBatchRecords, "processor batch size")
	f.String(&cfg.CPUProfile, "cpuprofile", "", "", "write a CPU profile of the processing phase to this file")
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.DupRate, err = strconv.ParseFloat(dupS, 64); err != nil || cfg.DupRate < 0 || cfg.DupRate >= 1 {
		return fmt.Errorf("--dup-rate %q: want a share in [0, 1)", dupS)
	}
	if cfg.InvalidRate, err = strconv.ParseFloat(invS, 64); err != nil || cfg.InvalidRate < 0 || cfg.InvalidRate >= 1 {
		return fmt.Errorf("--invalid-rate %q: want a share in [0, 1)", invS)
	}
	if cfg.Logger, err = log.logger(stderr); err != nil {
		return err
	}
	cfg.Brokers, cfg.ClickHouseAddr = broker.ParseBrokers(brokers), mig.clickhouseAddr
	return bench.Pipeline(ctx, cfg, stdout)
}

func benchGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg     bench.GatewayConfig
		brokers string
		log     logFlags
	)
	f := newFlags("bench gateway", `Runs veil gateway run with two servers on loopback in front of the same local upstream: plain
Caddy reverse_proxy, and the veil handler (key auth, a per-second and a per-minute rate limit,
one usage event per request to Kafka) before the same reverse_proxy. Loads each with the same
keep-alive clients, after a warm-up, and prints throughput, p50/p99 latency, the veil handler's
cost against plain Caddy, and how many of the veil phase's events reached the topic
veil.bench.gateway (which it creates). It empties the Redis database it is given.`, stdout)
	f.String(&cfg.RedisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.Int(&cfg.RedisDB, "redis-db", "", 15, "Redis logical database for the bench's key and subscription; emptied first")
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers; empty runs an in-process kfake broker")
	f.Int(&cfg.Concurrency, "requests-concurrency", "", 32, "concurrent keep-alive HTTP clients")
	f.Duration(&cfg.Duration, "duration", "", 10*time.Second, "how long each phase is measured")
	f.Duration(&cfg.Warmup, "warmup", "", 2*time.Second, "unmeasured load before each phase")
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	switch {
	case cfg.Concurrency < 1:
		return fmt.Errorf("--requests-concurrency %d: want 1 or more", cfg.Concurrency)
	case cfg.Duration <= 0 || cfg.Warmup < 0:
		return fmt.Errorf("--duration %s, --warmup %s: want a positive duration and no negative warm-up", cfg.Duration, cfg.Warmup)
	case cfg.RedisDB < 0:
		return fmt.Errorf("--redis-db %d: want 0 or more", cfg.RedisDB)
	}
	var err error
	if cfg.Logger, err = log.logger(stderr); err != nil {
		return err
	}
	cfg.Brokers = broker.ParseBrokers(brokers)
	return bench.Gateway(ctx, cfg, stdout, stderr)
}

func benchEnforcement(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg     bench.EnforcementConfig
		mig     migrateFlags
		brokers string
		log     logFlags
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
	f.String(&cfg.RedisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.Int(&cfg.RedisDB, "redis-db", "", 14, "Redis logical database for the bench's records and counters; emptied first")
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers; empty runs an in-process kfake broker")
	f.Int(&cfg.Trials, "trials", "", 30, "subscriptions run into their quota, one after the other")
	f.Int(&cfg.Quota, "quota", "", 200, "each subscription's hard request quota")
	f.Int(&cfg.Rate, "rate", "", 500, "requests per second each trial sends")
	f.Duration(&cfg.BatchWait, "processor-batch-wait", "VEIL_PROCESSOR_BATCH_WAIT", processors.DefaultBatchWait, "the processor's longest wait to fill a batch")
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	switch {
	case cfg.Trials < 1 || cfg.Quota < 1 || cfg.Rate < 1:
		return fmt.Errorf("--trials %d, --quota %d, --rate %d: want each 1 or more", cfg.Trials, cfg.Quota, cfg.Rate)
	case cfg.RedisDB < 0:
		return fmt.Errorf("--redis-db %d: want 0 or more", cfg.RedisDB)
	}
	var err error
	if cfg.Logger, err = log.logger(stderr); err != nil {
		return err
	}
	cfg.Brokers, cfg.ClickHouseAddr = broker.ParseBrokers(brokers), mig.clickhouseAddr
	return bench.Enforcement(ctx, cfg, stdout, stderr)
}

func benchBilling(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg bench.BillingConfig
		mig migrateFlags
		log logFlags
	)
	f := newFlags("bench billing", `Creates N subscriptions of a few providers (hybrid graduated, usage-based volume, subscription
and freemium plans; some with a 10% promotion, some changing plan mid-period, a third taxed) in
a fresh Postgres and ClickHouse database of its own, writes their usage events into ClickHouse,
moves the billing clock past the period's end and grace, and runs the billing cycle: periods
recorded, closed with their usage snapshots, invoices built and finalized. Prints the time of
each phase, invoices per second and the peak memory, after checking one invoice per subscription,
gapless numbers per issuer and that a sample of invoices explains with no difference; then a
final JSON line. The databases are dropped after unless --keep.`, stdout)
	mig.register(f)
	f.Int(&cfg.Subscriptions, "subscriptions", "", 100_000, "subscriptions, each billed one period")
	f.Int(&cfg.Events, "events", "", 10, "usage events of each subscription")
	f.Int(&cfg.Providers, "providers", "", 4, "providers (invoice issuers)")
	f.Int(&cfg.Workers, "workers", "", 4, "periods the cycle bills at once")
	f.Int(&cfg.Sample, "explain-sample", "", 200, "invoices, picked at random, that must explain with no difference")
	f.Bool(&cfg.Keep, "keep", "", false, "keep the databases after the run")
	f.String(&cfg.CPUProfile, "cpuprofile", "", "", "write a CPU profile of the cycle to this file")
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	var err error
	if cfg.Logger, err = log.logger(stderr); err != nil {
		return err
	}
	cfg.PostgresURL, cfg.ClickHouseAddr = mig.postgresURL, mig.clickhouseAddr
	_, err = bench.Billing(ctx, cfg, stdout)
	return err
}

func benchAnalytics(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg     bench.AnalyticsConfig
		mig     migrateFlags
		brokers string
		log     logFlags
	)
	f := newFlags("bench analytics", `Creates a Postgres and a ClickHouse database of its own (the migrations veil migrate runs),
seeds providers, APIs, plans, consumer organizations, subscriptions and keys, and loads N usage
rows over 30 days into ClickHouse server-side (INSERT ... SELECT FROM numbers, so the roll-ups
fill as for live traffic), skewed: a few APIs, subscriptions, keys and routes take most of the
calls, with errors and a long latency tail. Then it serves the control plane's REST API on
loopback and measures every analytics endpoint (preview, subscription and key analytics in UTC and
a half-hour zone, exports, API and provider analytics, the admin overview): warm-up rounds, then
--requests rounds of one request per endpoint. Prints p50/p99 per endpoint, the load rate and
the storage per million rows (system.parts), then a final JSON line. The databases are dropped
after unless --keep; --reuse NAME measures a kept load again (migrated again first, so a
roll-up added since is backfilled).`, stdout)
	mig.register(f)
	f.String(&cfg.RedisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address (the control plane's services connect; nothing is written)")
	f.Int(&cfg.RedisDB, "redis-db", "", 13, "Redis logical database")
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers the admin overview reads the processors' lag from; empty leaves it out")
	f.Int64(&cfg.Rows, "rows", "", 10_000_000, "usage rows to load")
	f.Int64(&cfg.Chunk, "chunk", "", 2_000_000, "rows per INSERT ... SELECT")
	f.Int(&cfg.Requests, "requests", "", 200, "measured requests per endpoint")
	f.Int(&cfg.Warmup, "warmup", "", 5, "unmeasured requests per endpoint first")
	f.Bool(&cfg.Keep, "keep", "", false, "keep the databases after the run (for --reuse)")
	f.String(&cfg.Reuse, "reuse", "", "", "measure the kept databases of this name again instead of loading")
	f.Bool(&cfg.KeepOutlooks, "keep-outlooks", "", false, "with --reuse: keep the outlooks an earlier run wrote instead of running the outlooks job again")
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	var err error
	if cfg.Logger, err = log.logger(stderr); err != nil {
		return err
	}
	cfg.PostgresURL, cfg.ClickHouseAddr, cfg.Brokers = mig.postgresURL, mig.clickhouseAddr, broker.ParseBrokers(brokers)
	_, err = bench.Analytics(ctx, cfg, stdout, stderr)
	return err
}
