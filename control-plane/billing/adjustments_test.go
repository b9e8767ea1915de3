package billing

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// Corrections of a period made at once are checked one after the other:
// of five corrections of -60 calls of a period that billed 100, one
// passes and four would take it below zero.
func TestConcurrentCorrectionsBelowZero(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	var meter, charge uuid.UUID
	f.scan(&meter, `INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'calls', 'count') RETURNING id`, f.api)
	f.scan(&charge, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price) VALUES ($1, $2, 'per_unit', 0.01) RETURNING id`, f.version, meter)
	_, sub := f.closedPeriod()
	var period uuid.UUID
	f.scan(&period, `SELECT id FROM billing_periods WHERE subscription_id = $1`, sub)
	f.exec(`INSERT INTO usage_snapshot_lines (snapshot_id, plan_version_id, segment_start, segment_end, meter_slug, quantity)
		SELECT id, $2, $3, $4, 'calls', 100 FROM usage_snapshots WHERE billing_period_id = $1`, period, f.version, periodStart, periodStart.AddDate(0, 1, 0))
	const n = 5
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = f.svc.CreateAdjustment(f.ctx, f.provider, sub, AdjustmentInput{
				BillingPeriodID: &period, Meter: new("calls"), Quantity: new(dec("-60")), Reason: "double counted",
			})
		})
	}
	close(start)
	wg.Wait()
	passed := 0
	for _, err := range errs {
		switch {
		case err == nil:
			passed++
		case !errors.Is(err, ErrBelowZero):
			t.Fatalf("CreateAdjustment = %v; want nil or ErrBelowZero", err)
		}
	}
	if passed != 1 {
		t.Fatalf("%d of %d corrections of -60 on 100 passed; want 1 (errors %v)", passed, n, errs)
	}
}
