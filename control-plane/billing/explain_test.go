package billing

import (
	"strings"
	"testing"

	"github.com/veil-platform/veil/metering"
)

// An explanation prints money with its currency's decimals: JPY none,
// KWD three.
func TestExplanationWritesCurrencyDecimals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		currency, amount, want, wrong string
	}{
		{"JPY", "1500", "JPY 1500 reproduced", "1500.00"},
		{"KWD", "1.25", "KWD 1.250 reproduced", "1.25\n"},
		{"EUR", "12.5", "EUR 12.50 reproduced", "12.5 "},
	} {
		inv := metering.Invoice{Currency: c.currency, Total: dec(c.amount), AmountDue: dec(c.amount), Subtotal: dec(c.amount),
			Lines: []metering.InvoiceLine{{Kind: "base_fee", Quantity: dec("1"), Amount: dec(c.amount)}}}
		e := Explanation{Invoice: Invoice{Currency: c.currency, Status: StatusOpen}, Stored: inv, Recomputed: inv}
		var out strings.Builder
		if err := e.Write(&out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), c.want) || strings.Contains(out.String(), c.wrong) {
			t.Errorf("%s explanation:\n%s\nwant %q, not %q", c.currency, out.String(), c.want, c.wrong)
		}
	}
}
