package payments

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// What would charge twice or apply twice cannot even be recorded: a
// second payment of an invoice, a second attempt under way or succeeded,
// a reused idempotency key or provider id, an event id twice.
func TestDatabaseRefusesDoubles(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "9.00")
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil {
		t.Fatal(err)
	}
	var pi string
	f.scan(&pi, `SELECT provider_payment_id FROM payment_attempts WHERE payment_id = $1`, p.ID)
	open := f.invoice(f.customer("stripe", stripetest.PMProcessing), "9.00")
	q, err := f.svc.Collect(f.ctx, open)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, constraint, sql string }{
		{"a second payment of an invoice", "payments_invoice_id_key",
			`INSERT INTO payments (invoice_id, issuer_id, customer_id, provider, amount, currency)
			SELECT invoice_id, issuer_id, customer_id, provider, amount, currency FROM payments WHERE id = '` + p.ID.String() + `'`},
		{"a second succeeded attempt", "payment_attempts_one_succeeded",
			`INSERT INTO payment_attempts (payment_id, attempt_no, idempotency_key, provider_customer_id, status, finished_at)
			VALUES ('` + p.ID.String() + `', 2, 'k-2', 'c', 'succeeded', now())`},
		{"a second attempt under way", "payment_attempts_one_open",
			`INSERT INTO payment_attempts (payment_id, attempt_no, idempotency_key, provider_customer_id)
			VALUES ('` + q.ID.String() + `', 2, 'k-3', 'c')`},
		{"a reused idempotency key", "payment_attempts_idempotency_key_key",
			`INSERT INTO payment_attempts (payment_id, attempt_no, idempotency_key, provider_customer_id, status, finished_at)
			SELECT payment_id, 3, idempotency_key, 'c', 'failed', now() FROM payment_attempts WHERE payment_id = '` + p.ID.String() + `'`},
		{"a provider payment recorded twice", "payment_attempts_provider_payment_id_key",
			`INSERT INTO payment_attempts (payment_id, attempt_no, idempotency_key, provider_customer_id, provider_payment_id, status, finished_at)
			VALUES ('` + p.ID.String() + `', 4, 'k-4', 'c', '` + pi + `', 'failed', now())`},
		{"a refunded amount below zero", "payments_amount_refunded_check",
			`UPDATE payments SET amount_refunded = -1 WHERE id = '` + p.ID.String() + `'`},
		{"a refund at the provider above the charge", "payment_refunds_within_paid",
			`INSERT INTO payment_refunds (payment_id, invoice_id, amount, currency, actor, idempotency_key, provider_refund_id, external)
			SELECT id, invoice_id, amount + 1, currency, 'stripe', 'veil-external-re_x', 're_x', true FROM payments WHERE id = '` + p.ID.String() + `'`},
	} {
		_, err := f.pool.Exec(f.ctx, c.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.ConstraintName != c.constraint {
			t.Errorf("%s = %v; want refused by %s", c.what, err, c.constraint)
		}
	}
	ev := `INSERT INTO provider_events (provider, event_id, type) VALUES ('stripe', 'evt_x', 't')`
	if _, err := f.pool.Exec(f.ctx, ev); err != nil {
		t.Fatal(err)
	}
	var pgErr *pgconn.PgError
	if _, err := f.pool.Exec(f.ctx, ev); !errors.As(err, &pgErr) || pgErr.ConstraintName != "provider_events_pkey" {
		t.Errorf("an event id twice = %v; want refused by provider_events_pkey", err)
	}
}
