package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/veil-platform/veil/client"
)

// endPeriod ends the payer's period now, as a month would, and waits for
// the billing cycle's invoice of it.
func (w *walk) endPeriod(ctx context.Context, p *payer) error {
	w.step("%s's month ends too (current_period_end set to now): the billing cycle invoices it", p.org)
	// The gateway's records keep a period to the second and refuse an
	// empty one: the period the demo ends lasts a few seconds at least.
	var started time.Time
	if err := w.cfg.Postgres.QueryRow(ctx, `SELECT current_period_start FROM subscriptions WHERE id = $1`, p.sub).Scan(&started); err != nil {
		return fmt.Errorf("read %s's billing period: %w", p.org, err)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(started.Add(2 * time.Second))):
	}
	if _, err := w.cfg.Postgres.Exec(ctx, `UPDATE subscriptions SET current_period_end = now() WHERE id = $1`, p.sub); err != nil {
		return fmt.Errorf("end %s's billing period: %w", p.org, err)
	}
	inv, err := w.finalized(ctx, &consumerSide{provider: p.provider, consumer: p.tok, subID: p.sub})
	if err != nil {
		return err
	}
	p.invoice = inv
	fmt.Fprintf(w.out, "  invoice %s, %s, %s %s due\n", deref(inv.Number), inv.Status, inv.AmountDue, inv.Currency)
	return nil
}

// dun walks a payment that fails: its card is declined, the retry a day
// later too, so the subscription is past_due (admitted with a warning),
// then suspended when its grace ends (refused with 402 naming the
// invoice); the customer pays and the gateway admits it again.
func (w *walk) dun(ctx context.Context, p *payer) error {
	number := deref(p.invoice.Number)
	w.step("the payments cycle collects invoice %s: the attempt fails (as a declined card does; stripe-mock's fixture answers requires_payment_method)", number)
	pay, err := w.attempt(ctx, p, 1)
	if err != nil {
		return err
	}
	fmt.Fprintf(w.out, "  attempt 1: PaymentIntent %s %s; payment %s, next attempt %s\n",
		*pay.Attempts[0].ProviderPaymentId, pay.Attempts[0].Status, pay.Status, dateOf(pay.NextAttemptAt))

	w.step("a day passes (the demo sets the payment's next_attempt_at to now): the retry is declined too, the last one")
	if _, err := w.cfg.Postgres.Exec(ctx, `UPDATE payments SET next_attempt_at = now() WHERE invoice_id = $1 AND status = 'pending'`, p.invoice.Id); err != nil {
		return fmt.Errorf("move the retry of invoice %s to now: %w", number, err)
	}
	if pay, err = w.attempt(ctx, p, 2); err != nil {
		return err
	}
	pi := *pay.Attempts[1].ProviderPaymentId
	fmt.Fprintf(w.out, "  attempt 2: PaymentIntent %s %s; payment %s\n", pi, pay.Attempts[1].Status, pay.Status)
	if err := w.subscriptionIs(ctx, p, client.SubscriptionStatusPastDue); err != nil {
		return err
	}
	a, err := w.callUntil(ctx, p, http.StatusOK, true)
	if err != nil {
		return err
	}
	fmt.Fprintf(w.out, "  the subscription is past_due; the gateway still admits it: %d, Veil-Billing-Warning: %s\n", a.status, a.warning)

	w.step("the grace of a day passes (the demo sets the dunning's suspend_at to now): the subscription is suspended")
	if _, err := w.cfg.Postgres.Exec(ctx, `UPDATE subscription_dunning SET past_due_at = least(past_due_at, now()), suspend_at = now()
		WHERE subscription_id = $1`, p.sub); err != nil {
		return fmt.Errorf("end the grace of %s: %w", p.org, err)
	}
	if err := w.subscriptionIs(ctx, p, client.SubscriptionStatusSuspended); err != nil {
		return err
	}
	if a, err = w.callUntil(ctx, p, http.StatusPaymentRequired, false); err != nil {
		return err
	}
	fmt.Fprintf(w.out, "  GET %s → %d %s\n", p.url, a.status, a.body)

	w.step("%s pays now: POST /v1/invoices/%s/payment/retry, and Stripe reports the payment succeeded; the gateway lets it through again", p.org, p.invoice.Id)
	now, err := w.cp.RetryPaymentWithResponse(ctx, p.invoice.Id, nil, client.Bearer(p.tok))
	if err := client.Check(now, err); err != nil {
		return fmt.Errorf("POST /v1/invoices/%s/payment/retry: %w", p.invoice.Id, err)
	}
	if pay, err = w.attempt(ctx, p, 3); err != nil {
		return err
	}
	pi = *pay.Attempts[2].ProviderPaymentId
	fmt.Fprintf(w.out, "  attempt 3: PaymentIntent %s (%s: stripe-mock's fixture again); Stripe reports payment_intent.succeeded for it\n", pi, pay.Attempts[2].Status)
	if err := w.intentEvent(ctx, p, "payment_intent.succeeded", pi, "succeeded"); err != nil {
		return err
	}
	paid := time.Now()
	if a, err = w.callUntil(ctx, p, http.StatusOK, false); err != nil {
		return err
	}
	fmt.Fprintf(w.out, "  GET %s → %d without a warning, %s after the webhook's answer\n", p.url, a.status, time.Since(paid).Round(time.Millisecond))
	return w.subscriptionIs(ctx, p, client.SubscriptionStatusActive)
}

// subscriptionIs waits until the payer's subscription is want.
func (w *walk) subscriptionIs(ctx context.Context, p *payer, want client.SubscriptionStatus) error {
	_, err := poll(ctx, 30*time.Second, func() (client.SubscriptionStatus, error) {
		got, err := w.cp.GetSubscriptionWithResponse(ctx, p.sub, nil, client.Bearer(p.tok))
		if err := client.Check(got, err); err != nil {
			return "", fmt.Errorf("GET /v1/subscriptions/%s: %w", p.sub, err)
		}
		if st := got.JSON200.Status; st != want {
			return st, fmt.Errorf("subscription %s is %s; want %s", p.sub, st, want)
		}
		return want, nil
	})
	return err
}

// answer is a call through the gateway: its status, its billing warning
// and its body.
type answer struct {
	status        int
	warning, body string
}

// callUntil calls the API with the payer's key until the gateway answers
// want, with a billing warning when warned (the subscription's record
// reaches it after the commit).
func (w *walk) callUntil(ctx context.Context, p *payer, want int, warned bool) (answer, error) {
	return poll(ctx, 30*time.Second, func() (answer, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
		if err != nil {
			return answer{}, err
		}
		req.Header.Set("Authorization", "Bearer "+p.key)
		resp, err := w.http.Do(req)
		if err != nil {
			return answer{}, fmt.Errorf("call through the gateway: %w", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		a := answer{status: resp.StatusCode, warning: resp.Header.Get("Veil-Billing-Warning"), body: string(body)}
		if resp.StatusCode == http.StatusPaymentRequired {
			var compact map[string]any
			if json.Unmarshal(body, &compact) == nil {
				b, _ := json.Marshal(compact)
				a.body = string(b)
			}
		}
		if a.status != want || (a.warning != "") != warned {
			return a, fmt.Errorf("GET %s = %d %.200s, Veil-Billing-Warning %q; want %d, warned %t", p.url, a.status, a.body, a.warning, want, warned)
		}
		if want == http.StatusOK {
			a.body = ""
		}
		return a, nil
	})
}
