package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/enforcement"
)

// pricingFixture is an active public API of acme with four meters, and the
// tokens of its provider, of a consumer of initech and of globex's
// provider, a stranger.
type pricingFixture struct {
	e                     *testEnv
	prov, buyer, stranger string
	apiID                 string
	meters                map[string]string // slug → id
}

func newPricingFixture(t *testing.T) *pricingFixture {
	t.Helper()
	e := newTestEnv(t)
	f := &pricingFixture{
		e: e, prov: e.token("acme", "alice", identity.RoleProvider), buyer: e.token("initech", "bob", identity.RoleConsumer),
		stranger: e.token("globex", "carol", identity.RoleProvider), meters: map[string]string{},
	}
	var api struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis", f.prov, weather("forecasts"), &api)
	forceState(t, e, api.ID, "active")
	f.apiID = api.ID
	for _, m := range []map[string]any{
		{"slug": "calls", "name": "Calls", "aggregation": "count", "filter": map[string]any{"methods": []string{"GET"}, "status_classes": []string{"2xx"}}},
		{"slug": "units", "aggregation": "sum", "field": "units"},
		{"slug": "bytes", "aggregation": "sum", "field": "response_bytes", "filter": map[string]any{"routes": []string{"/forecast/{city}"}}},
		{"slug": "keys", "aggregation": "unique_count", "field": "key_id"},
	} {
		var out struct{ ID, Slug, Name string }
		e.must(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/meters", f.prov, m, &out)
		f.meters[out.Slug] = out.ID
	}
	return f
}

// hybridTerms is a hybrid plan in USD with every charge model.
func hybridTerms() map[string]any {
	return map[string]any{"type": "hybrid", "currency": "USD", "base_fee": "49.99", "charges": []any{
		map[string]any{"meter": "calls", "model": "graduated", "tiers": []any{
			map[string]any{"up_to": "1000", "unit_price": "0"},
			map[string]any{"up_to": "10000", "unit_price": "0.002", "flat_amount": "5"},
			map[string]any{"up_to": nil, "unit_price": "0.001"},
		}},
		map[string]any{"meter": "units", "model": "volume", "tiers": []any{
			map[string]any{"up_to": "100", "unit_price": "0.5"},
			map[string]any{"unit_price": "0.25", "flat_amount": "10"},
		}, "quota": "5000", "quota_hard": true},
		map[string]any{"meter": "bytes", "model": "package", "package_size": "1000000", "unit_price": "0.10"},
		map[string]any{"meter": "keys", "model": "per_unit", "included_units": "2", "unit_price": "1.255"},
	}}
}

type quoteBody struct {
	Currency string
	Version  int
	Lines    []struct {
		Kind      string
		Meter     *string
		Tier      *int
		Quantity  string
		UnitPrice string `json:"unit_price"`
		Amount    string
	}
	Subtotal, Discount, Total string
}

// fields lists the fields a validation problem names.
func fields(t *testing.T, b []byte) string {
	t.Helper()
	p := problemOf(t, b)
	errs, _ := p["errors"].([]any)
	var out []string
	for _, f := range errs {
		out = append(out, f.(map[string]any)["field"].(string))
	}
	return strings.Join(out, ",")
}

// TestPricingHybridQuote prices a hand-computed period of a hybrid plan
// with each charge model and checks every line to the cent.
func TestPricingHybridQuote(t *testing.T) {
	f := newPricingFixture(t)
	e := f.e
	var plan struct {
		ID      string
		Current struct {
			ID      string
			Version int
			Terms   struct {
				Charges []struct {
					Meter, Model string
					Tiers        []struct {
						UpTo *string `json:"up_to"`
					}
				}
			}
		} `json:"current_version"`
	}
	e.must(http.StatusCreated, "POST", "/v1/apis/"+f.apiID+"/plans", f.prov,
		map[string]any{"name": "Pro", "slug": "pro", "terms": hybridTerms()}, &plan)
	var got []string
	for _, c := range plan.Current.Terms.Charges {
		got = append(got, c.Meter+":"+c.Model)
	}
	if strings.Join(got, " ") != "bytes:package calls:graduated keys:per_unit units:volume" {
		t.Errorf("createPlan charges = %v; want them by meter slug", got)
	}
	if c := plan.Current.Terms.Charges[1]; len(c.Tiers) != 3 || c.Tiers[2].UpTo != nil || *c.Tiers[0].UpTo != "1000" {
		t.Errorf("calls tiers = %+v; want 1000, 10000, unbounded", c.Tiers)
	}
	// Every member reads back as written, decimals without trailing zeros.
	var stored struct {
		Current struct {
			Terms struct{ Charges []map[string]any }
		} `json:"current_version"`
	}
	e.must(http.StatusOK, "GET", "/v1/plans/"+plan.ID, f.buyer, nil, &stored)
	b, _ := json.Marshal(stored.Current.Terms.Charges)
	wantCharges := `[{"included_units":"0","meter":"bytes","model":"package","package_size":"1000000","quota":null,"quota_hard":false,"tiers":[],"unit_price":"0.1"},` +
		`{"included_units":"0","meter":"calls","model":"graduated","package_size":null,"quota":null,"quota_hard":false,"tiers":[` +
		`{"flat_amount":"0","unit_price":"0","up_to":"1000"},{"flat_amount":"5","unit_price":"0.002","up_to":"10000"},{"flat_amount":"0","unit_price":"0.001","up_to":null}],"unit_price":null},` +
		`{"included_units":"2","meter":"keys","model":"per_unit","package_size":null,"quota":null,"quota_hard":false,"tiers":[],"unit_price":"1.255"},` +
		`{"included_units":"0","meter":"units","model":"volume","package_size":null,"quota":"5000","quota_hard":true,"tiers":[` +
		`{"flat_amount":"0","unit_price":"0.5","up_to":"100"},{"flat_amount":"10","unit_price":"0.25","up_to":null}],"unit_price":null}]`
	if string(b) != wantCharges {
		t.Errorf("getPlan charges =\n%s\nwant\n%s", b, wantCharges)
	}

	// calls 25000: 1000 × 0 = 0.00; 9000 × 0.002 + 5 = 23.00; 15000 × 0.001 = 15.00.
	// units 150.5, volume: 150.5 × 0.25 + 10 = 47.625 → 47.63 (half away from zero).
	// bytes 2500001: ceil(2.500001) = 3 packages × 0.10 = 0.30.
	// keys 7: (7 − 2) × 1.255 = 6.275 → 6.28.
	// 49.99 + 0.00 + 23.00 + 15.00 + 47.63 + 0.30 + 6.28 = 142.20.
	var q quoteBody
	e.must(http.StatusOK, "POST", "/v1/plans/"+plan.ID+"/quote", f.buyer, map[string]any{
		"usage": map[string]string{"calls": "25000", "units": "150.5", "bytes": "2500001", "keys": "7"},
	}, &q)
	var lines []string
	for _, l := range q.Lines {
		meter, tier := "-", 0
		if l.Meter != nil {
			meter = *l.Meter
		}
		if l.Tier != nil {
			tier = *l.Tier
		}
		lines = append(lines, strings.Join([]string{l.Kind, meter, string(rune('0' + tier)), l.Quantity, l.UnitPrice, l.Amount}, " "))
	}
	want := []string{
		"base_fee - 0 1 49.99 49.99",
		"usage bytes 0 3 0.1 0.30",
		"usage calls 1 1000 0 0.00",
		"usage calls 2 9000 0.002 23.00",
		"usage calls 3 15000 0.001 15.00",
		"usage keys 0 5 1.255 6.28",
		"usage units 2 150.5 0.25 47.63",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("quote lines =\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if q.Currency != "USD" || q.Version != 1 || q.Subtotal != "142.20" || q.Discount != "0.00" || q.Total != "142.20" {
		t.Errorf("quote = %s %d subtotal %s discount %s total %s; want USD 1, 142.20, 0.00, 142.20", q.Currency, q.Version, q.Subtotal, q.Discount, q.Total)
	}

	// A meter left out counts zero; the base fee stays.
	e.must(http.StatusOK, "POST", "/v1/plans/"+plan.ID+"/quote", f.buyer, map[string]any{}, &q)
	if q.Total != "49.99" || len(q.Lines) != 1 {
		t.Errorf("quote without usage = %+v; want the base fee alone", q)
	}

	// A second version; the first stays quotable by number.
	e.must(http.StatusCreated, "POST", "/v1/plans/"+plan.ID+"/versions", f.prov, map[string]any{"terms": map[string]any{
		"type": "hybrid", "currency": "USD", "base_fee": "10", "charges": []any{map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "0.01"}},
	}}, nil)
	e.must(http.StatusOK, "POST", "/v1/plans/"+plan.ID+"/quote", f.buyer, map[string]any{"usage": map[string]string{"calls": "100"}}, &q)
	if q.Version != 2 || q.Total != "11.00" {
		t.Errorf("quote of the current version = %d %s; want version 2, 11.00", q.Version, q.Total)
	}
	e.must(http.StatusOK, "POST", "/v1/plans/"+plan.ID+"/quote", f.buyer, map[string]any{"usage": map[string]string{"calls": "100"}, "version": 1}, &q)
	if q.Version != 1 || q.Total != "49.99" {
		t.Errorf("quote of version 1 = %d %s; want 49.99 (the first 1000 calls are free)", q.Version, q.Total)
	}
	var versions struct {
		Data []struct {
			ID      string
			PlanID  string `json:"plan_id"`
			Version int
			Source  string
			Terms   struct{ Charges []json.RawMessage }
		}
	}
	e.must(http.StatusOK, "GET", "/v1/plans/"+plan.ID+"/versions", f.buyer, nil, &versions)
	if len(versions.Data) != 2 || versions.Data[0].Version != 2 || len(versions.Data[1].Terms.Charges) != 4 || versions.Data[1].Source != "api" {
		t.Fatalf("listPlanVersions = %+v; want versions 2 and 1, with 1 and 4 charges", versions.Data)
	}
	var v1 struct {
		PlanID string `json:"plan_id"`
		Terms  struct{ Charges []json.RawMessage }
	}
	e.must(http.StatusOK, "GET", "/v1/plan-versions/"+versions.Data[1].ID, f.buyer, nil, &v1)
	if v1.PlanID != plan.ID || len(v1.Terms.Charges) != 4 {
		t.Errorf("getPlanVersion = %+v; want version 1 of %s with its 4 charges", v1, plan.ID)
	}
}

// TestPricingCurrencyPrecision: amounts carry exactly the currency's
// minor-unit decimals, rounded half away from zero.
func TestPricingCurrencyPrecision(t *testing.T) {
	f := newPricingFixture(t)
	e := f.e
	var jpy, kwd struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis/"+f.apiID+"/plans", f.prov, map[string]any{"name": "Yen", "slug": "yen", "terms": map[string]any{
		"type": "usage_based", "currency": "JPY", "charges": []any{map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "0.5"}},
	}}, &jpy)
	e.must(http.StatusCreated, "POST", "/v1/apis/"+f.apiID+"/plans", f.prov, map[string]any{"name": "Dinar", "slug": "dinar", "terms": map[string]any{
		"type": "freemium", "currency": "KWD", "charges": []any{map[string]any{"meter": "units", "model": "graduated", "tiers": []any{
			map[string]any{"up_to": "10", "unit_price": "0"}, map[string]any{"up_to": nil, "unit_price": "0.0125"},
		}}},
	}}, &kwd)
	for _, c := range []struct {
		plan, meter, qty string
		amounts          []string
		total            string
	}{
		{jpy.ID, "calls", "3", []string{"2"}, "2"},                   // 1.5 yen → 2
		{jpy.ID, "calls", "0", nil, "0"},                             // nothing billable: no line
		{kwd.ID, "units", "11", []string{"0.000", "0.013"}, "0.013"}, // 0.0125 → 0.013
		{kwd.ID, "units", "10", []string{"0.000"}, "0.000"},
	} {
		status, b := e.do("POST", "/v1/plans/"+c.plan+"/quote", f.buyer, map[string]any{"usage": map[string]string{c.meter: c.qty}})
		var q quoteBody
		if status != http.StatusOK || json.Unmarshal(b, &q) != nil {
			t.Fatalf("quote %s %s = %d %s; want 200", c.meter, c.qty, status, b)
		}
		var amounts []string
		for _, l := range q.Lines {
			amounts = append(amounts, l.Amount)
		}
		if strings.Join(amounts, ",") != strings.Join(c.amounts, ",") || q.Total != c.total || q.Subtotal != c.total {
			t.Errorf("quote %s %s = %s; want amounts %v, total %s", c.meter, c.qty, b, c.amounts, c.total)
		}
		if zero := map[string]string{"JPY": "0", "KWD": "0.000"}[q.Currency]; q.Discount != zero {
			t.Errorf("quote discount = %q; want %q", q.Discount, zero)
		}
	}
}

// TestPricingValidationNamesTheField: every refusal of meters, charges and
// quotes is a 422 naming the field at fault.
func TestPricingValidationNamesTheField(t *testing.T) {
	f := newPricingFixture(t)
	e := f.e
	plans := "/v1/apis/" + f.apiID + "/plans"
	charge := func(c map[string]any) map[string]any {
		return map[string]any{"name": "X", "slug": "x", "terms": map[string]any{"type": "usage_based", "currency": "USD", "charges": []any{c}}}
	}
	for _, c := range []struct {
		what, path string
		body       any
		want       string
	}{
		{"sum without a field", "/v1/apis/" + f.apiID + "/meters", map[string]any{"slug": "s", "aggregation": "sum"}, "field"},
		{"a bad route", "/v1/apis/" + f.apiID + "/meters", map[string]any{"slug": "r", "aggregation": "count", "filter": map[string]any{"routes": []string{"/a/{b"}}}, "filter.routes[0]"},
		{"a 5xx filter", "/v1/apis/" + f.apiID + "/meters", map[string]any{"slug": "r", "aggregation": "count", "filter": map[string]any{"status_classes": []string{"5xx"}}}, "filter.status_classes[0]"},
		{"a bad slug", "/v1/apis/" + f.apiID + "/meters", map[string]any{"slug": "Calls!", "aggregation": "count"}, "slug"},
		{"a meter of no such slug", plans, charge(map[string]any{"meter": "nope", "model": "per_unit", "unit_price": "1"}), "terms.charges[0].meter"},
		{"falling tiers", plans, charge(map[string]any{"meter": "calls", "model": "graduated", "tiers": []any{
			map[string]any{"up_to": "100", "unit_price": "1"}, map[string]any{"up_to": "100", "unit_price": "1"}}}), "terms.charges[0].tiers[1].up_to"},
		{"an unbounded middle tier", plans, charge(map[string]any{"meter": "calls", "model": "volume", "tiers": []any{
			map[string]any{"unit_price": "1"}, map[string]any{"up_to": "100", "unit_price": "1"}}}), "terms.charges[0].tiers[0].up_to"},
		{"13 decimals of price", plans, charge(map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "0.0000000000001"}), "terms.charges[0].unit_price"},
		{"7 decimals of units", plans, charge(map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "1", "included_units": "0.0000001"}), "terms.charges[0].included_units"},
		{"a package without a size", plans, charge(map[string]any{"meter": "calls", "model": "package", "unit_price": "1"}), "terms.charges[0].package_size"},
		{"tiers on per_unit", plans, charge(map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "1", "tiers": []any{map[string]any{"unit_price": "1"}}}), "terms.charges[0].tiers"},
		{"a hard quota without a quota", plans, charge(map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "1", "quota_hard": true}), "terms.charges[0].quota_hard"},
		{"a meter charged twice", plans, map[string]any{"name": "X", "slug": "x", "terms": map[string]any{"type": "usage_based", "currency": "USD", "charges": []any{
			map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "1"}, map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "2"}}}}, "terms.charges[1].meter"},
		{"a subscription with charges", plans, map[string]any{"name": "X", "slug": "x", "terms": map[string]any{"type": "subscription", "currency": "USD", "base_fee": "5",
			"charges": []any{map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "1"}}}}, "terms.charges"},
		{"a usage_based plan with a base fee", plans, map[string]any{"name": "X", "slug": "x", "terms": map[string]any{"type": "usage_based", "currency": "USD", "base_fee": "5",
			"charges": []any{map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "1"}}}}, "terms.base_fee"},
		{"a hybrid plan without charges", plans, map[string]any{"name": "X", "slug": "x", "terms": map[string]any{"type": "hybrid", "currency": "USD", "base_fee": "5"}}, "terms.charges"},
		{"a freemium charge with nothing free", plans, map[string]any{"name": "X", "slug": "x", "terms": map[string]any{"type": "freemium", "currency": "USD",
			"charges": []any{map[string]any{"meter": "calls", "model": "per_unit", "unit_price": "1"}}}}, "terms.charges[0]"},
		{"a currency Veil does not price in", plans, map[string]any{"name": "X", "slug": "x", "terms": map[string]any{"currency": "XYZ"}}, "terms.currency"},
	} {
		status, b := e.do("POST", c.path, f.prov, c.body)
		if status != http.StatusUnprocessableEntity || fields(t, b) != c.want {
			t.Errorf("%s = %d %s; want 422 naming %s", c.what, status, b, c.want)
		}
	}
	if n := countRows(t, e, `SELECT count(*) FROM plans WHERE api_id = $1`, f.apiID); n != 0 {
		t.Errorf("refused plans left %d plans behind", n)
	}

	var plan struct{ ID string }
	e.must(http.StatusCreated, "POST", plans, f.prov, charge(map[string]any{"meter": "calls", "model": "volume", "tiers": []any{
		map[string]any{"up_to": "100", "unit_price": "1"}}}), &plan)
	quote := "/v1/plans/" + plan.ID + "/quote"
	for _, c := range []struct {
		what string
		body any
		want string
	}{
		{"a meter the plan does not price", map[string]any{"usage": map[string]string{"units": "1"}}, "usage.units"},
		{"a negative quantity", map[string]any{"usage": map[string]string{"calls": "-1"}}, "usage.calls"},
		{"7 decimals", map[string]any{"usage": map[string]string{"calls": "0.0000001"}}, "usage.calls"},
		{"10^14", map[string]any{"usage": map[string]string{"calls": "100000000000000"}}, "usage.calls"},
		{"exponent notation", map[string]any{"usage": map[string]string{"calls": "1e3"}}, "usage.calls"},
		{"beyond the last bounded tier", map[string]any{"usage": map[string]string{"calls": "101"}}, "usage"},
		{"a version the plan lacks", map[string]any{"version": 9}, "version"},
		{"a code nobody issued", map[string]any{"promotion_codes": []string{"NOPE-NOPE"}}, "promotion_codes[0]"},
	} {
		status, b := e.do("POST", quote, f.buyer, c.body)
		if status != http.StatusUnprocessableEntity || !strings.HasPrefix(fields(t, b), c.want) {
			t.Errorf("quote with %s = %d %s; want 422 naming %s", c.what, status, b, c.want)
		}
	}
	if status, b := e.do("POST", quote, f.buyer, map[string]any{"usage": map[string]any{"calls": 5}}); status != http.StatusBadRequest {
		t.Errorf("quote with a JSON number = %d %s; want 400: quantities are decimal strings", status, b)
	}
}

// TestPricingMeterRoutesBoundPerAPI: the route patterns of all the meters
// of one API are at most enforcement.MaxAPIMeterRoutesBytes together, at
// create and at update: a 422 naming filter.routes. The fixture's bytes
// meter holds 16 bytes of routes.
func TestPricingMeterRoutesBoundPerAPI(t *testing.T) {
	f := newPricingFixture(t)
	e := f.e
	meters := "/v1/apis/" + f.apiID + "/meters"
	// routes is n bytes of patterns, 512 bytes at most each.
	routes := func(name string, n int) []string {
		var out []string
		for i := 0; n > 0; i++ {
			size := min(n, enforcement.MaxMeterRouteBytes)
			p := fmt.Sprintf("/%s-%02d/", name, i)
			out = append(out, p+strings.Repeat("x", size-len(p)))
			n -= size
		}
		return out
	}
	meter := func(slug string, n int) map[string]any {
		return map[string]any{"slug": slug, "aggregation": "count", "filter": map[string]any{"routes": routes(slug, n)}}
	}
	e.must(http.StatusCreated, "POST", meters, f.prov, meter("r1", 4096), nil)
	if status, b := e.do("POST", meters, f.prov, meter("r2", 4096)); status != http.StatusUnprocessableEntity || fields(t, b) != "filter.routes" {
		t.Errorf("createMeter past 8192 bytes of the API's routes = %d %s; want 422 naming filter.routes", status, b)
	}
	var r2 struct{ ID string }
	e.must(http.StatusCreated, "POST", meters, f.prov, meter("r2", enforcement.MaxAPIMeterRoutesBytes-4096-16), &r2)
	patch := map[string]any{"filter": map[string]any{"routes": []string{"/forecast/{city}", "/x"}}}
	if status, b := e.do("PATCH", "/v1/meters/"+f.meters["bytes"], f.prov, patch); status != http.StatusUnprocessableEntity || fields(t, b) != "filter.routes" {
		t.Errorf("updateMeter past 8192 bytes of the API's routes = %d %s; want 422 naming filter.routes", status, b)
	}
	// A meter's own routes count once: r2 may change within its share.
	e.must(http.StatusOK, "PATCH", "/v1/meters/"+r2.ID, f.prov, map[string]any{"filter": map[string]any{"routes": routes("r3", 4096-16)}}, nil)
}

// TestPricingFilePlansAreReadOnly: a plan a plan file manages, and the
// meters it charges, refuse REST writes with a 409 naming the file.
func TestPricingFilePlansAreReadOnly(t *testing.T) {
	f := newPricingFixture(t)
	e := f.e
	var plan struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis/"+f.apiID+"/plans", f.prov, map[string]any{"name": "Pro", "slug": "pro", "terms": hybridTerms()}, &plan)
	if _, err := e.Pool.Exec(t.Context(), `UPDATE plans SET source_file = 'acme/pro.yaml' WHERE id = $1`, plan.ID); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path string }{
		{"PATCH", "/v1/plans/" + plan.ID},
		{"POST", "/v1/plans/" + plan.ID + "/versions"},
		{"PATCH", "/v1/meters/" + f.meters["calls"]},
		{"DELETE", "/v1/meters/" + f.meters["calls"]},
	} {
		body := map[string]any{"name": "Renamed"}
		if strings.HasSuffix(c.path, "/versions") {
			body = map[string]any{"terms": map[string]any{"currency": "USD"}}
		} else if c.method == "DELETE" {
			body = nil
		}
		status, b := e.do(c.method, c.path, f.prov, body)
		if p := problemOf(t, b); status != http.StatusConflict || p["type"] != "https://veil.dev/problems/file-managed" || !strings.Contains(p["detail"].(string), "acme/pro.yaml") {
			t.Errorf("%s %s of a file's plan = %d %s; want 409 file-managed naming acme/pro.yaml", c.method, c.path, status, b)
		}
	}
	var got struct {
		Name       string
		SourceFile *string `json:"source_file"`
	}
	e.must(http.StatusOK, "GET", "/v1/plans/"+plan.ID, f.prov, nil, &got)
	if got.Name != "Pro" || got.SourceFile == nil || *got.SourceFile != "acme/pro.yaml" {
		t.Errorf("getPlan = %+v; want it unchanged, naming its file", got)
	}
	// A meter no file's plan charges stays writable.
	var spare struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis/"+f.apiID+"/meters", f.prov, map[string]any{"slug": "spare", "aggregation": "count"}, &spare)
	e.must(http.StatusOK, "PATCH", "/v1/meters/"+spare.ID, f.prov, map[string]any{"aggregation": "max", "field": "latency_ms"}, nil)
}

// TestPricingMeterLifecycle: a meter's definition changes until a
// subscription uses a version that charges it, its name always; it is
// deleted only while nothing charges it; other organizations see nothing
// of a private API's meters and plans.
func TestPricingMeterLifecycle(t *testing.T) {
	f := newPricingFixture(t)
	e := f.e
	calls := "/v1/meters/" + f.meters["calls"]
	var m struct {
		Slug, Name, Aggregation, Field string
		Filter                         struct{ Methods, Routes, StatusClasses []string }
	}
	e.must(http.StatusOK, "GET", calls, f.buyer, nil, &m)
	if m.Slug != "calls" || m.Name != "Calls" || m.Aggregation != "count" || len(m.Filter.Methods) != 1 {
		t.Errorf("getMeter = %+v; want calls as created", m)
	}
	var list struct{ Data []struct{ Slug string } }
	e.must(http.StatusOK, "GET", "/v1/apis/"+f.apiID+"/meters", f.stranger, nil, &list)
	if len(list.Data) != 4 || list.Data[0].Slug != "bytes" {
		t.Errorf("listMeters = %+v; want the 4 meters by slug", list.Data)
	}
	if status, b := e.do("POST", "/v1/apis/"+f.apiID+"/meters", f.prov, map[string]any{"slug": "calls", "aggregation": "count"}); status != http.StatusConflict ||
		problemOf(t, b)["type"] != "https://veil.dev/problems/slug-taken" {
		t.Errorf("createMeter with a taken slug = %d %s; want 409 slug-taken", status, b)
	}
	for _, tok := range []string{f.buyer, f.stranger} {
		if status, b := e.do("PATCH", calls, tok, map[string]any{"name": "Mine"}); status != http.StatusForbidden {
			t.Errorf("updateMeter by another organization = %d %s; want 403 (the API is public)", status, b)
		}
	}

	var plan struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis/"+f.apiID+"/plans", f.prov, map[string]any{"name": "Pro", "slug": "pro", "terms": hybridTerms()}, &plan)
	// Charged by a version nobody uses yet: the definition may change.
	e.must(http.StatusOK, "PATCH", calls, f.prov, map[string]any{"filter": map[string]any{"methods": []string{"GET", "POST"}}}, nil)
	if status, b := e.do("DELETE", calls, f.prov, nil); status != http.StatusConflict || problemOf(t, b)["type"] != "https://veil.dev/problems/meter-in-use" {
		t.Errorf("deleteMeter of a charged meter = %d %s; want 409 meter-in-use", status, b)
	}

	e.must(http.StatusCreated, "POST", "/v1/subscriptions", f.buyer, map[string]any{"plan_id": plan.ID}, nil)
	for _, patch := range []map[string]any{
		{"aggregation": "max", "field": "latency_ms"},
		{"filter": map[string]any{"methods": []string{}}},
		{"name": "Requests", "filter": map[string]any{"status_classes": []string{"2xx", "3xx"}}},
	} {
		if status, b := e.do("PATCH", calls, f.prov, patch); status != http.StatusConflict || problemOf(t, b)["type"] != "https://veil.dev/problems/meter-in-use" {
			t.Errorf("updateMeter %v of a meter a used version charges = %d %s; want 409 meter-in-use", patch, status, b)
		}
	}
	e.must(http.StatusOK, "PATCH", calls, f.prov, map[string]any{"name": "Requests", "aggregation": "count", "field": ""}, &m)
	if m.Name != "Requests" || strings.Join(m.Filter.Methods, ",") != "GET,POST" {
		t.Errorf("updateMeter of the name = %+v; want the name changed and the filter kept", m)
	}
	var spare struct{ ID string }
	e.must(http.StatusCreated, "POST", "/v1/apis/"+f.apiID+"/meters", f.prov, map[string]any{"slug": "spare", "aggregation": "count"}, &spare)
	e.must(http.StatusNoContent, "DELETE", "/v1/meters/"+spare.ID, f.prov, nil, nil)
	e.must(http.StatusNotFound, "GET", "/v1/meters/"+spare.ID, f.prov, nil, nil)

	// A private API: its meters, plans, versions and quotes are not found
	// for other organizations, whatever they ask.
	var private, pm, pp struct{ ID string }
	body := weather("secret")
	body["visibility"] = "private"
	e.must(http.StatusCreated, "POST", "/v1/apis", f.prov, body, &private)
	forceState(t, e, private.ID, "active")
	e.must(http.StatusCreated, "POST", "/v1/apis/"+private.ID+"/meters", f.prov, map[string]any{"slug": "hidden", "aggregation": "count"}, &pm)
	e.must(http.StatusCreated, "POST", "/v1/apis/"+private.ID+"/plans", f.prov, map[string]any{"name": "P", "slug": "p", "terms": map[string]any{
		"type": "usage_based", "currency": "EUR", "charges": []any{map[string]any{"meter": "hidden", "model": "per_unit", "unit_price": "1"}}}}, &pp)
	var versions struct{ Data []struct{ ID string } }
	e.must(http.StatusOK, "GET", "/v1/plans/"+pp.ID+"/versions", f.prov, nil, &versions)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/apis/" + private.ID + "/meters", nil},
		{"POST", "/v1/apis/" + private.ID + "/meters", map[string]any{"slug": "mine", "aggregation": "count"}},
		{"GET", "/v1/meters/" + pm.ID, nil},
		{"PATCH", "/v1/meters/" + pm.ID, map[string]any{"name": "Mine"}},
		{"DELETE", "/v1/meters/" + pm.ID, nil},
		{"GET", "/v1/plans/" + pp.ID + "/versions", nil},
		{"GET", "/v1/plan-versions/" + versions.Data[0].ID, nil},
		{"POST", "/v1/plans/" + pp.ID + "/quote", map[string]any{"usage": map[string]string{"hidden": "1"}}},
	} {
		for _, tok := range []string{f.buyer, f.stranger} {
			if status, b := e.do(c.method, c.path, tok, c.body); status != http.StatusNotFound {
				t.Errorf("%s %s by another organization = %d %s; want 404", c.method, c.path, status, b)
			}
		}
	}
	// A charge may only name a meter of the plan's own API, even one of
	// the same provider.
	if status, b := e.do("POST", "/v1/plans/"+plan.ID+"/versions", f.prov, map[string]any{"terms": map[string]any{"type": "usage_based", "currency": "USD",
		"charges": []any{map[string]any{"meter": "hidden", "model": "per_unit", "unit_price": "1"}}}}); status != http.StatusUnprocessableEntity || fields(t, b) != "terms.charges[0].meter" {
		t.Errorf("createPlanVersion charging another API's meter = %d %s; want 422 naming terms.charges[0].meter", status, b)
	}
}

func countRows(t *testing.T, e *testEnv, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.Pool.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPricingMeterChangeWaitsForFirstSubscription: a change of a meter's
// definition and the first subscription to a version charging it cannot
// pass each other unseen. The change waits for the subscription's
// transaction and, once it commits, is refused.
func TestPricingMeterChangeWaitsForFirstSubscription(t *testing.T) {
	f := newPricingFixture(t)
	e := f.e
	ctx := t.Context()
	var plan struct {
		ID      string
		Current struct{ ID string } `json:"current_version"`
	}
	e.must(http.StatusCreated, "POST", "/v1/apis/"+f.apiID+"/plans", f.prov, map[string]any{"name": "Pro", "slug": "pro", "terms": hybridTerms()}, &plan)

	tx, err := e.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		SELECT organization_id, 'bob', id, $2, now(), now() + interval '1 month' FROM apis WHERE id = $1`, f.apiID, plan.Current.ID); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		status int
		body   []byte
	}
	done := make(chan answer, 1)
	go func() {
		status, b := e.do("PATCH", "/v1/meters/"+f.meters["calls"], f.prov, map[string]any{"aggregation": "max", "field": "latency_ms"})
		done <- answer{status, b}
	}()
	// The change must be waiting for the subscription's lock, not done.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := e.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE NOT l.granted AND a.datname = current_database()`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case a := <-done:
			t.Fatalf("PATCH /v1/meters/{id} during a first subscription = %d %s; want it to wait for the subscription", a.status, a.body)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("PATCH /v1/meters/{id} neither waits for the subscription's lock nor answers")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.status != http.StatusConflict || problemOf(t, a.body)["type"] != "https://veil.dev/problems/meter-in-use" {
		t.Errorf("PATCH /v1/meters/{id} after the first subscription committed = %d %s; want 409 meter-in-use", a.status, a.body)
	}
}
