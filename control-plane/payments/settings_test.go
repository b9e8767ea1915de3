package payments

import (
	"errors"
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
)

// Retry days count from the first failure, so each must come after the
// one before; otherwise the later retries would be made back to back.
func TestPutSettingsRetryDaysAscending(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	admin := identity.Actor{Subject: "admin", Role: identity.RoleAdmin}
	for _, days := range [][]int32{{7, 1, 1}, {1, 1}, {3, 2}} {
		if _, err := f.svc.PutSettings(f.ctx, admin, f.issuer, Settings{Provider: "stripe", RetryDays: days, GraceDays: 3}); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutSettings(retry days %v) = %v; want ErrInvalid", days, err)
		}
	}
	if _, err := f.svc.PutSettings(f.ctx, admin, f.issuer, Settings{Provider: "stripe", RetryDays: []int32{1, 3, 5}, GraceDays: 3}); err != nil {
		t.Errorf("PutSettings(1,3,5) = %v", err)
	}
}
