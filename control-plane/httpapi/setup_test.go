package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/accounts"
	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/drift"
	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/control-plane/payments"
	"github.com/veil-platform/veil/control-plane/planfiles"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/webhooks/webhookstest"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/manualpay"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
	"github.com/veil-platform/veil/schemas"
)

const testSecret = "httpapi-test-secret-0123456789abcdef"

// testWebhookSecret signs the Stripe webhooks the tests send.
const testWebhookSecret = "whsec_httpapi_test"

// testEnv is the control plane's REST API over a fresh, migrated database
// and the test Redis. Jobs are enqueued but not run (the River client is
// never started), so state stays where the requests leave it; the gateway
// registration itself is covered end to end in cmd/veil.
type testEnv struct {
	t       *testing.T
	Server  *httptest.Server
	Handler http.Handler
	Pool    *pgxpool.Pool
	Catalog *catalog.Service
	Subs    *subscriptions.Service
	Quota   *quota.Service
	Drift   *drift.Checker
	// ClickHouse is the test database the usage endpoints read.
	ClickHouse driver.Conn
	// PlanDir is the plan directory POST /v1/admin/pricing/reload loads.
	PlanDir string
	// Stripe is the fake Stripe the payments service calls; Payments the
	// service, with it and the manual provider.
	Stripe   *stripetest.Server
	Payments *payments.Service
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	return newTestEnvWith(t, nil)
}

// newTestEnvWith is newTestEnv with a hook that adjusts the API's config
// before the handler is built (rate limits, CORS, ...).
func newTestEnvWith(t *testing.T, adjust func(*httpapi.Config)) *testEnv {
	t.Helper()
	ctx := t.Context()
	pool := testenv.Postgres(t)
	logger := testenv.Logger(t)
	jobs := testenv.River(t, pool, nil)
	hooks := webhookstest.New(t, pool, jobs)
	gw, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: "http://127.0.0.1:1", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(catalog.Config{Pool: pool, Jobs: jobs, Gateway: gw, Publisher: hooks, Logger: logger, GatewayURL: "http://127.0.0.1:1",
		Egress: loopbackEgress(t)})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := identity.NewVerifier(ctx, identity.Config{Secret: []byte(testSecret), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	redis := testenv.Redis(t)
	idem, err := middleware.NewIdempotency(middleware.IdempotencyConfig{
		Client: redis, Prefix: "veil:test:idem:" + testenv.Suffix() + ":", Logger: logger,
		Scope: func(r *http.Request) string {
			p, _ := identity.FromContext(r.Context())
			return p.Org + "/" + p.Subject
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Key records in a database of their own: the reconcile route scans them all.
	records, _ := testenv.RedisDB(t)
	subs, err := subscriptions.New(subscriptions.Config{
		Pool: pool, Jobs: jobs, Records: enforcement.New(records), Publisher: hooks, Logger: logger,
		Keys: keys.Options{SealSecret: []byte("httpapi-test-seal")},
	})
	if err != nil {
		t.Fatal(err)
	}
	ch, _, _ := testenv.ClickHouseDB(t)
	quotas, err := quota.New(quota.Config{Pool: pool, Redis: records, Publisher: hooks, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	checker, err := drift.New(drift.Config{Pool: pool, Redis: records, ClickHouse: ch, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	planDir := t.TempDir()
	planFiles, err := planfiles.New(planfiles.Config{Dir: planDir, Pool: pool, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	fake := stripetest.New(t)
	stripe, err := stripepay.New(stripepay.Config{SecretKey: stripetest.Key, WebhookSecret: testWebhookSecret, APIBase: fake.URL, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	manual, err := manualpay.New(manualpay.Config{AccountHolder: "Acme APIs GmbH", IBAN: "DE89370400440532013000"})
	if err != nil {
		t.Fatal(err)
	}
	bill, err := billing.New(billing.Config{Pool: pool, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	pays, err := payments.New(payments.Config{Pool: pool, Logger: logger, Publisher: hooks, Credits: bill,
		Providers: map[string]metering.PaymentProvider{stripe.Name(): stripe, manual.Name(): manual}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := httpapi.Config{
		Payments: pays, Billing: bill, Pool: pool, Catalog: cat, Subscriptions: subs, Usage: metering.NewReader(ch), Quota: quotas, Drift: checker, Webhooks: hooks, Directory: accounts.New(pool), Authenticator: verifier,
		Idempotency: idem, OpenAPI: schemas.OpenAPI, Logger: logger, PlanFiles: planFiles,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	h := httpapi.New(cfg)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testEnv{t: t, Server: srv, Handler: h, Pool: pool, Catalog: cat, Subs: subs, Quota: quotas, Drift: checker, ClickHouse: ch, PlanDir: planDir,
		Stripe: fake, Payments: pays}
}

// token mints a bearer token for user in org with role.
func (e *testEnv) token(org, user string, role identity.Role) string {
	e.t.Helper()
	tok, err := identity.Mint([]byte(testSecret), identity.DefaultIssuer, identity.DefaultAudience, identity.Principal{Subject: user, Org: org, Role: role}, time.Hour, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// do sends a request (tok may be empty for an anonymous one) and returns
// the status and body.
func (e *testEnv) do(method, path, tok string, body any, header ...string) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.Server.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// must is do that fails the test unless the status is want, decoding the
// body into out when out is not nil.
func (e *testEnv) must(want int, method, path, tok string, body, out any) {
	e.t.Helper()
	got, b := e.do(method, path, tok, body)
	if got != want {
		e.t.Fatalf("%s %s = %d %s; want %d", method, path, got, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}
