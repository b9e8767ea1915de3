package metering

import (
	"fmt"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
)

// A hard budget at the gateway (enforcement.Budget) is rated here, with
// the engine invoices use, from the period's meter counters the
// processors keep: the cost so far is a plan version's base fee (whole,
// or prorated from a trial's end) plus every charge's usage lines, each
// rounded once, before discounts, tax and credits. The counters hold the
// whole period while the invoice prices each plan version's segment under
// its own terms, so after a plan change this period the cost is the
// highest rating of the counters under any version in force since the
// billable time began. The fees are then at least the invoice's (a
// weighted mean of the versions' fees), and so is the usage whenever one
// version prices every unit at least as dearly as the others, as in a
// plain upgrade or downgrade: a downgrade does not lift a budget the
// period already exceeded. An upgrade blocks earlier than the invoice
// would (the whole period at the dearer terms); versions whose tiers
// cross (one dearer on the first units, the other on later ones) can
// rate below the invoice. Discounts are left out, which can only block
// earlier.

// BudgetOf is the record form of a hard budget of amount under terms, the
// subscription's plan version's, in its currency.
func BudgetOf(amount decimal.Decimal, terms PlanTerms) *enforcement.Budget {
	b := &enforcement.Budget{Amount: amount, Currency: terms.Currency.Code, BaseFee: terms.BaseFee,
		Charges: make([]enforcement.BudgetCharge, len(terms.Charges))}
	for i, c := range terms.Charges {
		bc := enforcement.BudgetCharge{Meter: c.Meter, Model: string(c.Model), Included: c.Included,
			UnitPrice: c.UnitPrice, PackageSize: c.PackageSize, Tiers: make([]enforcement.BudgetTier, len(c.Tiers))}
		for j, t := range c.Tiers {
			bc.Tiers[j] = enforcement.BudgetTier{UpTo: t.UpTo, Unbounded: t.Unbounded, UnitPrice: t.UnitPrice, Flat: t.Flat}
		}
		b.Charges[i] = bc
	}
	return b
}

// BudgetFor is the record form of a hard budget of amount for the period
// [start, end) whose billable time begins at from (a trial's end inside
// the period, else start): terms are the current plan version's, earlier
// those of the other versions in force since from, all in terms'
// currency. Each version's base fee is prorated from a trial's end as the
// invoice's is; the processors rate the counters under every version and
// take the highest cost (BudgetCost).
func BudgetFor(amount decimal.Decimal, terms PlanTerms, earlier []PlanTerms, start, from, end time.Time) *enforcement.Budget {
	fee := func(f decimal.Decimal) decimal.Decimal {
		if !from.After(start) || !end.After(start) {
			return f
		}
		return roundQuo(terms.Currency, f.Mul(decimal.NewFromInt(int64(end.Sub(from)))), decimal.NewFromInt(int64(end.Sub(start))))
	}
	terms.BaseFee = fee(terms.BaseFee)
	b := BudgetOf(amount, terms)
	for _, e := range earlier {
		e.BaseFee = fee(e.BaseFee)
		eb := BudgetOf(amount, e)
		b.Earlier = append(b.Earlier, enforcement.BudgetTerms{BaseFee: eb.BaseFee, Charges: eb.Charges})
	}
	return b
}

// budgetVersionTerms undoes BudgetOf for one version's terms of a budget
// in currency.
func budgetVersionTerms(currency string, b enforcement.BudgetTerms) (PlanTerms, error) {
	cur, err := CurrencyOf(currency)
	if err != nil {
		return PlanTerms{}, fmt.Errorf("budget terms: %w", err)
	}
	t := PlanTerms{Currency: cur, BaseFee: b.BaseFee, Charges: make([]Charge, len(b.Charges))}
	for i, c := range b.Charges {
		ch := Charge{Meter: c.Meter, Model: ChargeModel(c.Model), Included: c.Included, UnitPrice: c.UnitPrice, PackageSize: c.PackageSize}
		for _, tr := range c.Tiers {
			ch.Tiers = append(ch.Tiers, Tier{UpTo: tr.UpTo, Unbounded: tr.Unbounded, UnitPrice: tr.UnitPrice, Flat: tr.Flat})
		}
		t.Charges[i] = ch
	}
	return t, nil
}

// BudgetCost is the enforcement.BudgetRater of the processors and the
// control plane: the period's cost so far, the highest rating of the
// counters under b's terms and its earlier versions' (b.Earlier),
// counters being the record's meters' values in the period counter (at
// each meter's scale). A charged meter the record does not count, or
// nothing counted, is zero.
func BudgetCost(b enforcement.Budget, meters []enforcement.MeterSpec, counters map[string]int64) (decimal.Decimal, error) {
	cost := decimal.Zero
	for _, v := range append([]enforcement.BudgetTerms{{BaseFee: b.BaseFee, Charges: b.Charges}}, b.Earlier...) {
		terms, err := budgetVersionTerms(b.Currency, v)
		if err != nil {
			return decimal.Zero, err
		}
		c, err := budgetVersionCost(terms, meters, counters)
		if err != nil {
			return decimal.Zero, err
		}
		cost = decimal.Max(cost, c)
	}
	return cost, nil
}

// budgetVersionCost rates the counters under one version's terms.
func budgetVersionCost(terms PlanTerms, meters []enforcement.MeterSpec, counters map[string]int64) (decimal.Decimal, error) {
	usage := make(map[string]decimal.Decimal, len(terms.Charges))
	for _, c := range terms.Charges {
		usage[c.Meter] = decimal.Zero
		for _, m := range meters {
			if m.Slug == c.Meter {
				usage[c.Meter] = MeterOfSpec(m).Quantity(counters[m.Slug])
			}
		}
	}
	q, err := terms.Quote(usage)
	if err != nil {
		return decimal.Zero, fmt.Errorf("rate budget: %w", err)
	}
	return q.Subtotal, nil
}
