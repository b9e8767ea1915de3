package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// meteredPlanFile is a hybrid plan of the API forecast: 10.00 a month and
// calls on graduated tiers, the first 100 at 0.10.
const meteredPlanFile = `api: forecast
plan: metered
name: Metered
type: hybrid
currency: USD
base_fee: "10.00"
meters:
  - slug: calls
    name: Calls
    aggregation: count
charges:
  - meter: calls
    model: graduated
    tiers:
      - up_to: 100
        unit_price: "0.10"
      - up_to: unlimited
        unit_price: "0.05"
`

// TestPlanFilesHotReloadEndToEnd runs a control plane with a plan
// directory: the file of an API that does not exist yet is reported at
// start; once it does, the admin's reload creates the plan; an edit made
// while a subscription exists becomes version 2 without changing what the
// subscription pinned or its prices, and new subscriptions get version 2;
// a broken edit changes nothing and is reported by file, line and field in
// the metrics and the reload's answer.
func TestPlanFilesHotReloadEndToEnd(t *testing.T) {
	ctx := t.Context()
	e := newCPEnv(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "metered.yaml")
	writeFile(t, file, meteredPlanFile)
	c, metricsURL := startPricingControlPlane(t, e, dir)
	waitMetric(t, metricsURL, "veil_controlplane_pricing_reload_errors 1")

	prov, admin, consumer := providerToken(t), adminToken(t), consumerToken(t)
	e.activeAPI(t, c, prov, admin, "forecast")
	reload, err := c.ReloadPlanFilesWithResponse(ctx, nil, client.Bearer(admin))
	expect(t, http.StatusOK, reload, err)
	if r := reload.JSON200; len(r.Applied) != 1 || r.Applied[0].File != "metered.yaml" || r.Applied[0].Version != 1 {
		t.Fatalf("reload = %+v; want metered.yaml applied as version 1", r)
	}
	planID := reload.JSON200.Applied[0].PlanId
	waitMetric(t, metricsURL, "veil_controlplane_pricing_reload_errors 0")

	sub, err := c.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: planID}, client.Bearer(consumer))
	expect(t, http.StatusCreated, sub, err)
	v1 := sub.JSON201.PlanVersionId
	if got := quoteTotal(t, c, consumer, planID, 1); got != "22.50" {
		t.Fatalf("quote of 150 calls on version 1 = %s; want 22.50 (10 + 100 × 0.10 + 50 × 0.05)", got)
	}

	// An editor's save: a new file renamed over the old one.
	writeFileRenamed(t, file, strings.Replace(meteredPlanFile, `unit_price: "0.10"`, `unit_price: "0.20"`, 1))
	testenv.Deadline(t, 20*time.Second, func() error {
		if v := currentVersion(t, c, prov, planID); v != 2 {
			return fmt.Errorf("current version %d; want 2", v)
		}
		return nil
	})
	got, err := c.GetSubscriptionWithResponse(ctx, sub.JSON201.Id, nil, client.Bearer(consumer))
	expect(t, http.StatusOK, got, err)
	if got.JSON200.PlanVersionId != v1 || got.JSON200.PlanVersion != 1 {
		t.Fatalf("subscription pins version %d (%s) after the edit; want 1 (%s)", got.JSON200.PlanVersion, got.JSON200.PlanVersionId, v1)
	}
	if price := firstTierPrice(t, c, consumer, v1); price != "0.10" && price != "0.1" {
		t.Fatalf("version 1's first tier after the edit = %s; want 0.10", price)
	}
	if got := quoteTotal(t, c, consumer, planID, 1); got != "22.50" {
		t.Fatalf("quote of version 1 after the edit = %s; want 22.50 still", got)
	}
	if got := quoteTotal(t, c, consumer, planID, 0); got != "32.50" {
		t.Fatalf("quote of the current version = %s; want 32.50 (10 + 100 × 0.20 + 50 × 0.05)", got)
	}
	newcomer := token(t, "initech", "eve", identity.RoleConsumer)
	sub2, err := c.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: planID}, client.Bearer(newcomer))
	expect(t, http.StatusCreated, sub2, err)
	if sub2.JSON201.PlanVersion != 2 {
		t.Fatalf("a new subscription pins version %d; want 2", sub2.JSON201.PlanVersion)
	}

	// A broken edit, written in place: reported, nothing changes.
	writeFile(t, file, strings.Replace(meteredPlanFile, "up_to: 100\n", "up_to: -100\n", 1))
	waitMetric(t, metricsURL, "veil_controlplane_pricing_reload_errors 1")
	reload, err = c.ReloadPlanFilesWithResponse(ctx, nil, client.Bearer(admin))
	if err != nil || reload.StatusCode() != http.StatusUnprocessableEntity {
		t.Fatalf("reload of a broken file = %v, %d %s; want 422", err, reload.StatusCode(), reload.Body)
	}
	var problem struct {
		Type   string
		Errors []struct {
			File, Field, Message string
			Line                 int
		}
	}
	if err := json.Unmarshal(reload.Body, &problem); err != nil {
		t.Fatal(err)
	}
	if len(problem.Errors) != 1 || problem.Errors[0].File != "metered.yaml" || problem.Errors[0].Line != 15 ||
		problem.Errors[0].Field != "charges[0].tiers[0].up_to" || !strings.HasSuffix(problem.Type, "/invalid-plan-files") {
		t.Fatalf("reload of a broken file = %s; want metered.yaml:15 charges[0].tiers[0].up_to", reload.Body)
	}
	if v := currentVersion(t, c, prov, planID); v != 2 {
		t.Fatalf("current version after a broken edit = %d; want 2", v)
	}
}

// startPricingControlPlane runs `veil control-plane` with VEIL_PRICING_DIR
// set to dir and its metrics served; it returns the control plane and the
// URL of its metrics.
func startPricingControlPlane(t *testing.T, e *cpEnv, dir string) (*controlPlane, string) {
	t.Helper()
	addr, metricsAddr := testenv.FreeLoopbackAddr(t), testenv.FreeLoopbackAddr(t)
	args := append(e.args(addr, e.options(3)), "--metrics-addr", metricsAddr)
	p := startVeil(t, []string{"VEIL_PRICING_DIR=" + dir}, args...)
	cp := &controlPlane{proc: p, ClientWithResponses: newClient(t, "http://"+addr), URL: "http://" + addr}
	t.Cleanup(func() {
		if err := p.stop(); err != nil && !errors.Is(err, errStopped) {
			t.Errorf("control plane: %v", err)
		}
	})
	p.waitReady(t, cp.URL+"/readyz", 60*time.Second)
	return cp, "http://" + metricsAddr + "/metrics"
}

// waitMetric polls the metrics until a line reads want.
func waitMetric(t *testing.T, url, want string) {
	t.Helper()
	testenv.Deadline(t, 20*time.Second, func() error {
		_, body, err := get(url)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(body, "\n") {
			if line == want {
				return nil
			}
		}
		return fmt.Errorf("no line %q in the metrics", want)
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeFileRenamed writes content next to path and renames it over path,
// as editors save.
func writeFileRenamed(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp~"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func currentVersion(t *testing.T, c *controlPlane, tok string, planID uuid.UUID) int {
	t.Helper()
	resp, err := c.GetPlanWithResponse(t.Context(), planID, nil, client.Bearer(tok))
	expect(t, http.StatusOK, resp, err)
	return resp.JSON200.CurrentVersion.Version
}

// quoteTotal quotes 150 calls on version (0: the current one).
func quoteTotal(t *testing.T, c *controlPlane, tok string, planID uuid.UUID, version int) string {
	t.Helper()
	in := client.QuoteInput{Usage: &map[string]string{"calls": "150"}}
	if version > 0 {
		in.Version = &version
	}
	resp, err := c.QuotePlanWithResponse(t.Context(), planID, nil, in, client.Bearer(tok))
	expect(t, http.StatusOK, resp, err)
	return resp.JSON200.Total
}

func firstTierPrice(t *testing.T, c *controlPlane, tok string, versionID uuid.UUID) string {
	t.Helper()
	resp, err := c.GetPlanVersionWithResponse(t.Context(), versionID, nil, client.Bearer(tok))
	expect(t, http.StatusOK, resp, err)
	charges := resp.JSON200.Terms.Charges
	if len(charges) != 1 || len(charges[0].Tiers) == 0 {
		t.Fatalf("version %s charges %+v; want one tiered charge", versionID, charges)
	}
	return charges[0].Tiers[0].UnitPrice
}
