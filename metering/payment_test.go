package metering

import (
	"errors"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

func TestMinorUnits(t *testing.T) {
	for _, tc := range []struct {
		amount, currency string
		want             int64
		err              error
	}{
		{"12.50", "EUR", 1250, nil},
		{"12.5", "EUR", 1250, nil},
		{"0.01", "USD", 1, nil},
		{"1500", "JPY", 1500, nil},
		{"1.250", "KWD", 1250, nil},
		{"1.255", "KWD", 1255, nil},
		{"0", "EUR", 0, nil},
		{"12.505", "EUR", 0, ErrAmountNotRepresentable},
		{"1500.5", "JPY", 0, ErrAmountNotRepresentable},
		{"1.2501", "KWD", 0, ErrAmountNotRepresentable},
		{"-1.00", "EUR", 0, ErrAmountNotRepresentable},
		{"99999999999999999999", "EUR", 0, ErrAmountNotRepresentable},
		{"1.00", "XXX", 0, ErrUnknownCurrency},
	} {
		got, err := MinorUnits(decimal.RequireFromString(tc.amount), tc.currency)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("MinorUnits(%s %s) = %v, %v; want %v", tc.amount, tc.currency, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != (Money{Minor: tc.want, Currency: tc.currency}) {
			t.Errorf("MinorUnits(%s %s) = %+v, %v; want %d", tc.amount, tc.currency, got, err, tc.want)
		}
		if !got.Decimal().Equal(decimal.RequireFromString(tc.amount)) {
			t.Errorf("MinorUnits(%s %s).Decimal() = %s; want the amount back", tc.amount, tc.currency, got.Decimal())
		}
	}
}

func TestMinorUnitsString(t *testing.T) {
	for m, want := range map[Money]string{
		{1250, "EUR"}: "EUR 12.50", {1500, "JPY"}: "JPY 1500", {1250, "KWD"}: "KWD 1.250",
	} {
		if got := m.String(); got != want {
			t.Errorf("%#v.String() = %q; want %q", m, got, want)
		}
	}
}

func TestPaymentIdempotencyKey(t *testing.T) {
	for key, ok := range map[string]bool{
		"veil-inv-0b7e-a1": true, strings.Repeat("k", 255): true,
		"": false, strings.Repeat("k", 256): false, "veil inv": false, "veil-inv-é": false, "a\nb": false,
	} {
		if err := CheckIdempotencyKey(key); (err == nil) != ok || (err != nil && !errors.Is(err, ErrBadIdempotencyKey)) {
			t.Errorf("CheckIdempotencyKey(%q) = %v; want ok %v", key, err, ok)
		}
	}
}

func TestPaymentCollectInputValidate(t *testing.T) {
	good := CollectInput{InvoiceID: "inv", InvoiceNumber: "A-1", Amount: Money{100, "EUR"}, IdempotencyKey: "veil-inv-inv-a1"}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate() = %v; want nil", err)
	}
	for name, tc := range map[string]struct {
		mod  func(*CollectInput)
		want error
	}{
		"zero amount": {func(in *CollectInput) { in.Amount.Minor = 0 }, ErrAmountNotRepresentable},
		"negative":    {func(in *CollectInput) { in.Amount.Minor = -5 }, ErrAmountNotRepresentable},
		"currency":    {func(in *CollectInput) { in.Amount.Currency = "eur" }, ErrUnknownCurrency},
		"no invoice":  {func(in *CollectInput) { in.InvoiceNumber = "" }, ErrPaymentInvalid},
		"no key":      {func(in *CollectInput) { in.IdempotencyKey = "" }, ErrBadIdempotencyKey},
	} {
		in := good
		tc.mod(&in)
		if err := in.Validate(); !errors.Is(err, tc.want) {
			t.Errorf("%s: Validate() = %v; want %v", name, err, tc.want)
		}
	}
}

func TestPaymentProviderError(t *testing.T) {
	err := error(&ProviderError{Provider: "stripe", Op: "collect invoice A-1", Kind: ErrPaymentRetryable,
		HTTPStatus: 429, Code: "rate_limit", RequestID: "req_1", Message: "slow down"})
	if !errors.Is(err, ErrPaymentRetryable) || errors.Is(err, ErrPaymentInvalid) {
		t.Errorf("errors.Is(%v) does not follow Kind", err)
	}
	want := "stripe collect invoice A-1: payment provider unavailable, retry (status 429, code rate_limit, request req_1): slow down"
	if err.Error() != want {
		t.Errorf("Error() = %q; want %q", err.Error(), want)
	}
}
