package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/httpserver"
	"github.com/veil-platform/veil/internal/ingesttoken"
	"github.com/veil-platform/veil/schemas/usage"
)

type ingestFlags struct {
	addr       string
	tokens     string
	maxBody    int
	maxEvents  int
	ackTimeout time.Duration
	lateWindow time.Duration
	// metricsAddr is where /metrics is served (empty: not served).
	metricsAddr string
	// tokenCacheTTL bounds how long a revoked issued token keeps working.
	tokenCacheTTL time.Duration
}

func (c *ingestFlags) register(f *flags) {
	f.String(&c.addr, "ingest-addr", "VEIL_INGEST_ADDR", defaultIngestAddr, "listen address of the ingest service")
	f.String(&c.tokens, "ingest-tokens", "VEIL_INGEST_TOKENS", "", "comma-separated bootstrap bearer tokens (each at least 16 characters): token writes any source but a gateway's, token=src1|src2 only those (src* is a prefix)")
	f.Duration(&c.tokenCacheTTL, "ingest-token-cache-ttl", "VEIL_INGEST_TOKEN_CACHE_TTL", ingest.DefaultTokenCacheTTL, "how long an issued token's lookup is reused: a revoked token stops working within it")
	f.Int(&c.maxBody, "ingest-max-body-bytes", "VEIL_INGEST_MAX_BODY_BYTES", ingest.DefaultMaxBodyBytes, "largest request body; larger ones get 413")
	f.Int(&c.maxEvents, "ingest-max-events", "VEIL_INGEST_MAX_EVENTS", ingest.DefaultMaxEvents, "most events in one request; more get 413")
	f.Duration(&c.ackTimeout, "ingest-ack-timeout", "VEIL_INGEST_ACK_TIMEOUT", ingest.DefaultAckTimeout, "longest wait for Kafka's acknowledgement before answering 503")
	f.Duration(&c.lateWindow, "late-window", "VEIL_LATE_WINDOW", usage.DefaultLateWindow, "oldest event time accepted")
}

func runIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg     ingestFlags
		log     logFlags
		brokers string
		pgURL   string
	)
	f := newFlags("ingest", "Serves POST /v1/events on the ingest address and produces every accepted event to veil.usage.raw,\nanswering only after Kafka acknowledged it. Run veil migrate first to create the topics.", stdout)
	cfg.register(f)
	f.String(&cfg.metricsAddr, "metrics-addr", "VEIL_METRICS_ADDR", defaultIngestMetricsAddr, "listen address of the ingest service's /metrics, kept off the ingest port (empty: not served)")
	log.register(f)
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "comma-separated Kafka seed brokers")
	f.String(&pgURL, "postgres-url", "VEIL_POSTGRES_URL", defaultPostgresURL, "Postgres connection URL, where the tokens issued through the control plane are (empty: bootstrap tokens only)")
	if err := f.Parse(args); err != nil {
		return err
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	if strings.TrimSpace(cfg.tokens) == "" && pgURL == "" {
		return errors.New("ingest accepts no token: set VEIL_INGEST_TOKENS (bootstrap tokens) or VEIL_POSTGRES_URL (tokens issued through the control plane)")
	}
	var lookup ingest.TokenLookup
	if pgURL != "" {
		pool, err := datastore.OpenPostgres(ctx, datastore.Postgres{URL: pgURL})
		if err != nil {
			return err
		}
		defer pool.Close()
		lookup = ingesttoken.NewStore(pool)
	}
	set := metrics.NewSet()
	srv, cl, err := newIngestService(cfg, broker.ParseBrokers(brokers), lookup, logger, set)
	if err != nil {
		return err
	}
	defer closeProducer(ctx, cl, logger)
	return srv.Serve(ctx)
}

// newIngestService builds the ingest service and its producer; the caller
// serves it and then closes the producer with closeProducer. lookup finds
// the tokens issued through the control plane; nil accepts the bootstrap
// tokens only.
func newIngestService(cfg ingestFlags, brokers []string, lookup ingest.TokenLookup, logger *slog.Logger, set *metrics.Set) (*httpserver.Server, *kgo.Client, error) {
	cl, err := broker.NewClient(broker.ClientConfig{
		Brokers:  brokers,
		ClientID: "veil-ingest",
		Logger:   logger,
		Metrics:  set,
		Opts:     ingestProducerOpts(),
	})
	if err != nil {
		return nil, nil, err
	}
	h, err := ingest.New(ingest.Config{
		Logger:        logger,
		Metrics:       set,
		Producer:      cl,
		Tokens:        strings.FieldsFunc(cfg.tokens, func(r rune) bool { return r == ',' || r == ' ' }),
		Lookup:        lookup,
		TokenCacheTTL: cfg.tokenCacheTTL,
		MaxBodyBytes:  int64(cfg.maxBody),
		MaxEvents:     cfg.maxEvents,
		AckTimeout:    cfg.ackTimeout,
		LateWindow:    cfg.lateWindow,
	})
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	srv, err := httpserver.Listen(httpserver.Config{
		Name:    "ingest",
		Addr:    cfg.addr,
		Handler: h.Routes(),
		Logger:  logger,
		Metrics: set,
		// Off the ingest port, which every gateway and provider reaches.
		MetricsAddr: cfg.metricsAddr,
		Ready:       topicReady(cl, broker.TopicUsageRaw),
	})
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return srv, cl, nil
}

// ingestProducerOpts tune the producer behind POST /v1/events: no linger,
// because every request waits for its acknowledgement and records buffered
// while a produce is in flight are batched anyway; room for many requests'
// events; LZ4 batches.
func ingestProducerOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.ProducerLinger(0),
		kgo.MaxBufferedRecords(250_000),
		kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()),
	}
}

// topicReady is ready when a broker answers and the topic exists.
func topicReady(cl *kgo.Client, topic string) httpserver.ReadyFunc {
	adm := kadm.NewClient(cl)
	return func(ctx context.Context) error {
		md, err := adm.Metadata(ctx, topic)
		if err != nil {
			return fmt.Errorf("kafka does not answer: %w", err)
		}
		t, ok := md.Topics[topic]
		if !ok || t.Err != nil {
			return fmt.Errorf("topic %s is missing: run veil migrate", topic)
		}
		return nil
	}
}

// closeProducer flushes whatever is still buffered, then closes the client.
func closeProducer(ctx context.Context, cl *kgo.Client, logger *slog.Logger) {
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := cl.Flush(flushCtx); err != nil {
		logger.Error("flush kafka producer", "err", err)
	}
	cl.Close()
}
