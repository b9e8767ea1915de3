package payments

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

func TestCollectPaidFirstTry(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "49.99")
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil || p.Status != "succeeded" || p.Amount.Minor != 4999 || p.Attempts != 1 {
		t.Fatalf("Collect = %+v, %v; want succeeded, 4999, one attempt", p, err)
	}
	if st := f.invoiceStatus(inv); st != "paid" {
		t.Errorf("invoice status = %s; want paid", st)
	}
	var key string
	f.scan(&key, `SELECT idempotency_key FROM payment_attempts WHERE payment_id = $1`, p.ID)
	if want := fmt.Sprintf("veil-inv-%s-a1", inv); key != want {
		t.Errorf("idempotency key = %s; want %s", key, want)
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.succeeded' AND target_id = $1`, inv.String()); n != 1 {
		t.Errorf("%d audit entries of the payment; want 1", n)
	}
	if _, err := f.svc.Collect(f.ctx, inv); !errors.Is(err, ErrInvoiceState) {
		t.Errorf("Collect of a paid invoice = %v; want ErrInvoiceState", err)
	}
	if n := f.fake.Creates("payment_intents"); n != 1 {
		t.Errorf("%d PaymentIntents; want 1", n)
	}
	if n := f.hooks.count("payment.succeeded"); n != 2 {
		t.Errorf("payment.succeeded announced %d times; want 2, to the issuer and the customer", n)
	}
	zero := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "0")
	if _, err := f.svc.Collect(f.ctx, zero); !errors.Is(err, ErrNothingToCollect) {
		t.Errorf("Collect of a zero invoice = %v; want ErrNothingToCollect", err)
	}
}

// A declined card fails the attempt with its codes; the next attempts
// are due 1, 3, 5 and 7 days after the first failure, and the payment
// fails after the last.
func TestDeclinedRetrySchedule(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMDeclined), "20.00")
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil {
		t.Fatal(err)
	}
	var code string
	f.scan(&code, `SELECT failure_code || '/' || decline_code FROM payment_attempts WHERE payment_id = $1 AND attempt_no = 1`, p.ID)
	if code != "card_declined/generic_decline" {
		t.Errorf("failed attempt codes = %s; want card_declined/generic_decline", code)
	}
	first := f.clock.Now()
	for i, days := range []int{1, 3, 5, 7} {
		want := first.Add(time.Duration(days) * 24 * time.Hour)
		if p.Status != "pending" || p.NextAttemptAt == nil || !p.NextAttemptAt.Equal(want) {
			t.Fatalf("after attempt %d: %s next %v; want pending, next %v", i+1, p.Status, p.NextAttemptAt, want)
		}
		f.clock.Set(want.Add(-time.Second))
		if due, err := f.svc.DueRetries(f.ctx, f.clock.Now(), 10); err != nil || len(due) != 0 {
			t.Fatalf("DueRetries a second early = %v, %v; want none", due, err)
		}
		if again, err := f.svc.Collect(f.ctx, inv); err != nil || again.Attempts != i+1 {
			t.Fatalf("Collect before the retry is due = %+v, %v; want no attempt", again, err)
		}
		f.clock.Set(want)
		due, err := f.svc.DueRetries(f.ctx, f.clock.Now(), 10)
		if err != nil || len(due) != 1 || due[0] != p.ID {
			t.Fatalf("DueRetries = %v, %v; want [%s]", due, err, p.ID)
		}
		if p, err = f.svc.Retry(f.ctx, p.ID); err != nil || p.Attempts != i+2 {
			t.Fatalf("Retry = %+v, %v; want attempt %d", p, err, i+2)
		}
	}
	if p.Status != "failed" || p.NextAttemptAt != nil {
		t.Errorf("after the last attempt: %s next %v; want failed, none", p.Status, p.NextAttemptAt)
	}
	if n := f.fake.Creates("payment_intents"); n != 5 {
		t.Errorf("%d PaymentIntents; want 5", n)
	}
	f.clock.Advance(30 * 24 * time.Hour)
	if due, _ := f.svc.DueRetries(f.ctx, f.clock.Now(), 10); len(due) != 0 {
		t.Errorf("DueRetries after exhaustion = %v; want none", due)
	}
	if st := f.invoiceStatus(inv); st != "open" {
		t.Errorf("invoice status = %s; want open", st)
	}
	if n := f.hooks.count("payment.failed"); n != 10 {
		t.Errorf("payment.failed announced %d times; want 10, each failure to both parties", n)
	}
}

// A provider that answers with a server error may have acted: the attempt
// stays to be repeated with its key. One that refuses the request (an
// unknown customer) acted on nothing: the attempt fails with the
// provider's code and the schedule goes on.
func TestProviderErrors(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "11.00")
	f.fake.FailNext("payment_intents", 500)
	p, err := f.svc.Collect(f.ctx, inv)
	if !errors.Is(err, metering.ErrPaymentRetryable) || p.Status != "processing" {
		t.Fatalf("Collect on a 500 = %+v, %v; want processing, retryable", p, err)
	}
	f.clock.Advance(2 * time.Minute)
	if p, err = f.svc.Collect(f.ctx, inv); err != nil || p.Status != "succeeded" || p.Attempts != 1 {
		t.Fatalf("Collect again = %+v, %v; want succeeded by the first attempt", p, err)
	}

	cust := testenv.Org(t, f.pool, "cust-"+testenv.Suffix())
	if err := f.svc.SetCustomer(f.ctx, cust, metering.CustomerRef{Provider: "stripe", ID: "cus_gone"}, ""); err != nil {
		t.Fatal(err)
	}
	bad := f.invoice(cust, "11.00")
	if p, err = f.svc.Collect(f.ctx, bad); err != nil || p.Status != "pending" || p.NextAttemptAt == nil {
		t.Fatalf("Collect for an unknown customer = %+v, %v; want a failed attempt, the next one scheduled", p, err)
	}
	var code string
	f.scan(&code, `SELECT status || '/' || failure_code FROM payment_attempts WHERE payment_id = $1`, p.ID)
	if code != "failed/resource_missing" {
		t.Errorf("attempt = %s; want failed/resource_missing", code)
	}
}

// A process that dies after the provider charged and before it recorded
// the answer: the next Collect sends the attempt's key again and gets the
// same PaymentIntent, never a second.
func TestCrashBetweenCommitAndRecord(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	cust := f.customer("stripe", stripetest.PMSucceeds)
	inv := f.invoice(cust, "12.00")
	f.stripe.setCrash(true)
	if _, err := f.svc.Collect(f.ctx, inv); !errors.Is(err, errCrash) {
		t.Fatalf("Collect = %v; want the crash", err)
	}
	f.stripe.setCrash(false)
	var st string
	f.scan(&st, `SELECT a.status || '/' || COALESCE(a.provider_payment_id, '') FROM payment_attempts a
		JOIN payments p ON p.id = a.payment_id WHERE p.invoice_id = $1`, inv)
	if st != "creating/" {
		t.Fatalf("attempt after the crash = %s; want creating, no provider id", st)
	}
	// Within the minute another caller may still be calling: left alone.
	if p, err := f.svc.Collect(f.ctx, inv); err != nil || p.Status != "processing" || f.stripe.callCount() != 1 {
		t.Fatalf("Collect at once = %+v, %v, %d calls; want processing, no call", p, err, f.stripe.callCount())
	}
	f.clock.Advance(2 * time.Minute)
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil || p.Status != "succeeded" || p.Attempts != 1 {
		t.Fatalf("Collect after the crash = %+v, %v; want succeeded by the same attempt", p, err)
	}
	if n := f.fake.Creates("payment_intents"); n != 1 {
		t.Errorf("%d PaymentIntents; want 1 (the repeated key replayed)", n)
	}

	// The same crash healed by Reconcile instead.
	inv2 := f.invoice(cust, "13.00")
	f.stripe.setCrash(true)
	_, _ = f.svc.Collect(f.ctx, inv2)
	f.stripe.setCrash(false)
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 0 {
		t.Fatalf("Reconcile within the minute = %d, %v; want nothing looked at", n, err)
	}
	f.clock.Advance(2 * time.Minute)
	if n, err := f.svc.Reconcile(f.ctx, 10); err != nil || n != 1 {
		t.Fatalf("Reconcile = %d, %v; want 1", n, err)
	}
	if st := f.invoiceStatus(inv2); st != "paid" || f.fake.Creates("payment_intents") != 2 {
		t.Errorf("after Reconcile: invoice %s, %d PaymentIntents; want paid, 2", st, f.fake.Creates("payment_intents"))
	}

	// Past the key's lifetime at the provider, a repeat could charge
	// again: the attempt is left for a person.
	inv3 := f.invoice(cust, "14.00")
	f.stripe.setCrash(true)
	_, _ = f.svc.Collect(f.ctx, inv3)
	f.stripe.setCrash(false)
	f.clock.Advance(24 * time.Hour)
	calls := f.stripe.callCount()
	if p, err := f.svc.Collect(f.ctx, inv3); err != nil || p.Status != "processing" || f.stripe.callCount() != calls {
		t.Errorf("Collect a day after the crash = %+v, %v, %d calls; want processing, no call", p, err, f.stripe.callCount()-calls)
	}
}

func TestConcurrentCollect(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "30.00")
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A Collect that starts after another has paid the invoice
			// finds it paid: that is refused, not a second charge.
			if _, err := f.svc.Collect(f.ctx, inv); err != nil && !errors.Is(err, ErrInvoiceState) {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Collect = %v", err)
	}
	if n := f.fake.Creates("payment_intents"); n != 1 {
		t.Errorf("%d PaymentIntents; want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM payment_attempts a JOIN payments p ON p.id = a.payment_id WHERE p.invoice_id = $1`, inv); n != 1 {
		t.Errorf("%d attempts; want 1", n)
	}
	if p := f.payment(inv); p.Status != "succeeded" {
		t.Errorf("payment %s; want succeeded", p.Status)
	}
}
