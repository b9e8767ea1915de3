package budgets

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/budgets/internal/db"
)

// TestHardBudgetMailNamesTheGatewaysCost: a hard budget's email says the
// gateway blocks on the usage and base fee before discounts and tax, not
// on the cost the notice reports, and that a plan change re-rates.
func TestHardBudgetMailNamesTheGatewaysCost(t *testing.T) {
	sub := uuid.New()
	for _, basis := range []string{BasisActual, BasisProjected} {
		_, text := budgetMail(db.BudgetNoticeTargetRow{SubscriptionID: &sub, Currency: "USD", Amount: decimal.NewFromInt(100), Hard: true, ApiName: "Maps"},
			EmailArgs{Notice: Notice{SubscriptionID: &sub, Threshold: 100, Basis: basis, Amount: decimal.NewFromInt(100), Cost: decimal.NewFromInt(101), Currency: "USD"}})
		for _, want := range []string{"before discounts and tax", "plan change"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s hard budget email lacks %q:\n%s", basis, want, text)
			}
		}
	}
}
