// Package demo walks the demo scenario against a running veil dev: events
// through ingest into Kafka, ClickHouse and the Redis counters; an API from
// draft to active through an approval; a consumer's plan, subscription and
// key; the gateway's rate limit and quota; the notices they send; and a
// hybrid plan from a YAML file, a promotion code, a quote of the usage
// metered so far and the invoice of the period once it ends. It
// speaks to the control plane through the typed client of package client,
// and prints each step as it goes (make demo shows that output).
package demo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/broker"
)

// The demo's events belong to five made-up subscriptions. Subjects are
// subscription ids, UUIDs: subjectPrefix followed by 12 digits.
const (
	subjectPrefix = "00000000-0000-4000-8000-"
	// Subject0 is the first of them, whose usage the demo compares between
	// ClickHouse and Redis.
	Subject0 = subjectPrefix + "000000000000"
)

// Config is what the demo walks against. Every field is required.
type Config struct {
	// IngestURL is the base URL of the ingest service, IngestToken its
	// bearer token.
	IngestURL, IngestToken string
	// Brokers are the Kafka seed brokers the topic is read back from, as
	// given on the command line (comma-separated).
	Brokers string
	// ClickHouse is the usage database, named ClickHouseDB, at
	// ClickHouseAddr (shown in the closing table).
	ClickHouse                   driver.Conn
	ClickHouseAddr, ClickHouseDB string
	// Redis is the database RedisDB of the Redis at RedisAddr that holds
	// the control plane's records and the counters.
	Redis     rueidis.Client
	RedisAddr string
	RedisDB   int
	// ControlPlaneURL and GatewayURL are the base URLs of the control
	// plane's REST API and of the gateway.
	ControlPlaneURL, GatewayURL string
	// JWTSecret is the HS256 secret veil dev verifies tokens with.
	JWTSecret string
	// MailpitURL is mailpit's HTTP API, to show the emails veil dev sent;
	// empty shows none.
	MailpitURL string
	// Events are the events to send, Batch per request.
	Events, Batch int
	// Usage writes veil usage's JSON report of a subscription to w: the
	// demo shows it and compares its ClickHouse and Redis counts.
	Usage func(ctx context.Context, subscription string, w io.Writer) error
	// PricingDir is the plan directory veil dev watches (VEIL_PRICING_DIR),
	// where the demo saves its hybrid plan; empty leaves the priced plan
	// out. PlanFile is the plan it saves, declared for the API weather,
	// whose slug the demo replaces with its API's.
	PricingDir, PlanFile string
	// Postgres is the control plane's database, where the demo ends the
	// consumer's billing period (a month cannot pass in a demo), and the
	// invoice's PDF is saved next to PricingDir, in invoices; nil leaves
	// the invoice out.
	Postgres *pgxpool.Pool
	// StripeWebhookSecret is the secret veil dev verifies Stripe's events
	// with (VEIL_STRIPE_WEBHOOK_SECRET): the demo plays Stripe's side
	// against stripe-mock and signs its events with it. Empty leaves the
	// payments out.
	StripeWebhookSecret string
}

// walk is one run of the demo: its configuration, where it prints, and
// what the steps learn on the way.
type walk struct {
	cfg    Config
	out    io.Writer
	http   *http.Client
	cp     *client.ClientWithResponses
	run    string // this run's name, in its events' ids and source
	source string
	now    time.Time
}

// Run walks the scenario and prints it to stdout; it returns the first
// step that did not go as the scenario says.
func Run(ctx context.Context, cfg Config, stdout io.Writer) error {
	httpClient := &http.Client{Timeout: 30 * time.Second}
	cp, err := client.New(cfg.ControlPlaneURL, client.WithHTTPClient(httpClient))
	if err != nil {
		return err
	}
	w := &walk{cfg: cfg, out: stdout, http: httpClient, cp: cp}
	found, err := w.events(ctx)
	if err != nil {
		return err
	}
	if err := w.processed(ctx, found); err != nil {
		return err
	}
	api, err := w.catalog(ctx)
	if err != nil {
		return err
	}
	if err := w.keys(ctx, api); err != nil {
		return err
	}
	if err := w.pricing(ctx, api); err != nil {
		return err
	}
	w.whatRunsWhere()
	return nil
}

// step announces the next step of the walk.
func (w *walk) step(format string, a ...any) { fmt.Fprintf(w.out, "\n==> "+format+"\n", a...) }

func (w *walk) whatRunsWhere() {
	c := w.cfg
	w.step("what runs where")
	fmt.Fprintf(w.out, `  ingest       %s   POST /v1/events, /healthz, /readyz; /metrics on 127.0.0.1:9181
  processor    http://127.0.0.1:8082   /metrics (veil_processor_*)
  kafka        %s   topics %s (events), %s (dead letters), %s (quota crossings)
  clickhouse   %s   database %s (usage_events, usage_rejects, usage_rollup_minute|hour|day)
  redis        %s   usage counters veil:usage:{subscription}:…
  postgres     127.0.0.1:5432   database veil
  control      %s   REST API (/v1/apis, /v1/admin/approvals, /v1/webhooks, /v1/audit), /openapi.json; /metrics on 127.0.0.1:9180
  gateway      %s   Caddy; admin API on a unix socket in the data directory, /metrics on 127.0.0.1:9183
  stripe       veil dev's VEIL_STRIPE_API_BASE (stripe-mock at http://127.0.0.1:12111 unless a key is set); events to POST /v1/billing/stripe/webhook
Try: bin/veil usage --subscription `+Subject0+`
     clickhouse-client --database %s --query 'SELECT subject, count() FROM usage_events GROUP BY subject'
`, c.IngestURL, c.Brokers, broker.TopicUsageRaw, broker.TopicUsageDLQ, broker.TopicQuotaEvents, c.ClickHouseAddr, c.ClickHouseDB, c.RedisAddr, c.ControlPlaneURL, c.GatewayURL, c.ClickHouseDB)
	fmt.Fprintln(w.out, "\ndemo finished: every accepted event is in Kafka, ClickHouse and the Redis counters; the demo API went from draft to active through an approval and answers through the gateway, which enforced the consumer's rate limit and quota; a plan file became a priced plan, whose quote of the metered usage the promotion code discounts, and the period's end an invoice with its PDF, paid through Stripe; a declined payment made its subscription past due, then blocked with 402 until it was paid")
	portal := strings.TrimSuffix(c.ControlPlaneURL, "/")
	fmt.Fprintf(w.out, `
The portal: %[1]s/ (API reference %[1]s/docs). Sign in with one click as
  the consumer  %[1]s/auth/dev?persona=consumer   Sam at demo-travel: the subscription, its keys and usage
  the provider  %[1]s/auth/dev?persona=provider   Dana at demo-weather: the Demo Weather API, its plans and subscribers
  the admin     %[1]s/auth/dev?persona=admin      the platform operator: approvals, audit log, pipeline
`, portal)
}
