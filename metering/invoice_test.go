package metering_test

import (
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

// pro is the hybrid plan's bigger version: a higher base fee, more
// included calls, cheaper tiers.
func pro(t testing.TB) metering.PlanTerms {
	return metering.PlanTerms{
		Currency: currency(t, "USD"),
		BaseFee:  d("99"),
		Charges: []metering.Charge{
			{Meter: "calls", Model: metering.ModelGraduated, Included: d("5000"), Tiers: []metering.Tier{
				{UpTo: d("50000"), UnitPrice: d("0.0015")},
				{Unbounded: true, UnitPrice: d("0.0005")},
			}},
			{Meter: "gb", Model: metering.ModelPerUnit, UnitPrice: d("0.05")},
		},
	}
}

func at(s string) time.Time {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return tm
}

func metered(kv ...string) map[string]decimal.Decimal {
	u := make(map[string]decimal.Decimal, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		u[kv[i]] = d(kv[i+1])
	}
	return u
}

// lineStrings renders lines as "kind version meter tier quantity price
// amount reference".
func lineStrings(inv metering.Invoice) []string {
	out := make([]string, len(inv.Lines))
	for i, l := range inv.Lines {
		out[i] = strings.TrimSpace(fmt.Sprintf("%s %s %s %d %s %s %s %s", l.Kind, l.PlanVersionID, l.Meter, l.Tier, l.Quantity, l.UnitPrice, l.Amount, l.Reference))
	}
	return out
}

func build(t *testing.T, in metering.InvoiceInput) metering.Invoice {
	t.Helper()
	inv, err := metering.BuildInvoice(in)
	if err != nil {
		t.Fatalf("BuildInvoice = %v", err)
	}
	if diffs := metering.Explain(inv, in); len(diffs) > 0 {
		t.Fatalf("Explain(BuildInvoice(in), in) = %+v; want none", diffs)
	}
	return inv
}

func wantLines(t *testing.T, inv metering.Invoice, want []string) {
	t.Helper()
	if got := lineStrings(inv); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// wantTotals checks subtotal, discount, tax, total, credit applied,
// amount due and credit issued, in that order.
func wantTotals(t *testing.T, inv metering.Invoice, want ...string) {
	t.Helper()
	got := []decimal.Decimal{inv.Subtotal, inv.Discount, inv.Tax, inv.Total, inv.CreditApplied, inv.AmountDue, inv.CreditIssued}
	names := []string{"subtotal", "discount", "tax", "total", "credit applied", "amount due", "credit issued"}
	for i, w := range want {
		if !got[i].Equal(d(w)) {
			t.Errorf("%s = %s; want %s", names[i], got[i], w)
		}
	}
}

// upgradeInput is March 2026 (31 days, 2,678,400 s) on the hybrid plan,
// upgraded to pro at 2026-03-20T12:34:56Z: 991,504 s left.
func upgradeInput(t *testing.T) metering.InvoiceInput {
	start, change, end := at("2026-03-01T00:00:00Z"), at("2026-03-20T12:34:56Z"), at("2026-04-01T00:00:00Z")
	return metering.InvoiceInput{
		Currency: currency(t, "USD"), PeriodStart: start, PeriodEnd: end,
		Segments: []metering.Segment{
			{PlanVersionID: "v1", From: start, To: change, Terms: hybrid(t), Usage: metered("calls", "15500", "gb", "12.345")},
			{PlanVersionID: "v2", From: change, To: end, Terms: pro(t), Usage: metered("calls", "60000", "gb", "2.5")},
		},
	}
}

// TestInvoiceMidPeriodUpgrade: a change at a known second, worked out by
// hand. The credit is 29 × 991,504 / 2,678,400 = 10.73537… → 10.74, the
// charge 99 × 991,504 / 2,678,400 = 36.64833… → 36.65; each segment's
// usage is rated by its own version on top of what the period used
// before it: the hybrid's 15,500 calls less 1,000 included, then pro's
// 60,000 calls as pro(75,500) − pro(15,500) = (75 + 10.25) − 15.75, tier
// by tier, and its 2.5 GB as 0.74 − 0.62 (14.845 GB less 12.345).
func TestInvoiceMidPeriodUpgrade(t *testing.T) {
	inv := build(t, upgradeInput(t))
	wantLines(t, inv, []string{
		"base_fee v1  0 1 29 29",
		"proration_credit v1  0 1 -10.74 -10.74",
		"proration_charge v2  0 1 36.65 36.65",
		"usage v1 calls 1 10000 0.002 20",
		"usage v1 calls 2 4500 0.001 4.5",
		"usage v1 gb 0 12.345 0.09 1.11",      // 1.11105
		"usage v2 calls 1 39500 0.0015 59.25", // 70,500 billable less 10,500
		"usage v2 calls 2 20500 0.0005 10.25",
		"usage v2 gb 0 2.5 0.05 0.12", // 0.74225 → 0.74 less 0.61725 → 0.62
	})
	wantTotals(t, inv, "150.14", "0", "0", "150.14", "0", "150.14", "0")
	if inv.Currency != "USD" {
		t.Errorf("currency = %q; want USD", inv.Currency)
	}
}

// TestInvoiceUpgradeThenDowngrade: April 2026 (30 days), hybrid → pro on
// the 11th (20 days left: 2/3) → hybrid on the 21st (10 days: 1/3). Each
// change has its pair: −29 × 2/3 = −19.333… → −19.33, +99 × 2/3 = 66;
// −99 / 3 = −33, +29 / 3 = 9.666… → 9.67.
func TestInvoiceUpgradeThenDowngrade(t *testing.T) {
	start, up, down, end := at("2026-04-01T00:00:00Z"), at("2026-04-11T00:00:00Z"), at("2026-04-21T00:00:00Z"), at("2026-05-01T00:00:00Z")
	inv := build(t, metering.InvoiceInput{
		Currency: currency(t, "USD"), PeriodStart: start, PeriodEnd: end,
		Segments: []metering.Segment{
			{PlanVersionID: "v1", From: start, To: up, Terms: hybrid(t)},
			{PlanVersionID: "v2", From: up, To: down, Terms: pro(t)},
			{PlanVersionID: "v1", From: down, To: end, Terms: hybrid(t), Usage: metered("calls", "1001")},
		},
	})
	wantLines(t, inv, []string{
		"base_fee v1  0 1 29 29",
		"proration_credit v1  0 1 -19.33 -19.33",
		"proration_charge v2  0 1 66 66",
		"proration_credit v2  0 1 -33 -33",
		"proration_charge v1  0 1 9.67 9.67",
		"usage v1 calls 1 1 0.002 0", // the period's 1,000 included, none used before: 1 billable
	})
	wantTotals(t, inv, "52.34", "0", "0", "52.34", "0", "52.34", "0")
}

// TestInvoicePlanRoundTrips: switching A → B → A back and forth for a
// second at a time does not grant each segment the included units again
// nor restart the tiers: 1,000,000 calls over 200 alternating segments
// cost what they cost on A alone (the proration of two equal fees nets to
// zero), 10 + 990,000 × 0.01 = 9,910 with 10,000 included, and as much as
// pro's graduated tiers price them in one segment.
func TestInvoicePlanRoundTrips(t *testing.T) {
	usd := currency(t, "USD")
	perUnit := metering.PlanTerms{Currency: usd, BaseFee: d("10"), Charges: []metering.Charge{
		{Meter: "calls", Model: metering.ModelPerUnit, Included: d("10000"), UnitPrice: d("0.01")},
	}}
	for _, tc := range []struct {
		name  string
		terms metering.PlanTerms
		want  string
	}{
		{"per unit", perUnit, "9910"},
		{"graduated", pro(t), "99"}, // pro(1,000,000) added below
	} {
		t.Run(tc.name, func(t *testing.T) {
			start, end := at("2026-03-01T00:00:00Z"), at("2026-04-01T00:00:00Z")
			const n = 200
			segs := make([]metering.Segment, n)
			for i := range segs {
				from := start.Add(time.Duration(i) * time.Second)
				to := from.Add(time.Second)
				if i == n-1 {
					to = end
				}
				version := []string{"A", "B"}[i%2]
				segs[i] = metering.Segment{PlanVersionID: version, From: from, To: to, Terms: tc.terms,
					Usage: metered("calls", "5000")}
			}
			want := d(tc.want)
			if c := tc.terms.Charges[0]; c.Model == metering.ModelGraduated {
				_, total, err := c.Rate(d("1000000"), usd)
				if err != nil {
					t.Fatal(err)
				}
				want = want.Add(total)
			}
			inv := build(t, metering.InvoiceInput{Currency: usd, PeriodStart: start, PeriodEnd: end, Segments: segs})
			if !inv.Total.Equal(want) {
				t.Errorf("total over %d round trips = %s; want %s, the single plan's price", n/2, inv.Total, want)
			}
		})
	}
}

// TestInvoiceAdjacentSegmentsOfOneVersion: two segments of one version
// bill as one: included units and tiers once, no proration.
func TestInvoiceAdjacentSegmentsOfOneVersion(t *testing.T) {
	start, mid, end := at("2026-04-01T00:00:00Z"), at("2026-04-11T07:00:00Z"), at("2026-05-01T00:00:00Z")
	in := metering.InvoiceInput{Currency: currency(t, "USD"), PeriodStart: start, PeriodEnd: end, Segments: []metering.Segment{
		{PlanVersionID: "v1", From: start, To: mid, Terms: hybrid(t), Usage: metered("calls", "800")},
		{PlanVersionID: "v1", From: mid, To: end, Terms: hybrid(t), Usage: metered("calls", "10700", "gb", "1")},
	}}
	wantLines(t, build(t, in), []string{
		"base_fee v1  0 1 29 29",
		"usage v1 calls 1 10000 0.002 20", // 11,500 − 1,000 included
		"usage v1 calls 2 500 0.001 0.5",
		"usage v1 gb 0 1 0.09 0.09",
	})
}

// TestInvoiceCurrencies: halves of a minor unit round away from zero in
// each currency's exponent, on the proration credit (negative) and charge
// alike. A two-day period changed at its middle: half of each fee.
func TestInvoiceCurrencies(t *testing.T) {
	for _, tc := range []struct {
		code, oldFee, newFee, price string
		want                        []string
		total                       string
	}{
		// 1001 / 2 = 500.5 → 501; 3001 / 2 = 1500.5 → 1501; 3 × 0.5 = 1.5 → 2.
		{"JPY", "1001", "3001", "0.5", []string{
			"base_fee a  0 1 1001 1001", "proration_credit a  0 1 -501 -501", "proration_charge b  0 1 1501 1501", "usage b u 0 3 0.5 2"}, "2003"},
		// 10.001 / 2 = 5.0005 → 5.001; 0.0015 → 0.002.
		{"KWD", "10.001", "20.003", "0.0005", []string{
			"base_fee a  0 1 10.001 10.001", "proration_credit a  0 1 -5.001 -5.001", "proration_charge b  0 1 10.002 10.002", "usage b u 0 3 0.0005 0.002"}, "15.004"},
		// 10.01 / 2 = 5.005 → 5.01; 0.015 → 0.02.
		{"USD", "10.01", "20.03", "0.005", []string{
			"base_fee a  0 1 10.01 10.01", "proration_credit a  0 1 -5.01 -5.01", "proration_charge b  0 1 10.02 10.02", "usage b u 0 3 0.005 0.02"}, "15.04"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			cur := currency(t, tc.code)
			terms := func(fee string) metering.PlanTerms {
				return metering.PlanTerms{Currency: cur, BaseFee: d(fee), Charges: []metering.Charge{{Meter: "u", Model: metering.ModelPerUnit, UnitPrice: d(tc.price)}}}
			}
			start, mid, end := at("2026-06-01T00:00:00Z"), at("2026-06-02T00:00:00Z"), at("2026-06-03T00:00:00Z")
			inv := build(t, metering.InvoiceInput{Currency: cur, PeriodStart: start, PeriodEnd: end, Segments: []metering.Segment{
				{PlanVersionID: "a", From: start, To: mid, Terms: terms(tc.oldFee)},
				{PlanVersionID: "b", From: mid, To: end, Terms: terms(tc.newFee), Usage: metered("u", "3")},
			}})
			wantLines(t, inv, tc.want)
			wantTotals(t, inv, tc.total, "0", "0", tc.total, "0", tc.total, "0")
		})
	}
}

// TestInvoiceProrationQuotientIsExact: 0.01 × (P/2 − 1 ns) / P is
// 0.005 − 3.3…×10⁻¹⁹: it rounds to 0.00. A quotient first rounded to 16
// places (decimal's Div) would be 0.005 and round up to 0.01.
func TestInvoiceProrationQuotientIsExact(t *testing.T) {
	usd := currency(t, "USD")
	period := 30_000_000 * time.Second // 3 × 10¹⁶ ns
	start := at("2026-01-01T00:00:00Z")
	end := start.Add(period)
	change := start.Add(period/2 + time.Nanosecond)
	inv := build(t, metering.InvoiceInput{Currency: usd, PeriodStart: start, PeriodEnd: end, Segments: []metering.Segment{
		{PlanVersionID: "free", From: start, To: change, Terms: metering.PlanTerms{Currency: usd}},
		{PlanVersionID: "paid", From: change, To: end, Terms: metering.PlanTerms{Currency: usd, BaseFee: d("0.01")}},
	}})
	wantLines(t, inv, []string{"proration_charge paid  0 1 0 0"})
}

// hybridInput is one month of the hybrid plan with 15,500 calls and
// 12.345 GB: 54.61 USD (29 + 20 + 4.5 + 1.11).
func hybridInput(t *testing.T) metering.InvoiceInput {
	start, end := at("2026-03-01T00:00:00Z"), at("2026-04-01T00:00:00Z")
	return metering.InvoiceInput{Currency: currency(t, "USD"), PeriodStart: start, PeriodEnd: end, Segments: []metering.Segment{
		{PlanVersionID: "v1", From: start, To: end, Terms: hybrid(t), Usage: metered("calls", "15500", "gb", "12.345")},
	}}
}

const hybridLines = "base_fee v1  0 1 29 29\nusage v1 calls 1 10000 0.002 20\nusage v1 calls 2 4500 0.001 4.5\nusage v1 gb 0 12.345 0.09 1.11"

// TestInvoiceTax: exclusive tax is added as a line; inclusive tax is
// stated on a line of 0 (54.61 × 20 / 120 = 9.1016… → 9.10); a reverse
// charge is a line of 0 with the mention.
func TestInvoiceTax(t *testing.T) {
	mention := "Reverse charge: VAT to be accounted for by the recipient (Article 196, Directive 2006/112/EC)"
	for _, tc := range []struct {
		name   string
		tax    metering.TaxTreatment
		line   string
		totals []string
		desc   string
	}{
		{"none", metering.TaxTreatment{}, "", []string{"54.61", "0", "0", "54.61"}, ""},
		// 54.61 × 0.2 = 10.922 → 10.92
		{"exclusive", metering.TaxTreatment{Name: "VAT", RatePercent: d("20")},
			"tax   0 54.61 0.2 10.92 VAT", []string{"54.61", "0", "10.92", "65.53"}, "VAT 20%"},
		// 54.61 × 0.075 = 4.09575 → 4.10, half away from zero
		{"exclusive with decimals", metering.TaxTreatment{Name: "GST", RatePercent: d("7.5")},
			"tax   0 54.61 0.075 4.1 GST", []string{"54.61", "0", "4.1", "58.71"}, "GST 7.5%"},
		{"inclusive", metering.TaxTreatment{Name: "VAT", RatePercent: d("20"), Inclusive: true},
			"tax   0 54.61 0 0 VAT", []string{"54.61", "0", "9.1", "54.61"}, "VAT 20% included: 9.10"},
		{"reverse charge", metering.TaxTreatment{Name: "VAT", ReverseCharge: true, Mention: mention},
			"tax   0 54.61 0 0 VAT", []string{"54.61", "0", "0", "54.61"}, mention},
		{"zero rate named", metering.TaxTreatment{Name: "Exempt"},
			"tax   0 54.61 0 0 Exempt", []string{"54.61", "0", "0", "54.61"}, "Exempt 0%"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := hybridInput(t)
			in.Tax = tc.tax
			inv := build(t, in)
			want := hybridLines
			if tc.line != "" {
				want += "\n" + tc.line
			}
			wantLines(t, inv, strings.Split(want, "\n"))
			wantTotals(t, inv, tc.totals...)
			if last := inv.Lines[len(inv.Lines)-1]; tc.desc != "" && last.Description != tc.desc {
				t.Errorf("tax line description = %q; want %q", last.Description, tc.desc)
			}
		})
	}
}

// TestInvoiceCredit: credit pays up to the total, after tax; a negative
// total issues credit instead, and no tax is charged on it.
func TestInvoiceCredit(t *testing.T) {
	vat := metering.TaxTreatment{Name: "VAT", RatePercent: d("20")}
	t.Run("partly", func(t *testing.T) {
		in := hybridInput(t)
		in.Tax, in.CreditAvailable = vat, d("10.009") // what a minor unit cannot hold stays on the balance
		inv := build(t, in)
		wantLines(t, inv, append(strings.Split(hybridLines, "\n"), "tax   0 54.61 0.2 10.92 VAT", "credit   0 1 -10 -10 applied"))
		wantTotals(t, inv, "54.61", "0", "10.92", "65.53", "10", "55.53", "0")
	})
	t.Run("fully", func(t *testing.T) {
		in := hybridInput(t)
		in.Tax, in.CreditAvailable = vat, d("500")
		inv := build(t, in)
		wantLines(t, inv, append(strings.Split(hybridLines, "\n"), "tax   0 54.61 0.2 10.92 VAT", "credit   0 1 -65.53 -65.53 applied"))
		wantTotals(t, inv, "54.61", "0", "10.92", "65.53", "65.53", "0", "0")
	})
	t.Run("negative total", func(t *testing.T) {
		in := hybridInput(t)
		in.Tax, in.CreditAvailable = vat, d("500")
		in.Adjustments = []metering.Adjustment{{ID: "adj1", Description: "Refund of an outage", Amount: d("-80.004")}}
		inv := build(t, in)
		// 54.61 − 80.00 = −25.39: no tax on a negative amount, no credit
		// applied, 25.39 issued to the balance.
		wantLines(t, inv, append(strings.Split(hybridLines, "\n"),
			"adjustment   0 1 -80 -80 adj1", "tax   0 0 0.2 0 VAT", "credit   0 1 25.39 25.39 issued"))
		wantTotals(t, inv, "-25.39", "0", "0", "-25.39", "0", "0", "25.39")
	})
}

// TestInvoicePromotions: free units used up segment by segment, then
// percentages on what remains of fees and usage; adjustments are not
// discounted. The upgrade's 16,000 free calls: all 15,500 of the first
// segment (20 + 4.5 saved), the 500 left take pro's 60,000 calls to
// 59,500: off the top, in tier 2 (0.25 saved: 500 × 0.0005).
func TestInvoicePromotions(t *testing.T) {
	in := upgradeInput(t)
	in.Promotions = []metering.Promotion{
		promo("TEN", metering.PromotionPercentOff, "10", 0, true),
		freeUnits("FREE16K", "calls", "16000", 0, true),
		freeUnits("FREEGB", "unpriced", "5", 0, true), // no segment prices it: no line
	}
	in.Adjustments = []metering.Adjustment{{ID: "adj1", Amount: d("5")}}
	inv := build(t, in)
	// The 16,000 free calls are the period's first: the hybrid's 15,500
	// (24.50 saved) and 500 of pro's, whose 59,500 then cost pro(59,500)
	// = 77.25 instead of 69.50: 24.50 − 7.75 = 16.75 saved.
	// 150.14 − 16.75 = 133.39; 10% = 13.339 → 13.34.
	wantLines(t, inv, []string{
		"base_fee v1  0 1 29 29",
		"proration_credit v1  0 1 -10.74 -10.74",
		"proration_charge v2  0 1 36.65 36.65",
		"usage v1 calls 1 10000 0.002 20",
		"usage v1 calls 2 4500 0.001 4.5",
		"usage v1 gb 0 12.345 0.09 1.11",
		"usage v2 calls 1 39500 0.0015 59.25",
		"usage v2 calls 2 20500 0.0005 10.25",
		"usage v2 gb 0 2.5 0.05 0.12",
		"discount  calls 0 1 -16.75 -16.75 FREE16K",
		"discount   0 1 -13.34 -13.34 TEN",
		"adjustment   0 1 5 5 adj1",
	})
	wantTotals(t, inv, "155.14", "30.09", "0", "125.05", "0", "125.05", "0")
}

// TestInvoiceDiscountNeverCharges: when a downgrade's credit leaves fees
// and usage at or below zero, a discount takes nothing.
func TestInvoiceDiscountNeverCharges(t *testing.T) {
	usd := currency(t, "USD")
	start, change, end := at("2026-04-01T00:00:00Z"), at("2026-04-01T00:00:01Z"), at("2026-05-01T00:00:00Z")
	// 99 − 99 × 2,591,999 / 2,592,000 = 99 − 98.99996… → 99 − 99 = 0.
	inv := build(t, metering.InvoiceInput{Currency: usd, PeriodStart: start, PeriodEnd: end,
		Segments: []metering.Segment{
			{PlanVersionID: "v2", From: start, To: change, Terms: pro(t)},
			{PlanVersionID: "free", From: change, To: end, Terms: metering.PlanTerms{Currency: usd}},
		},
		Promotions: []metering.Promotion{amountOff("FIVE", "5", "USD", 0, true)},
	})
	wantLines(t, inv, []string{"base_fee v2  0 1 99 99", "proration_credit v2  0 1 -99 -99", "discount   0 1 0 0 FIVE"})
	wantTotals(t, inv, "0", "0", "0", "0", "0", "0", "0")
}

// TestInvoiceAdjustments: a quantity is priced on top of what its period
// billed, under that period's terms; an amount is billed as it is.
func TestInvoiceAdjustments(t *testing.T) {
	in := hybridInput(t)
	in.Adjustments = []metering.Adjustment{
		// 10,500 billed (9,500 billable: 19) + 1,000 late = 11,500 (10,000
		// at 0.002 + 500 at 0.001: 20.5): 1.50 more.
		{ID: "late", Meter: "calls", Quantity: d("1000"), HasQuantity: true, Terms: hybrid(t), Billed: d("10500")},
		// 11,000 billed (20) − 600 over-counted = 10,400 (18.8): 1.20 back.
		{ID: "fix", Meter: "calls", Quantity: d("-600"), HasQuantity: true, Terms: hybrid(t), Billed: d("11000")},
		// Under the included units: nothing.
		{ID: "free", Meter: "calls", Quantity: d("10"), HasQuantity: true, Terms: hybrid(t), Billed: d("5")},
		{ID: "goodwill", Amount: d("-5.555")}, // half away from zero
	}
	inv := build(t, in)
	wantLines(t, inv, append(strings.Split(hybridLines, "\n"),
		"adjustment  calls 0 1000 0.0015 1.5 late",
		"adjustment  calls 0 -600 0.002 -1.2 fix",
		"adjustment  calls 0 10 0 0 free",
		"adjustment   0 1 -5.56 -5.56 goodwill"))
	wantTotals(t, inv, "49.35", "0", "0", "49.35", "0", "49.35", "0")
}

// TestInvoiceTrial: a trial period charges nothing, whatever it metered;
// an adjustment of an earlier period is still billed on it.
func TestInvoiceTrial(t *testing.T) {
	in := upgradeInput(t)
	in.Trial, in.CreditAvailable = true, d("100")
	in.Promotions = []metering.Promotion{amountOff("FIVE", "5", "USD", 0, true)}
	in.Tax = metering.TaxTreatment{Name: "VAT", RatePercent: d("20")}
	inv := build(t, in)
	wantLines(t, inv, []string{"tax   0 0 0.2 0 VAT"})
	wantTotals(t, inv, "0", "0", "0", "0", "0", "0", "0")

	in.Adjustments = []metering.Adjustment{{ID: "late", Amount: d("10")}}
	inv = build(t, in)
	wantLines(t, inv, []string{"adjustment   0 1 10 10 late", "tax   0 10 0.2 2 VAT", "credit   0 1 -12 -12 applied"})
	wantTotals(t, inv, "10", "0", "2", "12", "12", "0", "0")
}

// TestInvoiceTrialEndsMidPeriod: a trial that ends inside the period
// charges the base fee from its end, prorated by the second, and a change
// of version during the trial has no proration lines. March 2026 has 31
// days; the trial ends on the 10th (22 days left) before the upgrade on
// the 20th, or on the 25th (7 days left) after it.
func TestInvoiceTrialEndsMidPeriod(t *testing.T) {
	t.Run("before the change", func(t *testing.T) {
		in := upgradeInput(t)
		in.Segments[0].ChargedFrom = at("2026-03-10T00:00:00Z")
		in.Segments[0].Usage = metered("calls", "500")
		in.Segments[1].Usage = metered()
		inv := build(t, in)
		wantLines(t, inv, []string{
			"base_fee v1  0 1 20.58 20.58", // 29 × 22 / 31 = 20.5806…
			"proration_credit v1  0 1 -10.74 -10.74",
			"proration_charge v2  0 1 36.65 36.65",
		})
		wantTotals(t, inv, "46.49", "0", "0", "46.49", "0", "46.49", "0")
	})
	t.Run("after the change", func(t *testing.T) {
		in := upgradeInput(t)
		trialEnd := at("2026-03-25T00:00:00Z")
		in.Segments[0].ChargedFrom, in.Segments[1].ChargedFrom = trialEnd, trialEnd
		in.Segments[0].Usage = metered()
		in.Segments[1].Usage = metered("calls", "6000")
		inv := build(t, in)
		wantLines(t, inv, []string{
			"base_fee v2  0 1 22.35 22.35", // 99 × 7 / 31 = 22.3548…
			"usage v2 calls 1 1000 0.0015 1.5",
		})
		wantTotals(t, inv, "23.85", "0", "0", "23.85", "0", "23.85", "0")
	})
	t.Run("at the period's start", func(t *testing.T) {
		in := upgradeInput(t)
		in.Segments[0].ChargedFrom = in.PeriodStart
		inv := build(t, in)
		if l := inv.Lines[0]; l.Kind != metering.LineBaseFee || !l.Amount.Equal(d("29")) {
			t.Errorf("first line = %+v; want the full base fee of 29", l)
		}
	})
}

// TestBuildInvoiceRefuses: hostile and inconsistent inputs are refused,
// never priced.
func TestBuildInvoiceRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(in *metering.InvoiceInput)
		want   error
	}{
		{"unknown currency", func(in *metering.InvoiceInput) { in.Currency = metering.Currency{Code: "XXX", Exponent: 2} }, metering.ErrUnknownCurrency},
		{"wrong exponent", func(in *metering.InvoiceInput) { in.Currency.Exponent = 0 }, metering.ErrInvalidInvoice},
		{"empty period", func(in *metering.InvoiceInput) { in.PeriodEnd = in.PeriodStart }, metering.ErrInvalidInvoice},
		{"period too long", func(in *metering.InvoiceInput) {
			in.PeriodEnd = in.PeriodStart.AddDate(2, 0, 0)
			in.Segments[1].To = in.PeriodEnd
		}, metering.ErrInvalidInvoice},
		{"no segment", func(in *metering.InvoiceInput) { in.Segments = nil }, metering.ErrInvalidInvoice},
		{"gap", func(in *metering.InvoiceInput) { in.Segments[1].From = in.Segments[1].From.Add(time.Second) }, metering.ErrInvalidInvoice},
		{"overlap", func(in *metering.InvoiceInput) { in.Segments[0].To = in.Segments[0].To.Add(time.Second) }, metering.ErrInvalidInvoice},
		{"starts late", func(in *metering.InvoiceInput) { in.Segments[0].From = in.Segments[0].From.Add(time.Second) }, metering.ErrInvalidInvoice},
		{"ends early", func(in *metering.InvoiceInput) { in.Segments[1].To = in.Segments[1].To.Add(-time.Second) }, metering.ErrInvalidInvoice},
		{"reversed segment", func(in *metering.InvoiceInput) {
			in.Segments[0].To = in.PeriodStart
			in.Segments[1].From = in.PeriodStart
		}, metering.ErrInvalidInvoice},
		{"terms in another currency", func(in *metering.InvoiceInput) { in.Segments[1].Terms.Currency = currency(t, "EUR") }, metering.ErrInvalidInvoice},
		{"negative base fee", func(in *metering.InvoiceInput) { in.Segments[0].Terms.BaseFee = d("-1") }, metering.ErrInvalidCharge},
		{"meter charged twice", func(in *metering.InvoiceInput) {
			in.Segments[0].Terms.Charges = append(in.Segments[0].Terms.Charges, in.Segments[0].Terms.Charges[0])
		}, metering.ErrInvalidCharge},
		{"usage of an unpriced meter", func(in *metering.InvoiceInput) { in.Segments[0].Usage["nope"] = d("1") }, metering.ErrUnknownMeter},
		{"negative usage", func(in *metering.InvoiceInput) { in.Segments[0].Usage["calls"] = d("-1") }, metering.ErrNegativeQuantity},
		{"negative credit", func(in *metering.InvoiceInput) { in.CreditAvailable = d("-0.01") }, metering.ErrInvalidInvoice},
		{"tax above 100%", func(in *metering.InvoiceInput) { in.Tax = metering.TaxTreatment{Name: "X", RatePercent: d("100.0001")} }, metering.ErrInvalidInvoice},
		{"negative tax", func(in *metering.InvoiceInput) { in.Tax = metering.TaxTreatment{Name: "X", RatePercent: d("-1")} }, metering.ErrInvalidInvoice},
		{"promotion in another currency", func(in *metering.InvoiceInput) {
			in.Promotions = []metering.Promotion{amountOff("EUR5", "5", "EUR", 0, true)}
		}, metering.ErrPromotionCurrency},
		{"promotion twice", func(in *metering.InvoiceInput) {
			in.Promotions = []metering.Promotion{promo("A", metering.PromotionPercentOff, "5", 0, true), promo("a", metering.PromotionPercentOff, "5", 0, true)}
		}, metering.ErrInvalidPromotion},
		{"invalid promotion", func(in *metering.InvoiceInput) {
			in.Promotions = []metering.Promotion{promo("A", metering.PromotionPercentOff, "101", 0, true)}
		}, metering.ErrInvalidPromotion},
		{"amount adjustment with a meter", func(in *metering.InvoiceInput) {
			in.Adjustments = []metering.Adjustment{{ID: "a", Meter: "calls", Amount: d("1")}}
		}, metering.ErrInvalidInvoice},
		{"quantity adjustment with an amount", func(in *metering.InvoiceInput) {
			in.Adjustments = []metering.Adjustment{{ID: "a", Meter: "calls", HasQuantity: true, Quantity: d("1"), Amount: d("1"), Terms: hybrid(t)}}
		}, metering.ErrInvalidInvoice},
		{"adjustment of an unpriced meter", func(in *metering.InvoiceInput) {
			in.Adjustments = []metering.Adjustment{{ID: "a", Meter: "nope", HasQuantity: true, Quantity: d("1"), Terms: hybrid(t)}}
		}, metering.ErrUnknownMeter},
		{"adjustment in another currency", func(in *metering.InvoiceInput) {
			eur := hybrid(t)
			eur.Currency = currency(t, "EUR")
			in.Adjustments = []metering.Adjustment{{ID: "a", Meter: "calls", HasQuantity: true, Quantity: d("1"), Terms: eur}}
		}, metering.ErrInvalidInvoice},
		{"adjustment below zero usage", func(in *metering.InvoiceInput) {
			in.Adjustments = []metering.Adjustment{{ID: "a", Meter: "calls", HasQuantity: true, Quantity: d("-11"), Billed: d("10"), Terms: hybrid(t)}}
		}, metering.ErrNegativeQuantity},
		{"amount beyond a line", func(in *metering.InvoiceInput) {
			in.Adjustments = []metering.Adjustment{{ID: "a", Amount: d("100000000000000")}}
		}, metering.ErrInvalidInvoice},
		{"usage beyond a line", func(in *metering.InvoiceInput) { in.Segments[0].Usage["gb"] = d("1e15") }, metering.ErrInvalidInvoice},
		{"quantity finer than a line", func(in *metering.InvoiceInput) { in.Segments[0].Usage["gb"] = d("1.0000001") }, metering.ErrInvalidInvoice},
		{"unit price finer than a line", func(in *metering.InvoiceInput) {
			in.Segments[0].Terms.Charges[1].UnitPrice = d("0.0000000000001")
		}, metering.ErrInvalidInvoice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := upgradeInput(t)
			in.Segments[0].Terms, in.Segments[1].Terms = hybrid(t), pro(t) // fresh slices: changes stay in this case
			tc.change(&in)
			if inv, err := metering.BuildInvoice(in); !errors.Is(err, tc.want) {
				t.Errorf("BuildInvoice = %v, %v; want %v", lineStrings(inv), err, tc.want)
			}
		})
	}
}

// TestExplainFindsEveryDifference: a stored invoice that differs from its
// recomputation in a line's field, an amount, a missing or an extra line,
// a total or the currency is reported at that place, and only there.
func TestExplainFindsEveryDifference(t *testing.T) {
	in := upgradeInput(t)
	in.Tax, in.CreditAvailable = metering.TaxTreatment{Name: "VAT", RatePercent: d("20")}, d("10")
	good := build(t, in)
	n := len(good.Lines)
	clone := func() metering.Invoice {
		c := good
		c.Lines = append([]metering.InvoiceLine(nil), good.Lines...)
		return c
	}
	for _, tc := range []struct {
		name   string
		change func(inv *metering.Invoice)
		want   []string // "position field"
	}{
		{"amount", func(inv *metering.Invoice) { inv.Lines[3].Amount = inv.Lines[3].Amount.Add(d("0.01")) }, []string{"4 amount"}},
		{"kind", func(inv *metering.Invoice) { inv.Lines[1].Kind = metering.LineProrationCharge }, []string{"2 kind"}},
		{"plan version", func(inv *metering.Invoice) { inv.Lines[2].PlanVersionID = "v1" }, []string{"3 plan_version_id"}},
		{"meter and tier", func(inv *metering.Invoice) { inv.Lines[4].Meter, inv.Lines[4].Tier = "gb", 1 }, []string{"5 meter", "5 tier"}},
		{"quantity and unit price", func(inv *metering.Invoice) {
			inv.Lines[5].Quantity, inv.Lines[5].UnitPrice = d("12.3"), d("0.1")
		}, []string{"6 quantity", "6 unit_price"}},
		{"reference", func(inv *metering.Invoice) { inv.Lines[n-1].Reference = "x" }, []string{fmt.Sprintf("%d reference", n)}},
		{"missing line", func(inv *metering.Invoice) { inv.Lines = inv.Lines[:n-1] }, []string{fmt.Sprintf("%d line", n)}},
		{"extra line", func(inv *metering.Invoice) {
			inv.Lines = append(inv.Lines, metering.InvoiceLine{Kind: metering.LineAdjustment, Amount: d("1")})
		}, []string{fmt.Sprintf("%d line", n+1)}},
		{"total", func(inv *metering.Invoice) { inv.Total = inv.Total.Add(d("1")) }, []string{"0 total"}},
		{"every total", func(inv *metering.Invoice) {
			inv.Subtotal, inv.Discount, inv.Tax = d("1"), d("1"), d("1")
			inv.CreditApplied, inv.AmountDue, inv.CreditIssued = d("1"), d("1"), d("1")
		}, []string{"0 subtotal", "0 discount", "0 tax", "0 credit_applied", "0 amount_due", "0 credit_issued"}},
		{"currency", func(inv *metering.Invoice) { inv.Currency = "EUR" }, []string{"0 currency"}},
		// Stored amounts come back from numeric(20, 6) with trailing zeros.
		{"same number, other scale", func(inv *metering.Invoice) {
			inv.Lines[0].Amount = d("29.000000")
			inv.Total = d(inv.Total.StringFixed(6))
		}, nil},
		{"description is wording", func(inv *metering.Invoice) { inv.Lines[0].Description = "Abonnement" }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := clone()
			tc.change(&inv)
			var got []string
			for _, diff := range metering.Explain(inv, in) {
				got = append(got, fmt.Sprintf("%d %s", diff.Position, diff.Field))
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("Explain = %q; want %q", got, tc.want)
			}
		})
	}
	bad := in
	bad.Segments = nil
	if diffs := metering.Explain(good, bad); len(diffs) != 1 || diffs[0].Field != "input" || diffs[0].Recomputed == "" {
		t.Errorf("Explain of an input that does not compute = %+v; want one input difference", diffs)
	}
}

// The oracle: the invoice's rules read plainly and computed another way,
// to compare BuildInvoice with over random inputs. Money is rational
// (math/big.Rat) and rounded once, by hand, half away from zero; usage is
// priced by oracleWalk; proration is fee × whole seconds left / seconds
// of the period.

func ratOf(v decimal.Decimal) *big.Rat { return v.Rat() }

func roundRat(r *big.Rat, exp int32) decimal.Decimal {
	scaled := new(big.Rat).Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(exp)), nil)))
	q, m := new(big.Int).QuoRem(new(big.Int).Abs(scaled.Num()), scaled.Denom(), new(big.Int))
	if new(big.Int).Lsh(m, 1).Cmp(scaled.Denom()) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if scaled.Sign() < 0 {
		q.Neg(q)
	}
	return decimal.NewFromBigInt(q, -exp)
}

// expected is what an invoice must show, in the order of its lines.
type expected struct {
	fees, usage, discounts, adjustments []string // amounts; usage as usageSums lists it
	taxLine, creditLine                 string   // "" when no line
	subtotal, discount, tax, total      decimal.Decimal
	applied, due, issued                decimal.Decimal
}

type run struct {
	version  string
	from     time.Time
	terms    metering.PlanTerms
	metered  map[string]decimal.Decimal
	leftover map[string]decimal.Decimal // after free units
}

func oracleRuns(segs []metering.Segment) []*run {
	var runs []*run
	for _, s := range segs {
		if len(runs) > 0 && runs[len(runs)-1].version == s.PlanVersionID {
			last := runs[len(runs)-1]
			for m, q := range s.Usage {
				last.metered[m] = last.metered[m].Add(q)
			}
			continue
		}
		r := &run{version: s.PlanVersionID, from: s.From, terms: s.Terms, metered: map[string]decimal.Decimal{}, leftover: map[string]decimal.Decimal{}}
		for m, q := range s.Usage {
			r.metered[m] = q
		}
		runs = append(runs, r)
	}
	return runs
}

func chargeOf(terms metering.PlanTerms, meter string) (metering.Charge, bool) {
	for _, c := range terms.Charges {
		if c.Meter == meter {
			return c, true
		}
	}
	return metering.Charge{}, false
}

func walk(t *testing.T, c metering.Charge, q decimal.Decimal, cur metering.Currency) decimal.Decimal {
	v, ok := oracleWalk(c, q, cur)
	if !ok {
		t.Fatalf("oracle: %s beyond the tiers of %+v", q, c)
	}
	return v
}

// oracleUsage prices meter's usage in each run (qty of it): the period's
// units of the meter are laid end to end in time, and the units of a run
// sit at [used, used + q), where used is what the runs before it used;
// they cost what the run's version charges for the period's first
// used + q units less its first used. Included units and tiers are thus
// the period's: a unit is priced once, under the version in force when
// it was used, at its place in the period.
func oracleUsage(t *testing.T, runs []*run, meter string, cur metering.Currency, qty func(*run) decimal.Decimal) []decimal.Decimal {
	out := make([]decimal.Decimal, len(runs))
	used := decimal.Zero
	for k, r := range runs {
		out[k] = decimal.Zero
		q := qty(r)
		if c, ok := chargeOf(r.terms, meter); ok {
			out[k] = walk(t, c, used.Add(q), cur).Sub(walk(t, c, used, cur))
		}
		used = used.Add(q)
	}
	return out
}

// oracleChosen: the best exclusive promotion alone if there is one, else
// all of them by priority then lower-case code.
func oracleChosen(promos []metering.Promotion) []metering.Promotion {
	var best *metering.Promotion
	for i, p := range promos {
		if p.Stackable {
			continue
		}
		if best == nil || p.Priority > best.Priority || p.Priority == best.Priority && strings.ToLower(p.Code) < strings.ToLower(best.Code) {
			best = &promos[i]
		}
	}
	if best != nil {
		return []metering.Promotion{*best}
	}
	out := append([]metering.Promotion(nil), promos...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Priority != out[j].Priority {
			return out[i].Priority > out[j].Priority
		}
		return strings.ToLower(out[i].Code) < strings.ToLower(out[j].Code)
	})
	return out
}

func oracleInvoice(t *testing.T, in metering.InvoiceInput) expected {
	cur, exp := in.Currency, in.Currency.Exponent
	e := expected{}
	sum := new(big.Rat) // fees and usage, then adjustments
	addTo := func(list *[]string, v decimal.Decimal) {
		*list = append(*list, v.String())
		sum.Add(sum, ratOf(v))
	}
	var runs []*run
	if !in.Trial {
		runs = oracleRuns(in.Segments)
		period := in.PeriodEnd.Unix() - in.PeriodStart.Unix()
		if fee := runs[0].terms.BaseFee; fee.IsPositive() {
			addTo(&e.fees, roundRat(ratOf(fee), exp))
		}
		for k := 1; k < len(runs); k++ {
			left := big.NewRat(in.PeriodEnd.Unix()-runs[k].from.Unix(), period)
			if fee := runs[k-1].terms.BaseFee; fee.IsPositive() {
				addTo(&e.fees, roundRat(new(big.Rat).Neg(new(big.Rat).Mul(ratOf(fee), left)), exp))
			}
			if fee := runs[k].terms.BaseFee; fee.IsPositive() {
				addTo(&e.fees, roundRat(new(big.Rat).Mul(ratOf(fee), left), exp))
			}
		}
		byMeter := map[string]decimal.Decimal{}
		for _, m := range invoiceMeters {
			for k, v := range oracleUsage(t, runs, m, cur, func(r *run) decimal.Decimal { return r.metered[m] }) {
				sum.Add(sum, ratOf(v))
				byMeter[runs[k].version+" "+m] = byMeter[runs[k].version+" "+m].Add(v)
			}
		}
		e.usage = usageSums(byMeter)
	}
	e.subtotal = decimal.NewFromBigRat(sum, 12)
	disc := new(big.Rat)
	take := func(off decimal.Decimal) {
		rem := new(big.Rat).Sub(sum, disc)
		if rem.Sign() < 0 {
			rem.SetInt64(0)
		}
		if ratOf(off).Cmp(rem) > 0 {
			off = decimal.NewFromBigRat(rem, 12)
		}
		if off.IsNegative() { // a promotion never charges
			off = decimal.Zero
		}
		e.discounts = append(e.discounts, off.Neg().String())
		disc.Add(disc, ratOf(off))
	}
	if !in.Trial && len(in.Promotions) > 0 {
		chosen := oracleChosen(in.Promotions)
		for _, p := range chosen {
			if p.Kind != metering.PromotionFreeUnits {
				continue
			}
			left := func(r *run) decimal.Decimal {
				if m, seen := r.leftover[p.Meter]; seen {
					return m
				}
				return r.metered[p.Meter]
			}
			was := oracleUsage(t, runs, p.Meter, cur, left)
			pool := p.Value
			for _, r := range runs {
				m := left(r)
				less := decimal.Max(decimal.Zero, m.Sub(pool))
				pool = pool.Sub(m.Sub(less))
				r.leftover[p.Meter] = less
			}
			now := oracleUsage(t, runs, p.Meter, cur, left)
			if slices.ContainsFunc(runs, func(r *run) bool { _, ok := chargeOf(r.terms, p.Meter); return ok }) {
				saved := decimal.Zero
				for k := range runs {
					saved = saved.Add(was[k]).Sub(now[k])
				}
				take(saved)
			}
		}
		for _, kind := range []string{metering.PromotionAmountOff, metering.PromotionPercentOff} {
			for _, p := range chosen {
				if p.Kind != kind {
					continue
				}
				if kind == metering.PromotionAmountOff {
					take(roundRat(ratOf(p.Value), exp))
					continue
				}
				rem := new(big.Rat).Sub(sum, disc)
				if rem.Sign() < 0 {
					rem.SetInt64(0)
				}
				take(roundRat(new(big.Rat).Mul(rem, new(big.Rat).Quo(ratOf(p.Value), big.NewRat(100, 1))), exp))
			}
		}
	}
	for _, a := range in.Adjustments {
		if !a.HasQuantity {
			addTo(&e.adjustments, roundRat(ratOf(a.Amount), exp))
			continue
		}
		c, _ := chargeOf(a.Terms, a.Meter)
		addTo(&e.adjustments, walk(t, c, a.Billed.Add(a.Quantity), cur).Sub(walk(t, c, a.Billed, cur)))
	}
	e.subtotal = decimal.NewFromBigRat(sum, 12)
	e.discount = decimal.NewFromBigRat(disc, 12)
	return oracleTaxAndCredit(e, in)
}

func oracleTaxAndCredit(e expected, in metering.InvoiceInput) expected {
	exp := in.Currency.Exponent
	taxable := decimal.Max(decimal.Zero, e.subtotal.Sub(e.discount))
	rate := ratOf(in.Tax.RatePercent)
	e.tax = decimal.Zero
	taxLine := decimal.Zero
	switch {
	case in.Tax == metering.TaxTreatment{RatePercent: in.Tax.RatePercent} && in.Tax.RatePercent.IsZero():
	case in.Tax.ReverseCharge:
		e.taxLine = "0"
	case in.Tax.Inclusive:
		e.tax = roundRat(new(big.Rat).Quo(new(big.Rat).Mul(ratOf(taxable), rate), new(big.Rat).Add(big.NewRat(100, 1), rate)), exp)
		e.taxLine = "0"
	default:
		e.tax = roundRat(new(big.Rat).Quo(new(big.Rat).Mul(ratOf(taxable), rate), big.NewRat(100, 1)), exp)
		taxLine = e.tax
		e.taxLine = taxLine.String()
	}
	e.total = e.subtotal.Sub(e.discount).Add(taxLine)
	e.applied, e.issued = decimal.Zero, decimal.Zero
	if e.total.IsNegative() {
		e.issued = e.total.Neg()
		e.creditLine = e.issued.String()
	} else {
		// Whole minor units of the balance, at most the total.
		avail := decimal.NewFromBigInt(new(big.Int).Quo(in.CreditAvailable.Shift(exp).BigInt(), big.NewInt(1)), -exp)
		e.applied = decimal.Min(avail, e.total)
		if e.applied.IsPositive() {
			e.creditLine = e.applied.Neg().String()
		}
	}
	e.due = e.total.Sub(e.applied).Add(e.issued)
	return e
}

// observed reads an invoice into the oracle's shape.
func observed(inv metering.Invoice) expected {
	o := expected{subtotal: inv.Subtotal, discount: inv.Discount, tax: inv.Tax, total: inv.Total,
		applied: inv.CreditApplied, due: inv.AmountDue, issued: inv.CreditIssued}
	byMeter := map[string]decimal.Decimal{}
	for _, l := range inv.Lines {
		switch l.Kind {
		case metering.LineBaseFee, metering.LineProrationCredit, metering.LineProrationCharge:
			o.fees = append(o.fees, l.Amount.String())
		case metering.LineUsage:
			byMeter[l.PlanVersionID+" "+l.Meter] = byMeter[l.PlanVersionID+" "+l.Meter].Add(l.Amount)
		case metering.LineDiscount:
			o.discounts = append(o.discounts, l.Amount.String())
		case metering.LineAdjustment:
			o.adjustments = append(o.adjustments, l.Amount.String())
		case metering.LineTax:
			o.taxLine = l.Amount.String()
		case metering.LineCredit:
			o.creditLine = l.Amount.String()
		}
	}
	o.usage = usageSums(byMeter)
	return o
}

// usageSums lists what each plan version charged for each meter, over
// all its segments ("version meter amount", sorted, zeros left out): the
// lines do not say which segment they price when one version comes back.
func usageSums(byMeter map[string]decimal.Decimal) []string {
	var out []string
	for k, v := range byMeter {
		if !v.IsZero() {
			out = append(out, k+" "+v.String())
		}
	}
	slices.Sort(out)
	return out
}

func (e expected) String() string {
	return fmt.Sprintf("fees %v\nusage %v\ndiscounts %v\nadjustments %v\ntax line %q credit line %q\nsubtotal %s discount %s tax %s total %s applied %s due %s issued %s",
		e.fees, e.usage, e.discounts, e.adjustments, e.taxLine, e.creditLine, e.subtotal, e.discount, e.tax, e.total, e.applied, e.due, e.issued)
}

var invoiceMeters = []string{"calls", "gb", "ms"}

func randomTerms(r *rand.Rand, cur metering.Currency) metering.PlanTerms {
	p := metering.PlanTerms{Currency: cur}
	if r.IntN(4) != 0 {
		p.BaseFee = decimal.New(r.Int64N(1_000_000_000), -6)
	}
	for _, m := range invoiceMeters {
		if r.IntN(3) == 0 {
			continue
		}
		c := randomCharge(r, 100_000, r.IntN(2) == 0)
		c.Meter = m
		if n := len(c.Tiers); n > 0 {
			c.Tiers[n-1].Unbounded = true
		}
		p.Charges = append(p.Charges, c)
	}
	return p
}

func randomQuantity(r *rand.Rand) decimal.Decimal {
	if r.IntN(2) == 0 {
		return decimal.NewFromInt(r.Int64N(200_001))
	}
	return decimal.New(r.Int64N(200_000_000_000), -6)
}

func randomPromotions(r *rand.Rand, cur metering.Currency) []metering.Promotion {
	var out []metering.Promotion
	for i := range r.IntN(4) {
		p := metering.Promotion{ID: fmt.Sprintf("id%d", i), Code: fmt.Sprintf("P%d", i), Priority: r.IntN(3), Stackable: r.IntN(4) != 0}
		switch r.IntN(4) {
		case 0:
			p.Kind, p.Value = metering.PromotionPercentOff, decimal.New(1+r.Int64N(10_000), -2)
		case 1:
			p.Kind, p.Value, p.Currency = metering.PromotionAmountOff, decimal.New(1+r.Int64N(100_000), -3), cur.Code
		case 2:
			p.Kind, p.Value = metering.PromotionFreeUnits, decimal.New(1+r.Int64N(100_000_000_000), -6)
			p.Meter = append(invoiceMeters, "unpriced")[r.IntN(len(invoiceMeters)+1)]
		default:
			p.Kind, p.Value = metering.PromotionTrialExtension, decimal.NewFromInt(7)
		}
		out = append(out, p)
	}
	return out
}

func randomAdjustments(r *rand.Rand, cur metering.Currency) []metering.Adjustment {
	var out []metering.Adjustment
	for i := range r.IntN(3) {
		a := metering.Adjustment{ID: fmt.Sprintf("adj%d", i)}
		terms := randomTerms(r, cur)
		if r.IntN(2) == 0 && len(terms.Charges) > 0 {
			c := terms.Charges[r.IntN(len(terms.Charges))]
			a.HasQuantity, a.Meter, a.Terms, a.Billed = true, c.Meter, terms, randomQuantity(r)
			a.Quantity = randomQuantity(r)
			if r.IntN(3) == 0 { // a correction down, at most what was billed
				a.Quantity = decimal.Min(a.Quantity, a.Billed).Neg()
			}
		} else {
			a.Amount = decimal.New(r.Int64N(2_000_000_000)-1_000_000_000, -6)
		}
		out = append(out, a)
	}
	return out
}

func randomTax(r *rand.Rand) metering.TaxTreatment {
	rate := decimal.New(r.Int64N(300_001), -4)
	switch r.IntN(4) {
	case 0:
		return metering.TaxTreatment{}
	case 1:
		return metering.TaxTreatment{Name: "VAT", RatePercent: rate}
	case 2:
		return metering.TaxTreatment{Name: "VAT", RatePercent: rate, Inclusive: true}
	}
	return metering.TaxTreatment{Name: "VAT", ReverseCharge: true, Mention: "Reverse charge"}
}

// randomInvoiceInput draws a period of a month or a year cut at 0 to 3
// random seconds into segments of three versions (adjacent repeats too),
// with usage, promotions, adjustments, tax and credit.
func randomInvoiceInput(r *rand.Rand, t *testing.T) metering.InvoiceInput {
	cur := currency(t, currencies[r.IntN(len(currencies))])
	start := at("2026-01-01T00:00:00Z").Add(time.Duration(r.Int64N(365*86400)) * time.Second)
	end := start.AddDate(0, 1, 0)
	if r.IntN(5) == 0 {
		end = start.AddDate(1, 0, 0)
	}
	length := end.Unix() - start.Unix()
	cuts := []int64{0, length}
	for range r.IntN(4) {
		if c := 1 + r.Int64N(length-1); !slices.Contains(cuts, c) {
			cuts = append(cuts, c)
		}
	}
	slices.Sort(cuts)
	versions := []metering.PlanTerms{randomTerms(r, cur), randomTerms(r, cur), randomTerms(r, cur)}
	in := metering.InvoiceInput{Currency: cur, PeriodStart: start, PeriodEnd: end, Trial: r.IntN(20) == 0,
		Promotions: randomPromotions(r, cur), Adjustments: randomAdjustments(r, cur), Tax: randomTax(r)}
	for i := 1; i < len(cuts); i++ {
		v := r.IntN(len(versions))
		s := metering.Segment{PlanVersionID: fmt.Sprintf("v%d", v), Terms: versions[v],
			From: start.Add(time.Duration(cuts[i-1]) * time.Second), To: start.Add(time.Duration(cuts[i]) * time.Second),
			Usage: map[string]decimal.Decimal{}}
		for _, c := range versions[v].Charges {
			if r.IntN(4) != 0 {
				s.Usage[c.Meter] = randomQuantity(r)
			}
		}
		in.Segments = append(in.Segments, s)
	}
	if r.IntN(2) == 0 {
		in.CreditAvailable = decimal.New(r.Int64N(1_000_000_000), -6)
	}
	return in
}

// TestInvoiceMatchesOracle: thousands of random invoices equal the
// oracle's to the last digit, line by line and in every total, and hold
// the invariants: the amount due is the sum of the lines and never below
// zero, every amount is in whole minor units, discount and tax are not
// negative, the credit applied is at most what was available, and Explain
// finds nothing to say about the invoice and something about any change.
func TestInvoiceMatchesOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(16, uint64(len(t.Name()))))
	for i := range 5000 {
		in := randomInvoiceInput(r, t)
		inv, err := metering.BuildInvoice(in)
		if err != nil {
			t.Fatalf("case %d: BuildInvoice = %v", i, err)
		}
		if got, want := observed(inv).String(), oracleInvoice(t, in).String(); got != want {
			t.Fatalf("case %d: BuildInvoice =\n%s\nwant (oracle)\n%s\nlines:\n%s", i, got, want, strings.Join(lineStrings(inv), "\n"))
		}
		checkInvariants(t, i, in, inv)
		checkExplainCatches(t, i, r, in, inv)
	}
}

func checkInvariants(t *testing.T, i int, in metering.InvoiceInput, inv metering.Invoice) {
	t.Helper()
	sum := decimal.Zero
	for _, l := range inv.Lines {
		sum = sum.Add(l.Amount)
		if !l.Amount.Equal(l.Amount.Round(in.Currency.Exponent)) {
			t.Fatalf("case %d: line %s has more decimals than %s's %d", i, l, in.Currency.Code, in.Currency.Exponent)
		}
	}
	switch {
	case !inv.AmountDue.Equal(sum):
		t.Fatalf("case %d: amount due %s, lines sum to %s", i, inv.AmountDue, sum)
	case inv.AmountDue.IsNegative() || inv.Discount.IsNegative() || inv.Tax.IsNegative() || inv.CreditIssued.IsNegative():
		t.Fatalf("case %d: a negative amount due, discount, tax or credit issued: %+v", i, inv)
	case inv.CreditApplied.IsNegative() || inv.CreditApplied.GreaterThan(in.CreditAvailable):
		t.Fatalf("case %d: credit applied %s of %s available", i, inv.CreditApplied, in.CreditAvailable)
	case inv.CreditApplied.IsPositive() && inv.CreditIssued.IsPositive():
		t.Fatalf("case %d: credit both applied and issued", i)
	case in.Trial && len(in.Adjustments) == 0 && !inv.Total.IsZero():
		t.Fatalf("case %d: a trial totals %s", i, inv.Total)
	}
}

func checkExplainCatches(t *testing.T, i int, r *rand.Rand, in metering.InvoiceInput, inv metering.Invoice) {
	t.Helper()
	if diffs := metering.Explain(inv, in); len(diffs) > 0 {
		t.Fatalf("case %d: Explain(BuildInvoice(in), in) = %+v; want none", i, diffs)
	}
	if len(inv.Lines) == 0 {
		return
	}
	minor := decimal.New(1, -in.Currency.Exponent)
	j := r.IntN(len(inv.Lines))
	changed := inv
	changed.Lines = slices.Clone(inv.Lines)
	switch r.IntN(3) {
	case 0:
		changed.Lines[j].Amount = changed.Lines[j].Amount.Add(minor)
	case 1:
		changed.Lines = slices.Delete(changed.Lines, j, j+1)
	default:
		changed.Lines = slices.Insert(changed.Lines, j, metering.InvoiceLine{Kind: metering.LineAdjustment, Quantity: decimal.NewFromInt(1), UnitPrice: minor, Amount: minor, Reference: "extra"})
	}
	if diffs := metering.Explain(changed, in); len(diffs) == 0 || diffs[0].Position != j+1 {
		t.Fatalf("case %d: Explain of an invoice changed at line %d = %+v; want a difference there first", i, j+1, diffs)
	}
}

// TestInvoiceFreeUnitsNeverCharge: 60 free units of a volume charge take
// 150 units (15.00 at 0.10) down to 90 (90.00 at 1.00, the dearer tier):
// they would cost 75 more, so the promotion takes nothing.
func TestInvoiceFreeUnitsNeverCharge(t *testing.T) {
	usd := currency(t, "USD")
	start, end := at("2026-03-01T00:00:00Z"), at("2026-04-01T00:00:00Z")
	terms := metering.PlanTerms{Currency: usd, Charges: []metering.Charge{{Meter: "calls", Model: metering.ModelVolume, Tiers: []metering.Tier{
		{UpTo: d("100"), UnitPrice: d("1")}, {Unbounded: true, UnitPrice: d("0.10")},
	}}}}
	inv := build(t, metering.InvoiceInput{Currency: usd, PeriodStart: start, PeriodEnd: end,
		Segments:   []metering.Segment{{PlanVersionID: "v", From: start, To: end, Terms: terms, Usage: metered("calls", "150")}},
		Promotions: []metering.Promotion{freeUnits("FREE60", "calls", "60", 0, true)},
	})
	wantLines(t, inv, []string{"usage v calls 2 150 0.1 15", "discount  calls 0 1 0 0 FREE60"})
	wantTotals(t, inv, "15", "0", "0", "15", "0", "15", "0")
}

// benchInvoiceInput is a subscription with 5 meters of 4 tiers
// (graduated and volume alternating) changed from one version to another
// mid-month, 2 promotions, exclusive tax and some credit.
func benchInvoiceInput(b *testing.B) metering.InvoiceInput {
	usd := currency(b, "USD")
	tiers := []metering.Tier{
		{UpTo: d("1000"), UnitPrice: d("0.001")},
		{UpTo: d("100000"), UnitPrice: d("0.0008"), Flat: d("5")},
		{UpTo: d("10000000"), UnitPrice: d("0.0005"), Flat: d("10")},
		{Unbounded: true, UnitPrice: d("0.0002")},
	}
	terms := func(fee string) metering.PlanTerms {
		p := metering.PlanTerms{Currency: usd, BaseFee: d(fee)}
		for i := range 5 {
			model := metering.ModelGraduated
			if i%2 == 1 {
				model = metering.ModelVolume
			}
			p.Charges = append(p.Charges, metering.Charge{Meter: fmt.Sprintf("m%d", i), Model: model, Included: d("500"), Tiers: tiers})
		}
		return p
	}
	use := map[string]decimal.Decimal{}
	for i := range 5 {
		use[fmt.Sprintf("m%d", i)] = d("12345678.123456")
	}
	start, change, end := at("2026-03-01T00:00:00Z"), at("2026-03-20T12:34:56Z"), at("2026-04-01T00:00:00Z")
	return metering.InvoiceInput{
		Currency: usd, PeriodStart: start, PeriodEnd: end,
		Segments: []metering.Segment{
			{PlanVersionID: "v1", From: start, To: change, Terms: terms("29"), Usage: use},
			{PlanVersionID: "v2", From: change, To: end, Terms: terms("99"), Usage: use},
		},
		Promotions:      []metering.Promotion{freeUnits("FREE", "m0", "100000", 1, true), promo("TEN", metering.PromotionPercentOff, "10", 0, true)},
		Tax:             metering.TaxTreatment{Name: "VAT", RatePercent: d("20")},
		CreditAvailable: d("50"),
	}
}

// BenchmarkBuildInvoice: one subscription's invoice, as the billing run
// builds 100,000 of them.
func BenchmarkBuildInvoice(b *testing.B) {
	in := benchInvoiceInput(b)
	if _, err := metering.BuildInvoice(in); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := metering.BuildInvoice(in); err != nil {
			b.Fatal(err)
		}
	}
}
