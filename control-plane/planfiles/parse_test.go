package planfiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

const validPlan = `api: weather
plan: pro
name: Pro
type: hybrid
currency: USD
base_fee: 19.00
limits:
  quota_requests: 1000
  rate_per_second: 10
meters:
  - slug: calls
    name: Calls
    aggregation: count
  - slug: bytes
    aggregation: sum
    field: response_bytes
    filter:
      methods: [GET]
      routes: [/forecast]
charges:
  - meter: calls
    model: graduated
    included_units: 100
    tiers:
      - up_to: 1000
        unit_price: 0.000000000001
      - up_to: 100000
        unit_price: "0.5"
        flat_amount: 2
      - up_to: unlimited
        unit_price: 0.25
  - meter: bytes
    model: package
    package_size: 1000000
    unit_price: "0.10"
`

func TestParseValid(t *testing.T) {
	p, errs := Parse("pro.yaml", []byte(validPlan))
	if len(errs) > 0 {
		t.Fatalf("Parse = %v; want no error", errs)
	}
	if p.API != "weather" || p.Slug != "pro" || p.Status != "active" || p.Interval != "month" || p.Limits.QuotaHard {
		t.Fatalf("Parse = %+v; want the file's fields and the defaults (active, month, soft quota as over REST)", p)
	}
	if *p.Limits.QuotaRequests != 1000 || *p.Limits.RatePerSecond != 10 || p.Limits.RatePerMinute != nil {
		t.Fatalf("limits = %+v", p.Limits)
	}
	// Exact decimals: 10^-12 came from the file's text, not from a float.
	tiers := p.Charges[0].Tiers
	if want := decimal.New(1, -12); !tiers[0].UnitPrice.Equal(want) || tiers[0].UnitPrice.String() != "0.000000000001" {
		t.Fatalf("tier 1 unit price = %s; want %s exactly", tiers[0].UnitPrice, want)
	}
	if !tiers[1].FlatAmount.Equal(decimal.NewFromInt(2)) || tiers[2].UpTo != nil {
		t.Fatalf("tiers = %+v", tiers)
	}
	if p.BaseFee.String() != "19" || !p.Charges[1].PackageSize.Equal(decimal.NewFromInt(1000000)) {
		t.Fatalf("base fee %s, package size %s", p.BaseFee, p.Charges[1].PackageSize)
	}
	if got := p.Meters[1].Filter.Routes; len(got) != 1 || got[0] != "/forecast" {
		t.Fatalf("routes = %v", got)
	}
}

// replace returns validPlan with old replaced by new, once.
func replace(t *testing.T, old, new string) string {
	t.Helper()
	if strings.Count(validPlan, old) != 1 {
		t.Fatalf("%q is not in validPlan exactly once", old)
	}
	return strings.Replace(validPlan, old, new, 1)
}

func TestParseErrorsNameFileLineField(t *testing.T) {
	cases := []struct {
		name, content string
		line          int
		field, msg    string
	}{
		{"unknown key", replace(t, "name: Pro\n", "name: Pro\nprice: 3\n"), 4, "price", "unknown key"},
		{"unknown nested key", replace(t, "        flat_amount: 2\n", "        flat_amount: 2\n        flat: 1\n"), 30, "charges[0].tiers[1].flat", "unknown key"},
		{"tier bound falls", replace(t, "up_to: 100000", "up_to: 500"), 27, "charges[0].tiers[1].up_to", "must rise above 1000"},
		{"exponent refused", replace(t, "unit_price: 0.25", "unit_price: 2.5e-1"), 31, "charges[0].tiers[2].unit_price", "no exponent"},
		{"float syntax refused", replace(t, "base_fee: 19.00", "base_fee: .inf"), 6, "base_fee", "plain decimal"},
		{"unlimited not last", replace(t, "up_to: 1000\n", "up_to: unlimited\n"), 25, "charges[0].tiers[0].up_to", "only the last tier"},
		{"too many decimals", replace(t, `unit_price: "0.5"`, `unit_price: "0.5000000000001"`), 28, "charges[0].tiers[1].unit_price", "at most 12 decimals"},
		{"negative", replace(t, "included_units: 100", "included_units: -1"), 23, "charges[0].included_units", "zero or more"},
		{"undefined meter", replace(t, "  - meter: bytes", "  - meter: egress"), 32, "charges[1].meter", "not defined"},
		{"meter validation", replace(t, "field: response_bytes", "field: key_id"), 16, "meters[1].field", "aggregates units"},
		{"bad route", replace(t, "routes: [/forecast]", "routes: [forecast]"), 19, "meters[1].filter.routes[0]", ""},
		{"bad method", replace(t, "methods: [GET]", "methods: [get]"), 18, "meters[1].filter.methods[0]", "not one of"},
		{"package without size", replace(t, "    package_size: 1000000\n", ""), 32, "charges[1].package_size", "needs a package size"},
		{"tiers on package", replace(t, `    unit_price: "0.10"`+"\n", `    unit_price: "0.10"`+"\n    tiers:\n      - up_to: 5\n"), 36, "charges[1].tiers", "takes no tiers"},
		{"type contradiction", replace(t, "type: hybrid", "type: subscription"), 20, "charges", "charges its base fee only"},
		{"quota zero", replace(t, "quota_requests: 1000", "quota_requests: 0"), 8, "limits.quota_requests", "must be 1"},
		{"bool", replace(t, "  rate_per_second: 10\n", "  rate_per_second: 10\n  quota_hard: yes\n"), 10, "limits.quota_hard", "true or false"},
		{"duplicate key", replace(t, "name: Pro\n", "name: Pro\nname: Other\n"), 4, "name", "given twice"},
		{"unknown currency", replace(t, "currency: USD", "currency: XXX"), 5, "currency", "ISO 4217 code Veil prices in"},
		{"missing api", replace(t, "api: weather\n", ""), 1, "api", "required"},
		{"syntax", replace(t, "name: Pro\n", "name: [Pro\n"), 0, "", ""},
		{"alias", replace(t, "plan: pro\n", "plan: &p pro\ndescription: *p\n"), 3, "description", "aliases"},
		{"two documents", validPlan + "---\napi: other\n", 36, "", "one plan per file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, errs := Parse("deploy/pricing/pro.yaml", []byte(c.content))
			if p != nil || len(errs) == 0 {
				t.Fatalf("Parse = %+v, no error; want %s: %s", p, c.field, c.msg)
			}
			e := errs[0]
			if e.File != "deploy/pricing/pro.yaml" {
				t.Fatalf("error %v names file %q", e, e.File)
			}
			if c.line > 0 && e.Line != c.line || c.line == 0 && e.Line < 1 {
				t.Fatalf("error %v at line %d; want %d", e, e.Line, c.line)
			}
			if e.Field != c.field || !strings.Contains(e.Message, c.msg) {
				t.Fatalf("error = %v; want field %q, message containing %q", e, c.field, c.msg)
			}
			if want := "deploy/pricing/pro.yaml:"; !strings.HasPrefix(e.String(), want) {
				t.Fatalf("String() = %q; want it to start with %q", e.String(), want)
			}
		})
	}
}

func TestParseErrorString(t *testing.T) {
	e := Error{File: "deploy/pricing/pro.yaml", Line: 14, Field: "charges[1].tiers[2].up_to", Message: "must rise above 100000"}
	if got, want := e.String(), "deploy/pricing/pro.yaml:14: charges[1].tiers[2].up_to: must rise above 100000"; got != want {
		t.Fatalf("String() = %q; want %q", got, want)
	}
}

func TestParseAllAcrossFiles(t *testing.T) {
	other := strings.Replace(validPlan, "name: Calls\n", "name: Requests\n", 1)
	_, errs := ParseAll([]Source{NewSource("a.yaml", []byte(validPlan)), NewSource("b.yaml", []byte(other))})
	if len(errs) != 2 {
		t.Fatalf("ParseAll = %v; want the plan declared twice and the meter defined two ways", errs)
	}
	for _, e := range errs {
		if e.File != "b.yaml" || !(strings.Contains(e.Message, "declared by a.yaml") || strings.Contains(e.Message, "defined differently in a.yaml")) {
			t.Fatalf("error %v; want b.yaml against a.yaml", e)
		}
	}
}

func TestReadDirBounds(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "a.yaml"), validPlan)
	write(filepath.Join(dir, ".a.yaml.swp"), "junk")
	write(filepath.Join(dir, "notes.txt"), "junk")
	write(filepath.Join(dir, "big.yml"), strings.Repeat("#", MaxFileSize+1))
	write(filepath.Join(outside, "secret.yaml"), validPlan)
	if err := os.Symlink(filepath.Join(outside, "secret.yaml"), filepath.Join(dir, "leak.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.yaml", filepath.Join(dir, "inside.yaml")); err != nil {
		t.Fatal(err)
	}
	srcs, errs := ReadDir(dir)
	if len(srcs) != 2 || srcs[0].Rel != "a.yaml" || srcs[1].Rel != "inside.yaml" {
		t.Fatalf("ReadDir sources = %v; want a.yaml and inside.yaml (a link within the directory)", srcs)
	}
	if len(errs) != 2 || errs[0].File != "big.yml" || !strings.Contains(errs[0].Message, "larger than") ||
		errs[1].File != "leak.yaml" || !strings.Contains(errs[1].Message, "leads out of the plan directory") {
		t.Fatalf("ReadDir errors = %v; want big.yml too large and leak.yaml refused", errs)
	}
}

func TestExamplesAreValid(t *testing.T) {
	srcs, errs := ReadDir("../../deploy/pricing")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	plans, errs := ParseAll(srcs)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	types := map[string]bool{}
	for _, p := range plans {
		types[p.Type] = true
	}
	for _, want := range []string{"usage_based", "subscription", "freemium", "hybrid"} {
		if !types[want] {
			t.Errorf("deploy/pricing has no %s plan", want)
		}
	}
	for _, p := range plans {
		if p.Type != "hybrid" {
			continue
		}
		for _, c := range p.Charges {
			if c.Model == metering.ModelGraduated {
				return
			}
		}
	}
	t.Error("deploy/pricing's hybrid plan has no graduated charge")
}
