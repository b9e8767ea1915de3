package main

import (
	"io"
	"os"
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
			billingGrace: time.Hour, billingEvery: time.Minute, outlookEvery: time.Minute, budgetsEvery: time.Minute, rescueAfter: time.Hour,
			billingSnapshotSource: "rollup", payments: paymentFlags{every: time.Minute},
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
		"--outlook-interval":         func(c *controlPlaneFlags) { c.outlookEvery = 0 },
		"--budgets-interval":         func(c *controlPlaneFlags) { c.budgetsEvery = 0 },
		"--billing-grace":            func(c *controlPlaneFlags) { c.billingGrace = 0 },
		"--billing-review":           func(c *controlPlaneFlags) { c.billingReview = -time.Second },
		"--billing-snapshot-source":  func(c *controlPlaneFlags) { c.billingSnapshotSource = "rolup" },
		"--payments-interval":        func(c *controlPlaneFlags) { c.payments.every = 0 },
	} {
		cp := valid()
		set(&cp)
		if err := cp.validate(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("validate() with %s not positive = %v; want an error naming it", flag, err)
		}
	}
}

// TestBillingSnapshotSource: VEIL_BILLING_SNAPSHOT_SOURCE takes rollup
// (the default) and base, and nothing else, whatever its case.
func TestBillingSnapshotSource(t *testing.T) {
	for value, ok := range map[string]bool{"": true, "rollup": true, "base": true, "Base": false, "usage_events": false, " base": false} {
		t.Setenv("VEIL_BILLING_SNAPSHOT_SOURCE", value)
		if value == "" {
			os.Unsetenv("VEIL_BILLING_SNAPSHOT_SOURCE")
		}
		var cp controlPlaneFlags
		f := newFlags("control-plane", "", io.Discard)
		cp.register(f, true)
		if err := f.Parse(nil); err != nil {
			t.Fatal(err)
		}
		cp.reconcileEvery, cp.sweepEvery, cp.keyReconcileEvery, cp.maintenanceEvery = time.Minute, time.Minute, time.Minute, time.Minute
		cp.periodRollEvery, cp.usageReconcileEvery, cp.billingEvery = time.Minute, time.Minute, time.Minute
		err := cp.validate()
		if (err == nil) != ok {
			t.Errorf("VEIL_BILLING_SNAPSHOT_SOURCE=%q: validate() = %v; want ok %v", value, err, ok)
		}
		if value == "" && cp.billingSnapshotSource != "rollup" {
			t.Errorf("default source %q; want rollup", cp.billingSnapshotSource)
		}
	}
}
