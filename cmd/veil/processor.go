package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/httpserver"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/usage"
)

const (
	defaultProcessorAddr = ":8082"
)

type processorFlags struct {
	addr      string
	redisAddr string
	// redisDB is registered by the command, not register: veil dev shares
	// the control plane's.
	redisDB      int
	group        string
	topic        string
	dlqTopic     string
	quotaTopic   string
	batchRecords int
	batchWait    time.Duration
	instanceID   string
	session      time.Duration
	lateWindow   time.Duration
}

func (c *processorFlags) register(f *flags) {
	f.String(&c.addr, "processor-addr", "VEIL_PROCESSOR_ADDR", defaultProcessorAddr, "listen address of the processor's /metrics, /healthz and /readyz")
	f.String(&c.redisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.String(&c.group, "processor-group", "VEIL_PROCESSOR_GROUP", processors.DefaultGroup, "Kafka consumer group the processors share")
	f.String(&c.topic, "processor-topic", "VEIL_PROCESSOR_TOPIC", broker.TopicUsageRaw, "topic of raw usage events")
	f.String(&c.dlqTopic, "processor-dlq-topic", "VEIL_PROCESSOR_DLQ_TOPIC", broker.TopicUsageDLQ, "dead-letter topic")
	f.String(&c.quotaTopic, "processor-quota-topic", "VEIL_PROCESSOR_QUOTA_TOPIC", broker.TopicQuotaEvents, "topic of quota threshold crossings, read by the control plane")
	f.String(&c.instanceID, "processor-instance-id", "VEIL_PROCESSOR_INSTANCE_ID", "", "static group membership id (e.g. the pod name): a restarted processor with the same id takes its partitions back at once instead of after the session timeout; empty means dynamic membership")
	f.Duration(&c.session, "processor-session-timeout", "VEIL_PROCESSOR_SESSION_TIMEOUT", 10*time.Second, "how long the group waits for a silent processor before moving its partitions")
	f.Int(&c.batchRecords, "processor-batch-records", "VEIL_PROCESSOR_BATCH_RECORDS", processors.DefaultBatchRecords, "most records in one batch")
	f.Duration(&c.batchWait, "processor-batch-wait", "VEIL_PROCESSOR_BATCH_WAIT", processors.DefaultBatchWait, "longest wait to fill a batch")
}

// stores are the connections a processor needs, closed by close.
type stores struct {
	ch    driver.Conn
	redis rueidis.Client
}

func (s stores) close() {
	if s.ch != nil {
		_ = s.ch.Close()
	}
	if s.redis != nil {
		s.redis.Close()
	}
}

func openStores(ctx context.Context, mig migrateFlags, redisAddr string, redisDB int) (stores, error) {
	var s stores
	ch, err := datastore.OpenClickHouse(datastore.ClickHouse{Addr: mig.clickhouseAddr, Database: mig.clickhouseDB})
	if err != nil {
		return s, err
	}
	s.ch = ch
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := ch.Ping(pctx); err != nil {
		s.close()
		return s, fmt.Errorf("ping ClickHouse at %s (make services starts it): %w", mig.clickhouseAddr, err)
	}
	rc, err := datastore.OpenRedis(datastore.Redis{Addr: redisAddr, DB: redisDB})
	if err != nil {
		s.close()
		return s, err
	}
	s.redis = rc
	return s, nil
}

func runProcessor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg     processorFlags
		mig     migrateFlags
		log     logFlags
		brokers string
	)
	f := newFlags("processor", `Consumes veil.usage.raw in a consumer group and writes every unique, valid event exactly once to
ClickHouse (usage_events and its roll-ups) and to the Redis usage counters; refused records go to
veil.usage.dlq and usage_rejects. Run several to share the partitions.`, stdout)
	cfg.register(f)
	mig.register(f)
	log.register(f)
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "comma-separated Kafka seed brokers")
	f.Duration(&cfg.lateWindow, "late-window", "VEIL_LATE_WINDOW", usage.DefaultLateWindow, "oldest event time accepted")
	f.Int(&cfg.redisDB, "redis-db", "VEIL_REDIS_DB", 0, "Redis logical database of the records, counters and blocks (the control plane's and the gateway's)")
	if err := f.Parse(args); err != nil {
		return err
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	st, err := openStores(ctx, mig, cfg.redisAddr, cfg.redisDB)
	if err != nil {
		return err
	}
	defer st.close()
	set := metrics.NewSet()
	srv, p, closeAdmin, err := newProcessorService(cfg, broker.ParseBrokers(brokers), st, logger, set)
	if err != nil {
		return err
	}
	defer closeAdmin()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx) })
	g.Go(func() error { return p.Run(ctx) })
	return g.Wait()
}

// newProcessorService builds a processor and its HTTP service; the returned
// function releases the client behind /readyz.
func newProcessorService(cfg processorFlags, brokers []string, st stores, logger *slog.Logger, set *metrics.Set) (*httpserver.Server, *processors.Processor, func(), error) {
	p, err := processors.New(processors.Config{
		Logger: logger, Metrics: set, Brokers: brokers, Group: cfg.group, Topic: cfg.topic, DLQTopic: cfg.dlqTopic, QuotaTopic: cfg.quotaTopic,
		ClickHouse: st.ch, Redis: st.redis,
		BatchRecords: cfg.batchRecords, BatchWait: cfg.batchWait, LateWindow: cfg.lateWindow,
		KafkaOpts: groupOpts(cfg),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	admin, err := broker.NewClient(broker.ClientConfig{Brokers: brokers, ClientID: "veil-processor-admin", Logger: logger})
	if err != nil {
		return nil, nil, nil, err
	}
	ready := func(ctx context.Context) error {
		if err := topicReady(admin, cfg.topic)(ctx); err != nil {
			return err
		}
		if err := st.ch.Ping(ctx); err != nil {
			return fmt.Errorf("clickhouse does not answer: %w", err)
		}
		if err := st.redis.Do(ctx, st.redis.B().Ping().Build()).Error(); err != nil {
			return fmt.Errorf("redis does not answer: %w", err)
		}
		return nil
	}
	// The processor has no public routes: its port is internal, and
	// /metrics is served there.
	srv, err := httpserver.Listen(httpserver.Config{Name: "processor", Addr: cfg.addr, Logger: logger, Metrics: set, MetricsOnAddr: true, Ready: ready})
	if err != nil {
		admin.Close()
		return nil, nil, nil, err
	}
	return srv, p, admin.Close, nil
}

func groupOpts(cfg processorFlags) []kgo.Opt {
	opts := []kgo.Opt{kgo.SessionTimeout(cfg.session), kgo.HeartbeatInterval(max(cfg.session/10, 100*time.Millisecond))}
	if cfg.instanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.instanceID))
	}
	return opts
}
