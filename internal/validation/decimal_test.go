package validation

import (
	"testing"

	"github.com/shopspring/decimal"
)

// TestSane: exponents up to 14 pass, above are refused, whatever the
// coefficient.
func TestSane(t *testing.T) {
	for _, tc := range []struct {
		d    decimal.Decimal
		want bool
	}{
		{decimal.New(1, 14), true},
		{decimal.New(999, 14), true},
		{decimal.RequireFromString("0.000001"), true},
		{decimal.New(1, 15), false},
		{decimal.New(1, 10000), false},
	} {
		if got := Sane(tc.d); got != tc.want {
			t.Errorf("Sane(%s) = %v; want %v", tc.d, got, tc.want)
		}
	}
}
