package bench

import (
	"bytes"
	"strings"
	"testing"

	"github.com/veil-platform/veil/internal/testenv"
)

// TestBilling runs veil bench billing at 500 subscriptions, so that the
// benchmark keeps working: every subscription gets one finalized invoice,
// the numbers run gaplessly per issuer, and every sampled invoice
// explains with no difference (Billing fails otherwise).
func TestBilling(t *testing.T) {
	var out bytes.Buffer
	fig, err := Billing(t.Context(), BillingConfig{
		PostgresURL:    testenv.Env("VEIL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		ClickHouseAddr: testenv.Env("VEIL_TEST_CLICKHOUSE_ADDR", "127.0.0.1:9000"),
		Subscriptions:  500, Events: 10, Providers: 3, Workers: 2, Sample: 500,
		Logger: testenv.Logger(t),
	}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if fig.Invoices != 500 || fig.Explained != 500 || fig.Events != 5000 {
		t.Errorf("invoices %d, explained %d, events %d; want 500, 500, 5000", fig.Invoices, fig.Explained, fig.Events)
	}
	// The mix bills every kind of line the plans, promotions, plan
	// changes and tax rules make.
	for _, kind := range []string{"base_fee", "usage", "discount", "proration_credit", "proration_charge", "tax"} {
		if fig.LineKinds[kind] == 0 {
			t.Errorf("no %s line among %v", kind, fig.LineKinds)
		}
	}
	if !strings.Contains(out.String(), `"invoices_per_s"`) {
		t.Errorf("no JSON line in\n%s", out.String())
	}
	t.Log(out.String())
}
