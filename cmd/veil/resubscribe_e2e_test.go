package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestResubscribeStaysBlockedEndToEnd: a consumer whose hard quota the
// processors found used up cancels and subscribes again to the same API,
// through the wired control plane; the real gateway refuses the new
// subscription's key with 429 quota-exhausted from its first call, and
// never admits one.
func TestResubscribeStaysBlockedEndToEnd(t *testing.T) {
	const quota = 5
	ctx := t.Context()
	m := newMeteredPlane(t, 2, "/gateway/resubscribe-e2e")
	e := m.e
	_, c := e.runControlPlane(t, m.flags)
	startProcessor(t, m.processorConfig(t, "resubscribe-e2e", 1000))

	prov := token(t, "acme", "alice", identity.RoleProvider)
	admin := token(t, "platform", "operator", identity.RoleAdmin)
	consumer := token(t, "globex", "bob", identity.RoleConsumer)
	apiID, approvalID := e.register(c, prov, "capped")
	c.must(http.StatusOK, "POST", "/v1/admin/approvals/"+approvalID+"/approve", admin, nil, nil)
	waitState(t, c, prov, apiID, "active", 30*time.Second, "failed")
	var plan struct {
		ID string `json:"id"`
	}
	c.must(http.StatusCreated, "POST", "/v1/apis/"+apiID+"/plans", prov, map[string]any{
		"name": "Capped", "slug": "capped", "status": "active",
		"terms": map[string]any{"currency": "USD", "quota_requests": quota, "quota_hard": true, "trial_days": 14},
	}, &plan)

	type subView struct {
		ID          string     `json:"id"`
		Status      string     `json:"status"`
		TrialEndsAt *time.Time `json:"trial_ends_at"`
		Start       time.Time  `json:"current_period_start"`
		End         time.Time  `json:"current_period_end"`
	}
	subscribe := func() (subView, keyView) {
		t.Helper()
		var sub subView
		c.must(http.StatusCreated, "POST", "/v1/subscriptions", consumer, map[string]any{"plan_id": plan.ID}, &sub)
		var key keyView
		c.must(http.StatusCreated, "POST", "/v1/subscriptions/"+sub.ID+"/keys", consumer, map[string]any{"name": "load"}, &key)
		waitKey(t, c, consumer, key.ID, "active")
		return sub, key
	}
	call := func(key string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.gw.URL+"/capped/hello", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("call through the gateway: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var p struct{ Type string }
		_ = json.Unmarshal(body, &p)
		return resp.StatusCode, p.Type
	}

	// Use the quota up: the processors count the calls and block.
	first, key := subscribe()
	if first.Status != "trialing" {
		t.Fatalf("first subscription = %s; want trialing", first.Status)
	}
	testenv.Deadline(t, 30*time.Second, func() error {
		status, typ := call(key.Plaintext)
		if status == http.StatusTooManyRequests && strings.HasSuffix(typ, "/quota-exhausted") {
			return nil
		}
		if status != http.StatusOK {
			return fmt.Errorf("call = %d %s; want 200 until the quota is used up", status, typ)
		}
		return fmt.Errorf("still admitted")
	})

	// Cancel and subscribe again: same period, no trial, still used up.
	c.must(http.StatusOK, "POST", "/v1/subscriptions/"+first.ID+"/cancel", consumer, nil, nil)
	second, key2 := subscribe()
	if !second.Start.Equal(first.Start) || !second.End.Equal(first.End) {
		t.Errorf("resubscribed period = [%s, %s); want the canceled one's [%s, %s)", second.Start, second.End, first.Start, first.End)
	}
	if second.Status != "active" || second.TrialEndsAt != nil {
		t.Errorf("resubscribed = %s, trial until %v; want active, no second trial", second.Status, second.TrialEndsAt)
	}
	// The key may reach the gateway before the subscription's record:
	// then the gateway refuses it otherwise, never admits it.
	testenv.Deadline(t, 20*time.Second, func() error {
		status, typ := call(key2.Plaintext)
		if status == http.StatusOK {
			t.Fatalf("the new subscription's key was admitted; want it blocked by the carried quota")
		}
		if status != http.StatusTooManyRequests || !strings.HasSuffix(typ, "/quota-exhausted") {
			return fmt.Errorf("call = %d %s; want 429 quota-exhausted", status, typ)
		}
		return nil
	})
	for range 3 {
		if status, typ := call(key2.Plaintext); status != http.StatusTooManyRequests {
			t.Fatalf("call after the block = %d %s; want 429 quota-exhausted", status, typ)
		}
	}
	var q quotaView
	c.must(http.StatusOK, "GET", "/v1/subscriptions/"+second.ID+"/quota", consumer, nil, &q)
	if q.Limit == nil || *q.Limit != 0 || !q.Blocked {
		t.Errorf("quota of the new subscription = %+v; want limit 0 and blocked", q)
	}
}
