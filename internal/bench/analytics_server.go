package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/control-plane/accounts"
	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/drift"
	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas"
)

// serveControlPlane serves the control plane's REST API (httpapi.New
// with the services `veil control-plane` builds, on the bench's
// databases) on loopback, accepting tokens signed with secret. Its job
// client only enqueues (no job runs), no gateway is registered with, and
// no rate limit applies: the bench measures the routes, not the limits.
func serveControlPlane(ctx context.Context, cfg AnalyticsConfig, pool *pgxpool.Pool, ch driver.Conn, secret []byte) (string, func(), error) {
	h, closeServices, err := controlPlaneHandler(ctx, cfg, pool, ch, secret)
	if err != nil {
		return "", nil, err
	}
	ln, err := listenLoopback()
	if err != nil {
		closeServices()
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		closeServices()
	}, nil
}

func controlPlaneHandler(ctx context.Context, cfg AnalyticsConfig, pool *pgxpool.Pool, ch driver.Conn, secret []byte) (http.Handler, func(), error) {
	logger := cfg.Logger
	redis, err := datastore.OpenRedis(datastore.Redis{Addr: cfg.RedisAddr, DB: cfg.RedisDB, DisableCache: true})
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (http.Handler, func(), error) {
		redis.Close()
		return nil, nil, err
	}
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: logger})
	if err != nil {
		return fail(fmt.Errorf("new job client: %w", err))
	}
	hooks, err := webhooks.New(webhooks.Config{Pool: pool, Jobs: jobs, Logger: logger})
	if err != nil {
		return fail(err)
	}
	gw, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: "http://127.0.0.1:1", Logger: logger})
	if err != nil {
		return fail(err)
	}
	upstreams, err := egress.New(ctx, egress.Config{})
	if err != nil {
		return fail(err)
	}
	cat, err := catalog.New(catalog.Config{Pool: pool, Jobs: jobs, Gateway: gw, Publisher: hooks, Logger: logger,
		GatewayURL: "http://127.0.0.1:1", Egress: upstreams})
	if err != nil {
		return fail(err)
	}
	subs, err := subscriptions.New(subscriptions.Config{Pool: pool, Jobs: jobs, Records: enforcement.New(redis), Publisher: hooks, Logger: logger})
	if err != nil {
		return fail(err)
	}
	quotas, err := quota.New(quota.Config{Pool: pool, Redis: redis, Publisher: hooks, Logger: logger})
	if err != nil {
		return fail(err)
	}
	checker, err := drift.New(drift.Config{Pool: pool, Redis: redis, ClickHouse: ch, Logger: logger})
	if err != nil {
		return fail(err)
	}
	bill, err := billing.New(billing.Config{Pool: pool, ClickHouse: ch, Logger: logger})
	if err != nil {
		return fail(err)
	}
	acfg := analytics.Config{Pool: pool, ClickHouse: ch, Billing: bill, Logger: logger, ProcessorGroup: processors.DefaultGroup}
	closeKafka := func() {}
	if len(cfg.Brokers) > 0 {
		// The overview reads the processors' lag from the broker, as the
		// control plane does.
		kc, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
		if err != nil {
			return fail(fmt.Errorf("kafka admin client: %w", err))
		}
		acfg.Kafka, closeKafka = kadm.NewClient(kc), kc.Close
	}
	stats, err := analytics.New(acfg)
	if err != nil {
		closeKafka()
		return fail(err)
	}
	verifier, err := identity.NewVerifier(ctx, identity.Config{Secret: secret, Logger: logger})
	if err != nil {
		return fail(err)
	}
	h := httpapi.New(httpapi.Config{
		Pool: pool, Catalog: cat, Subscriptions: subs, Usage: metering.NewReader(ch), Quota: quotas, Drift: checker,
		Webhooks: hooks, Directory: accounts.New(pool), Authenticator: verifier, OpenAPI: schemas.OpenAPI, Logger: logger,
		Billing: bill, Analytics: stats,
	})
	return h, func() { closeKafka(); redis.Close() }, nil
}

// printAnalytics prints the endpoints' table and the storage.
func printAnalytics(w io.Writer, fig AnalyticsFigures) {
	fmt.Fprintf(w, "\n| endpoint | usage rows | requests | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, e := range fig.Endpoints {
		switch {
		case e.Missing:
			fmt.Fprintf(w, "| %s | | | no such route | | |\n", e.Name)
			continue
		case e.Error != "":
			fmt.Fprintf(w, "| %s | | | failed | | |\n", e.Name)
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %d | %.1f | %.1f | %.1f |\n", e.Name, e.Rows, e.Requests, e.P50, e.P99, e.Max)
		if e.TTFBP50 > 0 {
			fmt.Fprintf(w, "| %s, first byte | | | %.1f | %.1f | |\n", e.Name, e.TTFBP50, e.TTFBP99)
		}
	}
	fmt.Fprintf(w, "\n| table | rows | parts | compressed MiB | uncompressed MiB | compressed MiB per 1M usage rows | uncompressed MiB per 1M | rows per usage row |\n")
	fmt.Fprintf(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var c, u uint64
	for _, t := range fig.Storage {
		c, u = c+t.Compressed, u+t.Uncompressed
		if t.RowsPerUsageEvent < 0.001 {
			continue // bookkeeping: migrations, backfills
		}
		fmt.Fprintf(w, "| %s | %d | %d | %.1f | %.1f | %.2f | %.2f | %.3f |\n", t.Table, t.Rows, t.Parts,
			float64(t.Compressed)/(1<<20), float64(t.Uncompressed)/(1<<20), t.CompressedPerM, t.UncompressedPerM, t.RowsPerUsageEvent)
	}
	m := float64(fig.Rows) / 1e6
	fmt.Fprintf(w, "| all | | | %.1f | %.1f | %.2f | %.2f | |\n\n", float64(c)/(1<<20), float64(u)/(1<<20), float64(c)/(1<<20)/m, float64(u)/(1<<20)/m)
}
