package metering_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

func d(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func currency(t testing.TB, code string) metering.Currency {
	t.Helper()
	c, err := metering.CurrencyOf(code)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// oracleUnits prices an integer billable quantity unit by unit: the
// deliberately plain reading of the rules, written without the engine's
// shape. It walks the units one at a time, counting how many fall in each
// tier (bounds are whole numbers here), and prices each tier's count. ok is
// false when some unit lies beyond the last tier.
func oracleUnits(c metering.Charge, metered int64, cur metering.Currency) (total decimal.Decimal, ok bool) {
	billable := metered - c.Included.IntPart()
	if billable <= 0 {
		return decimal.Zero, true
	}
	bounds := make([]int64, len(c.Tiers))
	for i, t := range c.Tiers {
		bounds[i] = -1
		if !t.Unbounded {
			bounds[i] = t.UpTo.IntPart()
		}
	}
	tierOf := func(u int64) int {
		for i, b := range bounds {
			if b < 0 || u <= b {
				return i
			}
		}
		return -1
	}
	switch c.Model {
	case metering.ModelPerUnit:
		return cur.Round(decimal.NewFromInt(billable).Mul(c.UnitPrice)), true
	case metering.ModelPackage:
		packages, covered, size := int64(0), int64(0), c.PackageSize.IntPart()
		for u := int64(1); u <= billable; u++ {
			if u > covered {
				packages++
				covered += size
			}
		}
		return cur.Round(decimal.NewFromInt(packages).Mul(c.UnitPrice)), true
	case metering.ModelVolume:
		i := tierOf(billable)
		if i < 0 {
			return decimal.Zero, false
		}
		return cur.Round(decimal.NewFromInt(billable).Mul(c.Tiers[i].UnitPrice).Add(c.Tiers[i].Flat)), true
	default: // graduated
		counts := make([]int64, len(c.Tiers))
		for u := int64(1); u <= billable; u++ {
			i := tierOf(u)
			if i < 0 {
				return decimal.Zero, false
			}
			counts[i]++
		}
		total = decimal.Zero
		for i, n := range counts {
			if n > 0 {
				total = total.Add(cur.Round(decimal.NewFromInt(n).Mul(c.Tiers[i].UnitPrice).Add(c.Tiers[i].Flat)))
			}
		}
		return total, true
	}
}

// oracleWalk prices any quantity by walking the tiers once, for quantities
// too large to count unit by unit.
func oracleWalk(c metering.Charge, metered decimal.Decimal, cur metering.Currency) (decimal.Decimal, bool) {
	billable := decimal.Max(decimal.Zero, metered.Sub(c.Included))
	if billable.IsZero() {
		return decimal.Zero, true
	}
	switch c.Model {
	case metering.ModelPerUnit:
		return cur.Round(billable.Mul(c.UnitPrice)), true
	case metering.ModelPackage:
		// Exact ceiling through integers of millionths (sizes and
		// quantities carry at most 6 decimals).
		scale := decimal.New(1, 6)
		q, size := billable.Mul(scale).BigInt(), c.PackageSize.Mul(scale).BigInt()
		n := decimal.NewFromBigInt(q, 0).Add(decimal.NewFromBigInt(size, 0)).Sub(decimal.NewFromInt(1)).Div(decimal.NewFromBigInt(size, 0)).Floor()
		return cur.Round(n.Mul(c.UnitPrice)), true
	}
	total, floor := decimal.Zero, decimal.Zero
	for _, t := range c.Tiers {
		top := t.UpTo
		if t.Unbounded {
			top = billable
		}
		if c.Model == metering.ModelVolume {
			if billable.LessThanOrEqual(top) {
				return cur.Round(billable.Mul(t.UnitPrice).Add(t.Flat)), true
			}
			continue
		}
		in := decimal.Min(billable, top).Sub(floor)
		if in.IsPositive() {
			total = total.Add(cur.Round(in.Mul(t.UnitPrice).Add(t.Flat)))
		}
		floor = top
		if !billable.GreaterThan(top) {
			return total, true
		}
	}
	return decimal.Zero, false
}

// randomCharge draws a valid charge: prices with up to 12 decimals, flat
// amounts and bounds with up to 6 (as the schema stores them), bounds of
// up to maxBound.
func randomCharge(r *rand.Rand, maxBound int64, whole bool) metering.Charge {
	dec := func(max int64, places int32) decimal.Decimal {
		v := decimal.New(r.Int64N(max*pow10(places)+1), -places)
		if whole {
			return v.Truncate(0)
		}
		return v
	}
	price := func() decimal.Decimal { return decimal.New(r.Int64N(10_000_000_000_000), -12) } // up to 10
	models := []metering.ChargeModel{metering.ModelPerUnit, metering.ModelPackage, metering.ModelGraduated, metering.ModelVolume}
	c := metering.Charge{Meter: "m", Model: models[r.IntN(len(models))], Included: dec(maxBound/10+1, 6)}
	switch c.Model {
	case metering.ModelPerUnit:
		c.UnitPrice = price()
	case metering.ModelPackage:
		c.UnitPrice = price()
		c.PackageSize = dec(maxBound/20+1, 6).Add(decimal.New(1, 0))
	default:
		n := 1 + r.IntN(5)
		bound := decimal.Zero
		for i := range n {
			t := metering.Tier{UnitPrice: price(), Flat: decimal.New(r.Int64N(100_000_000), -6)}
			if r.IntN(4) == 0 {
				t.Flat = decimal.Zero
			}
			if i == n-1 && r.IntN(10) < 7 {
				t.Unbounded = true
			} else {
				bound = bound.Add(dec(maxBound/int64(n)+1, 6)).Add(decimal.New(1, 0))
				t.UpTo = bound
			}
			c.Tiers = append(c.Tiers, t)
		}
	}
	return c
}

func pow10(n int32) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

var currencies = []string{"USD", "JPY", "KWD", "EUR"}

// TestRateMatchesUnitByUnitOracle: integer quantities up to 10^5 over
// random charges, against pricing unit by unit: equal to the last digit.
func TestRateMatchesUnitByUnitOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, uint64(len(t.Name()))))
	for i := range 3000 {
		c := randomCharge(r, 2_000, true)
		cur := currency(t, currencies[r.IntN(len(currencies))])
		metered := r.Int64N(100_001)
		if i%10 == 0 {
			metered = r.Int64N(3_000) // around the bounds
		}
		if i%7 == 0 && len(c.Tiers) > 0 && !c.Tiers[0].Unbounded {
			metered = c.Tiers[0].UpTo.Add(c.Included).IntPart() + r.Int64N(3) - 1 // on a bound, or one unit off
		}
		want, ok := oracleUnits(c, metered, cur)
		_, got, err := c.Rate(decimal.NewFromInt(metered), cur)
		if !ok {
			if !errors.Is(err, metering.ErrBeyondTiers) {
				t.Fatalf("case %d: Rate(%d) of %+v = %s, %v; want ErrBeyondTiers", i, metered, c, got, err)
			}
			continue
		}
		if err != nil || !got.Equal(want) {
			t.Fatalf("case %d: Rate(%d %s) of %+v = %s, %v; want %s", i, metered, cur.Code, c, got, err, want)
		}
	}
}

// TestRateMatchesTierWalkOracle: quantities up to 10^12 with 6 decimals,
// against a plain walk over the tiers.
func TestRateMatchesTierWalkOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(2, uint64(len(t.Name()))))
	for i := range 5000 {
		c := randomCharge(r, 1_000_000_000_000, false)
		cur := currency(t, currencies[r.IntN(len(currencies))])
		metered := decimal.New(r.Int64N(1_000_000_000_000_000_000), -6)
		if i%3 == 0 && len(c.Tiers) > 0 && !c.Tiers[0].Unbounded {
			metered = c.Tiers[0].UpTo.Add(c.Included) // exactly on a bound
		}
		want, ok := oracleWalk(c, metered, cur)
		_, got, err := c.Rate(metered, cur)
		if !ok {
			if !errors.Is(err, metering.ErrBeyondTiers) {
				t.Fatalf("case %d: Rate(%s) of %+v = %s, %v; want ErrBeyondTiers", i, metered, c, got, err)
			}
			continue
		}
		if err != nil || !got.Equal(want) {
			t.Fatalf("case %d: Rate(%s %s) of %+v = %s, %v; want %s", i, metered, cur.Code, c, got, err, want)
		}
	}
}

// tiers3 is a tier table with bounds 100 and 1000 and an unbounded last
// tier: 0.10, 0.05 and 0.01 a unit, flat amounts 1, 2 and 3.
func tiers3() []metering.Tier {
	return []metering.Tier{
		{UpTo: d("100"), UnitPrice: d("0.10"), Flat: d("1")},
		{UpTo: d("1000"), UnitPrice: d("0.05"), Flat: d("2")},
		{Unbounded: true, UnitPrice: d("0.01"), Flat: d("3")},
	}
}

// TestRateAtTierBoundaries: each model one unit and one millionth below,
// on and above a bound, with included units, worked out by hand.
func TestRateAtTierBoundaries(t *testing.T) {
	usd := currency(t, "USD")
	graduated := metering.Charge{Meter: "calls", Model: metering.ModelGraduated, Included: d("10"), Tiers: tiers3()}
	volume := metering.Charge{Meter: "calls", Model: metering.ModelVolume, Included: d("10"), Tiers: tiers3()}
	pkg := metering.Charge{Meter: "calls", Model: metering.ModelPackage, Included: d("10"), PackageSize: d("100"), UnitPrice: d("2.50")}
	perUnit := metering.Charge{Meter: "calls", Model: metering.ModelPerUnit, Included: d("10"), UnitPrice: d("0.0125")}
	tests := []struct {
		c       metering.Charge
		metered string
		want    string
	}{
		{graduated, "0", "0"},
		{graduated, "10", "0"},        // all included: no tier reached, no flat amount
		{graduated, "10.000001", "1"}, // 0.000001 × 0.10 rounds to 0, + flat 1
		{graduated, "109", "10.90"},   // 99 units
		{graduated, "109.999999", "11.00"},
		{graduated, "110", "11.00"},          // 100 × 0.10 + 1
		{graduated, "110.000001", "13.00"},   // + tier 2 reached: 0.000001 × 0.05 → 0, + 2
		{graduated, "111", "13.05"},          // 11 + (1 × 0.05 + 2)
		{graduated, "1009", "11.00 + 46.95"}, // 999: 11 + 899 × 0.05 + 2
		{graduated, "1010", "11.00 + 47.00"}, // 1000: 11 + 900 × 0.05 + 2
		{graduated, "1011", "58.00 + 3.01"},  // 1001: 58 + (0.01 + 3)
		{volume, "10", "0"},                  // nothing billable
		{volume, "109", "10.90"},             // 99 × 0.10 + 1
		{volume, "110", "11.00"},             // 100 × 0.10 + 1
		{volume, "110.000001", "7.00"},       // 100.000001 × 0.05 + 2 = 7.00000005
		{volume, "111", "7.05"},              // 101 × 0.05 + 2
		{volume, "1010", "52.00"},            // 1000 × 0.05 + 2
		{volume, "1010.000001", "13.00"},     // 1000.000001 × 0.01 + 3
		{pkg, "10", "0"},
		{pkg, "10.000001", "2.50"}, // one started package
		{pkg, "109", "2.50"},
		{pkg, "110", "2.50"},
		{pkg, "110.000001", "5.00"},
		{pkg, "111", "5.00"},
		{perUnit, "10", "0"},
		{perUnit, "11", "0.01"}, // 0.0125: below the half, down
		{perUnit, "14", "0.05"}, // 4 × 0.0125 = 0.05
		{perUnit, "12", "0.03"}, // 0.025 → 0.03, half away from zero
	}
	for _, tt := range tests {
		_, got, err := tt.c.Rate(d(tt.metered), usd)
		if err != nil {
			t.Errorf("%s Rate(%s) = %v", tt.c.Model, tt.metered, err)
			continue
		}
		want := decimal.Zero
		for _, part := range strings.Split(tt.want, " + ") {
			want = want.Add(d(part))
		}
		if !got.Equal(want) {
			t.Errorf("%s Rate(%s) = %s; want %s", tt.c.Model, tt.metered, got, want)
		}
	}
}

// TestRateRoundsPerCurrency: a line rounds once, half away from zero, to
// its currency's exponent (JPY 0, USD 2, KWD 3).
func TestRateRoundsPerCurrency(t *testing.T) {
	c := metering.Charge{Meter: "m", Model: metering.ModelPerUnit, UnitPrice: d("0.0005")}
	tests := []struct{ metered, jpy, usd, kwd string }{
		{"1000", "1", "0.50", "0.500"},     // 0.5 exactly
		{"999.9999", "0", "0.50", "0.500"}, // 0.49999995
		{"10", "0", "0.01", "0.005"},       // 0.005
		{"9", "0", "0", "0.005"},           // 0.0045
	}
	for _, tt := range tests {
		for code, want := range map[string]string{"JPY": tt.jpy, "USD": tt.usd, "KWD": tt.kwd} {
			if _, got, err := c.Rate(d(tt.metered), currency(t, code)); err != nil || !got.Equal(d(want)) {
				t.Errorf("Rate(%s %s) = %s, %v; want %s", tt.metered, code, got, err, want)
			}
		}
	}
	if _, err := metering.CurrencyOf("XYZ"); !errors.Is(err, metering.ErrUnknownCurrency) {
		t.Errorf("CurrencyOf(XYZ) = %v; want ErrUnknownCurrency", err)
	}
}

// TestRateRefuses: invalid charges and quantities are errors, never a price.
func TestRateRefuses(t *testing.T) {
	usd := currency(t, "USD")
	tests := []struct {
		name string
		c    metering.Charge
		q    string
		want error
	}{
		{"negative quantity", metering.Charge{Model: metering.ModelPerUnit, UnitPrice: d("1")}, "-1", metering.ErrNegativeQuantity},
		{"unknown model", metering.Charge{Model: "linear"}, "1", metering.ErrInvalidCharge},
		{"package of zero", metering.Charge{Model: metering.ModelPackage, UnitPrice: d("1")}, "1", metering.ErrInvalidCharge},
		{"tiered without tiers", metering.Charge{Model: metering.ModelGraduated}, "1", metering.ErrInvalidCharge},
		{"bounds not rising", metering.Charge{Model: metering.ModelVolume, Tiers: []metering.Tier{{UpTo: d("10")}, {UpTo: d("10")}}}, "1", metering.ErrInvalidCharge},
		{"unbounded before last", metering.Charge{Model: metering.ModelVolume, Tiers: []metering.Tier{{Unbounded: true}, {UpTo: d("10")}}}, "1", metering.ErrInvalidCharge},
		{"negative price", metering.Charge{Model: metering.ModelPerUnit, UnitPrice: d("-1")}, "1", metering.ErrInvalidCharge},
		{"beyond the last tier", metering.Charge{Model: metering.ModelGraduated, Tiers: []metering.Tier{{UpTo: d("10"), UnitPrice: d("1")}}}, "10.000001", metering.ErrBeyondTiers},
	}
	for _, tt := range tests {
		if _, got, err := tt.c.Rate(d(tt.q), usd); !errors.Is(err, tt.want) {
			t.Errorf("%s: Rate(%s) = %s, %v; want %v", tt.name, tt.q, got, err, tt.want)
		}
	}
}

// BenchmarkRateSubscription rates one subscription with 5 meters of 4
// tiers each (graduated and volume alternating).
func BenchmarkRateSubscription(b *testing.B) {
	usd := currency(b, "USD")
	tiers := []metering.Tier{
		{UpTo: d("1000"), UnitPrice: d("0.001"), Flat: d("0")},
		{UpTo: d("100000"), UnitPrice: d("0.0008"), Flat: d("5")},
		{UpTo: d("10000000"), UnitPrice: d("0.0005"), Flat: d("10")},
		{Unbounded: true, UnitPrice: d("0.0002")},
	}
	var charges []metering.Charge
	for i := range 5 {
		model := metering.ModelGraduated
		if i%2 == 1 {
			model = metering.ModelVolume
		}
		charges = append(charges, metering.Charge{Meter: fmt.Sprintf("m%d", i), Model: model, Included: d("500"), Tiers: tiers})
	}
	usage := d("12345678.123456")
	b.ReportAllocs()
	for b.Loop() {
		sum := decimal.Zero
		for _, c := range charges {
			_, total, err := c.Rate(usage, usd)
			if err != nil {
				b.Fatal(err)
			}
			sum = sum.Add(total)
		}
	}
}
