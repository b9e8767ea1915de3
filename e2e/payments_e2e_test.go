package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stripe/stripe-go/v85/webhook"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering/stripepay"
)

// The Stripe secrets of the payments tests: any sk_test_ key is one
// stripe-mock accepts; the webhook secret is the endpoint's, which the
// tests sign their events with as Stripe does.
const (
	payStripeKey     = "sk_test_veilE2EpaymentsSecretKey0123456789"
	payWebhookSecret = "whsec_veilE2EwebhookSigningSecret0123456789"
)

// The test cards (Stripe's test PaymentMethods) and the numbers behind
// them, which must never reach Veil: it only ever sends the pm_ ids.
var testCards = map[string]string{"pm_card_visa": "4242424242424242", "pm_card_chargeDeclined": "4000000000000002"}

// paidPlan is the plan every consumer of the payments tests is on: a flat
// 20.00 USD a month, so each period's invoice is 20.00 due.
const paidPlan = `api: paid
plan: monthly
name: Monthly
status: active
type: subscription
currency: USD
interval: month
base_fee: "20.00"
`

// stripeFront sits between the control plane and stripe-mock. Every
// request goes on to stripe-mock, which checks it against Stripe's API
// and answers with its fixture; stripe-mock decides no outcome (each
// PaymentIntent it answers, created or retrieved, is
// requires_payment_method with the fixture's last_payment_error, and a
// retrieved one the fixture's amount and customer), so the front sets
// what the test decides, a PaymentIntent's status, and what Stripe
// would keep, the charge it was created with. A created one is
// processing (a confirmation whose outcome Stripe's webhook tells), a
// retrieved one what the test set for its id, else processing. It records every request body, to check what Veil sends.
type stripeFront struct {
	srv *httptest.Server

	mu       sync.Mutex
	status   map[string]string // PaymentIntent id → the status retrieving it answers
	charge   map[string][3]any // PaymentIntent id → its amount, currency and customer as created
	bodies   []string          // every request's form body
	intents  []string          // the PaymentIntents created, in order
	requests int
	// Stripe's idempotency: a POST repeated with its Idempotency-Key gets
	// the first answer again (or 400 idempotency_error when its
	// parameters changed) and reaches stripe-mock, which keeps nothing,
	// only once.
	answered map[string]keyedAnswer
	replayed int
	// hold keeps the answers of PaymentIntent creations from the caller
	// until it hangs up, each created id sent on held: a crash between the
	// charge and its record.
	hold bool
	held chan string
}

// paramsKey carries a request's form body to the proxy's answer.
type paramsKey struct{}

// keyedAnswer is what a POST with an Idempotency-Key was answered.
type keyedAnswer struct {
	params string
	status int
	body   []byte
}

func newStripeFront(t *testing.T) *stripeFront {
	t.Helper()
	mock := testenv.StripeMock(t)
	target, err := url.Parse(mock.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := &stripeFront{status: map[string]string{}, charge: map[string][3]any{}, answered: map[string]keyedAnswer{}, held: make(chan string, 10)}
	proxy := &httputil.ReverseProxy{
		Rewrite:        func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ModifyResponse: f.rewrite,
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		key := r.Header.Get("Idempotency-Key")
		if r.Method != http.MethodPost {
			key = ""
		} else if key != "" {
			key = r.URL.Path + " " + key
		}
		f.mu.Lock()
		f.requests++
		f.bodies = append(f.bodies, r.Method+" "+r.URL.Path+" "+string(body))
		first, seen := f.answered[key]
		if seen {
			f.replayed++
		}
		f.mu.Unlock()
		switch {
		case seen && first.params != string(body):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters they were first used with."}}`))
		case seen:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(first.status)
			_, _ = w.Write(first.body)
		default:
			r = r.WithContext(context.WithValue(r.Context(), paramsKey{}, string(body)))
			proxy.ServeHTTP(&recorder{ResponseWriter: w, front: f, key: key, params: string(body)}, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// recorder keeps the answer to a POST with an Idempotency-Key, for its
// repeats.
type recorder struct {
	http.ResponseWriter
	front       *stripeFront
	key, params string
	status      int
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.key != "" && r.status < 500 {
		r.front.mu.Lock()
		a := r.front.answered[r.key]
		a.params, a.status, a.body = r.params, r.status, append(a.body, b...)
		r.front.answered[r.key] = a
		r.front.mu.Unlock()
	}
	return r.ResponseWriter.Write(b)
}

// rewrite sets the status of a PaymentIntent stripe-mock answered.
func (f *stripeFront) rewrite(resp *http.Response) error {
	path := resp.Request.URL.Path
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(path, "/v1/payment_intents") {
		return nil
	}
	rest := strings.TrimPrefix(path, "/v1/payment_intents")
	create := rest == "" && resp.Request.Method == http.MethodPost
	retrieve := strings.Count(rest, "/") == 1 && resp.Request.Method == http.MethodGet
	if !create && !retrieve {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	var pi map[string]any
	if err := json.Unmarshal(body, &pi); err != nil {
		return fmt.Errorf("decode stripe-mock's PaymentIntent: %w", err)
	}
	id, _ := pi["id"].(string)
	f.mu.Lock()
	st := "processing"
	if create {
		f.intents = append(f.intents, id)
		f.charge[id] = [3]any{pi["amount"], pi["currency"], pi["customer"]}
	} else {
		if s, ok := f.status[id]; ok {
			st = s
		}
		// stripe-mock answers a retrieve with its fixture's charge.
		if c, ok := f.charge[id]; ok {
			pi["amount"], pi["currency"], pi["customer"] = c[0], c[1], c[2]
		}
	}
	hold := create && f.hold
	f.mu.Unlock()
	pi["status"], pi["last_payment_error"] = st, nil
	if body, err = json.Marshal(pi); err != nil {
		return err
	}
	if hold {
		// The PaymentIntent exists (and its answer is kept for the key);
		// the caller never reads it.
		f.mu.Lock()
		params, _ := resp.Request.Context().Value(paramsKey{}).(string)
		f.answered[resp.Request.URL.Path+" "+resp.Request.Header.Get("Idempotency-Key")] = keyedAnswer{
			params: params, status: http.StatusOK, body: body}
		f.mu.Unlock()
		f.held <- id
		<-resp.Request.Context().Done()
		return resp.Request.Context().Err()
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// setStatus makes retrieving the PaymentIntent id answer status.
func (f *stripeFront) setStatus(id, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status[id] = status
}

// holdCreates starts or stops holding the answers of PaymentIntent
// creations.
func (f *stripeFront) holdCreates(hold bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = hold
}

// counts returns how many PaymentIntents stripe-mock created and how many
// POSTs the front answered from a key's first answer.
func (f *stripeFront) counts() (created, replayed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.intents), f.replayed
}

// sent returns every request body the front passed on.
func (f *stripeFront) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bodies...)
}

// payPlane is a control plane collecting through Stripe (stripe-mock
// behind the front) with its billing cycle, period roll and payments
// cycle every second, the real gateway and a processor, and the plan
// paidPlan of the provider's API paid, whose issuer collects with Stripe,
// retrying twice (after 1 and 3 days) with a grace of a day.
type payPlane struct {
	t     *testing.T
	m     *meteredPlane
	c     *controlPlane
	pool  *pgxpool.Pool
	front *stripeFront
	prov  string
	admin string
	plan  uuid.UUID
	dir   string // the plan files
}

// startControlPlane starts (or starts again) the plane's control plane.
func (p *payPlane) startControlPlane() {
	t := p.t
	addr := testenv.FreeLoopbackAddr(t)
	args := append(p.m.e.args(addr, p.m.opts), "--billing-interval", "1s", "--billing-grace", "1s", "--payments-interval", "1s")
	proc := startVeil(t, []string{"VEIL_PRICING_DIR=" + p.dir, "VEIL_STRIPE_SECRET_KEY=" + payStripeKey,
		"VEIL_STRIPE_WEBHOOK_SECRET=" + payWebhookSecret, "VEIL_STRIPE_API_BASE=" + p.front.srv.URL}, args...)
	p.c = &controlPlane{proc: proc, ClientWithResponses: newClient(t, "http://"+addr), URL: "http://" + addr}
	t.Cleanup(func() {
		if err := proc.stop(); err != nil && !errors.Is(err, errStopped) {
			t.Errorf("control plane: %v", err)
		}
	})
	proc.waitReady(t, p.c.URL+"/readyz", 60*time.Second)
}

func newPayPlane(t *testing.T) *payPlane {
	t.Helper()
	ctx := t.Context()
	p := &payPlane{t: t, m: newMeteredPlane(t, 1, "/gateway/payments-e2e"), front: newStripeFront(t)}
	p.m.opts.periodRollEvery = time.Second
	// The control plane reads Kafka only for quota notices, which these
	// tests do not need; without it a control plane started again after a
	// crash does not wait for its dead consumer to leave the group.
	p.m.opts.kafkaBrokers = ""
	// Debug, not warn: the secrets scan reads these logs, which then say
	// more than a production control plane's, stripe-go's lines included.
	p.m.opts.logLevel = "debug"
	p.dir = t.TempDir()
	writeFile(t, filepath.Join(p.dir, "paid.yaml"), paidPlan)
	p.startControlPlane()
	pipelinetest.StartProcessor(t, p.m.processorConfig(t, "payments-e2e", 100))
	pool, err := pgxpool.New(ctx, p.m.e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	p.pool = pool

	p.prov, p.admin = providerToken(t), adminToken(t)
	apiID := p.m.e.activeAPI(t, p.c, p.prov, p.admin, "paid")
	reload, err := p.c.ReloadPlanFilesWithResponse(ctx, nil, client.Bearer(p.admin))
	expect(t, http.StatusOK, reload, err)
	for _, r := range append(reload.JSON200.Applied, reload.JSON200.Unchanged...) {
		p.plan = r.PlanId
	}
	if p.plan == uuid.Nil {
		t.Fatalf("reload = %s; want the plan monthly", reload.Body)
	}
	api, err := p.c.GetAPIWithResponse(ctx, apiID, nil, client.Bearer(p.prov))
	expect(t, http.StatusOK, api, err)
	set, err := p.c.PutPaymentSettingsWithResponse(ctx, api.JSON200.OrganizationId, nil, client.PaymentSettingsInput{
		Provider: "stripe", RetryDays: &[]int{1, 3}, GraceDays: client.Ptr(1),
	}, client.Bearer(p.admin))
	expect(t, http.StatusOK, set, err)
	return p
}

// payer is a consumer organization with a subscription to the plan, a
// key for it, and the invoice of its first period once it ends.
type payer struct {
	name     string
	tok      string
	sub      uuid.UUID
	key      string
	customer string // its Stripe customer
	secrets  []string
	invoice  client.Invoice
}

// subscribe makes a consumer of organization org subscribe with a key.
func (p *payPlane) subscribe(org string) *payer {
	t := p.t
	ctx := t.Context()
	c := &payer{name: org, tok: token(t, org, "payer", identity.RoleConsumer)}
	sub, err := p.c.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: p.plan}, client.Bearer(c.tok))
	expect(t, http.StatusCreated, sub, err)
	c.sub = sub.JSON201.Id
	key, err := p.c.CreateKeyWithResponse(ctx, c.sub, nil, client.KeySettings{Name: client.Ptr("pay")}, client.Bearer(c.tok))
	expect(t, http.StatusCreated, key, err)
	waitKey(t, p.c, c.tok, key.JSON201.Id, "active")
	c.key = key.JSON201.Key
	return c
}

// setUpCard sets up a card for the payer as a portal would: the setup
// route makes its Stripe customer and answers a SetupIntent's client
// secret; Stripe.js confirms it with the card (pm, here a test
// PaymentMethod) and Stripe reports setup_intent.succeeded, which makes
// the card the default.
func (p *payPlane) setUpCard(c *payer, pm string) {
	t := p.t
	ctx := t.Context()
	// With an Idempotency-Key, as a portal retrying on a timeout sends it:
	// the stored answer must not keep the client secret.
	params := &client.SetupPaymentMethodParams{IdempotencyKey: client.Ptr("setup-" + c.name + "-" + testenv.Suffix())}
	setup, err := p.c.SetupPaymentMethodWithResponse(ctx, params, client.PaymentMethodSetupInput{}, client.Bearer(c.tok))
	expect(t, http.StatusOK, setup, err)
	s := setup.JSON200
	if !strings.HasPrefix(s.SetupId, "seti_") || !strings.Contains(s.ClientSecret, "_secret_") {
		t.Fatalf("setup = %+v; want a SetupIntent and its client secret", s)
	}
	if cc := setup.HTTPResponse.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("setup answered Cache-Control %q; want no-store", cc)
	}
	c.secrets = append(c.secrets, s.ClientSecret)
	again, err := p.c.SetupPaymentMethodWithResponse(ctx, params, client.PaymentMethodSetupInput{}, client.Bearer(c.tok))
	if err != nil || again.StatusCode() != http.StatusConflict || !strings.Contains(string(again.Body), "idempotency-response-withheld") ||
		strings.Contains(string(again.Body), s.ClientSecret) {
		t.Errorf("setup repeated with its Idempotency-Key = %v %s; want 409 idempotency-response-withheld without the secret", err, again.Body)
	}
	if err := p.pool.QueryRow(ctx, `SELECT c.provider_customer_id FROM payment_customers c JOIN organizations o ON o.id = c.customer_id
		WHERE o.slug = $1 AND c.provider = 'stripe'`, c.name).Scan(&c.customer); err != nil {
		t.Fatalf("the Stripe customer of %s: %v", c.name, err)
	}
	number := testCards[pm]
	status, body := p.webhook(stripeEventJSON(t, "evt_setup_"+testenv.Suffix(), "setup_intent.succeeded", map[string]any{
		"id": s.SetupId, "object": "setup_intent", "customer": c.customer, "status": "succeeded", "usage": "off_session",
		"metadata": map[string]any{"veil_setup": "payment_method"},
		"payment_method": map[string]any{"id": pm, "object": "payment_method", "type": "card", "customer": c.customer,
			"card": map[string]any{"brand": "visa", "last4": number[len(number)-4:], "exp_month": 12, "exp_year": 2034}},
	}), payWebhookSecret)
	if status != http.StatusOK {
		t.Fatalf("setup_intent.succeeded = %d %s; want 200", status, body)
	}
	var got string
	if err := p.pool.QueryRow(ctx, `SELECT coalesce(default_pm_id, '') FROM payment_customers WHERE provider_customer_id = $1`,
		c.customer).Scan(&got); err != nil || got != pm {
		t.Fatalf("default payment method of %s = %q, %v; want %s", c.customer, got, err, pm)
	}
}

// endPeriods ends the payers' periods now, as a month would, and waits for
// the billing cycle to finalize each one's invoice.
func (p *payPlane) endPeriods(payers ...*payer) {
	t := p.t
	ctx := t.Context()
	for _, c := range payers {
		// The gateway's records keep a period to the second and refuse an
		// empty one (the status changes to come would not reach it): the
		// period lasts two seconds at least.
		started := getSubscription(t, p.c, c.tok, c.sub).CurrentPeriodStart
		time.Sleep(time.Until(started.Add(2 * time.Second)))
		if _, err := p.pool.Exec(ctx, `UPDATE subscriptions SET current_period_end = now() WHERE id = $1`, c.sub); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range payers {
		testenv.Deadline(t, 60*time.Second, func() error {
			got, err := p.c.ListInvoicesWithResponse(ctx, &client.ListInvoicesParams{SubscriptionId: &c.sub}, client.Bearer(c.tok))
			expect(t, http.StatusOK, got, err)
			if len(got.JSON200.Data) != 1 || got.JSON200.Data[0].Status == client.InvoiceStatusDraft {
				return fmt.Errorf("%s: %d invoices; want one finalized", c.name, len(got.JSON200.Data))
			}
			c.invoice = got.JSON200.Data[0]
			return nil
		})
		if c.invoice.AmountDue != "20.00" || c.invoice.Currency != "USD" {
			t.Fatalf("%s's invoice is %s %s due; want 20.00 USD", c.name, c.invoice.AmountDue, c.invoice.Currency)
		}
	}
}

// payment reads the payer's payment as its consumer.
func (p *payPlane) payment(c *payer) client.Payment {
	p.t.Helper()
	got, err := p.c.GetInvoicePaymentWithResponse(p.t.Context(), c.invoice.Id, nil, client.Bearer(c.tok))
	if err != nil || got.StatusCode() != http.StatusOK {
		return client.Payment{}
	}
	return *got.JSON200
}

// waitAttempt waits until the payer's payment has attempt n with a
// PaymentIntent, in status want, and returns the PaymentIntent's id.
func (p *payPlane) waitAttempt(c *payer, n int, want client.PaymentAttemptStatus) string {
	p.t.Helper()
	var pi string
	testenv.Deadline(p.t, 30*time.Second, func() error {
		pay := p.payment(c)
		if len(pay.Attempts) < n {
			return fmt.Errorf("%s's payment %s has %d attempts; want %d", c.name, pay.Status, len(pay.Attempts), n)
		}
		a := pay.Attempts[n-1]
		if a.Status != want || a.ProviderPaymentId == nil {
			return fmt.Errorf("%s's attempt %d is %s (%v); want %s with a PaymentIntent", c.name, n, a.Status, a.ProviderPaymentId, want)
		}
		pi = *a.ProviderPaymentId
		return nil
	})
	return pi
}

// invoiceStatus reads the payer's invoice's status.
func (p *payPlane) invoiceStatus(c *payer) client.InvoiceStatus {
	p.t.Helper()
	got, err := p.c.GetInvoiceWithResponse(p.t.Context(), c.invoice.Id, nil, client.Bearer(c.tok))
	expect(p.t, http.StatusOK, got, err)
	return got.JSON200.Status
}

// waitInvoice waits until the payer's invoice is want.
func (p *payPlane) waitInvoice(c *payer, want client.InvoiceStatus, d time.Duration) {
	p.t.Helper()
	testenv.Deadline(p.t, d, func() error {
		if got := p.invoiceStatus(c); got != want {
			return fmt.Errorf("%s's invoice is %s; want %s", c.name, got, want)
		}
		return nil
	})
}

// stripeEventJSON renders a Stripe event around object, as Stripe sends
// it, in the API version Veil's endpoint is created with.
func stripeEventJSON(t *testing.T, id, typ string, object map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": stripepay.APIVersion, "created": time.Now().Unix(),
		"livemode": false, "type": typ, "data": map[string]any{"object": object}, "pending_webhooks": 1,
		"request": map[string]any{"id": nil, "idempotency_key": nil},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// intentEvent is a payment_intent.* event about the payer's PaymentIntent
// pi in status; a failed one carries the decline.
func (c *payer) intentEvent(t *testing.T, id, typ, pi, status string) []byte {
	obj := map[string]any{"id": pi, "object": "payment_intent", "amount": 2000, "currency": "usd", "customer": c.customer,
		"payment_method": "pm_card_visa", "status": status, "metadata": map[string]any{"veil_invoice_id": c.invoice.Id.String()}}
	if status == "requires_payment_method" {
		obj["payment_method"] = "pm_card_chargeDeclined"
		obj["last_payment_error"] = map[string]any{"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
			"message": "Your card has insufficient funds."}
	}
	return stripeEventJSON(t, id, typ, obj)
}

// webhook delivers payload to the control plane's Stripe endpoint signed
// with secret exactly as Stripe signs it (Stripe-Signature t=…,v1=…).
func (p *payPlane) webhook(payload []byte, secret string) (int, string) {
	p.t.Helper()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: time.Now()})
	req, err := http.NewRequestWithContext(p.t.Context(), http.MethodPost, p.c.URL+"/v1/billing/stripe/webhook", bytes.NewReader(payload))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("deliver a Stripe event: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// mustDeliver delivers a signed event and wants 200.
func (p *payPlane) mustDeliver(payload []byte) {
	p.t.Helper()
	if status, body := p.webhook(payload, payWebhookSecret); status != http.StatusOK {
		p.t.Fatalf("Stripe event = %d %s; want 200", status, body)
	}
}

// count runs a count query.
func (p *payPlane) count(q string, args ...any) int {
	p.t.Helper()
	var n int
	if err := p.pool.QueryRow(p.t.Context(), q, args...).Scan(&n); err != nil {
		p.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// gatewayAnswer is one call through the gateway.
type gatewayAnswer struct {
	status  int
	warning string
	problem map[string]any
}

func (p *payPlane) call(c *payer) gatewayAnswer {
	p.t.Helper()
	req, _ := http.NewRequestWithContext(p.t.Context(), http.MethodGet, p.m.e.gw.URL+"/paid/hello", nil)
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("call through the gateway: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	a := gatewayAnswer{status: resp.StatusCode, warning: resp.Header.Get("Veil-Billing-Warning")}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		_ = json.Unmarshal(body, &a.problem)
	}
	return a
}

// waitSubscription waits until the payer's subscription is want.
func (p *payPlane) waitSubscription(c *payer, want client.SubscriptionStatus) {
	p.t.Helper()
	testenv.Deadline(p.t, 30*time.Second, func() error {
		if got := getSubscription(p.t, p.c, c.tok, c.sub).Status; got != want {
			return fmt.Errorf("%s's subscription is %s; want %s", c.name, got, want)
		}
		return nil
	})
}

// TestPaymentsEndToEnd collects invoices with every real part: the
// control plane process with Stripe configured against stripe-mock (the
// front above decides each PaymentIntent's status, Stripe's events are
// built and signed as Stripe signs them), its billing and payments cycles
// every second, and the Caddy gateway. Days cannot pass in a test: where
// the payments wait for days (the next retry, the grace before
// suspension) or a minute (an attempt unanswered before reconciliation
// reads it), the test moves that one timestamp into the past in Postgres,
// and the cycle, which runs every second, does the rest.
//
// globex sets up a card and pays; a bad signature changes nothing, a
// replay and a late failure neither. initech's card is declined three
// times (the first attempt and two retries), it goes past_due (admitted
// with Veil-Billing-Warning), then suspended (402 naming the invoice); a new
// card's attempt at once is declined too, it pays now (POST
// /v1/invoices/{id}/payment/retry), and the gateway admits it again: the
// time from the success webhook's answer to the first admitted call is
// measured. hooli's success webhook is lost;
// reconciliation reads the PaymentIntent and pays the invoice. Last, no
// secret or card number is anywhere in Postgres, Redis or the logs.
func TestPaymentsEndToEnd(t *testing.T) {
	p := newPayPlane(t)
	globex, initech, hooli := p.subscribe("globex"), p.subscribe("initech"), p.subscribe("hooli")
	p.setUpCard(globex, "pm_card_visa")
	p.setUpCard(initech, "pm_card_chargeDeclined")
	p.setUpCard(hooli, "pm_card_visa")
	for _, c := range []*payer{globex, initech, hooli} {
		if a := p.call(c); a.status != http.StatusOK || a.warning != "" {
			t.Fatalf("%s before its invoice = %d, warning %q; want 200 without one", c.name, a.status, a.warning)
		}
	}
	p.endPeriods(globex, initech, hooli)

	p.paid(globex)
	p.dunned(initech)
	p.lost(hooli)
	if t.Failed() {
		return
	}
	for _, s := range p.front.sent() {
		if strings.Contains(s, "cvc") || strings.Contains(s, "card%5Bnumber%5D") || strings.Contains(s, "card[number]") {
			t.Errorf("a request to Stripe carries card data: %.300s", s)
		}
	}
	// The scan covers the control plane's whole life: stop it first, so
	// that its shutdown is in the logs too.
	if err := p.c.stop(); err != nil {
		t.Errorf("control plane: %v", err)
	}
	var secrets []string
	for _, c := range []*payer{globex, initech, hooli} {
		secrets = append(secrets, c.secrets...)
	}
	scanForPaymentSecrets(t, paymentSecrets(secrets), dumpPostgres(t, p.m.e.pgURL),
		dumpRedis(t, testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379")),
		map[string]string{"control plane": p.c.out.String(), "gateway": p.m.e.gw.Stderr()})
}

// paid: globex's card is charged; the success webhook pays the invoice
// once, whatever else arrives.
func (p *payPlane) paid(c *payer) {
	t := p.t
	pi := p.waitAttempt(c, 1, "processing")
	events := func() int { return p.count(`SELECT count(*) FROM provider_events`) }
	before := events()
	success := c.intentEvent(t, "evt_ok_"+testenv.Suffix(), "payment_intent.succeeded", pi, "succeeded")
	if status, body := p.webhook(success, "whsec_not_the_endpoints_secret"); status != http.StatusBadRequest || !strings.Contains(body, "invalid-webhook") {
		t.Errorf("badly signed event = %d %s; want 400 invalid-webhook", status, body)
	}
	if st := p.invoiceStatus(c); st != client.InvoiceStatusOpen || events() != before {
		t.Fatalf("after a bad signature the invoice is %s and %d events are stored; want open and %d", st, events(), before)
	}
	p.mustDeliver(success)
	if st := p.invoiceStatus(c); st != client.InvoiceStatusPaid {
		t.Fatalf("after payment_intent.succeeded the invoice is %s; want paid (the 200 comes after the commit)", st)
	}
	p.mustDeliver(success)
	// Out of order: Stripe sends a failure of the same PaymentIntent late.
	p.mustDeliver(c.intentEvent(t, "evt_late_"+testenv.Suffix(), "payment_intent.payment_failed", pi, "requires_payment_method"))
	pay := p.payment(c)
	if pay.Status != "succeeded" || len(pay.Attempts) != 1 || pay.Attempts[0].Status != "succeeded" || p.invoiceStatus(c) != client.InvoiceStatusPaid {
		t.Errorf("after a replay and a late failure: payment %s, attempts %+v, invoice %s; want one succeeded attempt and paid",
			pay.Status, pay.Attempts, p.invoiceStatus(c))
	}
	if n := p.count(`SELECT count(*) FROM audit_log WHERE action = 'payment.succeeded' AND target_id = $1`, c.invoice.Id.String()); n != 1 {
		t.Errorf("payment.succeeded audited %d times; want once", n)
	}
	if n := p.count(`SELECT count(*) FROM provider_events`); n != before+2 {
		t.Errorf("%d events stored after the success, its replay and the late failure; want %d (each id once)", n, before+2)
	}
}

// dunned: initech's attempts are declined until its payment fails, its
// subscription goes past_due, then suspended; it pays and is let through.
func (p *payPlane) dunned(c *payer) {
	t := p.t
	ctx := t.Context()
	var pi string
	for n := 1; n <= 3; n++ {
		pi = p.waitAttempt(c, n, "processing")
		p.mustDeliver(c.intentEvent(t, fmt.Sprintf("evt_decline%d_%s", n, testenv.Suffix()), "payment_intent.payment_failed", pi, "requires_payment_method"))
		pay := p.payment(c)
		if a := pay.Attempts[n-1]; a.Status != "failed" || a.FailureCode != "card_declined" || a.DeclineCode != "insufficient_funds" {
			t.Fatalf("attempt %d after its decline = %+v; want failed card_declined/insufficient_funds", n, a)
		}
		if n == 3 {
			if pay.Status != "failed" || pay.NextAttemptAt != nil {
				t.Fatalf("payment after the last retry = %s, next %v; want failed", pay.Status, pay.NextAttemptAt)
			}
			break
		}
		wantNext := time.Duration([]int{1, 3}[n-1]) * 24 * time.Hour
		if pay.Status != "pending" || pay.NextAttemptAt == nil || time.Until(*pay.NextAttemptAt) < wantNext-time.Minute {
			t.Fatalf("payment after attempt %d = %s, next %v; want pending, next in %s", n, pay.Status, pay.NextAttemptAt, wantNext)
		}
		// The retry's day passes: the cycle makes it within a second.
		if _, err := p.pool.Exec(ctx, `UPDATE payments SET next_attempt_at = now() WHERE invoice_id = $1`, c.invoice.Id); err != nil {
			t.Fatal(err)
		}
	}
	p.waitSubscription(c, client.SubscriptionStatusPastDue)
	number := deref(c.invoice.Number)
	testenv.Deadline(t, 10*time.Second, func() error {
		if a := p.call(c); a.status != http.StatusOK || !strings.Contains(a.warning, "invoice "+number+" is past due") {
			return fmt.Errorf("past_due call = %d, Veil-Billing-Warning %q; want 200 naming invoice %s", a.status, a.warning, number)
		}
		return nil
	})
	// The grace's day passes: dunning suspends it within a second.
	if _, err := p.pool.Exec(ctx, `UPDATE subscription_dunning SET past_due_at = least(past_due_at, now()), suspend_at = now()
		WHERE subscription_id = $1`, c.sub); err != nil {
		t.Fatal(err)
	}
	p.waitSubscription(c, client.SubscriptionStatusSuspended)
	testenv.Deadline(t, 10*time.Second, func() error {
		a := p.call(c)
		if a.status != http.StatusPaymentRequired || a.problem["invoice_id"] != c.invoice.Id.String() ||
			a.problem["invoice_number"] != number || !strings.HasSuffix(fmt.Sprint(a.problem["type"]), "/payment-required") {
			return fmt.Errorf("suspended call = %d %v; want 402 payment-required naming invoice %s", a.status, a.problem, number)
		}
		return nil
	})

	// The customer sets up another card, which makes an attempt at once;
	// pay now waits for it (409). That card is declined too; pay now makes
	// a fifth attempt, under way until Stripe reports it (the gateway
	// still refuses meanwhile).
	p.setUpCard(c, "pm_card_visa")
	pi = p.waitAttempt(c, 4, "processing")
	busy, err := p.c.RetryPaymentWithResponse(ctx, c.invoice.Id, nil, client.Bearer(c.tok))
	if err != nil || busy.StatusCode() != http.StatusConflict || !strings.Contains(string(busy.Body), "payment-in-flight") {
		t.Fatalf("pay now during the new card's attempt = %v %s; want 409 payment-in-flight", err, busy.Body)
	}
	p.mustDeliver(c.intentEvent(t, "evt_decline4_"+testenv.Suffix(), "payment_intent.payment_failed", pi, "requires_payment_method"))
	now, err := p.c.RetryPaymentWithResponse(ctx, c.invoice.Id, nil, client.Bearer(c.tok))
	expect(t, http.StatusOK, now, err)
	pi = p.waitAttempt(c, 5, "processing")
	if a := p.call(c); a.status != http.StatusPaymentRequired {
		t.Fatalf("call while the payment is under way = %d; want 402 until it succeeds", a.status)
	}
	// Stripe reports it succeeded: from the webhook's answer to the first
	// call the gateway admits.
	p.mustDeliver(c.intentEvent(t, "evt_paid_"+testenv.Suffix(), "payment_intent.succeeded", pi, "succeeded"))
	paidAt := time.Now()
	var admitted time.Duration
	testenv.Deadline(t, 10*time.Second, func() error {
		if a := p.call(c); a.status != http.StatusOK {
			return fmt.Errorf("call after paying = %d %v; want 200", a.status, a.problem)
		}
		admitted = time.Since(paidAt)
		return nil
	})
	t.Logf("payment to the first admitted call through the gateway: %s (goal < 1s)", admitted.Round(time.Millisecond))
	if admitted > time.Second {
		t.Errorf("the gateway admitted the paying subscription %s after the payment's webhook answered; want under 1s", admitted)
	}
	if a := p.call(c); a.warning != "" {
		t.Errorf("a paid subscription's call carries Veil-Billing-Warning %q", a.warning)
	}
	p.waitSubscription(c, client.SubscriptionStatusActive)
	if p.invoiceStatus(c) != client.InvoiceStatusPaid {
		t.Errorf("invoice after paying = %s; want paid", p.invoiceStatus(c))
	}
}

// lost: hooli's payment succeeds at Stripe but its webhook never comes.
// Reconciliation reads attempts unanswered for a minute: the test makes
// the attempt a minute old, and the cycle pays the invoice from what
// Stripe (the front) says of the PaymentIntent.
func (p *payPlane) lost(c *payer) {
	t := p.t
	pi := p.waitAttempt(c, 1, "processing")
	p.front.setStatus(pi, "succeeded")
	if _, err := p.pool.Exec(t.Context(), `UPDATE payment_attempts SET updated_at = now() - interval '2 minutes'
		WHERE provider_payment_id = $1`, pi); err != nil {
		t.Fatal(err)
	}
	p.waitInvoice(c, client.InvoiceStatusPaid, 30*time.Second)
	if pay := p.payment(c); pay.Status != "succeeded" || len(pay.Attempts) != 1 {
		t.Errorf("reconciled payment = %s with %d attempts; want succeeded with one", pay.Status, len(pay.Attempts))
	}
}

// TestPaymentCrashBetweenChargeAndRecord kills the control plane (SIGKILL)
// after Stripe created the PaymentIntent of an invoice and before the
// control plane read the answer: its attempt stays creating, with its
// idempotency key and no PaymentIntent. Started again, reconciliation
// (the attempt made a minute old in Postgres) repeats the call with the
// same key, which Stripe answers with the first call's PaymentIntent
// (stripe-mock keeps nothing, so the front plays Stripe's idempotency):
// one PaymentIntent, one attempt, and the invoice paid once by its
// webhook.
func TestPaymentCrashBetweenChargeAndRecord(t *testing.T) {
	p := newPayPlane(t)
	c := p.subscribe("globex")
	p.setUpCard(c, "pm_card_visa")
	p.front.holdCreates(true)
	p.endPeriods(c)
	var pi string
	select {
	case pi = <-p.front.held:
	case <-time.After(30 * time.Second):
		t.Fatal("no PaymentIntent created within 30s of the invoice")
	}
	p.c.kill()
	p.front.holdCreates(false)
	var status, key string
	var recorded *string
	if err := p.pool.QueryRow(t.Context(), `SELECT a.status, a.idempotency_key, a.provider_payment_id FROM payment_attempts a
		JOIN payments y ON y.id = a.payment_id WHERE y.invoice_id = $1`, c.invoice.Id).Scan(&status, &key, &recorded); err != nil {
		t.Fatal(err)
	}
	if status != "creating" || recorded != nil {
		t.Fatalf("after the crash the attempt is %s with PaymentIntent %v; want creating without one", status, recorded)
	}

	p.startControlPlane()
	if _, err := p.pool.Exec(t.Context(), `UPDATE payment_attempts SET updated_at = now() - interval '2 minutes'
		WHERE idempotency_key = $1`, key); err != nil {
		t.Fatal(err)
	}
	if got := p.waitAttempt(c, 1, "processing"); got != pi {
		t.Fatalf("after the restart the attempt has PaymentIntent %s; want the first call's %s", got, pi)
	}
	created, replayed := p.front.counts()
	if created != 1 || replayed < 1 {
		t.Fatalf("stripe-mock created %d PaymentIntents, %d calls answered from their key; want 1 and at least 1", created, replayed)
	}
	p.mustDeliver(c.intentEvent(t, "evt_ok_"+testenv.Suffix(), "payment_intent.succeeded", pi, "succeeded"))
	pay := p.payment(c)
	if pay.Status != "succeeded" || len(pay.Attempts) != 1 || p.invoiceStatus(c) != client.InvoiceStatusPaid {
		t.Errorf("payment %s with %d attempts, invoice %s; want one succeeded attempt and paid", pay.Status, len(pay.Attempts), p.invoiceStatus(c))
	}
}
