package payments

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/manualpay"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

var start = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// crashing wraps a provider: while crash is set, Collect reaches the
// provider and then fails as a process that died before recording the
// answer would, so nothing of it is recorded.
type crashing struct {
	metering.PaymentProvider
	mu    sync.Mutex
	crash bool
	calls int
	last  metering.PaymentResult
}

var errCrash = errors.New("process died")

// recorder keeps the events published, as "<event> <org>", and the
// data of each type's last, as JSON.
type recorder struct {
	mu     sync.Mutex
	events []string
	data   map[string][]byte
}

func (r *recorder) Publish(_ context.Context, _ pgx.Tx, org uuid.UUID, event string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event+" "+org.String())
	if r.data == nil {
		r.data = map[string][]byte{}
	}
	r.data[event] = b
	return nil
}

// last decodes the data of the last event of a type published.
func (r *recorder) last(t *testing.T, event string) map[string]any {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out map[string]any
	if err := json.Unmarshal(r.data[event], &out); err != nil {
		t.Fatalf("decode the last %s data %s: %v", event, r.data[event], err)
	}
	return out
}

func (r *recorder) count(event string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if strings.HasPrefix(e, event+" ") {
			n++
		}
	}
	return n
}

func (c *crashing) Collect(ctx context.Context, in metering.CollectInput) (metering.PaymentResult, error) {
	res, err := c.PaymentProvider.Collect(ctx, in)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.last = res
	if c.crash {
		return metering.PaymentResult{}, errCrash
	}
	return res, err
}

func (c *crashing) setCrash(v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crash = v
}

type fixture struct {
	t        *testing.T
	ctx      context.Context
	pool     *pgxpool.Pool
	clock    *testenv.Clock
	svc      *Service
	fake     *stripetest.Server
	stripe   *crashing
	issuer   uuid.UUID
	provider identity.Actor
	sub      uuid.UUID
	api      uuid.UUID
	hooks    *recorder
	version  uuid.UUID
}

func setup(t *testing.T, providerName string) *fixture {
	t.Helper()
	pool := testenv.Postgres(t)
	fake := stripetest.New(t)
	sp, err := stripepay.New(stripepay.Config{SecretKey: stripetest.Key, APIBase: fake.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	mp, err := manualpay.New(manualpay.Config{AccountHolder: "Acme APIs GmbH", IBAN: "DE89370400440532013000"})
	if err != nil {
		t.Fatal(err)
	}
	wrapped := &crashing{PaymentProvider: sp}
	clock := testenv.NewClock(start)
	hooks := &recorder{}
	svc, err := New(Config{Pool: pool, Logger: testenv.Logger(t), Now: clock.Now, Publisher: hooks,
		Providers: map[string]metering.PaymentProvider{"stripe": wrapped, "manual": mp}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: t.Context(), pool: pool, clock: clock, svc: svc, fake: fake, stripe: wrapped, hooks: hooks}
	f.issuer = testenv.Org(t, pool, "issuer-"+testenv.Suffix())
	f.provider = identity.Actor{Subject: "prov", Role: identity.RoleProvider, OrgID: f.issuer}
	if err := svc.SetSettings(f.ctx, f.issuer, Settings{Provider: providerName, GraceDays: 3}); err != nil {
		t.Fatal(err)
	}
	var api, plan, version uuid.UUID
	slug := "api-" + testenv.Suffix()
	f.scan(&api, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, $2, $2, 'https://upstream.example', 'v1', 'prov') RETURNING id`, f.issuer, slug)
	f.scan(&plan, `INSERT INTO plans (api_id, name, slug) VALUES ($1, 'Pro', 'pro') RETURNING id`, api)
	f.scan(&version, `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, net_days, created_by)
		VALUES ($1, 1, 'subscription', 'EUR', 10, 30, 'prov') RETURNING id`, plan)
	f.api, f.version = api, version
	return f
}

// customer makes a consumer organization with a subscription and its
// customer at the provider, paying with pm (Stripe) or by transfer.
func (f *fixture) customer(providerName, pm string) uuid.UUID {
	f.t.Helper()
	c := testenv.Org(f.t, f.pool, "cust-"+testenv.Suffix())
	f.scan(&f.sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'cust', $2, $3, $4, $5) RETURNING id`, c, f.api, f.version, start, start.AddDate(0, 1, 0))
	ref := metering.CustomerRef{Provider: providerName, ID: c.String()}
	if providerName == "stripe" {
		ref.ID = f.fake.AddCustomer(pm)
	}
	if err := f.svc.SetCustomer(f.ctx, c, ref, pm); err != nil {
		f.t.Fatal(err)
	}
	return c
}

// invoice makes an open invoice of customer for amount EUR.
func (f *fixture) invoice(customer uuid.UUID, amount string) uuid.UUID {
	f.t.Helper()
	var id uuid.UUID
	f.scan(&id, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end,
		subtotal, total, amount_due, finalized_at, due_at)
		VALUES ($1, $2, $3, 'open', $4, 'EUR', $5, $6, $7, $7, $7, $6, $6) RETURNING id`,
		f.issuer, customer, f.sub, "INV-"+testenv.Suffix(), start.AddDate(0, -1, 0), start, decimal.RequireFromString(amount))
	return id
}

func (f *fixture) scan(dst any, sql string, args ...any) {
	f.t.Helper()
	if err := f.pool.QueryRow(f.ctx, sql, args...).Scan(dst); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

func (f *fixture) invoiceStatus(id uuid.UUID) string {
	f.t.Helper()
	var st string
	f.scan(&st, `SELECT status::text FROM invoices WHERE id = $1`, id)
	return st
}

func (f *fixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	f.scan(&n, sql, args...)
	return n
}

func (f *fixture) payment(invoice uuid.UUID) Payment {
	f.t.Helper()
	p, err := f.svc.Get(f.ctx, identity.System, invoice)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (c *crashing) callCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func (c *crashing) lastResult() metering.PaymentResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *crashing) FindPayment(ctx context.Context, invoiceID, key string) (metering.PaymentResult, error) {
	return c.PaymentProvider.(*stripepay.Provider).FindPayment(ctx, invoiceID, key)
}

func (c *crashing) DefaultPaymentMethod(ctx context.Context, customer string) (string, error) {
	return c.PaymentProvider.(*stripepay.Provider).DefaultPaymentMethod(ctx, customer)
}
