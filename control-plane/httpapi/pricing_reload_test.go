package httpapi_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/planfiles"
)

// writePlanFile writes a file into the env's plan directory and returns
// what removes it.
func (e *testEnv) writePlanFile(name, content string) (remove func()) {
	e.t.Helper()
	path := filepath.Join(e.PlanDir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return func() {
		if err := os.Remove(path); err != nil {
			e.t.Fatal(err)
		}
	}
}

const reloadPlan = `api: forecasts
plan: pro
name: Pro
type: hybrid
currency: EUR
base_fee: "9.50"
meters:
  - slug: calls
    aggregation: count
charges:
  - meter: calls
    model: per_unit
    unit_price: "0.000000000001"
`

func TestPricingReload(t *testing.T) {
	e := newTestEnv(t)
	admin := e.token("veil-ops", "root", identity.RoleAdmin)
	prov := e.token("acme", "alice", identity.RoleProvider)
	var me struct {
		OrganizationID string `json:"organization_id"`
	}
	e.must(http.StatusOK, "GET", "/v1/me", prov, nil, &me)
	if _, err := e.Pool.Exec(t.Context(), `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		VALUES ($1, 'Forecasts', 'forecasts', 'http://127.0.0.1:1', '1', 'active', 'alice')`, me.OrganizationID); err != nil {
		t.Fatal(err)
	}
	e.writePlanFile("pro.yaml", reloadPlan)

	var rep planfiles.Report
	e.must(http.StatusOK, "POST", "/v1/admin/pricing/reload", admin, nil, &rep)
	if len(rep.Applied) != 1 || rep.Applied[0].Version != 1 || rep.Applied[0].Plan != "pro" || len(rep.Unchanged) != 0 || rep.Errors == nil {
		t.Fatalf("reload = %+v; want pro.yaml applied as version 1, and an empty error list", rep)
	}
	// The plan is the provider's, as if made over REST; the reload is
	// audited with the admin who asked.
	var plan struct {
		Name    string
		Current struct {
			Version   int
			CreatedBy string `json:"created_by"`
		} `json:"current_version"`
	}
	e.must(http.StatusOK, "GET", "/v1/plans/"+rep.Applied[0].PlanID.String(), prov, nil, &plan)
	if plan.Name != "Pro" || plan.Current.Version != 1 || plan.Current.CreatedBy != "file:pro.yaml" {
		t.Fatalf("GET plan = %+v; want Pro version 1 created by file:pro.yaml", plan)
	}
	var audited int
	if err := e.Pool.QueryRow(t.Context(), `SELECT count(*) FROM audit_log WHERE action = 'pricing.reload' AND actor = 'root'`).Scan(&audited); err != nil || audited != 1 {
		t.Fatalf("pricing.reload audit entries = %d, %v; want 1", audited, err)
	}

	e.must(http.StatusOK, "POST", "/v1/admin/pricing/reload", admin, nil, &rep)
	if len(rep.Applied) != 0 || len(rep.Unchanged) != 1 {
		t.Fatalf("second reload = %+v; want pro.yaml unchanged", rep)
	}

	// A broken edit: 422, every error by file, line and field, nothing
	// applied.
	e.writePlanFile("pro.yaml", strings.Replace(reloadPlan, "model: per_unit", "model: per_call", 1))
	p := e.problem(http.StatusUnprocessableEntity, "invalid-plan-files", "POST", "/v1/admin/pricing/reload", admin, nil)
	_, body := e.do("POST", "/v1/admin/pricing/reload", admin, nil)
	if !strings.Contains(string(body), `"errors":[{"file":"pro.yaml","line":12,"field":"charges[0].model","message":"must be per_unit, graduated, volume or package"}]`) {
		t.Fatalf("reload of a broken file = %s (%+v); want its error by file, line and field", body, p)
	}
	e.must(http.StatusOK, "GET", "/v1/plans/"+rep.Unchanged[0].PlanID.String(), prov, nil, &plan)
	if plan.Current.Version != 1 {
		t.Fatalf("plan after a broken reload at version %d; want 1", plan.Current.Version)
	}
	e.problem(http.StatusForbidden, "forbidden", "POST", "/v1/admin/pricing/reload", prov, nil)
}

func TestPricingReloadWithoutDirectory(t *testing.T) {
	e := newTestEnvWith(t, func(c *httpapi.Config) { c.PlanFiles = nil })
	admin := e.token("veil-ops", "root", identity.RoleAdmin)
	e.problem(http.StatusConflict, "no-plan-directory", "POST", "/v1/admin/pricing/reload", admin, nil)
}
