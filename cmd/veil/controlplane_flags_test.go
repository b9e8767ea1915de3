package main

import (
	"strings"
	"testing"
	"time"
)

// TestControlPlaneValidateIntervals: each periodic job's interval is
// refused at start when it is not positive, naming its flag.
func TestControlPlaneValidateIntervals(t *testing.T) {
	valid := func() controlPlaneFlags {
		return controlPlaneFlags{
			reconcileEvery: time.Minute, sweepEvery: time.Minute, keyReconcileEvery: time.Minute,
			maintenanceEvery: time.Minute, periodRollEvery: time.Minute, usageReconcileEvery: time.Minute,
			billingGrace: time.Hour, billingEvery: time.Minute, rescueAfter: time.Hour,
		}
	}
	if err := valid().validate(); err != nil {
		t.Fatalf("validate() = %v; want nil", err)
	}
	for flag, set := range map[string]func(*controlPlaneFlags){
		"--reconcile-interval":       func(c *controlPlaneFlags) { c.reconcileEvery = 0 },
		"--approval-sweep-interval":  func(c *controlPlaneFlags) { c.sweepEvery = -time.Second },
		"--key-reconcile-interval":   func(c *controlPlaneFlags) { c.keyReconcileEvery = 0 },
		"--key-maintenance-interval": func(c *controlPlaneFlags) { c.maintenanceEvery = 0 },
		"--period-roll-interval":     func(c *controlPlaneFlags) { c.periodRollEvery = 0 },
		"--usage-reconcile-interval": func(c *controlPlaneFlags) { c.usageReconcileEvery = 0 },
		"--billing-interval":         func(c *controlPlaneFlags) { c.billingEvery = 0 },
		"--billing-grace":            func(c *controlPlaneFlags) { c.billingGrace = 0 },
		"--billing-review":           func(c *controlPlaneFlags) { c.billingReview = -time.Second },
	} {
		cp := valid()
		set(&cp)
		if err := cp.validate(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("validate() with %s not positive = %v; want an error naming it", flag, err)
		}
	}
}
