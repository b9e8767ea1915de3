package httpapi

import (
	"fmt"
	"testing"

	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/control-plane/promotions"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/metering"
)

// TestProblemsTable: every sentinel of the table, wrapped as the services
// wrap them, finds its own row; none is left to the 500 answer.
func TestProblemsTable(t *testing.T) {
	for _, p := range problems {
		for _, e := range p.errs {
			got, ok := problemOf(fmt.Errorf("do thing: %w", e))
			if !ok || got.d.Type != p.d.Type || got.d.Status != p.d.Status {
				t.Errorf("problemOf(%v) = %s %d, %v; want %s %d", e, got.d.Type, got.d.Status, ok, p.d.Type, p.d.Status)
			}
		}
	}
	for err, want := range map[error]string{
		pricing.ErrMeterSlugTaken:   "slug-taken",
		pricing.ErrFileManaged:      "file-managed",
		promotions.ErrCustomerLimit: "promotion-limit",
		promotions.ErrNotStackable:  "not-stackable",
		metering.ErrUnknownCurrency: "unknown-currency",
		errNoPlanDirectory:          "no-plan-directory",
	} {
		if got, ok := problemOf(fmt.Errorf("wrapped: %w", err)); !ok || got.d.Type != problem.TypeBase+want {
			t.Errorf("problemOf(%v) = %s, %v; want %s", err, got.d.Type, ok, want)
		}
	}
}
