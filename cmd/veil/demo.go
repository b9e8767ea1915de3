package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/demo"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg       demo.Config
		mig       migrateFlags
		redisAddr string
		redisDB   int
	)
	f := newFlags("demo", `Walks the demo scenario against a running veil dev: waits until ingest is ready, posts events in
batches with a progress bar, shows how a bad event is refused, then reads the topic back and checks that
every accepted event is in Kafka; then the catalog, subscriptions, keys and quotas, and, with a plan directory,
a hybrid plan from a YAML file, a promotion code, a quote of the metered usage and the invoice of the
period, which the demo ends in Postgres; then payments through Stripe (stripe-mock under veil dev, the demo
signing Stripe's events): a card pays one invoice, another is declined, dunned, blocked with 402 and paid.`, stdout)
	f.String(&cfg.IngestURL, "ingest-url", "VEIL_DEMO_INGEST_URL", "http://127.0.0.1:8081", "base URL of the ingest service")
	f.String(&cfg.IngestToken, "token", "VEIL_DEMO_TOKEN", DevIngestToken, "ingest bearer token")
	f.String(&cfg.Brokers, "kafka-brokers", "VEIL_DEMO_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers to read the topic back from")
	mig.register(f)
	f.String(&redisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.Int(&redisDB, "redis-db", "VEIL_REDIS_DB", 0, "Redis logical database of the control plane's key and subscription records")
	f.String(&cfg.ControlPlaneURL, "control-plane-url", "VEIL_DEMO_CONTROL_PLANE_URL", "http://127.0.0.1:8080", "base URL of the control plane")
	f.String(&cfg.GatewayURL, "gateway-url", "VEIL_GATEWAY_URL", defaultGatewayURL, "base URL of the gateway")
	f.String(&cfg.JWTSecret, "jwt-secret", "VEIL_JWT_SECRET", identity.DevJWTSecret, "HS256 secret veil dev verifies tokens with")
	f.String(&cfg.MailpitURL, "mailpit-url", "VEIL_DEMO_MAILPIT_URL", "", "mailpit's HTTP API, to show the emails veil dev sent (empty: show none)")
	f.String(&cfg.PricingDir, "pricing-dir", "VEIL_PRICING_DIR", "", "the plan directory veil dev watches, where the demo saves its hybrid plan (empty: no priced plan)")
	// The Stripe webhook secret veil dev verifies events with, which the
	// demo signs Stripe's events with (set empty: no payments): from the
	// environment only, as veil controlplane reads it.
	cfg.StripeWebhookSecret = DevStripeWebhookSecret
	f.Secret(&cfg.StripeWebhookSecret, "VEIL_STRIPE_WEBHOOK_SECRET")
	f.String(&cfg.PlanFile, "plan-file", "", "deploy/pricing/hybrid.yaml", "the plan file the demo saves there, declared for the API weather")
	f.Int(&cfg.Events, "events", "", 5000, "events to send")
	f.Int(&cfg.Batch, "batch", "", 100, "events per request")
	if err := f.Parse(args); err != nil {
		return err
	}
	if cfg.Events < 1 || cfg.Batch < 1 || cfg.Batch > ingest.DefaultMaxEvents {
		return fmt.Errorf("--events must be positive and --batch between 1 and %d", ingest.DefaultMaxEvents)
	}
	st, err := openStores(ctx, mig, redisAddr, redisDB)
	if err != nil {
		return err
	}
	defer st.close()
	cfg.ClickHouse, cfg.ClickHouseAddr, cfg.ClickHouseDB = st.ch, mig.clickhouseAddr, mig.clickhouseDB
	cfg.Redis, cfg.RedisAddr, cfg.RedisDB = st.redis, redisAddr, redisDB
	pool, err := datastore.OpenPostgres(ctx, datastore.Postgres{URL: mig.postgresURL})
	if err != nil {
		return err
	}
	defer pool.Close()
	cfg.Postgres = pool
	// The demo shows what veil usage prints.
	cfg.Usage = func(ctx context.Context, subscription string, w io.Writer) error {
		return runUsage(ctx, []string{"--subscription", subscription, "--clickhouse-addr", mig.clickhouseAddr,
			"--clickhouse-database", mig.clickhouseDB, "--redis-addr", redisAddr, "--redis-db", strconv.Itoa(redisDB)}, w, io.Discard)
	}
	return demo.Run(ctx, cfg, stdout)
}
