package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments"
	"github.com/veil-platform/veil/internal/testenv"
)

// dunningSpy records the invoices whose dunning was ended.
type dunningSpy struct {
	mu      sync.Mutex
	settled []uuid.UUID
}

func (d *dunningSpy) PastDue(context.Context, pgx.Tx, uuid.UUID, uuid.UUID, string, time.Time) error {
	return nil
}

func (d *dunningSpy) InvoiceSettled(_ context.Context, _ pgx.Tx, invoice uuid.UUID, _ string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.settled = append(d.settled, invoice)
	return nil
}

func (d *dunningSpy) EscalateDunning(context.Context, time.Time) (int, int, error) { return 0, 0, nil }

func (d *dunningSpy) DisputeLost(context.Context, pgx.Tx, uuid.UUID, uuid.UUID, string, time.Time) error {
	return nil
}

// TestNewPaymentsWiresDunning: the control plane's payments service has
// the manual provider when a bank account is configured, none of Stripe
// without a key, and tells dunning when an invoice is paid (so that a
// suspended subscription is let through again).
func TestNewPaymentsWiresDunning(t *testing.T) {
	ctx := t.Context()
	pool := testenv.Postgres(t)
	spy := &dunningSpy{}
	svc, err := newPayments(pool, paymentFlags{bankHolder: "Acme APIs GmbH", bankIBAN: "DE89370400440532013000"}, nil, spy, nil, nil, testenv.Logger(t), metrics.NewSet())
	if err != nil {
		t.Fatal(err)
	}
	issuer := testenv.Org(t, pool, "issuer-"+testenv.Suffix())
	customer := testenv.Org(t, pool, "cust-"+testenv.Suffix())
	if err := svc.SetSettings(ctx, issuer, payments.Settings{Provider: "stripe"}); err == nil {
		t.Errorf("SetSettings(stripe) without a Stripe key = nil; want refused")
	}
	if err := svc.SetSettings(ctx, issuer, payments.Settings{Provider: "manual"}); err != nil {
		t.Fatal(err)
	}
	var inv uuid.UUID
	err = pool.QueryRow(ctx, `WITH a AS (
			INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
			VALUES ($1, $3, $3, 'https://upstream.example', 'v1', 'prov') RETURNING id),
		p AS (INSERT INTO plans (api_id, name, slug) SELECT id, 'Pro', 'pro' FROM a RETURNING id),
		v AS (INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, net_days, created_by)
			SELECT id, 1, 'subscription', 'EUR', 10, 30, 'prov' FROM p RETURNING id),
		s AS (INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
			SELECT $2, 'cust', a.id, v.id, now(), now() + interval '1 month' FROM a, v RETURNING id)
		INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end,
			subtotal, total, amount_due, finalized_at, due_at)
		SELECT $1, $2, s.id, 'open', 'INV-' || $3, 'EUR', now() - interval '1 month', now(), 10, 10, 10, now(), now()
		FROM s RETURNING id`, issuer, customer, "api-"+testenv.Suffix()).Scan(&inv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RunCycle(ctx); err != nil {
		t.Fatalf("payments cycle: %v", err)
	}
	owner := identity.Actor{Subject: "prov", Role: identity.RoleProvider, OrgID: issuer}
	if _, err := svc.MarkPaidManually(ctx, owner, inv, "TRX-1"); err != nil {
		t.Fatalf("mark paid: %v", err)
	}
	spy.mu.Lock()
	defer spy.mu.Unlock()
	if len(spy.settled) != 1 || spy.settled[0] != inv {
		t.Errorf("dunning told of paid invoices %v; want [%s]", spy.settled, inv)
	}
}
