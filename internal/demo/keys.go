package demo

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
)

// consumerSide is what the consumer's walk holds: the principals' tokens,
// the subscription and its key.
type consumerSide struct {
	api                demoAPI
	provider, consumer string
	consumerEmail      string
	subID              uuid.UUID
	key                client.KeyWithPlaintext
	url                string         // the API's forecast through the gateway
	invoice            client.Invoice // its period's invoice, once finalized
}

// keys walks the consumer's side of the API: the provider adds a plan, a
// consumer organization subscribes and issues an API key, the sync job
// writes the key's record to Redis, which makes it active, and the records
// are read back the way the gateway will read them; then calls with the
// key meet the rate limit and the quota.
func (w *walk) keys(ctx context.Context, api demoAPI) error {
	now := time.Now()
	s := &consumerSide{api: api, url: w.cfg.GatewayURL + "/" + api.slug + "/forecast?city=Lisbon"}
	var err error
	if s.provider, err = w.mint(identity.Principal{Subject: "dana", Org: "demo-weather", Role: identity.RoleProvider, Name: "Dana (provider)"}, now); err != nil {
		return err
	}
	// A user of its own each run: the address of a user is the one it was
	// first seen with.
	sam := fmt.Sprintf("sam-%d", now.UnixNano())
	s.consumerEmail = sam + "@demo-travel.example"
	if s.consumer, err = w.mint(identity.Principal{Subject: sam, Org: "demo-travel", Role: identity.RoleConsumer, Name: "Sam (consumer)", Email: s.consumerEmail, EmailVerified: true}, now); err != nil {
		return err
	}
	if err := w.subscribe(ctx, s); err != nil {
		return err
	}
	if err := w.issueKey(ctx, s); err != nil {
		return err
	}
	if err := w.showRecords(ctx, s); err != nil {
		return err
	}
	admitted, err := w.burst(ctx, s)
	if err != nil {
		return err
	}
	return w.quota(ctx, s, admitted)
}

// subscribe has the provider offer a plan and the consumer subscribe to it.
func (w *walk) subscribe(ctx context.Context, s *consumerSide) error {
	w.step("the provider offers a plan: POST /v1/apis/%s/plans", s.api.id)
	created, err := w.cp.CreatePlanWithResponse(ctx, s.api.id, nil, client.PlanInput{
		Name: "Starter", Slug: "starter", Description: client.Ptr("10,000 requests a month, 10 a second"),
		Terms: client.TermsInput{Type: client.Ptr(client.PlanTypeSubscription), Currency: "USD", Interval: client.Ptr(client.Month), BaseFee: "0",
			QuotaRequests: client.Ptr[int64](10000), QuotaHard: client.Ptr(true), RatePerSecond: client.Ptr(10)},
	}, client.Bearer(s.provider))
	if err := client.Check(created, err); err != nil {
		return fmt.Errorf("POST /v1/apis/%s/plans: %w", s.api.id, err)
	}
	plan := created.JSON201
	terms := plan.CurrentVersion.Terms
	quota := "soft"
	if terms.QuotaHard {
		quota = "hard"
	}
	fmt.Fprintf(w.out, "  plan %s %q (%s), version %d: %s %s a %s, %s requests a %s (%s quota), %s requests/s\n",
		plan.Id, plan.Name, plan.Status, plan.CurrentVersion.Version, terms.BaseFee, terms.Currency, terms.Interval,
		orUnlimited(terms.QuotaRequests), terms.Interval, quota, orUnlimited(terms.RatePerSecond))

	w.step("another organization (demo-travel, role consumer) subscribes: POST /v1/subscriptions")
	subscribed, err := w.cp.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: plan.Id}, client.Bearer(s.consumer))
	if err := client.Check(subscribed, err); err != nil {
		return fmt.Errorf("POST /v1/subscriptions: %w", err)
	}
	sub := subscribed.JSON201
	s.subID = sub.Id
	fmt.Fprintf(w.out, "  subscription %s is %s on plan version %d, period %s → %s, up to %d live keys\n",
		sub.Id, sub.Status, sub.PlanVersion, sub.CurrentPeriodStart.Format(time.RFC3339), sub.CurrentPeriodEnd.Format(time.RFC3339), sub.MaxActiveKeys)
	return nil
}

// issueKey issues the consumer's key and waits until the sync job has
// made it active.
func (w *walk) issueKey(ctx context.Context, s *consumerSide) error {
	w.step("the consumer issues an API key: POST /v1/subscriptions/%s/keys", s.subID)
	issued := time.Now()
	created, err := w.cp.CreateKeyWithResponse(ctx, s.subID, nil, client.KeySettings{Name: client.Ptr("travel-app production")}, client.Bearer(s.consumer))
	if err := client.Check(created, err); err != nil {
		return fmt.Errorf("POST /v1/subscriptions/%s/keys: %w", s.subID, err)
	}
	s.key = *created.JSON201
	if s.key.Key == "" {
		return fmt.Errorf("POST /v1/subscriptions/%s/keys answered no key", s.subID)
	}
	fmt.Fprintf(w.out, "  key %s  %s  %s (the gateway does not hold it yet)\n", s.key.Id, s.key.Masked, s.key.State)
	fmt.Fprintf(w.out, "  the key itself, SHOWN ONCE: Postgres and Redis keep only its SHA-256, no later answer carries it\n    %s\n", s.key.Key)

	w.step("the sync job writes the key's record to Redis; only then is the key active: GET /v1/keys/%s", s.key.Id)
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := w.cp.GetKeyWithResponse(ctx, s.key.Id, nil, client.Bearer(s.consumer))
		if err := client.Check(got, err); err != nil {
			return fmt.Errorf("GET /v1/keys/%s: %w", s.key.Id, err)
		}
		if containsPlaintext(got.Body) {
			return fmt.Errorf("GET /v1/keys/%s answered the plaintext key", s.key.Id)
		}
		if cur := got.JSON200; cur.State == "active" {
			fmt.Fprintf(w.out, "  key %s is active, %s after it was issued\n", cur.Id, time.Since(issued).Round(time.Millisecond))
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("key %s is %s after %s; want active", s.key.Id, cur.State, time.Since(issued).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// showRecords reads the key's and the subscription's records from Redis
// the way the gateway reads them, and shows them.
func (w *walk) showRecords(ctx context.Context, s *consumerSide) error {
	records := enforcement.New(w.cfg.Redis)
	hash := apikey.Hash(s.key.Key)
	w.step("the records as the gateway reads them from Redis (database %d)", w.cfg.RedisDB)
	kr, err := records.GetKey(ctx, hash)
	if err != nil {
		return fmt.Errorf("read the key record: %w", err)
	}
	// The subscription's record has its own sync job: wait for it too.
	var sr enforcement.SubscriptionRecord
	for deadline := time.Now().Add(30 * time.Second); ; {
		if sr, err = records.GetSubscription(ctx, s.subID.String()); err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("read the subscription record: %w", err)
	}
	if kr.Status != enforcement.KeyActive || kr.KeyID != s.key.Id.String() || kr.SubscriptionID != s.subID.String() || kr.APIID != s.api.id.String() {
		return fmt.Errorf("key record = %+v; want key %s of subscription %s, api %s, active", kr, s.key.Id, s.subID, s.api.id)
	}
	printKeyRecord(w.out, enforcement.KeyName(hash), kr)
	printSubscriptionRecord(w.out, sr)
	return nil
}

// burst calls with the key once, then 30 times at once, which the plan's
// 10 a second limits; it returns how many calls the gateway admitted.
func (w *walk) burst(ctx context.Context, s *consumerSide) (int64, error) {
	w.step("the same call with the key: GET %s (Authorization: Bearer %s)", s.url, s.key.Masked)
	status, body, err := gatewayCall(ctx, w.http, s.url, s.key.Key)
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("call with the key through the gateway: %d %s; want 200", status, body)
	}
	fmt.Fprintf(w.out, "  %d %s", status, body)

	w.step("a burst of 30 calls with the key: the plan allows 10 per second")
	counts := map[int]int{}
	for range 30 {
		status, _, err := gatewayCall(ctx, w.http, s.url, s.key.Key)
		if err != nil {
			return 0, err
		}
		counts[status]++
	}
	fmt.Fprintf(w.out, "  200: %d, 429 rate-limited: %d\n", counts[http.StatusOK], counts[http.StatusTooManyRequests])
	if counts[http.StatusTooManyRequests] == 0 {
		return 0, fmt.Errorf("a burst of 30 calls at 10 per second was never limited: %v", counts)
	}
	return int64(1 + counts[http.StatusOK]), nil
}
