package metering

import (
	"testing"

	"github.com/shopspring/decimal"
)

// TestCurrencyFormat: exactly the minor unit's decimals, rounded half away
// from zero, zeros written out.
func TestCurrencyFormat(t *testing.T) {
	for _, tc := range []struct {
		code, amount, want string
	}{
		{"USD", "12.5", "12.50"},
		{"USD", "0", "0.00"},
		{"USD", "1.005", "1.01"},
		{"USD", "-1.005", "-1.01"},
		{"JPY", "1500.5", "1501"},
		{"KWD", "1.25", "1.250"},
		{"EUR", "99999999999999.999999", "100000000000000.00"},
	} {
		cur, err := CurrencyOf(tc.code)
		if err != nil {
			t.Fatal(err)
		}
		if got := cur.Format(decimal.RequireFromString(tc.amount)); got != tc.want {
			t.Errorf("%s.Format(%s) = %s; want %s", tc.code, tc.amount, got, tc.want)
		}
	}
}
