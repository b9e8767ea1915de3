package subscriptions_test

import (
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
)

// TestSyncWritesPinnedVersionMeters: a subscription's record carries the
// meters its pinned plan version prices, with each quota as an integer at
// the meter's scale (rounded down: 100.9 calls allow 100), and keeps them
// when the plan gets a new version; reconciliation rewrites meters that
// drifted.
func TestSyncWritesPinnedVersionMeters(t *testing.T) {
	f := setup(t)
	meter := func(slug, agg, field string, methods, routes, classes []string) uuid.UUID {
		t.Helper()
		var id uuid.UUID
		if err := f.Pool.QueryRow(f.Ctx, `INSERT INTO meters (api_id, slug, aggregation, field, filter_methods, filter_routes, filter_status_classes)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`, f.APIID, slug, agg, field, methods, routes, classes).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	tokens := meter("tokens", "sum", "units", []string{}, []string{"/v1/*"}, []string{})
	calls := meter("calls", "count", "", []string{"GET", "POST"}, []string{}, []string{"2xx"})
	users := meter("users", "unique_count", "key_id", []string{}, []string{}, []string{})
	credits := meter("credits", "max", "units", []string{}, []string{}, []string{})
	charge := func(version, meterID uuid.UUID, quota *string, hard bool) {
		t.Helper()
		if _, err := f.Pool.Exec(f.Ctx, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price, quota, quota_hard)
			VALUES ($1, $2, 'per_unit', 0.01, $3::numeric, $4)`, version, meterID, quota, hard); err != nil {
			t.Fatal(err)
		}
	}
	str := func(s string) *string { return &s }

	plan, err := f.Svc.CreatePlan(f.Ctx, f.Provider, f.APIID, subscriptions.PlanInput{
		Name: "Metered", Slug: "metered", Terms: subscriptions.Terms{Currency: "USD"},
	})
	if err != nil {
		t.Fatal(err)
	}
	charge(plan.Current.ID, tokens, str("1.234567"), true)
	charge(plan.Current.ID, calls, str("100.9"), false)
	charge(plan.Current.ID, users, nil, false)
	// The column's largest, which pricing now refuses: 10^20 micro-units,
	// held at the largest quota the counting script compares exactly.
	charge(plan.Current.ID, credits, str("99999999999999.999999"), false)

	other := identity.Actor{Subject: "metered-user", Role: identity.RoleConsumer, OrgID: f.Org("metered", "metered-user", "metered@example.test")}
	sub, err := f.Svc.Subscribe(f.Ctx, other, subscriptions.SubscribeInput{PlanID: plan.ID})
	if err != nil {
		t.Fatal(err)
	}
	n := func(v int64) *int64 { return &v }
	want := []enforcement.MeterSpec{
		{Slug: "calls", Aggregation: "count", Filter: enforcement.MeterFilter{Methods: []string{"GET", "POST"}, StatusClasses: []string{"2xx"}}, Quota: n(100)},
		{Slug: "credits", Aggregation: "max", Field: "units", Quota: n(enforcement.MaxMeterQuota)},
		{Slug: "tokens", Aggregation: "sum", Field: "units", Filter: enforcement.MeterFilter{Routes: []string{"/v1/*"}}, Quota: n(1_234_567), QuotaHard: true},
		{Slug: "users", Aggregation: "unique_count", Field: "key_id"},
	}
	check := func(when string) {
		t.Helper()
		if err := f.Svc.SyncSubscription(f.Ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
		rec, err := f.Store.GetSubscription(f.Ctx, sub.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(rec.Meters, want) {
			t.Fatalf("%s: record meters = %+v\nwant %+v", when, rec.Meters, want)
		}
	}
	check("subscribed")

	// A new version prices differently; the subscription keeps its own.
	next, err := f.Svc.CreateVersion(f.Ctx, f.Provider, plan.ID, subscriptions.VersionInput{Terms: subscriptions.Terms{Currency: "USD"}})
	if err != nil {
		t.Fatal(err)
	}
	charge(next.Current.ID, tokens, str("5"), false)
	check("after a new version")

	// The Starter subscription prices no meter: its record has none.
	if err := f.Svc.SyncSubscription(f.Ctx, f.Sub.ID); err != nil {
		t.Fatal(err)
	}
	if rec, err := f.Store.GetSubscription(f.Ctx, f.Sub.ID.String()); err != nil || rec.Meters != nil {
		t.Fatalf("unmetered record = %+v, %v; want no meters", rec.Meters, err)
	}

	// Meters that drifted in Redis are found and rewritten.
	if err := f.Redis.Do(f.Ctx, f.Redis.B().Hset().Key(enforcement.SubscriptionName(sub.ID.String())).FieldValue().
		FieldValue("meters", "[]").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	rep, err := f.Svc.ReconcileKeys(f.Ctx)
	if err != nil || rep.SubscriptionsDifferent != 1 || len(rep.Unhealed) != 0 {
		t.Fatalf("ReconcileKeys = %+v, %v; want one subscription different, healed", rep, err)
	}
	if rec, err := f.Store.GetSubscription(f.Ctx, sub.ID.String()); err != nil || !reflect.DeepEqual(rec.Meters, want) {
		t.Fatalf("after reconciliation: meters %+v, %v; want %+v", rec.Meters, err, want)
	}
}
