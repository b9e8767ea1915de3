package metering

import (
	"fmt"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
)

// A hard budget at the gateway (enforcement.Budget) is rated here, with
// the engine invoices use, from the period's meter counters the
// processors keep: the cost so far is the plan version's base fee (whole)
// plus every charge's usage lines, each rounded once, before discounts,
// tax and credits. Leaving discounts out can only block earlier than the
// invoice would, never later: a cautious bound for a limit on spending.

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

// budgetTerms undoes BudgetOf.
func budgetTerms(b enforcement.Budget) (PlanTerms, error) {
	cur, err := CurrencyOf(b.Currency)
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
// control plane: the period's cost so far under b's terms, counters being
// the record's meters' values in the period counter (at each meter's
// scale). A charged meter the record does not count, or nothing counted,
// is zero.
func BudgetCost(b enforcement.Budget, meters []enforcement.MeterSpec, counters map[string]int64) (decimal.Decimal, error) {
	terms, err := budgetTerms(b)
	if err != nil {
		return decimal.Zero, err
	}
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
