package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestResubscribeStaysBlockedEndToEnd: a consumer whose hard quota the
// processors found used up cancels and subscribes again to the same API,
// through the control plane; the real gateway refuses the new
// subscription's key with 429 quota-exhausted from its first call, and
// never admits one.
func TestResubscribeStaysBlockedEndToEnd(t *testing.T) {
	const quota = 5
	ctx := t.Context()
	m := newMeteredPlane(t, 2, "/gateway/resubscribe-e2e")
	e := m.e
	c := e.startControlPlane(t, m.opts)
	pipelinetest.StartProcessor(t, m.processorConfig(t, "resubscribe-e2e", 1000))

	prov := providerToken(t)
	admin := adminToken(t)
	consumer := consumerToken(t)
	apiID := e.activeAPI(t, c, prov, admin, "capped")
	planResp, err := c.CreatePlanWithResponse(ctx, apiID, nil, client.PlanInput{
		Name: "Capped", Slug: "capped", Status: client.Ptr(client.PlanInputStatusActive),
		Terms: client.TermsInput{Currency: "USD", QuotaRequests: client.Ptr[int64](quota), QuotaHard: client.Ptr(true), TrialDays: client.Ptr(14)},
	}, client.Bearer(prov))
	expect(t, http.StatusCreated, planResp, err)
	plan := planResp.JSON201

	subscribe := func() (client.Subscription, client.KeyWithPlaintext) {
		t.Helper()
		subResp, err := c.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: plan.Id}, client.Bearer(consumer))
		expect(t, http.StatusCreated, subResp, err)
		keyResp, err := c.CreateKeyWithResponse(ctx, subResp.JSON201.Id, nil, client.KeySettings{Name: client.Ptr("load")}, client.Bearer(consumer))
		expect(t, http.StatusCreated, keyResp, err)
		waitKey(t, c, consumer, keyResp.JSON201.Id, "active")
		return *subResp.JSON201, *keyResp.JSON201
	}
	call := func(key string) (int, string) { return callGateway(t, e.gw.URL+"/capped/hello", key) }

	// Use the quota up: the processors count the calls and block.
	first, key := subscribe()
	if first.Status != "trialing" {
		t.Fatalf("first subscription = %s; want trialing", first.Status)
	}
	testenv.Deadline(t, 30*time.Second, func() error {
		status, typ := call(key.Key)
		if status == http.StatusTooManyRequests && strings.HasSuffix(typ, "/quota-exhausted") {
			return nil
		}
		if status != http.StatusOK {
			return fmt.Errorf("call = %d %s; want 200 until the quota is used up", status, typ)
		}
		return fmt.Errorf("still admitted")
	})

	// Cancel and subscribe again: same period, no trial, still used up.
	canceled, err := c.CancelSubscriptionWithResponse(ctx, first.Id, nil, client.CancelInput{}, client.Bearer(consumer))
	expect(t, http.StatusOK, canceled, err)
	second, key2 := subscribe()
	if !second.CurrentPeriodStart.Equal(first.CurrentPeriodStart) || !second.CurrentPeriodEnd.Equal(first.CurrentPeriodEnd) {
		t.Errorf("resubscribed period = [%s, %s); want the canceled one's [%s, %s)", second.CurrentPeriodStart, second.CurrentPeriodEnd, first.CurrentPeriodStart, first.CurrentPeriodEnd)
	}
	if second.Status != "active" || second.TrialEndsAt != nil {
		t.Errorf("resubscribed = %s, trial until %v; want active, no second trial", second.Status, second.TrialEndsAt)
	}
	// The key may reach the gateway before the subscription's record:
	// then the gateway refuses it otherwise, never admits it.
	testenv.Deadline(t, 20*time.Second, func() error {
		status, typ := call(key2.Key)
		if status == http.StatusOK {
			t.Fatalf("the new subscription's key was admitted; want it blocked by the carried quota")
		}
		if status != http.StatusTooManyRequests || !strings.HasSuffix(typ, "/quota-exhausted") {
			return fmt.Errorf("call = %d %s; want 429 quota-exhausted", status, typ)
		}
		return nil
	})
	for range 3 {
		if status, typ := call(key2.Key); status != http.StatusTooManyRequests {
			t.Fatalf("call after the block = %d %s; want 429 quota-exhausted", status, typ)
		}
	}
	q := getQuota(t, c, consumer, second.Id)
	if q.Limit == nil || *q.Limit != 0 || !q.Blocked {
		t.Errorf("quota of the new subscription = %+v; want limit 0 and blocked", q)
	}
}
