package stripepay

import (
	"errors"
	"strings"
	"testing"

	"github.com/veil-platform/veil/metering"
)

func TestStripeMinorAmounts(t *testing.T) {
	for _, tc := range []struct {
		in       metering.Money
		want     int64
		currency string
		err      error
	}{
		{metering.Money{Minor: 1250, Currency: "EUR"}, 1250, "eur", nil},
		{metering.Money{Minor: 1500, Currency: "JPY"}, 1500, "jpy", nil},
		{metering.Money{Minor: 1250, Currency: "KWD"}, 1250, "kwd", nil},
		{metering.Money{Minor: 5120, Currency: "BHD"}, 5120, "bhd", nil},
		{metering.Money{Minor: 500, Currency: "ISK"}, 50000, "isk", nil},
		{metering.Money{Minor: 1255, Currency: "KWD"}, 0, "", metering.ErrAmountNotRepresentable},
		{metering.Money{Minor: 1 << 62, Currency: "ISK"}, 0, "", metering.ErrAmountNotRepresentable},
		{metering.Money{Minor: -1, Currency: "EUR"}, 0, "", metering.ErrAmountNotRepresentable},
		{metering.Money{Minor: 1, Currency: "XTS"}, 0, "", metering.ErrUnknownCurrency},
	} {
		got, cur, err := toStripeAmount(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("toStripeAmount(%v) = %d, %v; want %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want || cur != tc.currency {
			t.Errorf("toStripeAmount(%v) = %d %s, %v; want %d %s", tc.in, got, cur, err, tc.want, tc.currency)
		}
		if back := fromStripeAmount(got, cur); back != tc.in {
			t.Errorf("fromStripeAmount(%d, %s) = %v; want %v", got, cur, back, tc.in)
		}
	}
}

func TestStripeRedact(t *testing.T) {
	in := `Invalid API Key provided: sk_live_abcDEF123; whsec_zzz9 pi_3Abc_secret_Xyz9 rk_test_q1 ` +
		`{"client_secret": "anything at all", "id": "pi_3Abc"}`
	got := redact(in)
	for _, secret := range []string{"sk_live_abc", "whsec_zzz", "_secret_Xyz", "rk_test_q", "anything at all"} {
		if strings.Contains(got, secret) {
			t.Errorf("redact(...) = %q; still holds %q", got, secret)
		}
	}
	if !strings.Contains(got, `"id": "pi_3Abc"`) {
		t.Errorf("redact(...) = %q; removed an id that is no secret", got)
	}
}
