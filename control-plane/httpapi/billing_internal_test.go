package httpapi

import (
	"testing"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing"
)

// An invoice's amounts are answered with exactly its currency's decimals
// (what its documents print), its quantities and unit prices in full.
func TestInvoiceJSONFormatsAmounts(t *testing.T) {
	dec := decimal.RequireFromString
	for _, tt := range []struct {
		currency, amount, want string
	}{
		{"EUR", "12.5", "12.50"},
		{"EUR", "-0.1", "-0.10"},
		{"JPY", "1500", "1500"},
		{"KWD", "1.25", "1.250"},
		{"EUR", "0", "0.00"},
	} {
		inv := billing.Invoice{Currency: tt.currency, Total: dec(tt.amount), AmountDue: dec(tt.amount),
			Lines: []billing.Line{{Amount: dec(tt.amount), Quantity: dec("0.125"), UnitPrice: dec("0.0001")}}}
		out := toInvoiceJSON(inv)
		if out.Total != tt.want || out.AmountDue != tt.want || out.Lines[0].Amount != tt.want {
			t.Errorf("toInvoiceJSON(%s %s) total %s, due %s, line %s; want %s", tt.amount, tt.currency, out.Total, out.AmountDue, out.Lines[0].Amount, tt.want)
		}
		if q := out.Lines[0].Quantity.String(); q != "0.125" {
			t.Errorf("toInvoiceJSON quantity = %s; want 0.125", q)
		}
	}
}
