package metering_test

import (
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// TestBudgetCost: a hard budget's cost so far is what the plan's quote
// prices for the counters (base fee and usage lines, each rounded once),
// with counters at each meter's scale, whatever the charge model.
func TestBudgetCost(t *testing.T) {
	t.Parallel()
	d := decimal.RequireFromString
	usd, _ := metering.CurrencyOf("USD")
	terms := metering.PlanTerms{Currency: usd, BaseFee: d("5"), Charges: []metering.Charge{
		{Meter: "calls", Model: metering.ModelPerUnit, Included: d("100"), UnitPrice: d("0.003")},
		{Meter: "units", Model: metering.ModelGraduated, Tiers: []metering.Tier{
			{UpTo: d("10"), UnitPrice: d("1")}, {Unbounded: true, UnitPrice: d("0.5"), Flat: d("2")}}},
		{Meter: "keys", Model: metering.ModelPackage, UnitPrice: d("4"), PackageSize: d("3")},
	}}
	meters := []enforcement.MeterSpec{
		{Slug: "calls", Aggregation: enforcement.MeterCount},
		{Slug: "units", Aggregation: enforcement.MeterSum, Field: metering.FieldUnits},
		{Slug: "keys", Aggregation: enforcement.MeterUniqueCount},
	}
	b := metering.BudgetOf(d("100"), terms)
	for _, tc := range []struct {
		name     string
		counters map[string]int64
	}{
		{"nothing counted: the base fee", nil},
		{"within the included calls", map[string]int64{"calls": 100}},
		{"every model", map[string]int64{"calls": 1101, "units": 12_500_000, "keys": 4}},
		{"rounded per line", map[string]int64{"calls": 101}},
	} {
		usage := map[string]decimal.Decimal{}
		for _, m := range meters {
			usage[m.Slug] = metering.MeterOfSpec(m).Quantity(tc.counters[m.Slug])
		}
		q, err := terms.Quote(usage)
		if err != nil {
			t.Fatal(err)
		}
		got, err := metering.BudgetCost(*b, meters, tc.counters)
		if err != nil || !got.Equal(q.Subtotal) {
			t.Errorf("%s: BudgetCost = %s, %v; want the quote's subtotal %s", tc.name, got, err, q.Subtotal)
		}
	}
	// 5 + 1001 × 0.003 (3.003 → 3.00) + 10 + 2.5 × 0.5 + 2 (3.25) + 2 packages × 4: by hand.
	got, err := metering.BudgetCost(*b, meters, map[string]int64{"calls": 1101, "units": 12_500_000, "keys": 4})
	if want := d("29.25"); err != nil || !got.Equal(want) {
		t.Errorf("BudgetCost(every model) = %s, %v; want %s", got, err, want)
	}
	// A quantity the tiers do not price is an error, not a cost.
	b.Charges[1].Tiers = b.Charges[1].Tiers[:1]
	if _, err := metering.BudgetCost(*b, meters, map[string]int64{"units": 11_000_000}); err == nil {
		t.Error("BudgetCost beyond the last tier: want an error")
	}
}

// TestBudgetCostAfterPlanChange: the counters hold the whole period while
// the invoice prices each plan version's segment under its own terms; the
// gateway's cost after a change is the highest rating under the versions
// in force, so a downgrade keeps an exceeded budget exceeded, and a base
// fee after a trial's end is prorated as the invoice prorates it.
func TestBudgetCostAfterPlanChange(t *testing.T) {
	t.Parallel()
	d := decimal.RequireFromString
	usd, _ := metering.CurrencyOf("USD")
	dear := metering.PlanTerms{Currency: usd, BaseFee: d("30"), Charges: []metering.Charge{{Meter: "calls", Model: metering.ModelPerUnit, UnitPrice: d("0.10")}}}
	cheap := metering.PlanTerms{Currency: usd, BaseFee: d("3"), Charges: []metering.Charge{{Meter: "calls", Model: metering.ModelPerUnit, UnitPrice: d("0.001")}}}
	start, end := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	change := start.AddDate(0, 0, 10)
	meters := []enforcement.MeterSpec{{Slug: "calls", Aggregation: enforcement.MeterCount}}
	invoice := func(first, second metering.PlanTerms, chargedFrom time.Time, firstUsage string) decimal.Decimal {
		t.Helper()
		inv, err := metering.BuildInvoice(metering.InvoiceInput{Currency: usd, PeriodStart: start, PeriodEnd: end, CreditAvailable: decimal.Zero,
			Segments: []metering.Segment{
				{PlanVersionID: "first", From: start, To: change, Terms: first, Usage: map[string]decimal.Decimal{"calls": d(firstUsage)}, ChargedFrom: chargedFrom},
				{PlanVersionID: "second", From: change, To: end, Terms: second, Usage: map[string]decimal.Decimal{"calls": d("1000")}},
			}})
		if err != nil {
			t.Fatal(err)
		}
		return inv.Subtotal
	}
	for _, tc := range []struct {
		name          string
		first, second metering.PlanTerms
	}{{"downgrade", dear, cheap}, {"upgrade", cheap, dear}} {
		b := metering.BudgetFor(d("50"), tc.second, []metering.PlanTerms{tc.first}, start, start, end)
		cost, err := metering.BudgetCost(*b, meters, map[string]int64{"calls": 2000})
		if err != nil {
			t.Fatal(err)
		}
		// The whole period at the dearer terms: 30 + 2000 × 0.10.
		if inv := invoice(tc.first, tc.second, time.Time{}, "1000"); cost.LessThan(inv) || !cost.Equal(d("230")) {
			t.Errorf("%s: gateway cost %s, invoice subtotal %s; want 230, not below the invoice", tc.name, cost, inv)
		}
	}

	// A trial that ended at the change: the fee is the invoice's, prorated
	// from the trial's end; the trial's usage is neither billed nor in
	// these counters.
	b := metering.BudgetFor(d("50"), cheap, nil, start, change, end)
	cost, err := metering.BudgetCost(*b, meters, map[string]int64{"calls": 1000})
	if err != nil {
		t.Fatal(err)
	}
	if inv := invoice(cheap, cheap, change, "0"); !cost.Equal(inv) || !cost.Equal(d("3")) {
		t.Errorf("after a trial: gateway cost %s, invoice subtotal %s; want both 3.00 (2.00 of the fee for 20 of 30 days, 1.00 of calls)", cost, inv)
	}
}
