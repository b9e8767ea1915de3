package httpapi

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/veil-platform/veil/control-plane/billing"
)

// Analytics whose cost by day spans a currency change answer 422 with
// the change in the detail, not a 500.
func TestCurrencyChangeIsAProblem(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("price usage by day: %w", fmt.Errorf("%w: USD from 2026-10-01T00:00:00Z, EUR now", billing.ErrCurrencyChange))
	p, ok := problemOf(err)
	if !ok || p.d.Status != http.StatusUnprocessableEntity || p.d.Type == "" {
		t.Fatalf("problemOf(%v) = %+v, %v; want a 422 problem", err, p.d, ok)
	}
}
