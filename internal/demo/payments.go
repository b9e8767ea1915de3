package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"github.com/stripe/stripe-go/v85/webhook"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
)

// payer is a consumer whose invoice the demo collects.
type payer struct {
	org, tok string
	provider string // a token of the issuer's provider
	customer string // its Stripe customer
	sub      uuid.UUID
	key      string
	url      string
	invoice  client.Invoice
}

// payments collects the period's invoices through Stripe, which veil dev
// points at stripe-mock. stripe-mock answers with fixtures and sends no
// webhooks: each PaymentIntent it creates is requires_payment_method, so
// Veil records each attempt failed, and the demo plays Stripe's side with
// the events Stripe would send, signed with the endpoint's secret as
// Stripe signs them. demo-hotels' card pays its invoice; a second
// consumer's card fails, its subscription goes past due (the gateway
// warns), then is suspended (the gateway answers 402), and pays, and the
// gateway lets it through again. Days cannot pass in a demo: where
// payments wait for days (the retry, the grace), the demo moves that
// timestamp to now in Postgres, as it does the period's end.
func (w *walk) payments(ctx context.Context, s *consumerSide, planID uuid.UUID, admin string) error {
	if w.cfg.StripeWebhookSecret == "" || w.cfg.Postgres == nil {
		w.step("no Stripe webhook secret (stripe-mock not running?): payments are left out")
		return nil
	}
	hotels := &payer{org: "demo-hotels", tok: s.consumer, sub: s.subID, key: s.key.Key, url: s.url, invoice: s.invoice}
	if err := w.setUpCard(ctx, hotels, "pm_card_visa", "4242"); err != nil {
		return err
	}
	bistro, err := w.secondPayer(ctx, s, planID)
	if err != nil {
		return err
	}
	if err := w.setUpCard(ctx, bistro, "pm_card_chargeDeclined", "0002"); err != nil {
		return err
	}
	api, err := w.cp.GetAPIWithResponse(ctx, s.api.id, nil, client.Bearer(s.provider))
	if err := client.Check(api, err); err != nil {
		return fmt.Errorf("GET /v1/apis/%s: %w", s.api.id, err)
	}
	issuer := api.JSON200.OrganizationId
	w.step("the platform admin has demo-weather collect through Stripe: PUT /v1/admin/organizations/%s/payment-settings (one retry after a day, a grace of a day)", issuer)
	set, err := w.cp.PutPaymentSettingsWithResponse(ctx, issuer, nil, client.PaymentSettingsInput{
		Provider: "stripe", RetryDays: &[]int{1}, GraceDays: client.Ptr(1)}, client.Bearer(admin))
	if err := client.Check(set, err); err != nil {
		return fmt.Errorf("PUT /v1/admin/organizations/%s/payment-settings: %w", issuer, err)
	}
	fmt.Fprintf(w.out, "  provider %s, retries after %v days, grace %d day(s)\n", set.JSON200.Provider, set.JSON200.RetryDays, set.JSON200.GraceDays)
	if err := w.payInvoice(ctx, hotels); err != nil {
		return err
	}
	if err := w.endPeriod(ctx, bistro); err != nil {
		return err
	}
	return w.dun(ctx, bistro)
}

// secondPayer subscribes another organization (new each run) to the
// plan with a key.
func (w *walk) secondPayer(ctx context.Context, s *consumerSide, planID uuid.UUID) (*payer, error) {
	now := time.Now()
	p := &payer{org: fmt.Sprintf("demo-bistro-%d", now.Unix()), url: s.url, provider: s.provider}
	var err error
	if p.tok, err = w.mint(identity.Principal{Subject: "lee", Org: p.org, Role: identity.RoleConsumer, Name: "Lee (consumer)"}, now); err != nil {
		return nil, err
	}
	w.step("a fourth organization (%s) subscribes to the plan and issues a key", p.org)
	sub, err := w.cp.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: planID}, client.Bearer(p.tok))
	if err := client.Check(sub, err); err != nil {
		return nil, fmt.Errorf("POST /v1/subscriptions: %w", err)
	}
	p.sub = sub.JSON201.Id
	side := &consumerSide{consumer: p.tok, subID: p.sub}
	if err := w.issueKey(ctx, side); err != nil {
		return nil, err
	}
	p.key = side.key.Key
	return p, nil
}

// setUpCard sets up a card as a portal does: the setup route answers a
// SetupIntent's client secret (for Stripe.js, never stored), Stripe.js
// confirms it with the card and Stripe reports setup_intent.succeeded,
// which makes the card the default.
func (w *walk) setUpCard(ctx context.Context, p *payer, pm, last4 string) error {
	w.step("%s sets up a card: POST /v1/billing/payment-methods/setup", p.org)
	setup, err := w.cp.SetupPaymentMethodWithResponse(ctx, nil, client.PaymentMethodSetupInput{}, client.Bearer(p.tok))
	if err := client.Check(setup, err); err != nil {
		return fmt.Errorf("POST /v1/billing/payment-methods/setup: %w", err)
	}
	si := setup.JSON200
	secret, _, _ := strings.Cut(si.ClientSecret, "_secret_")
	fmt.Fprintf(w.out, "  SetupIntent %s, client_secret %s_secret_… for Stripe.js (answered with Cache-Control: %s, kept nowhere)\n",
		si.SetupId, secret, setup.HTTPResponse.Header.Get("Cache-Control"))
	if err := w.cfg.Postgres.QueryRow(ctx, `SELECT c.provider_customer_id FROM payment_customers c JOIN organizations o ON o.id = c.customer_id
		WHERE o.slug = $1 AND c.provider = 'stripe'`, p.org).Scan(&p.customer); err != nil {
		return fmt.Errorf("read the Stripe customer of %s: %w", p.org, err)
	}
	status, err := w.stripeEvent(ctx, "setup_intent.succeeded", map[string]any{
		"id": si.SetupId, "object": "setup_intent", "customer": p.customer, "status": "succeeded", "usage": "off_session",
		"metadata": map[string]any{stripepay.SetupMetadataKey: "payment_method"},
		"payment_method": map[string]any{"id": pm, "object": "payment_method", "type": "card", "customer": p.customer,
			"card": map[string]any{"brand": "visa", "last4": last4, "exp_month": 12, "exp_year": 2034}},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w.out, "  Stripe reports setup_intent.succeeded (the test card %s, visa …%s): POST /v1/billing/stripe/webhook → %d; it is %s's default\n",
		pm, last4, status, p.customer)
	return nil
}

// stripeEvent delivers a Stripe event about object to veil dev's
// endpoint, signed as Stripe signs it, and returns the answer's status;
// any but 200 is an error.
func (w *walk) stripeEvent(ctx context.Context, typ string, object map[string]any) (int, error) {
	payload, err := json.Marshal(map[string]any{
		"id": fmt.Sprintf("evt_demo_%d", time.Now().UnixNano()), "object": "event", "api_version": stripepay.APIVersion,
		"created": time.Now().Unix(), "livemode": false, "type": typ, "data": map[string]any{"object": object}, "pending_webhooks": 1,
	})
	if err != nil {
		return 0, err
	}
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: w.cfg.StripeWebhookSecret, Timestamp: time.Now()})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.ControlPlaneURL+"/v1/billing/stripe/webhook", bytes.NewReader(payload))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := w.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("POST /v1/billing/stripe/webhook: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("POST /v1/billing/stripe/webhook (%s) = %d %s; want 200", typ, resp.StatusCode, body)
	}
	return resp.StatusCode, nil
}

// intentEvent reports the payer's PaymentIntent pi, for its invoice's
// amount due, in status.
func (w *walk) intentEvent(ctx context.Context, p *payer, typ, pi, status string) error {
	due, err := decimal.NewFromString(p.invoice.AmountDue)
	if err != nil {
		return fmt.Errorf("read invoice %s's amount due: %w", p.invoice.Id, err)
	}
	amount, err := metering.MinorUnits(due, p.invoice.Currency)
	if err != nil {
		return fmt.Errorf("read invoice %s's amount due: %w", p.invoice.Id, err)
	}
	_, err = w.stripeEvent(ctx, typ, map[string]any{"id": pi, "object": "payment_intent", "customer": p.customer,
		"amount": amount.Minor, "currency": strings.ToLower(p.invoice.Currency), "status": status,
		"metadata": map[string]any{"veil_invoice_id": p.invoice.Id.String()}})
	return err
}

// payInvoice waits for the payments cycle's attempt at the payer's
// invoice and has Stripe report it succeeded.
func (w *walk) payInvoice(ctx context.Context, p *payer) error {
	w.step("the payments cycle collects demo-hotels' invoice %s (%s %s): a PaymentIntent confirmed off-session with the card", deref(p.invoice.Number), p.invoice.AmountDue, p.invoice.Currency)
	pay, err := w.attempt(ctx, p, 1)
	if err != nil {
		return err
	}
	pi := *pay.Attempts[0].ProviderPaymentId
	fmt.Fprintf(w.out, "  attempt 1: PaymentIntent %s, %s (stripe-mock's fixture answers requires_payment_method); payment %s, next attempt %s\n",
		pi, pay.Attempts[0].Status, pay.Status, dateOf(pay.NextAttemptAt))
	if err := w.intentEvent(ctx, p, "payment_intent.succeeded", pi, "succeeded"); err != nil {
		return err
	}
	inv, err := w.cp.GetInvoiceWithResponse(ctx, p.invoice.Id, nil, client.Bearer(p.tok))
	if err := client.Check(inv, err); err != nil {
		return fmt.Errorf("GET /v1/invoices/%s: %w", p.invoice.Id, err)
	}
	fmt.Fprintf(w.out, "  Stripe reports payment_intent.succeeded: invoice %s is %s\n", deref(inv.JSON200.Number), inv.JSON200.Status)
	if inv.JSON200.Status != client.InvoiceStatusPaid {
		return fmt.Errorf("invoice %s is %s after payment_intent.succeeded; want paid", p.invoice.Id, inv.JSON200.Status)
	}
	return nil
}

// attempt waits until the payer's payment has attempt n settled with a
// PaymentIntent.
func (w *walk) attempt(ctx context.Context, p *payer, n int) (client.Payment, error) {
	return poll(ctx, 30*time.Second, func() (client.Payment, error) {
		got, err := w.cp.GetInvoicePaymentWithResponse(ctx, p.invoice.Id, nil, client.Bearer(p.tok))
		if got != nil && got.StatusCode() == http.StatusNotFound {
			return client.Payment{}, fmt.Errorf("invoice %s has no payment yet", p.invoice.Id)
		}
		if err := client.Check(got, err); err != nil {
			return client.Payment{}, fmt.Errorf("GET /v1/invoices/%s/payment: %w", p.invoice.Id, err)
		}
		pay := *got.JSON200
		if len(pay.Attempts) < n || pay.Attempts[n-1].ProviderPaymentId == nil || pay.Attempts[n-1].FinishedAt == nil {
			return pay, fmt.Errorf("invoice %s's payment has %d attempts; want attempt %d answered", p.invoice.Id, len(pay.Attempts), n)
		}
		return pay, nil
	})
}

// poll calls f until it returns no error or d passes, and returns its
// last answer.
func poll[T any](ctx context.Context, d time.Duration, f func() (T, error)) (T, error) {
	deadline := time.Now().Add(d)
	for {
		v, err := f()
		if err == nil || time.Now().After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
