package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
)

// cappedPlan costs 1.00 a month and 0.01 a call: a hard budget of 1.50 is
// used up by the 50th call.
const cappedPlan = `api: capped
plan: capped
name: Capped
status: active
type: hybrid
currency: USD
interval: month
base_fee: "1.00"
meters:
  - slug: calls
    name: Calls
    aggregation: count
charges:
  - meter: calls
    model: per_unit
    unit_price: "0.01"
`

// TestHardBudgetEndToEnd: a consumer's hard budget blocks its subscription
// at the real Caddy gateway like a hard quota. Calls go through the
// gateway to Kafka, a processor counts them exactly once and rates the
// period (base fee and usage) after each batch; the call that brings the
// cost to the budget's amount is followed, within the time the test
// measures and logs, by 429 budget-exceeded on every call. Raising the
// budget through the API rewrites the record, which lifts the block.
func TestHardBudgetEndToEnd(t *testing.T) {
	const crossing = 50 // 1.00 + 50 × 0.01 = 1.50
	ctx := t.Context()
	m := newMeteredPlane(t, 2, "/gateway/budget-e2e")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "capped.yaml"), cappedPlan)
	addr := testenv.FreeLoopbackAddr(t)
	p := startVeil(t, []string{"VEIL_PRICING_DIR=" + dir}, m.e.args(addr, m.opts)...)
	c := &controlPlane{proc: p, ClientWithResponses: newClient(t, "http://"+addr), URL: "http://" + addr}
	t.Cleanup(func() {
		if err := p.stop(); err != nil && !errors.Is(err, errStopped) {
			t.Errorf("control plane: %v", err)
		}
	})
	p.waitReady(t, c.URL+"/readyz", 60*time.Second)
	pipelinetest.StartProcessor(t, m.processorConfig(t, "budget-e2e", 1000))

	prov, admin, consumer := providerToken(t), adminToken(t), consumerToken(t)
	m.e.activeAPI(t, c, prov, admin, "capped")
	reload, err := c.ReloadPlanFilesWithResponse(ctx, nil, client.Bearer(admin))
	expect(t, http.StatusOK, reload, err)
	plans := append(reload.JSON200.Applied, reload.JSON200.Unchanged...)
	if len(plans) != 1 {
		t.Fatalf("reload = %s; want the capped plan", reload.Body)
	}
	sub, err := c.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: plans[0].PlanId}, client.Bearer(consumer))
	expect(t, http.StatusCreated, sub, err)
	subID := sub.JSON201.Id
	key, err := c.CreateKeyWithResponse(ctx, subID, nil, client.KeySettings{Name: client.Ptr("budget")}, client.Bearer(consumer))
	expect(t, http.StatusCreated, key, err)
	waitKey(t, c, consumer, key.JSON201.Id, "active")

	budget, err := c.CreateBudgetWithResponse(ctx, nil, client.BudgetInput{
		SubscriptionId: &subID, Amount: "1.50", Hard: client.Ptr(true),
	}, client.Bearer(consumer))
	expect(t, http.StatusCreated, budget, err)
	rc := m.rc
	recordBudget := func() string {
		v, _ := rc.Do(ctx, rc.B().Hget().Key(enforcement.SubscriptionName(subID.String())).Field("budget").Build()).ToString()
		return v
	}
	testenv.Deadline(t, 30*time.Second, func() error {
		if !strings.Contains(recordBudget(), `"amount":"1.5"`) {
			return fmt.Errorf("record budget = %q; want the hard budget of 1.5", recordBudget())
		}
		return nil
	})

	call := func() (int, string) { return callGateway(t, m.e.gw.URL+"/capped/hello", key.JSON201.Key) }
	var (
		admitted     int
		crossedAt    time.Time // when the call that reached 1.50 was answered
		firstRefusal time.Time
	)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(60 * time.Second); firstRefusal.IsZero(); {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls admitted in a minute; want 429 budget-exceeded after the %dth (record budget %q)", admitted, crossing, recordBudget())
		}
		<-tick.C
		switch status, typ := call(); {
		case status == http.StatusOK:
			if admitted++; admitted == crossing {
				crossedAt = time.Now()
			}
		case status == http.StatusTooManyRequests && strings.HasSuffix(typ, "/budget-exceeded"):
			if admitted < crossing {
				t.Fatalf("budget-exceeded after %d calls (cost %d cents); want none before %d", admitted, 100+admitted, crossing)
			}
			firstRefusal = time.Now()
		default:
			t.Fatalf("call %d = %d %s; want 200 or 429 budget-exceeded", admitted+1, status, typ)
		}
	}
	delay := firstRefusal.Sub(crossedAt)
	t.Logf("hard budget 1.50: the %dth call reached it; the gateway refused from %s later, after %d calls admitted (overshoot %d, at one call every 10ms)",
		crossing, delay.Round(time.Millisecond), admitted, admitted-crossing)
	if delay > 10*time.Second {
		t.Errorf("the block reached the gateway %s after the crossing call; want well within 10s", delay)
	}
	// Blocked like a hard quota: until the period's end, every call.
	for range 5 {
		if status, typ := call(); status != http.StatusTooManyRequests || !strings.HasSuffix(typ, "/budget-exceeded") {
			t.Fatalf("call while blocked = %d %s; want 429 budget-exceeded", status, typ)
		}
	}
	end := getSubscription(t, c, consumer, subID).CurrentPeriodEnd
	if v, err := rc.Do(ctx, rc.B().Get().Key(enforcement.BlockName(subID.String())).Build()).ToString(); err != nil || v != fmt.Sprint(end.Unix()) {
		t.Errorf("block = %q, %v; want until the period's end %d", v, err, end.Unix())
	}
	// Counted once each: the counter the cost was rated from holds the
	// admitted calls.
	counter := enforcement.PeriodCounterName(subID.String(), getSubscription(t, c, consumer, subID).CurrentPeriodStart)
	testenv.Deadline(t, 30*time.Second, func() error {
		n, err := rc.Do(ctx, rc.B().Hget().Key(counter).Field("m:calls").Build()).AsInt64()
		if err != nil || n != int64(admitted) {
			return fmt.Errorf("counter m:calls = %d, %v; want %d", n, err, admitted)
		}
		return nil
	})

	// Raised: the rewritten record lifts the block.
	raisedAt := time.Now()
	raised, err := c.UpdateBudgetWithResponse(ctx, budget.JSON201.Id, nil, client.BudgetUpdate{Amount: "100", Hard: client.Ptr(true)}, client.Bearer(consumer))
	expect(t, http.StatusOK, raised, err)
	testenv.Deadline(t, 30*time.Second, func() error {
		if status, typ := call(); status != http.StatusOK {
			return fmt.Errorf("call after the raise = %d %s; want 200", status, typ)
		}
		return nil
	})
	t.Logf("budget raised to 100: calls admitted again %s after the update", time.Since(raisedAt).Round(time.Millisecond))
}
