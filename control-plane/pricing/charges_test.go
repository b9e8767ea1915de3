package pricing_test

import (
	"strings"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

func d(s string) *decimal.Decimal {
	v := decimal.RequireFromString(s)
	return &v
}

func fieldsOf(v *validation.Error) string {
	var out []string
	for _, f := range v.Fields {
		out = append(out, f.Field)
	}
	return strings.Join(out, ",")
}

func TestValidateCharges(t *testing.T) {
	perUnit := func(mod func(*pricing.Charge)) []pricing.Charge {
		c := pricing.Charge{Meter: "calls", Model: metering.ModelPerUnit, UnitPrice: d("0.001")}
		if mod != nil {
			mod(&c)
		}
		return []pricing.Charge{c}
	}
	tiered := func(model metering.ChargeModel, tiers ...pricing.Tier) []pricing.Charge {
		return []pricing.Charge{{Meter: "calls", Model: model, Tiers: tiers}}
	}
	many := make([]pricing.Charge, pricing.MaxCharges+1)
	manyTiers := make([]pricing.Tier, pricing.MaxTiers+1)
	for i := range manyTiers {
		manyTiers[i] = pricing.Tier{UpTo: d(decimal.NewFromInt(int64(i + 1)).String())}
	}
	for _, c := range []struct {
		name    string
		charges []pricing.Charge
		want    string
	}{
		{"per_unit", perUnit(nil), ""},
		{"the largest prices and units", perUnit(func(c *pricing.Charge) {
			c.UnitPrice, c.IncludedUnits, c.Quota = d("999999999999.999999999999"), decimal.RequireFromString("99999999999999.999999"), d("0.000001")
		}), ""},
		{"10^12 unit price", perUnit(func(c *pricing.Charge) { c.UnitPrice = d("1000000000000") }), "terms.charges[0].unit_price"},
		{"negative unit price", perUnit(func(c *pricing.Charge) { c.UnitPrice = d("-1") }), "terms.charges[0].unit_price"},
		{"no unit price", perUnit(func(c *pricing.Charge) { c.UnitPrice = nil }), "terms.charges[0].unit_price"},
		{"10^14 included", perUnit(func(c *pricing.Charge) { c.IncludedUnits = decimal.New(1, 14) }), "terms.charges[0].included_units"},
		{"a zero quota", perUnit(func(c *pricing.Charge) { c.Quota = d("0") }), "terms.charges[0].quota"},
		// 9·10^15 micro-units: below 2^53, compared exactly by the gateway.
		{"the largest quota", perUnit(func(c *pricing.Charge) { c.Quota = d("9000000000") }), ""},
		{"a quota past 9·10^9", perUnit(func(c *pricing.Charge) { c.Quota = d("9000000000.000001") }), "terms.charges[0].quota"},
		{"an unknown model", perUnit(func(c *pricing.Charge) { c.Model = "tiered" }), "terms.charges[0].model"},
		{"a bad meter slug", perUnit(func(c *pricing.Charge) { c.Meter = "Calls" }), "terms.charges[0].meter"},
		{"a package size on per_unit", perUnit(func(c *pricing.Charge) { c.PackageSize = d("10") }), "terms.charges[0].package_size"},
		{"package", perUnit(func(c *pricing.Charge) { c.Model, c.PackageSize = metering.ModelPackage, d("0.5") }), ""},
		{"a zero package", perUnit(func(c *pricing.Charge) { c.Model, c.PackageSize = metering.ModelPackage, d("0") }), "terms.charges[0].package_size"},
		{"graduated", tiered(metering.ModelGraduated, pricing.Tier{UpTo: d("10")}, pricing.Tier{UnitPrice: decimal.RequireFromString("0.1")}), ""},
		{"volume all bounded", tiered(metering.ModelVolume, pricing.Tier{UpTo: d("10")}, pricing.Tier{UpTo: d("10.000001")}), ""},
		{"no tiers", tiered(metering.ModelVolume), "terms.charges[0].tiers"},
		{"21 tiers", tiered(metering.ModelGraduated, manyTiers...), "terms.charges[0].tiers"},
		{"a bound that does not rise", tiered(metering.ModelGraduated, pricing.Tier{UpTo: d("10")}, pricing.Tier{UpTo: d("9")}), "terms.charges[0].tiers[1].up_to"},
		{"a zero bound", tiered(metering.ModelGraduated, pricing.Tier{UpTo: d("0")}), "terms.charges[0].tiers[0].up_to"},
		{"an unbounded first tier", tiered(metering.ModelVolume, pricing.Tier{}, pricing.Tier{UpTo: d("5")}), "terms.charges[0].tiers[0].up_to"},
		{"a negative flat amount", tiered(metering.ModelVolume, pricing.Tier{FlatAmount: decimal.RequireFromString("-1")}), "terms.charges[0].tiers[0].flat_amount"},
		{"a unit price on a tiered charge", []pricing.Charge{{Meter: "calls", Model: metering.ModelGraduated, UnitPrice: d("1"), Tiers: []pricing.Tier{{}}}}, "terms.charges[0].unit_price"},
		// The largest exponents decoding accepts: refused before comparing.
		{"a hostile exponent", perUnit(func(c *pricing.Charge) {
			c.UnitPrice, c.IncludedUnits, c.Quota = d("1e10000"), decimal.New(0, 10000), d("5e10000")
		}), "terms.charges[0].included_units,terms.charges[0].quota,terms.charges[0].unit_price"},
		{"a hostile tier", tiered(metering.ModelGraduated, pricing.Tier{UpTo: d("1e10000"), FlatAmount: decimal.New(0, 10000)}),
			"terms.charges[0].tiers[0].up_to,terms.charges[0].tiers[0].flat_amount"},
		{"51 charges", many, "terms.charges"},
		{"a meter twice", append(perUnit(nil), perUnit(nil)...), "terms.charges[1].meter"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var v validation.Error
			pricing.ValidateCharges(&v, "terms.charges", c.charges)
			if got := fieldsOf(&v); got != c.want {
				t.Errorf("ValidateCharges = %q (%v); want %q", got, v.Fields, c.want)
			}
		})
	}
}

func TestValidateType(t *testing.T) {
	usage := []pricing.Charge{{Meter: "calls", Model: metering.ModelPerUnit, UnitPrice: d("1")}}
	included := []pricing.Charge{{Meter: "calls", Model: metering.ModelPerUnit, UnitPrice: d("1"), IncludedUnits: decimal.NewFromInt(100)}}
	freeTier := []pricing.Charge{{Meter: "calls", Model: metering.ModelGraduated, Tiers: []pricing.Tier{{UpTo: d("100")}, {UnitPrice: decimal.NewFromInt(1)}}}}
	flatFirst := []pricing.Charge{{Meter: "calls", Model: metering.ModelVolume, Tiers: []pricing.Tier{{UpTo: d("100"), FlatAmount: decimal.NewFromInt(1)}, {}}}}
	fee, none := decimal.NewFromInt(10), decimal.Zero
	for _, c := range []struct {
		typ     string
		fee     decimal.Decimal
		charges []pricing.Charge
		want    string
	}{
		{"subscription", fee, nil, ""},
		{"subscription", none, nil, ""},
		{"subscription", fee, usage, "terms.charges"},
		{"usage_based", none, usage, ""},
		{"usage_based", fee, usage, "terms.base_fee"},
		{"usage_based", none, nil, "terms.charges"},
		{"hybrid", fee, usage, ""},
		{"hybrid", none, usage, "terms.base_fee"},
		{"hybrid", fee, nil, "terms.charges"},
		{"freemium", none, included, ""},
		{"freemium", none, freeTier, ""},
		{"freemium", none, nil, ""},
		{"freemium", none, usage, "terms.charges[0]"},
		{"freemium", none, flatFirst, "terms.charges[0]"},
		{"freemium", fee, included, "terms.base_fee"},
	} {
		var v validation.Error
		pricing.ValidateType(&v, "terms", c.typ, c.fee, c.charges)
		if got := fieldsOf(&v); got != c.want {
			t.Errorf("ValidateType(%s, fee %s, %d charges) = %q; want %q", c.typ, c.fee, len(c.charges), got, c.want)
		}
	}
}

// TestRating: a stored charge rates as the engine's charge with the same
// terms (an absent up_to is an unbounded tier).
func TestRating(t *testing.T) {
	c := pricing.Charge{Meter: "calls", Model: metering.ModelGraduated, IncludedUnits: decimal.NewFromInt(5),
		Tiers: []pricing.Tier{{UpTo: d("10"), UnitPrice: decimal.RequireFromString("0.5"), FlatAmount: decimal.NewFromInt(2)}, {UnitPrice: decimal.RequireFromString("0.25")}}}
	cur, _ := metering.CurrencyOf("USD")
	_, total, err := c.Rating().Rate(decimal.NewFromInt(25), cur)
	// billable 20: 10 × 0.5 + 2 = 7, 10 × 0.25 = 2.5: 9.50
	if err != nil || !total.Equal(decimal.RequireFromString("9.5")) {
		t.Errorf("Rating().Rate(25) = %s, %v; want 9.50", total, err)
	}
}
