package demo

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/broker"
)

// sandboxQuota is the small hard quota the consumer moves to.
const sandboxQuota = 50

// quota moves the demo's subscription to a small hard quota, runs it into
// the quota until the gateway refuses, shows the quota as the control
// plane reports it, and lifts the block with the provider's credit.
// admittedBefore is how many calls the gateway admitted so far.
func (w *walk) quota(ctx context.Context, s *consumerSide, admittedBefore int64) error {
	// The consumer listens for its quota webhooks, while this step runs:
	// its endpoint goes with its receiver.
	if err := w.dropDeadEndpoints(ctx, s.consumer); err != nil {
		return err
	}
	hooks := &webhooks{}
	hookSrv := httptest.NewServer(hooks)
	defer hookSrv.Close()
	hook, err := w.cp.CreateWebhookEndpointWithResponse(ctx, nil, client.WebhookEndpointInput{Url: hookSrv.URL,
		EventTypes: []client.WebhookEndpointInputEventTypes{client.WebhookEndpointInputEventTypesQuotaThresholdCrossed}}, client.Bearer(s.consumer))
	if err := client.Check(hook, err); err != nil {
		return fmt.Errorf("POST /v1/webhooks: %w", err)
	}
	defer func() {
		// Not ctx: the endpoint goes even when the demo was interrupted.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = w.cp.DeleteWebhookEndpointWithResponse(ctx, hook.JSON201.Id, nil, client.Bearer(s.consumer))
	}()
	used, err := w.moveToSandbox(ctx, s, admittedBefore)
	if err != nil {
		return err
	}
	if err := w.exhaust(ctx, s, used); err != nil {
		return err
	}

	w.step("the quota as the control plane reports it: GET /v1/subscriptions/%s/quota", s.subID)
	got, err := w.cp.GetSubscriptionQuotaWithResponse(ctx, s.subID, nil, client.Bearer(s.consumer))
	if err := client.Check(got, err); err != nil {
		return fmt.Errorf("GET /v1/subscriptions/%s/quota: %w", s.subID, err)
	}
	q := got.JSON200
	until := "-"
	if q.BlockedUntil != nil {
		until = q.BlockedUntil.Format(time.RFC3339)
	}
	fmt.Fprintf(w.out, "  used %d of %d, remaining %d, thresholds crossed %v, blocked %t until %s (the period's end, when it resets)\n",
		q.Used, *q.Limit, *q.Remaining, q.ThresholdsCrossed, q.Blocked, until)

	w.step("the processor produced each crossing to %s; the control plane sent one webhook and one email per threshold", broker.TopicQuotaEvents)
	if err := w.notices(ctx, hooks, s.consumerEmail); err != nil {
		return err
	}
	return w.credit(ctx, s)
}

// moveToSandbox adds the Sandbox plan, moves the subscription to it and
// waits until the control plane reports its quota with the calls admitted
// so far counted; it returns them.
func (w *walk) moveToSandbox(ctx context.Context, s *consumerSide, admittedBefore int64) (int64, error) {
	w.step("the provider adds a Sandbox plan (%d requests a month, hard quota) and the consumer moves to it: POST /v1/subscriptions/%s/plan", sandboxQuota, s.subID)
	created, err := w.cp.CreatePlanWithResponse(ctx, s.api.id, nil, client.PlanInput{
		Name: "Sandbox", Slug: "sandbox", Status: client.Ptr(client.PlanInputStatusActive), Description: client.Ptr("50 requests a month, to try the API"),
		Terms: client.TermsInput{Currency: "USD", BaseFee: "0", QuotaRequests: client.Ptr[int64](sandboxQuota), QuotaHard: client.Ptr(true), RatePerSecond: client.Ptr(100)},
	}, client.Bearer(s.provider))
	if err := client.Check(created, err); err != nil {
		return 0, fmt.Errorf("POST /v1/apis/%s/plans: %w", s.api.id, err)
	}
	moved, err := w.cp.ChangeSubscriptionPlanWithResponse(ctx, s.subID, nil, client.ChangePlanInput{PlanId: created.JSON201.Id}, client.Bearer(s.consumer))
	if err := client.Check(moved, err); err != nil {
		return 0, fmt.Errorf("POST /v1/subscriptions/%s/plan: %w", s.subID, err)
	}
	// The processor counts the calls the gateway admitted so far within a
	// batch (refusals never count).
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := w.cp.GetSubscriptionQuotaWithResponse(ctx, s.subID, nil, client.Bearer(s.consumer))
		if err := client.Check(got, err); err != nil {
			return 0, fmt.Errorf("GET /v1/subscriptions/%s/quota: %w", s.subID, err)
		}
		q := got.JSON200
		if q.Limit != nil && *q.Limit == sandboxQuota && q.Used == admittedBefore {
			fmt.Fprintf(w.out, "  quota: used %d of %d this period (the calls the gateway admitted so far; its refusals never count)\n", q.Used, *q.Limit)
			return q.Used, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("quota after the plan change = %+v; want a limit of %d and the %d calls admitted so far counted", *q, sandboxQuota, admittedBefore)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exhaust calls every 20 ms until the gateway refuses with
// quota-exhausted; used is the quota used before.
func (w *walk) exhaust(ctx context.Context, s *consumerSide, used int64) error {
	w.step("the consumer keeps calling, one call every 20 ms, until the gateway refuses")
	var (
		admitted    int
		usedUpAt    time.Time
		refusal     string
		tick        = time.NewTicker(20 * time.Millisecond)
		giveUpAfter = time.Now().Add(time.Minute)
	)
	defer tick.Stop()
	for refusal == "" {
		<-tick.C
		if time.Now().After(giveUpAfter) {
			return fmt.Errorf("the gateway still admits calls after %d more: the quota is not enforced", admitted)
		}
		status, body, err := gatewayCall(ctx, w.http, s.url, s.key.Key)
		if err != nil {
			return err
		}
		switch status {
		case http.StatusOK:
			admitted++
			if usedUpAt.IsZero() && used+int64(admitted) >= sandboxQuota {
				usedUpAt = time.Now()
			}
		case http.StatusTooManyRequests:
			if strings.Contains(body, "quota-exhausted") {
				refusal = body
			}
		default:
			return fmt.Errorf("call through the gateway: %d %s", status, body)
		}
	}
	fmt.Fprintf(w.out, "  %d more calls admitted, then: 429 %s", admitted, refusal)
	if !usedUpAt.IsZero() {
		fmt.Fprintf(w.out, "  the block reached the gateway %s after the call that used the quota up\n", time.Since(usedUpAt).Round(time.Millisecond))
	}
	return nil
}

// credit has the provider credit 25 requests and waits until the gateway
// admits the consumer's call again.
func (w *walk) credit(ctx context.Context, s *consumerSide) error {
	w.step("the provider credits 25 requests: POST /v1/subscriptions/%s/quota/credits; the block lifts at once", s.subID)
	credited, err := w.cp.CreditQuotaWithResponse(ctx, s.subID, nil, client.QuotaCreditInput{Requests: 25, Reason: "demo goodwill"}, client.Bearer(s.provider))
	if err := client.Check(credited, err); err != nil {
		return fmt.Errorf("POST /v1/subscriptions/%s/quota/credits: %w", s.subID, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body, err := gatewayCall(ctx, w.http, s.url, s.key.Key)
		if err != nil {
			return err
		}
		if status == http.StatusOK {
			fmt.Fprintf(w.out, "  %d %s", status, body)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the gateway still refuses after the credit: %d %s", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dropDeadEndpoints deletes the consumer's webhook endpoints on loopback
// that earlier runs of the demo left (before they deleted theirs): their
// receivers are gone, and every event's deliveries to them, retried,
// would hold up the control plane's jobs.
func (w *walk) dropDeadEndpoints(ctx context.Context, consumer string) error {
	list, err := w.cp.ListWebhookEndpointsWithResponse(ctx, &client.ListWebhookEndpointsParams{Limit: client.Ptr(200)}, client.Bearer(consumer))
	if err := client.Check(list, err); err != nil {
		return fmt.Errorf("GET /v1/webhooks: %w", err)
	}
	n := 0
	for _, e := range list.JSON200.Data {
		if !strings.HasPrefix(e.Url, "http://127.0.0.1:") {
			continue
		}
		del, err := w.cp.DeleteWebhookEndpointWithResponse(ctx, e.Id, nil, client.Bearer(consumer))
		if err := client.Check(del, err); err != nil {
			return fmt.Errorf("DELETE /v1/webhooks/%s: %w", e.Id, err)
		}
		n++
	}
	if n > 0 {
		fmt.Fprintf(w.out, "  deleted %d webhook endpoint(s) of earlier runs, whose receivers are gone\n", n)
	}
	return nil
}
