package metering_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

// hybrid is a plan with a base fee, a graduated meter and a per-unit one.
func hybrid(t *testing.T) metering.PlanTerms {
	return metering.PlanTerms{
		Currency: currency(t, "USD"),
		BaseFee:  d("29"),
		Charges: []metering.Charge{
			{Meter: "calls", Model: metering.ModelGraduated, Included: d("1000"), Tiers: []metering.Tier{
				{UpTo: d("10000"), UnitPrice: d("0.002")},
				{Unbounded: true, UnitPrice: d("0.001")},
			}},
			{Meter: "gb", Model: metering.ModelPerUnit, UnitPrice: d("0.09")},
		},
	}
}

// TestQuoteHybridPlan: the base fee, then each tier reached, then the
// per-unit meter, each rounded once; worked out by hand.
func TestQuoteHybridPlan(t *testing.T) {
	q, err := hybrid(t).Quote(map[string]decimal.Decimal{"calls": d("15500"), "gb": d("12.345")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"base_fee  0 1 29 29",
		"usage calls 1 10000 0.002 20", // 14,500 billable: 10,000 in tier 1
		"usage calls 2 4500 0.001 4.5", // and 4,500 in tier 2
		"usage gb 0 12.345 0.09 1.11",  // 1.11105
	}
	var got []string
	for _, l := range q.Lines {
		got = append(got, fmt.Sprintf("%s %s %d %s %s %s", l.Kind, l.Meter, l.Tier, l.Quantity, l.UnitPrice, l.Amount))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Quote lines =\n%q\nwant\n%q", got, want)
	}
	if q.Currency != "USD" || !q.Subtotal.Equal(d("54.61")) || !q.Discount.IsZero() || !q.Total.Equal(d("54.61")) {
		t.Errorf("Quote = %s subtotal %s discount %s total %s; want USD 54.61, 0, 54.61", q.Currency, q.Subtotal, q.Discount, q.Total)
	}
}

// TestQuoteWithoutUsage: a meter with no usage counts zero, so only the
// base fee is owed.
func TestQuoteWithoutUsage(t *testing.T) {
	q, err := hybrid(t).Quote(nil)
	if err != nil || len(q.Lines) != 1 || q.Lines[0].Kind != metering.LineBaseFee || !q.Total.Equal(d("29")) {
		t.Errorf("Quote(nil) = %+v, %v; want the base fee alone", q, err)
	}
}

// TestQuoteRefuses: usage of a meter the plan does not price, a negative
// quantity or a negative base fee is an error, never a price.
func TestQuoteRefuses(t *testing.T) {
	p := hybrid(t)
	if _, err := p.Quote(map[string]decimal.Decimal{"storage": d("1")}); !errors.Is(err, metering.ErrUnknownMeter) {
		t.Errorf("Quote(unknown meter) = %v; want ErrUnknownMeter", err)
	}
	if _, err := p.Quote(map[string]decimal.Decimal{"gb": d("-1")}); !errors.Is(err, metering.ErrNegativeQuantity) {
		t.Errorf("Quote(negative usage) = %v; want ErrNegativeQuantity", err)
	}
	p.BaseFee = d("-1")
	if _, err := p.Quote(nil); !errors.Is(err, metering.ErrInvalidCharge) {
		t.Errorf("Quote(negative base fee) = %v; want ErrInvalidCharge", err)
	}
}
