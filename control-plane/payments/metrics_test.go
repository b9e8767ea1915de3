package payments

import (
	"bytes"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/veil-platform/veil/internal/testenv"
)

// Counters an alert watches have their series from the start, at zero, so
// that an alert on their increase fires at the first one.
func TestCountersExistAtStart(t *testing.T) {
	t.Parallel()
	set := metrics.NewSet()
	if _, err := New(Config{Pool: testenv.Postgres(t), Metrics: set}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	for _, want := range []string{
		`veil_controlplane_payment_mismatched_total{kind="payment"} 0`,
		`veil_controlplane_payment_mismatched_total{kind="refund"} 0`,
		`veil_controlplane_payment_mismatched_total{kind="dispute"} 0`,
		`veil_controlplane_payment_needs_attention_total{reason="amount_too_small"} 0`,
		`veil_controlplane_payment_needs_attention_total{reason="amount_too_large"} 0`,
		`veil_controlplane_payment_stray_charges_total 0`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, buf.String())
		}
	}
}
