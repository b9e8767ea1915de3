package drift

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/veil-platform/veil/internal/enforcement"
)

// TestCheckMeters: with the request counter in sync, a meter counter that
// disagrees with ClickHouse over the same rows is reported; a sum is
// healed from ClickHouse, and the heal applies the meter's hard quota (the
// block and the thresholds), while a unique_count is reported unhealed; a
// meter that agrees is not reported, and a second run finds only what
// could not be healed.
func TestCheckMeters(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	id := f.sub.id.String()
	counter := enforcement.PeriodCounterName(id, f.sub.start)
	f.setRedis(map[string]string{"0": "16", "1": "10"}, eventRequests, eventUnitsMicro, "m:calls", "12", "m:units", "9000000")
	f.do(f.redis.B().Sadd().Key(enforcement.MeterSetName(counter, "keys")).Member("k-extra").Build())
	f.record(f.sub.start, -1, false)
	f.do(f.redis.B().Hset().Key(enforcement.SubscriptionName(id)).FieldValue().FieldValue("meters", `[`+
		`{"slug":"calls","aggregation":"count","field":"","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false},`+
		`{"slug":"units","aggregation":"sum","field":"units","filter":{"methods":[],"routes":[],"status_classes":[]},"quota":"10000000","quota_hard":true},`+
		`{"slug":"keys","aggregation":"unique_count","field":"key_id","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false}]`).Build())

	rep := f.run()
	if got, want := countsOf(rep), (counts{checked: 1, unhealed: 1}); got != want {
		t.Fatalf("Check() = %+v, unhealed %v; want %+v: requests in sync, the unique_count unhealed", got, rep.Unhealed, want)
	}
	want := []MeterDrifted{
		{SubscriptionID: f.sub.id, PeriodStart: f.sub.start, Meter: "keys", Redis: "1", ClickHouse: "0"},
		{SubscriptionID: f.sub.id, PeriodStart: f.sub.start, Meter: "units", Redis: "9", ClickHouse: "10.250001", Healed: true},
	}
	if len(rep.MeterDrift) != 2 || rep.MeterDrift[0] != want[0] || rep.MeterDrift[1] != want[1] {
		t.Fatalf("Check().MeterDrift = %+v\nwant %+v", rep.MeterDrift, want)
	}
	if !strings.Contains(rep.Unhealed[0].Reason, "keys") {
		t.Errorf("unhealed = %+v; want the keys meter named", rep.Unhealed)
	}
	if got := f.hash(counter)["m:units"]; got != "10250001" {
		t.Errorf("m:units after the heal = %q; want 10250001", got)
	}
	if !f.blocked() {
		t.Error("not blocked: the healed units meter passes its hard quota of 10")
	}
	if lines := f.outbox(); len(lines) != 3 || !strings.HasSuffix(lines[2], "|100|10000000|10250001|1|units") {
		t.Errorf("outbox = %q; want the units meter's 80, 90 and 100%%", lines)
	}
	if g := f.gauge("veil_controlplane_usage_meter_drift_meters"); g != "2" {
		t.Errorf("veil_controlplane_usage_meter_drift_meters = %q; want 2", g)
	}

	rep = f.run()
	if len(rep.MeterDrift) != 1 || rep.MeterDrift[0] != want[0] || rep.Drifted != 0 {
		t.Fatalf("second Check().MeterDrift = %+v; want only the unique_count", rep.MeterDrift)
	}
}

// TestCheckMetersWaitsForClickHouse: a meter counter is not compared
// while a watermark is ahead of ClickHouse (rows Redis applied and
// ClickHouse does not hold yet).
func TestCheckMetersWaitsForClickHouse(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	id := f.sub.id.String()
	f.setRedis(map[string]string{"0": "17", "1": "10"}, eventRequests, eventUnitsMicro, "m:calls", "13")
	f.record(f.sub.start, -1, false)
	f.do(f.redis.B().Hset().Key(enforcement.SubscriptionName(id)).FieldValue().FieldValue("meters",
		`[{"slug":"calls","aggregation":"count","field":"","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false}]`).Build())
	if rep := f.run(); len(rep.MeterDrift) != 0 || len(rep.Unhealed) != 0 {
		t.Fatalf("Check() = drift %+v, unhealed %+v; want nothing while ClickHouse is behind", rep.MeterDrift, rep.Unhealed)
	}
	if got := f.hash(enforcement.PeriodCounterName(id, f.sub.start))["m:calls"]; got != "13" {
		t.Fatalf("m:calls = %q; want 13 untouched", got)
	}
}

// TestCheckMetersFromThePlanChange: a plan change keeps the period, and
// the processors count the new version's meters only from then on; the
// meter is compared with ClickHouse from when the version took effect
// (its first history row), so the calls before the change do not heal it
// upward.
func TestCheckMetersFromThePlanChange(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	id := f.sub.id.String()
	var v2 uuid.UUID
	f.exec(`INSERT INTO plan_versions (plan_id, version, type, currency, quota_requests, quota_hard, created_by)
		SELECT plan_id, 2, type, currency, quota_requests, quota_hard, created_by FROM plan_versions WHERE id = $1 RETURNING id`, &v2, f.versionID)
	changed := f.sub.start.Add(9*time.Minute + 30*time.Second)
	for _, h := range []struct {
		version uuid.UUID
		at      time.Time
	}{{f.versionID, f.sub.start}, {v2, changed}, {v2, changed.Add(time.Minute)}} {
		var n int64
		f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
			VALUES ($1, $2, 'active', $3, 'consumer-user') RETURNING id`, &n, f.sub.id, h.version, h.at)
	}
	var got uuid.UUID
	f.exec(`UPDATE subscriptions SET plan_version_id = $2 WHERE id = $1 RETURNING plan_version_id`, &got, f.sub.id, v2)
	// The six admitted calls after the change (minutes 10 to 15), of 12.
	f.setRedis(map[string]string{"0": "16", "1": "10"}, eventRequests, eventUnitsMicro, "m:calls", "6")
	f.record(f.sub.start, -1, false)
	f.do(f.redis.B().Hset().Key(enforcement.SubscriptionName(id)).FieldValue().FieldValue("meters",
		`[{"slug":"calls","aggregation":"count","field":"","filter":{"methods":[],"routes":[],"status_classes":[]},"quota":"10","quota_hard":true}]`).Build())
	if rep := f.run(); len(rep.MeterDrift) != 0 || len(rep.Unhealed) != 0 {
		t.Fatalf("Check() = drift %+v, unhealed %+v; want none: the meter counts from the change", rep.MeterDrift, rep.Unhealed)
	}
	if got := f.hash(enforcement.PeriodCounterName(id, f.sub.start))["m:calls"]; got != "6" || f.blocked() {
		t.Fatalf("m:calls = %q, blocked %v; want 6 untouched, not blocked", got, f.blocked())
	}
}

// TestCheckMetersChargedAcrossThePlanChange: when both versions charge the
// meter, the record names it the whole period and the processors count it
// from the period's start: the meter is compared over the whole period, so
// the calls before the change are kept, not healed away.
func TestCheckMetersChargedAcrossThePlanChange(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	id := f.sub.id.String()
	var meter, v2 uuid.UUID
	f.exec(`INSERT INTO meters (api_id, slug, aggregation)
		SELECT p.api_id, 'calls', 'count' FROM plan_versions v JOIN plans p ON p.id = v.plan_id WHERE v.id = $1 RETURNING id`, &meter, f.versionID)
	f.exec(`INSERT INTO plan_versions (plan_id, version, type, currency, quota_requests, quota_hard, created_by)
		SELECT plan_id, 2, type, currency, quota_requests, quota_hard, created_by FROM plan_versions WHERE id = $1 RETURNING id`, &v2, f.versionID)
	// The fixture's subscription already uses version 1, which is frozen
	// then: its charge is written with the guard off, as if it had always
	// been there.
	if _, err := f.pool.Exec(f.ctx, `ALTER TABLE plan_version_charges DISABLE TRIGGER plan_version_charges_immutable`); err != nil {
		t.Fatal(err)
	}
	for _, v := range []uuid.UUID{f.versionID, v2} {
		var c uuid.UUID
		f.exec(`INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price) VALUES ($1, $2, 'per_unit', 0.01) RETURNING id`, &c, v, meter)
	}
	if _, err := f.pool.Exec(f.ctx, `ALTER TABLE plan_version_charges ENABLE TRIGGER plan_version_charges_immutable`); err != nil {
		t.Fatal(err)
	}
	changed := f.sub.start.Add(9*time.Minute + 30*time.Second)
	for _, h := range []struct {
		version uuid.UUID
		at      time.Time
	}{{f.versionID, f.sub.start}, {v2, changed}} {
		var n int64
		f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
			VALUES ($1, $2, 'active', $3, 'consumer-user') RETURNING id`, &n, f.sub.id, h.version, h.at)
	}
	var got uuid.UUID
	f.exec(`UPDATE subscriptions SET plan_version_id = $2 WHERE id = $1 RETURNING plan_version_id`, &got, f.sub.id, v2)
	// All twelve admitted calls of the period.
	f.setRedis(map[string]string{"0": "16", "1": "10"}, eventRequests, eventUnitsMicro, "m:calls", "12")
	f.record(f.sub.start, -1, false)
	f.do(f.redis.B().Hset().Key(enforcement.SubscriptionName(id)).FieldValue().FieldValue("meters",
		`[{"slug":"calls","aggregation":"count","field":"","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false}]`).Build())
	if rep := f.run(); len(rep.MeterDrift) != 0 || len(rep.Unhealed) != 0 {
		t.Fatalf("Check() = drift %+v, unhealed %+v; want none: both versions charge the meter", rep.MeterDrift, rep.Unhealed)
	}
	if got := f.hash(enforcement.PeriodCounterName(id, f.sub.start))["m:calls"]; got != "12" {
		t.Fatalf("m:calls = %q; want 12 untouched", got)
	}
}

// TestCheckMetersSetsFull: a unique_count set at its bound is counted in
// veil_controlplane_usage_meter_sets_full.
func TestCheckMetersSetsFull(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	id := f.sub.id.String()
	counter := enforcement.PeriodCounterName(id, f.sub.start)
	f.setRedis(map[string]string{"0": "16", "1": "10"}, eventRequests, eventUnitsMicro)
	for i := 0; i < enforcement.MaxMeterSetMembers; i += 1000 {
		members := make([]string, 1000)
		for j := range members {
			members[j] = "k" + strconv.Itoa(i+j)
		}
		f.do(f.redis.B().Sadd().Key(enforcement.MeterSetName(counter, "keys")).Member(members...).Build())
	}
	f.record(f.sub.start, -1, false)
	f.do(f.redis.B().Hset().Key(enforcement.SubscriptionName(id)).FieldValue().FieldValue("meters",
		`[{"slug":"keys","aggregation":"unique_count","field":"key_id","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false}]`).Build())
	f.run()
	if g := f.gauge("veil_controlplane_usage_meter_sets_full"); g != "1" {
		t.Errorf("veil_controlplane_usage_meter_sets_full = %q; want 1", g)
	}
}
