package httpapi

import (
	"encoding/json"
	"strings"
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

// Credits and the revenue statement print their amounts as invoices do,
// without losing their other members.
func TestCreditAndRevenueJSONFormatAmounts(t *testing.T) {
	dec := decimal.RequireFromString
	b, err := json.Marshal(toCreditEntryJSON(billing.CreditEntry{Currency: "EUR", Kind: "goodwill", Amount: dec("5"), BalanceAfter: dec("12.5")}))
	if err != nil {
		t.Fatal(err)
	}
	if want := `"amount":"5.00","balance_after":"12.50"`; !strings.Contains(string(b), want) || !strings.Contains(string(b), `"kind":"goodwill"`) {
		t.Errorf("credit entry = %s; want %s and its kind", b, want)
	}
	fig := billing.RevenueFigures{Currency: "JPY", Invoices: 2, Gross: dec("1500"), Net: dec("1364"), PlatformFee: dec("34.1")}
	rev := billing.Revenue{Lines: []billing.RevenueLine{{Month: "2026-01", RevenueFigures: fig}}, Totals: []billing.RevenueTotal{{RevenueFigures: fig}}}
	if b, err = json.Marshal(toRevenueJSON(rev)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"month":"2026-01"`, `"invoices":2`, `"gross":"1500"`, `"platform_fee":"34"`, `"currency":"JPY"`} {
		if strings.Count(string(b), want) < 1 {
			t.Errorf("revenue = %s; want %s", b, want)
		}
	}
	if strings.Count(string(b), `"gross"`) != 2 {
		t.Errorf("revenue = %s; want one gross per line and total", b)
	}
}

func TestAdjustmentJSONFormatsAmount(t *testing.T) {
	amount, eur := decimal.RequireFromString("-1.5"), "EUR"
	b, err := json.Marshal(toAdjustmentJSON(billing.Adjustment{Amount: &amount, Currency: &eur, Reason: "outage"}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"amount":"-1.50"`) || !strings.Contains(string(b), `"reason":"outage"`) {
		t.Errorf("adjustment = %s; want amount -1.50 and its reason", b)
	}
	if b, _ = json.Marshal(toAdjustmentJSON(billing.Adjustment{})); !strings.Contains(string(b), `"amount":null`) {
		t.Errorf("quantity adjustment = %s; want amount null", b)
	}
}
