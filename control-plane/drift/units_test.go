package drift

import (
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
)

// TestCheckHealsUnitsAlone: the counter's requests and
// watermarks agree with ClickHouse and only its units do not: that is
// drift, reported with both figures and healed to ClickHouse's units.
func TestCheckHealsUnitsAlone(t *testing.T) {
	f := newFixture(t)
	f.periodEvents()
	id := f.sub.id.String()
	f.setRedis(map[string]string{"0": "16", "1": "10"}, eventRequests, eventUnitsMicro+1)

	rep := f.run()
	if got, want := countsOf(rep), (counts{checked: 1, drifted: 1, healed: 1}); got != want {
		t.Fatalf("Check() = %+v, unhealed %v; want %+v", got, rep.Unhealed, want)
	}
	if d := rep.Drift[0]; d.RedisRequests != d.ClickHouseRequests || d.RedisUnits != "10.250002" || d.ClickHouseUnits != "10.250001" || !d.Healed {
		t.Errorf("Check().Drift[0] = %+v; want equal requests, units 10.250002 in Redis and 10.250001 in ClickHouse, healed", d)
	}
	got := f.hash(enforcement.PeriodCounterName(id, f.sub.start))
	if got["units_micro"] != strconv.Itoa(eventUnitsMicro) || got["requests"] != strconv.Itoa(eventRequests) {
		t.Errorf("counter after the heal = %v; want requests %d, units_micro %d", got, eventRequests, eventUnitsMicro)
	}
}

// TestCheckUnitsPastCounter: ClickHouse holds the ten events of
// 999,999,999,999.999999 units the overflow report describes (written
// before the units cap), and Redis the counter they wrapped to. Their
// micro-units wrap to the very same int64, so a check that converts
// ClickHouse's sum to int64 finds them in sync; the sum is exact instead,
// the drift is reported with ClickHouse's true units, and nothing is
// written, since no counter holds them.
func TestCheckUnitsPastCounter(t *testing.T) {
	f := newFixture(t)
	var evs []event
	for off := range int64(10) {
		evs = append(evs, event{partition: 0, offset: off, at: f.sub.start.Add(time.Minute), units: "999999999999.999999"})
	}
	f.insertEvents(evs...)
	f.setRedis(map[string]string{"0": "9"}, 10, -8446744073709551626)
	before := f.snapshot()

	rep := f.run()
	if got, want := countsOf(rep), (counts{checked: 1, drifted: 1, unhealed: 1}); got != want {
		t.Fatalf("Check() = %+v, drift %+v; want %+v", got, rep.Drift, want)
	}
	if d := rep.Drift[0]; d.ClickHouseUnits != "9999999999999.99999" || d.RedisUnits != "-8446744073709.551626" || d.Healed {
		t.Errorf("Check().Drift[0] = %+v; want ClickHouse units 9999999999999.99999, Redis -8446744073709.551626, not healed", d)
	}
	if reason := rep.Unhealed[0].Reason; !strings.Contains(reason, ErrUnitsPastCounter.Error()) {
		t.Errorf("unhealed reason = %q; want it to say %q", reason, ErrUnitsPastCounter)
	}
	if after := f.snapshot(); !maps.Equal(after, before) {
		t.Errorf("Redis after Check() = %v; want unchanged %v", after, before)
	}
}
