package main

import (
	"context"
	"fmt"
	"io"
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

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		ing       ingestFlags
		proc      processorFlags
		cp        controlPlaneFlags
		noGateway bool
		mig       migrateFlags
		log       logFlags
		brokers   string
		dataDir   string
		kafkaPort int
		noMigrate bool
	)
	f := newFlags("dev", `Runs the platform in one process for local work: an embedded Kafka-protocol broker on
127.0.0.1:9092 (persisted under the data directory) unless VEIL_KAFKA_BROKERS names a real one,
the migrations, the ingest service, a processor, the control plane and the Caddy gateway. Postgres,
Redis and ClickHouse must be running (make services). Tokens for the control plane:
veil token --dev --org ORG --user USER --role admin|provider|consumer.`, stdout)
	ing.register(f)
	proc.register(f)
	cp.register(f, false)
	f.Bool(&noGateway, "no-gateway", "", false, "do not start the gateway in this process (one runs elsewhere)")
	mig.register(f)
	log.register(f)
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", "", "Kafka seed brokers; empty starts the embedded broker")
	f.String(&dataDir, "data-dir", "VEIL_DATA_DIR", ".veil", "directory for local state")
	f.Int(&kafkaPort, "embedded-kafka-port", "VEIL_EMBEDDED_KAFKA_PORT", 9092, "port of the embedded broker on 127.0.0.1")
	f.Bool(&noMigrate, "no-migrate", "", false, "skip the migrations")
	if err := f.Parse(args); err != nil {
		return err
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	if ing.tokens == "" {
		ing.tokens = DevIngestToken
	}
	if cp.jwtSecret == "" && cp.jwksURL == "" {
		cp.jwtSecret = identity.DevJWTSecret
	}
	// Local webhook receivers are the point of a development setup.
	cp.webhookPrivate = true
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
		abs, err := filepath.Abs(dataDir)
		if err != nil {
			return err
		}
		sock := filepath.Join(abs, gatewayAdminSocket)
		cp.gatewayAdminURL = "unix://" + sock
		gatewayArgs = append(gatewayArgs, "--admin-addr", "unix/"+sock+"|0600")
	}

	seeds := broker.ParseBrokers(brokers)
	kafkaWhere := "Kafka " + strings.Join(seeds, ",")
	if len(seeds) == 0 {
		dir := filepath.Join(dataDir, "dev", "kafka")
		emb, err := broker.StartEmbedded(broker.EmbeddedConfig{Port: kafkaPort, DataDir: dir, Partitions: int32(mig.partitions), Logger: logger})
		if err != nil {
			return fmt.Errorf("%w (is something else on 127.0.0.1:%d? make services-down stops a real broker)", err, kafkaPort)
		}
		defer emb.Close()
		seeds = emb.Addrs()
		kafkaWhere = fmt.Sprintf("embedded Kafka-protocol broker %s (data in %s)", strings.Join(seeds, ","), dir)
	}

	if !noMigrate {
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
	procSet := metrics.NewSet()
	procSrv, p, closeAdmin, err := newProcessorService(proc, seeds, st, logger, procSet)
	if err != nil {
		return err
	}
	defer closeAdmin()

	cp.clickhouseAddr, cp.clickhouseDB = mig.clickhouseAddr, mig.clickhouseDB
	cp.kafkaBrokers, cp.quotaTopic = strings.Join(seeds, ","), proc.quotaTopic
	plane, err := newControlPlane(ctx, cp, mig.postgresURL, logger, metrics.NewSet())
	if err != nil {
		return err
	}
	defer plane.close()

	gatewayWhere := cp.gatewayURL + " (admin " + cp.gatewayAdminURL + ")"
	if noGateway {
		gatewayWhere += ", not started here"
	}
	fmt.Fprintf(stdout, `veil dev is running
  kafka          %s
  ingest         http://%s  POST /v1/events  (bearer token: %s)
  processor      http://%s  /metrics  (consumer group %s)
  control plane  http://%s  /v1/..., /openapi.json  (tokens: veil token --dev --org ORG --user USER --role ROLE)
  gateway        %s
  metrics        http://%s/metrics (ingest), http://%s/metrics (control plane), http://%s/metrics (gateway)
  redis          %s
  postgres       %s
  clickhouse     %s  database %s
Stop with Ctrl-C.
`, kafkaWhere, srv.Addr(), maskToken(ing.tokens), procSrv.Addr(), proc.group, plane.addr(), gatewayWhere,
		ing.metricsAddr, cp.metricsAddr, defaultGatewayMetricsAddr,
		proc.redisAddr, redactURL(mig.postgresURL), mig.clickhouseAddr, mig.clickhouseDB)

	g, ctx := errgroup.WithContext(ctx)
	if !noGateway {
		g.Go(func() error { return runGateway(ctx, gatewayArgs, io.Discard, stderr) })
	}
	g.Go(func() error { return plane.run(ctx) })
	g.Go(func() error { return srv.Serve(ctx) })
	g.Go(func() error { return procSrv.Serve(ctx) })
	g.Go(func() error { return p.Run(ctx) })
	return g.Wait()
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
