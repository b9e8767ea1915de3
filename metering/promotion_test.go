package metering_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

func promo(code, kind, value string, priority int, stackable bool) metering.Promotion {
	return metering.Promotion{ID: code, Code: code, Kind: kind, Value: d(value), Priority: priority, Stackable: stackable}
}

func amountOff(code, value, cur string, priority int, stackable bool) metering.Promotion {
	p := promo(code, metering.PromotionAmountOff, value, priority, stackable)
	p.Currency = cur
	return p
}

func freeUnits(code, meter, value string, priority int, stackable bool) metering.Promotion {
	p := promo(code, metering.PromotionFreeUnits, value, priority, stackable)
	p.Meter = meter
	return p
}

// discountLines renders a quote's discount lines as "code meter amount".
func discountLines(q metering.Quote) []string {
	var out []string
	for _, l := range q.Lines {
		if l.Kind == metering.LineDiscount {
			out = append(out, fmt.Sprintf("%s %s %s", l.Promotion, l.Meter, l.Amount))
		}
	}
	return out
}

// TestQuoteWithPromotions: which promotions apply and in what order, with
// each figure worked out by hand. The hybrid plan's quote of 15,500 calls
// and 12.345 GB is 54.61 USD: 29 base fee, 20 + 4.5 calls, 1.11 GB.
func TestQuoteWithPromotions(t *testing.T) {
	usage := map[string]decimal.Decimal{"calls": d("15500"), "gb": d("12.345")}
	for _, tc := range []struct {
		name   string
		promos []metering.Promotion
		lines  []string
		total  string
	}{
		{"none", nil, nil, "54.61"},
		{"percent", []metering.Promotion{promo("TEN", metering.PromotionPercentOff, "10", 0, true)},
			[]string{"TEN  -5.46"}, "49.15"}, // 5.461
		// Amounts first, then percentages on what remains: 54.61 − 10 =
		// 44.61, 10% of it 4.461 → 4.46. The other order would take 5.46
		// and then 10.
		{"amount before percent", []metering.Promotion{
			promo("TEN", metering.PromotionPercentOff, "10", 9, true), amountOff("FLAT", "10", "USD", 0, true)},
			[]string{"FLAT  -10", "TEN  -4.46"}, "40.15"},
		// Two percentages compound: 10% of 54.61 → 5.46, then 50% of
		// 49.15 → 24.575 → 24.58 (half away from zero).
		{"percentages compound by priority", []metering.Promotion{
			promo("HALF", metering.PromotionPercentOff, "50", 1, true), promo("TEN", metering.PromotionPercentOff, "10", 2, true)},
			[]string{"TEN  -5.46", "HALF  -24.58"}, "24.57"},
		// An exclusive promotion applies alone, whatever its priority
		// against the stackable ones.
		{"exclusive beats stackable", []metering.Promotion{
			promo("TEN", metering.PromotionPercentOff, "10", 100, true), amountOff("FIVE", "5", "USD", 0, false)},
			[]string{"FIVE  -5"}, "49.61"},
		{"highest priority exclusive wins", []metering.Promotion{
			amountOff("LOW", "5", "USD", 1, false), amountOff("HIGH", "7", "USD", 2, false)},
			[]string{"HIGH  -7"}, "47.61"},
		{"priority tie goes to the first code", []metering.Promotion{
			amountOff("bbb", "5", "USD", 3, false), amountOff("AAA", "7", "USD", 3, false)},
			[]string{"AAA  -7"}, "47.61"},
		// 5,000 free calls: 10,500 metered, 9,500 billable, all in tier 1
		// at 0.002 = 19 instead of 24.5.
		{"free units on a graduated meter", []metering.Promotion{freeUnits("FREE5K", "calls", "5000", 0, true)},
			[]string{"FREE5K calls -5.5"}, "49.11"},
		// Two free_units reduce in turn: 15,500 − 14,000 = 1,500 (20 +
		// 4.5 − 1 = 23.5 off), then − 1,000 = 500, within the included
		// units (the last 1).
		{"free units stack on one meter", []metering.Promotion{
			freeUnits("A", "calls", "14000", 2, true), freeUnits("B", "calls", "1000", 1, true)},
			[]string{"A calls -23.5", "B calls -1"}, "30.11"},
		{"free units never below zero", []metering.Promotion{freeUnits("ALL", "gb", "1000000", 0, true)},
			[]string{"ALL gb -1.11"}, "53.5"},
		{"free units of a meter the plan does not price", []metering.Promotion{freeUnits("X", "storage", "10", 0, true)},
			nil, "54.61"},
		{"amount above the total", []metering.Promotion{amountOff("BIG", "1000", "USD", 0, true), promo("TEN", metering.PromotionPercentOff, "10", 0, true)},
			[]string{"BIG  -54.61", "TEN  0"}, "0"},
		{"hundred percent", []metering.Promotion{promo("FREE", metering.PromotionPercentOff, "100", 0, true)},
			[]string{"FREE  -54.61"}, "0"},
		{"amount rounded once", []metering.Promotion{amountOff("ODD", "1.005", "USD", 0, true)},
			[]string{"ODD  -1.01"}, "53.6"},
		{"trial extension changes nothing", []metering.Promotion{promo("TRIAL", metering.PromotionTrialExtension, "14", 0, true)},
			nil, "54.61"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := hybrid(t).QuoteWithPromotions(usage, tc.promos)
			if err != nil {
				t.Fatal(err)
			}
			if got := discountLines(q); fmt.Sprint(got) != fmt.Sprint(tc.lines) {
				t.Errorf("discount lines = %q; want %q", got, tc.lines)
			}
			if !q.Subtotal.Equal(d("54.61")) || !q.Total.Equal(d(tc.total)) || !q.Total.Equal(q.Subtotal.Sub(q.Discount)) {
				t.Errorf("subtotal %s discount %s total %s; want 54.61, total %s = subtotal − discount", q.Subtotal, q.Discount, q.Total, tc.total)
			}
		})
	}
}

// TestQuoteFreeUnitsNeverCharge: free units that take a volume charge
// into a dearer tier would cost more than they save; a discount line is
// never positive, so the promotion takes nothing. The volume charge is
// 1.00 a unit up to 100 units, 0.10 above.
func TestQuoteFreeUnitsNeverCharge(t *testing.T) {
	terms := metering.PlanTerms{Currency: currency(t, "USD"), Charges: []metering.Charge{{Meter: "calls", Model: metering.ModelVolume, Tiers: []metering.Tier{
		{UpTo: d("100"), UnitPrice: d("1")}, {Unbounded: true, UnitPrice: d("0.10")},
	}}}}
	for _, tc := range []struct {
		name, calls string
		promos      []metering.Promotion
		lines       []string
		total       string
	}{
		// 150 at 0.10 = 15; 90 at 1.00 = 90: 75 more, so nothing off.
		{"into a dearer tier", "150", []metering.Promotion{freeUnits("FREE60", "calls", "60", 0, true)},
			[]string{"FREE60 calls 0"}, "15"},
		// 150 → 30: 15 − 30 < 0, nothing off; the amount then applies.
		{"then an amount", "150", []metering.Promotion{freeUnits("FREE120", "calls", "120", 0, true), amountOff("TWO", "2", "USD", 0, true)},
			[]string{"FREE120 calls 0", "TWO  -2"}, "13"},
		// Within the dearer tier: 90 → 30 saves 60.
		{"within one tier", "90", []metering.Promotion{freeUnits("FREE60", "calls", "60", 0, true)},
			[]string{"FREE60 calls -60"}, "30"},
		// 150 → 50 (75 more, nothing), then 50 → 0 saves 50.
		{"in turn", "150", []metering.Promotion{freeUnits("A", "calls", "100", 2, true), freeUnits("B", "calls", "50", 1, true)},
			[]string{"A calls 0", "B calls -15"}, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := terms.QuoteWithPromotions(map[string]decimal.Decimal{"calls": d(tc.calls)}, tc.promos)
			if err != nil {
				t.Fatal(err)
			}
			if got := discountLines(q); fmt.Sprint(got) != fmt.Sprint(tc.lines) {
				t.Errorf("QuoteWithPromotions(%s calls) discount lines = %q; want %q", tc.calls, got, tc.lines)
			}
			if !q.Total.Equal(d(tc.total)) || !q.Total.Equal(q.Subtotal.Sub(q.Discount)) || q.Discount.IsNegative() {
				t.Errorf("QuoteWithPromotions(%s calls) subtotal %s discount %s total %s; want total %s = subtotal − discount", tc.calls, q.Subtotal, q.Discount, q.Total, tc.total)
			}
		})
	}
}

// TestQuoteWithoutPromotionsIsQuote: no promotions, the same quote.
func TestQuoteWithoutPromotionsIsQuote(t *testing.T) {
	usage := map[string]decimal.Decimal{"calls": d("123456.5"), "gb": d("0.001")}
	a, err1 := hybrid(t).Quote(usage)
	b, err2 := hybrid(t).QuoteWithPromotions(usage, nil)
	if err1 != nil || err2 != nil || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("QuoteWithPromotions(nil) = %v, %v; want Quote's %v, %v", b, err2, a, err1)
	}
}

// TestPromotionPercentRoundsPerCurrency: a percentage's line rounds once
// to the currency's minor unit, half away from zero.
func TestPromotionPercentRoundsPerCurrency(t *testing.T) {
	for _, tc := range []struct {
		cur, fee, pct, off string
	}{
		{"JPY", "999", "15", "150"},            // 149.85
		{"JPY", "10", "5", "1"},                // 0.5
		{"USD", "9.99", "15", "1.5"},           // 1.4985
		{"USD", "0.1", "5", "0.01"},            // 0.005
		{"USD", "0.1", "4.9", "0"},             // 0.0049
		{"KWD", "9.999", "15", "1.5"},          // 1.49985
		{"KWD", "0.01", "5", "0.001"},          // 0.0005
		{"KWD", "1.234", "33.333333", "0.411"}, // 0.41133332922
	} {
		p := metering.PlanTerms{Currency: currency(t, tc.cur), BaseFee: d(tc.fee)}
		q, err := p.QuoteWithPromotions(nil, []metering.Promotion{promo("P", metering.PromotionPercentOff, tc.pct, 0, true)})
		if err != nil {
			t.Fatal(err)
		}
		if !q.Discount.Equal(d(tc.off)) || !q.Total.Equal(d(tc.fee).Sub(d(tc.off))) {
			t.Errorf("%s %s%% of %s: discount %s total %s; want discount %s", tc.cur, tc.pct, tc.fee, q.Discount, q.Total, tc.off)
		}
	}
}

// TestQuoteWithPromotionsRefuses: an amount in another currency, a code
// given twice and a malformed promotion are errors, never a price.
func TestQuoteWithPromotionsRefuses(t *testing.T) {
	p := hybrid(t)
	for _, tc := range []struct {
		name   string
		promos []metering.Promotion
		want   error
	}{
		{"other currency", []metering.Promotion{amountOff("EURO", "5", "EUR", 0, true)}, metering.ErrPromotionCurrency},
		{"twice", []metering.Promotion{promo("A", metering.PromotionPercentOff, "5", 0, true), promo("a", metering.PromotionPercentOff, "5", 0, true)}, metering.ErrInvalidPromotion},
		{"above 100%", []metering.Promotion{promo("A", metering.PromotionPercentOff, "100.5", 0, true)}, metering.ErrInvalidPromotion},
		{"zero", []metering.Promotion{promo("A", metering.PromotionPercentOff, "0", 0, true)}, metering.ErrInvalidPromotion},
		{"no currency", []metering.Promotion{amountOff("A", "5", "", 0, true)}, metering.ErrInvalidPromotion},
		{"no meter", []metering.Promotion{freeUnits("A", "", "5", 0, true)}, metering.ErrInvalidPromotion},
		{"fractional days", []metering.Promotion{promo("A", metering.PromotionTrialExtension, "1.5", 0, true)}, metering.ErrInvalidPromotion},
		{"unknown kind", []metering.Promotion{promo("A", "free_lunch", "1", 0, true)}, metering.ErrInvalidPromotion},
	} {
		if _, err := p.QuoteWithPromotions(nil, tc.promos); !errors.Is(err, tc.want) {
			t.Errorf("%s: QuoteWithPromotions = %v; want %v", tc.name, err, tc.want)
		}
	}
}

// TestPromotionValidateNamesField: each kind's rule names the member it is
// about, so that an input check can report it as its field.
func TestPromotionValidateNamesField(t *testing.T) {
	for _, tc := range []struct {
		promo metering.Promotion
		field string
	}{
		{promo("A", metering.PromotionPercentOff, "100.5", 0, true), "value"},
		{promo("A", metering.PromotionPercentOff, "0", 0, true), "value"},
		{amountOff("A", "5", "", 0, true), "currency"},
		{freeUnits("A", "", "5", 0, true), "meter"},
		{promo("A", metering.PromotionTrialExtension, "1.5", 0, true), "value"},
		{promo("A", "free_lunch", "1", 0, true), "kind"},
	} {
		var pe *metering.PromotionError
		err := tc.promo.Validate()
		if !errors.As(err, &pe) || pe.Field != tc.field || !errors.Is(err, metering.ErrInvalidPromotion) {
			t.Errorf("Validate(%+v) = %v; want an invalid promotion of field %s", tc.promo, err, tc.field)
		}
	}
	if err := promo("A", metering.PromotionPercentOff, "100", 0, true).Validate(); err != nil {
		t.Errorf("Validate(100%%) = %v; want nil", err)
	}
}

// TestQuoteWithPromotionsInvariants: over random promotions and usage,
// the total is never below zero, Discount is the sum of the discount
// lines, every discount line is in minor units, and at most one exclusive
// promotion applies, alone.
func TestQuoteWithPromotionsInvariants(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 3))
	kinds := []string{metering.PromotionPercentOff, metering.PromotionAmountOff, metering.PromotionFreeUnits, metering.PromotionTrialExtension}
	for i := range 3000 {
		p := hybrid(t)
		usage := map[string]decimal.Decimal{"calls": decimal.NewFromInt(r.Int64N(50000)), "gb": decimal.New(r.Int64N(1e7), -6)}
		var promos []metering.Promotion
		for j := range r.IntN(5) {
			pr := promo(fmt.Sprintf("C%d", j), kinds[r.IntN(len(kinds))], "1", r.IntN(3), r.IntN(4) > 0)
			switch pr.Kind {
			case metering.PromotionPercentOff:
				pr.Value = decimal.New(r.Int64N(100_000_000)+1, -6)
			case metering.PromotionAmountOff:
				pr.Value, pr.Currency = decimal.New(r.Int64N(100_000_000)+1, -6), "USD"
			case metering.PromotionFreeUnits:
				pr.Value, pr.Meter = decimal.NewFromInt(r.Int64N(20000)+1), []string{"calls", "gb"}[r.IntN(2)]
			}
			promos = append(promos, pr)
		}
		q, err := p.QuoteWithPromotions(usage, promos)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		sum, exclusive := decimal.Zero, 0
		for _, l := range q.Lines {
			if l.Kind != metering.LineDiscount {
				continue
			}
			if l.Amount.IsPositive() || !l.Amount.Equal(l.Amount.Round(2)) {
				t.Fatalf("case %d: discount line %s; want ≤ 0 in cents", i, l.Amount)
			}
			sum = sum.Sub(l.Amount)
		}
		for _, pr := range metering.ApplyingPromotions(promos) {
			if !pr.Stackable {
				exclusive++
			}
		}
		if q.Total.IsNegative() || !q.Discount.Equal(sum) || !q.Total.Equal(q.Subtotal.Sub(q.Discount)) ||
			(exclusive > 0 && len(metering.ApplyingPromotions(promos)) != 1) {
			t.Fatalf("case %d %+v: subtotal %s discount %s (lines %s) total %s", i, promos, q.Subtotal, q.Discount, sum, q.Total)
		}
	}
}
