package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/VictoriaMetrics/metrics"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/ingesttoken"
)

// DevIngestToken is the ingest bearer token veil dev uses when
// VEIL_INGEST_TOKENS is empty. It is for local use only.
const DevIngestToken = "veil-dev-ingest-token"

// Stripe in veil dev, when no key is configured: stripe-mock (make
// services starts it) with a test key it accepts (sk_test_ and letters
// and digits only: it refuses an underscore after that), and a webhook secret as
// public as the dev token, so that local tools and the demo can sign
// Stripe's events. A key of one's own leaves all three alone.
const (
	DevStripeAPIBase       = "http://127.0.0.1:12111"
	DevStripeSecretKey     = "sk_test_veilDevStripeMock"
	DevStripeWebhookSecret = "whsec_veil_dev_webhook_secret"
)

// devFlags are veil dev's flags: those of the services it runs, and its own.
type devFlags struct {
	ing       ingestFlags
	proc      processorFlags
	cp        controlPlaneFlags
	mig       migrateFlags
	log       logFlags
	noGateway bool
	brokers   string
	dataDir   string
	kafkaPort int
	noMigrate bool
}

func (d *devFlags) register(f *flags) {
	d.ing.register(f)
	d.proc.register(f)
	d.cp.register(f, false)
	f.Bool(&d.noGateway, "no-gateway", "", false, "do not start the gateway in this process (one runs elsewhere)")
	d.mig.register(f)
	d.log.register(f)
	f.String(&d.brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", "", "Kafka seed brokers; empty starts the embedded broker")
	f.String(&d.dataDir, "data-dir", "VEIL_DATA_DIR", ".veil", "directory for local state")
	f.Int(&d.kafkaPort, "embedded-kafka-port", "VEIL_EMBEDDED_KAFKA_PORT", 9092, "port of the embedded broker on 127.0.0.1")
	f.Bool(&d.noMigrate, "no-migrate", "", false, "skip the migrations")
}

// applyDefaults fills in what a local setup needs and the flags left
// empty, and returns the arguments of the gateway run in this process.
func (d *devFlags) applyDefaults() ([]string, error) {
	ing, proc, cp := &d.ing, &d.proc, &d.cp
	if ing.tokens == "" {
		ing.tokens = DevIngestToken
	}
	if cp.jwtSecret == "" && cp.jwksURL == "" {
		cp.jwtSecret = identity.DevJWTSecret
	}
	// Local webhook receivers are the point of a development setup.
	cp.webhookPrivate = true
	// One-click sign-in as the demo's users (the banner prints the links).
	cp.portal.dev = devPersonas()
	if pay := &cp.payments; pay.stripeSecretKey == "" {
		pay.stripeSecretKey = DevStripeSecretKey
		if pay.stripeAPIBase == "" {
			pay.stripeAPIBase = DevStripeAPIBase
		}
		if pay.stripeWebhookSecret == "" {
			pay.stripeWebhookSecret = DevStripeWebhookSecret
		}
	}
	if cp.keySealSecret == "" {
		cp.keySealSecret = identity.DevJWTSecret + "/key-seal"
	}
	cp.redisAddr = proc.redisAddr
	// One process, so one metrics listener each on fixed loopback ports
	// (VEIL_METRICS_ADDR names one address and would collide).
	ing.metricsAddr, cp.metricsAddr = defaultIngestMetricsAddr, defaultControlPlaneMetricsAddr
	// The gateway's admin socket lives in the data directory, where the
	// control plane finds it, unless either was configured.
	_, adminURLSet := os.LookupEnv("VEIL_GATEWAY_ADMIN_URL")
	_, adminAddrSet := os.LookupEnv("VEIL_GATEWAY_ADMIN_ADDR")
	gatewayArgs := []string{"--metrics-addr", defaultGatewayMetricsAddr}
	// The demo upstream listens on loopback: allow loopback, for the
	// control plane and the gateway alike. Veil's own ports stay refused
	// (the egress policy denies them whatever the allow list says).
	if cp.egress.allow == "" {
		cp.egress.allow = devUpstreamAllow
	}
	gatewayArgs = append(gatewayArgs, "--upstream-allow-cidrs", cp.egress.allow)
	if !adminURLSet && !adminAddrSet {
		abs, err := filepath.Abs(d.dataDir)
		if err != nil {
			return nil, err
		}
		sock := filepath.Join(abs, gatewayAdminSocket)
		cp.gatewayAdminURL = "unix://" + sock
		gatewayArgs = append(gatewayArgs, "--admin-addr", "unix/"+sock+"|0600")
	}
	return gatewayArgs, nil
}

// startKafka returns the seed brokers and a line saying where they are: the
// configured ones, or those of an embedded broker that close stops.
func (d *devFlags) startKafka(logger *slog.Logger) (seeds []string, where string, close func(), err error) {
	seeds = broker.ParseBrokers(d.brokers)
	if len(seeds) > 0 {
		return seeds, "Kafka " + strings.Join(seeds, ","), func() {}, nil
	}
	dir := filepath.Join(d.dataDir, "dev", "kafka")
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{Port: d.kafkaPort, DataDir: dir, Partitions: int32(d.mig.partitions), Logger: logger})
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w (is something else on 127.0.0.1:%d? make services-down stops a real broker)", err, d.kafkaPort)
	}
	seeds = emb.Addrs()
	return seeds, fmt.Sprintf("embedded Kafka-protocol broker %s (data in %s)", strings.Join(seeds, ","), dir), emb.Close, nil
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var d devFlags
	f := newFlags("dev", `Runs the platform in one process for local work: an embedded Kafka-protocol broker on
127.0.0.1:9092 (persisted under the data directory) unless VEIL_KAFKA_BROKERS names a real one,
the migrations, the ingest service, a processor, the control plane and the Caddy gateway. Postgres,
Redis and ClickHouse must be running (make services). Tokens for the control plane:
veil token --dev --org ORG --user USER --role admin|provider|consumer.`, stdout)
	d.register(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	logger, err := d.log.logger(stderr)
	if err != nil {
		return err
	}
	gatewayArgs, err := d.applyDefaults()
	if err != nil {
		return err
	}
	ing, proc, cp, mig := d.ing, d.proc, d.cp, d.mig
	seeds, kafkaWhere, closeKafka, err := d.startKafka(logger)
	if err != nil {
		return err
	}
	defer closeKafka()

	if !d.noMigrate {
		if err := mig.apply(ctx, migrateTargets, seeds, logger, io.Discard); err != nil {
			return err
		}
	}

	// Ingest checks the tokens admins issue through the control plane in
	// the same database.
	tokenPool, err := datastore.OpenPostgres(ctx, datastore.Postgres{URL: mig.postgresURL})
	if err != nil {
		return err
	}
	defer tokenPool.Close()
	set := metrics.NewSet()
	srv, cl, err := newIngestService(ing, seeds, ingesttoken.NewStore(tokenPool), logger, set)
	if err != nil {
		return err
	}
	defer closeProducer(ctx, cl, logger)

	proc.lateWindow = ing.lateWindow
	st, err := openStores(ctx, mig, proc.redisAddr, cp.redisDB)
	if err != nil {
		return err
	}
	defer st.close()
	procSrv, p, closeAdmin, err := newProcessorService(proc, seeds, st, logger, metrics.NewSet())
	if err != nil {
		return err
	}
	defer closeAdmin()

	cp.clickhouseAddr, cp.clickhouseDB = mig.clickhouseAddr, mig.clickhouseDB
	cp.kafkaBrokers, cp.quotaTopic = strings.Join(seeds, ","), proc.quotaTopic
	cp.processorGroup = proc.group
	plane, err := newControlPlane(ctx, cp, mig.postgresURL, logger, metrics.NewSet())
	if err != nil {
		return err
	}
	defer plane.close()

	d.printBanner(stdout, kafkaWhere, srv.Addr().String(), procSrv.Addr().String(), plane.addr().String())

	g, ctx := errgroup.WithContext(ctx)
	if !d.noGateway {
		g.Go(func() error { return runGateway(ctx, gatewayArgs, io.Discard, stderr) })
	}
	g.Go(func() error { return plane.run(ctx) })
	g.Go(func() error { return srv.Serve(ctx) })
	g.Go(func() error { return procSrv.Serve(ctx) })
	g.Go(func() error { return p.Run(ctx) })
	return g.Wait()
}

// printBanner says where each part of the platform listens.
func (d *devFlags) printBanner(w io.Writer, kafkaWhere, ingestAddr, processorAddr, planeAddr string) {
	gatewayWhere := d.cp.gatewayURL + " (admin " + d.cp.gatewayAdminURL + ")"
	if d.noGateway {
		gatewayWhere += ", not started here"
	}
	stripeBase, stripeKey := stripeWhere(d.cp.payments)
	fmt.Fprintf(w, `veil dev is running
  kafka          %s
  ingest         http://%s  POST /v1/events  (bearer token: %s)
  processor      http://%s  /metrics  (consumer group %s)
  control plane  http://%s  /v1/..., /openapi.json  (tokens: veil token --dev --org ORG --user USER --role ROLE)
  gateway        %s
  metrics        http://%s/metrics (ingest), http://%s/metrics (control plane), http://%s/metrics (gateway)
  redis          %s
  postgres       %s
  clickhouse     %s  database %s
  stripe         %s  (%s)
`, kafkaWhere, ingestAddr, maskToken(d.ing.tokens), processorAddr, d.proc.group, planeAddr, gatewayWhere,
		d.ing.metricsAddr, d.cp.metricsAddr, defaultGatewayMetricsAddr,
		d.proc.redisAddr, redactURL(d.mig.postgresURL), d.mig.clickhouseAddr, d.mig.clickhouseDB, stripeBase, stripeKey)
	portal := "http://" + browsable(planeAddr)
	fmt.Fprintf(w, `  portal         %s/  (API reference %s/docs); one-click sign-in:
                   consumer  %s/auth/dev?persona=consumer
                   provider  %s/auth/dev?persona=provider
                   admin     %s/auth/dev?persona=admin
Stop with Ctrl-C.
`, portal, portal, portal, portal, portal)
}

// browsable is addr as a browser on this machine reaches it: a listener on
// every address is reached on loopback.
func browsable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// stripeWhere names the Stripe API veil dev collects through, never the
// key itself.
func stripeWhere(pay paymentFlags) (base, key string) {
	base = pay.stripeAPIBase
	if base == "" {
		base = "https://api.stripe.com"
	}
	switch {
	case pay.stripeSecretKey == DevStripeSecretKey:
		return base, "stripe-mock's test key; webhooks signed with " + DevStripeWebhookSecret
	case strings.HasPrefix(pay.stripeSecretKey, "sk_live_") || strings.HasPrefix(pay.stripeSecretKey, "rk_live_"):
		return base, "a live key"
	}
	return base, "a key of your own"
}

// maskToken shows the dev token in full (it is public) and only the start
// of any other.
func maskToken(tokens string) string {
	if tokens == DevIngestToken {
		return tokens
	}
	first, _, _ := strings.Cut(tokens, ",")
	if len(first) <= 6 {
		return "…"
	}
	return first[:6] + "…"
}

// redactURL hides a password in a connection URL.
func redactURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(unparseable URL)"
	}
	return parsed.Redacted()
}
