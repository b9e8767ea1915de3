package enforcement_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
)

func quota(n int64) *int64 { return &n }

// meteredRecord is a valid subscription record with a meter of each
// aggregation.
func meteredRecord(id string, start time.Time) enforcement.SubscriptionRecord {
	return enforcement.SubscriptionRecord{
		ID: id, APIID: "api_1", PlanID: "plan_1", Status: enforcement.SubscriptionActive,
		PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0), QuotaRequests: -1, Version: 1,
		Meters: []enforcement.MeterSpec{
			{Slug: "calls", Aggregation: enforcement.MeterCount, Filter: enforcement.MeterFilter{Methods: []string{"GET"}, StatusClasses: []string{"2xx"}}},
			{Slug: "units", Aggregation: enforcement.MeterSum, Field: "units", Quota: quota(10_000_000), QuotaHard: true},
			{Slug: "peak-latency", Aggregation: enforcement.MeterMax, Field: "latency_ms", Filter: enforcement.MeterFilter{Routes: []string{"/v1/*"}}},
			{Slug: "keys", Aggregation: enforcement.MeterUniqueCount, Field: "key_id", Quota: quota(3)},
		},
	}
}

// TestSubscriptionMetersRoundTrip: the meters field survives a write and a
// read, and a record without meters reads back as none.
func TestSubscriptionMetersRoundTrip(t *testing.T) {
	f := setup(t)
	start := time.Now().UTC().Truncate(time.Hour)
	r := meteredRecord("sub_meters_rt_"+f.suffix, start)
	t.Cleanup(func() {
		f.client.Do(context.Background(), f.client.B().Del().Key(enforcement.SubscriptionName(r.ID)).Build())
	})
	if _, err := f.store.PutSubscription(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	got, err := f.store.GetSubscription(t.Context(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	got.PeriodStart, got.PeriodEnd = got.PeriodStart.UTC(), got.PeriodEnd.UTC()
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("GetSubscription = %+v\nwant %+v", got, r)
	}
	raw, err := f.client.Do(t.Context(), f.client.B().Hget().Key(enforcement.SubscriptionName(r.ID)).Field("meters").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(raw, `"quota":"10000000"`) || !strings.Contains(raw, `"methods":[]`) || strings.Count(raw, `"quota":`) != 2 {
		t.Errorf("meters field = %s; want quotas as strings, absent when unlimited, empty lists as []", raw)
	}
	r.Meters, r.Version = nil, 2
	if _, err := f.store.PutSubscription(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if got, err := f.store.GetSubscription(t.Context(), r.ID); err != nil || got.Meters != nil {
		t.Fatalf("GetSubscription without meters = %+v, %v; want no meters", got.Meters, err)
	}
}

// TestSubscriptionMetersStrictDecode: a garbled meters field is a corrupt
// record naming the field, a missing one is no meters (a record written
// before them), and a record with invalid meters is never written.
func TestSubscriptionMetersStrictDecode(t *testing.T) {
	base := map[string]string{
		"api_id": "api_1", "plan_id": "plan_1", "status": "active", "period_start": "100", "period_end": "200",
		"quota_requests": "-1", "quota_hard": "0", "rate_per_second": "0", "rate_per_minute": "0", "version": "1", "meters": "[]",
	}
	if _, err := enforcement.DecodeSubscription("s", base); err != nil {
		t.Fatalf("DecodeSubscription(valid) = %v", err)
	}
	// A record written before meters existed has no field: it prices none.
	old := maps.Clone(base)
	delete(old, "meters")
	if r, err := enforcement.DecodeSubscription("s", old); err != nil || r.Meters != nil || r.Status != "active" {
		t.Fatalf("DecodeSubscription(no meters field) = %+v, %v; want a record without meters", r, err)
	}
	m := `{"slug":"calls","aggregation":"count","field":"","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false`
	for _, bad := range []string{
		"", "null", "{}", "[", `[1]`, `[` + m + `,"extra":1}]`, `[` + m + `,"quota":"01"}]`,
		`[` + m + `,"quota":"-1"}]`, `[` + m + `,"quota":"9007199254740992"}]`, `[` + m + `,"quota":"1.5"}]`, `[` + m + `,"quota":5}]`, `[` + m + `}] []`,
		`[` + m + `},` + m + `}]`, strings.Replace(`[`+m+`}]`, `"count"`, `"median"`, 1),
		strings.Replace(`[`+m+`}]`, `"field":""`, `"field":"units"`, 1),
		strings.Replace(`[`+m+`}]`, `"status_classes":[]`, `"status_classes":["5xx"]`, 1),
		strings.Replace(`[`+m+`}]`, `"methods":[]`, `"methods":["get"]`, 1),
		strings.Replace(`[`+m+`}]`, `"routes":[]`, `"routes":["no-slash"]`, 1),
		strings.Replace(`[`+m+`}]`, `"routes":[]`, `"routes":["/`+strings.Repeat("x", 512)+`"]`, 1),
		// Nine patterns of 512 bytes: past the 4096 a meter's routes hold.
		strings.Replace(`[`+m+`}]`, `"routes":[]`, `"routes":[`+longRoutes(9)+`]`, 1),
		strings.Replace(`[`+m+`}]`, `"calls"`, `"Calls|x"`, 1),
	} {
		fields := map[string]string{}
		for k, v := range base {
			fields[k] = v
		}
		fields["meters"] = bad
		r, err := enforcement.DecodeSubscription("s", fields)
		if !errors.Is(err, enforcement.ErrCorruptRecord) || !strings.Contains(err.Error(), "field meters") || r.Status != "" {
			t.Errorf("DecodeSubscription(meters %s) = status %q, %v; want a corrupt record naming meters", bad, r.Status, err)
		}
	}
	// Two meters of 4096 bytes of routes each: exactly the API's bound.
	atBound := meteredRecord("s", time.Unix(100, 0))
	atBound.Meters = slices.Clone(atBound.Meters)
	for i := range atBound.Meters {
		atBound.Meters[i].Filter.Routes = nil
	}
	atBound.Meters[0].Filter.Routes, atBound.Meters[1].Filter.Routes = routeList(8), routeList(8)
	if err := atBound.Validate(); err != nil {
		t.Errorf("Validate(routes of %d bytes together) = %v; want nil", enforcement.MaxAPIMeterRoutesBytes, err)
	}
	// The largest quota compared exactly as a Lua number, 2^53-1.
	largest := maps.Clone(base)
	largest["meters"] = `[` + m + `,"quota":"9007199254740991"}]`
	if r, err := enforcement.DecodeSubscription("s", largest); err != nil || *r.Meters[0].Quota != enforcement.MaxMeterQuota {
		t.Errorf("DecodeSubscription(quota 2^53-1) = %+v, %v; want it read", r.Meters, err)
	}
	r := meteredRecord("s", time.Unix(100, 0))
	for name, change := range map[string]func(*enforcement.SubscriptionRecord){
		"duplicate slug": func(r *enforcement.SubscriptionRecord) { r.Meters[1].Slug = "calls" },
		"negative quota": func(r *enforcement.SubscriptionRecord) { r.Meters[0].Quota = quota(-1) },
		"max of key_id":  func(r *enforcement.SubscriptionRecord) { r.Meters[2].Field = "key_id" },
		"too many meters": func(r *enforcement.SubscriptionRecord) {
			r.Meters = make([]enforcement.MeterSpec, enforcement.MaxMeters+1)
		},
		"bad route filter": func(r *enforcement.SubscriptionRecord) { r.Meters[0].Filter.Routes = []string{"x"} },
		// Three meters of 4096 bytes each: past the 8192 an API's meters
		// hold together, though each meter is within its own bound.
		"routes past the API's bound": func(r *enforcement.SubscriptionRecord) {
			for i := range 3 {
				r.Meters[i].Filter.Routes = routeList(8)
			}
		},
	} {
		c := r
		c.Meters = slices.Clone(r.Meters)
		change(&c)
		if err := c.Validate(); !errors.Is(err, enforcement.ErrInvalidRecord) {
			t.Errorf("%s: Validate = %v; want ErrInvalidRecord", name, err)
		}
	}
}

// meterFixture is one subscription with a metered record and a counter
// of its current period.
type meterFixture struct {
	fixture
	t       *testing.T
	id      string
	period  enforcement.Period
	offset  int64
	counter string
	// rec is the record as written.
	rec enforcement.SubscriptionRecord
}

func newMeterFixture(t *testing.T, r enforcement.SubscriptionRecord) *meterFixture {
	f := setup(t)
	r.ID += f.suffix
	m := &meterFixture{fixture: f, t: t, id: r.ID, period: enforcement.Period{Start: r.PeriodStart, End: r.PeriodEnd},
		offset: -1, counter: enforcement.PeriodCounterName(r.ID, r.PeriodStart), rec: r}
	t.Cleanup(func() {
		keys := []string{enforcement.SubscriptionName(m.id), enforcement.BlockName(m.id), m.counter,
			enforcement.WatermarkName(m.id), enforcement.QuotaOutboxName(m.id), enforcement.RefusalName(m.id)}
		for _, ms := range r.Meters {
			keys = append(keys, enforcement.MeterSetName(m.counter, ms.Slug))
		}
		f.client.Do(context.Background(), f.client.B().Del().Key(keys...).Build())
	})
	if _, err := f.store.PutSubscription(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	return m
}

// count applies one event's worth of meters at the next offset and
// returns the result; again replays the same call.
func (m *meterFixture) count(meters ...enforcement.MeterIncrement) (res, again enforcement.CountResult) {
	m.t.Helper()
	c := enforcement.Count{Subject: m.id, Partition: 0, Watermark: m.offset, Through: m.offset + 1,
		Increments: []enforcement.Increment{{Name: m.counter, Requests: 1, UnitsMicro: 1, TTL: enforcement.PeriodCounterTTL,
			Period: &m.period, Meters: meters}}}
	res = enforcement.ApplyCounts(m.t.Context(), m.client, c)[0]
	if res.Err != nil {
		m.t.Fatal(res.Err)
	}
	again = enforcement.ApplyCounts(m.t.Context(), m.client, c)[0]
	if res.Applied {
		m.offset++
	}
	return res, again
}

func (m *meterFixture) values() map[string]int64 {
	m.t.Helper()
	st, err := enforcement.ReadMeterCounters(m.t.Context(), m.client, []enforcement.MetersOf{{ID: m.id, Start: m.period.Start,
		Meters: meteredRecord("", m.period.Start).Meters}})
	if err != nil {
		m.t.Fatal(err)
	}
	out := map[string]int64{}
	for slug := range st[0].Raw {
		v, err := st[0].Value(slug)
		if err != nil {
			m.t.Fatal(err)
		}
		out[slug] = v
	}
	return out
}

func (m *meterFixture) outbox() []string {
	m.t.Helper()
	l, err := m.client.Do(m.t.Context(), m.client.B().Lrange().Key(enforcement.QuotaOutboxName(m.id)).Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil {
		m.t.Fatal(err)
	}
	return l
}

func (m *meterFixture) blocked() bool {
	m.t.Helper()
	n, err := m.client.Do(m.t.Context(), m.client.B().Exists().Key(enforcement.BlockName(m.id)).Build()).AsInt64()
	if err != nil {
		m.t.Fatal(err)
	}
	return n == 1
}

// TestCountMeters: each aggregation changes its field or set in the
// counting call, a replay of the call changes nothing, and the reader
// sees the values.
func TestCountMeters(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	r := meteredRecord("sub_count_meters_", start)
	r.Meters[1].Quota, r.Meters[3].Quota = nil, nil
	m := newMeterFixture(t, r)
	steps := []struct {
		meters []enforcement.MeterIncrement
		want   map[string]int64
	}{
		{[]enforcement.MeterIncrement{{Slug: "calls", Aggregation: "count", Value: 2}, {Slug: "units", Aggregation: "sum", Value: 1_500_000},
			{Slug: "peak-latency", Aggregation: "max", Value: 120}, {Slug: "keys", Aggregation: "unique_count", Keys: []string{"k1", "k2"}}},
			map[string]int64{"calls": 2, "units": 1_500_000, "peak-latency": 120, "keys": 2}},
		{[]enforcement.MeterIncrement{{Slug: "calls", Aggregation: "count", Value: 1}, {Slug: "peak-latency", Aggregation: "max", Value: 80},
			{Slug: "keys", Aggregation: "unique_count", Keys: []string{"k2", "k3"}}},
			map[string]int64{"calls": 3, "units": 1_500_000, "peak-latency": 120, "keys": 3}},
		{[]enforcement.MeterIncrement{{Slug: "peak-latency", Aggregation: "max", Value: 1000}},
			map[string]int64{"calls": 3, "units": 1_500_000, "peak-latency": 1000, "keys": 3}},
	}
	for i, s := range steps {
		res, again := m.count(s.meters...)
		if !res.Applied || again.Applied || again.Watermark != m.offset {
			t.Fatalf("step %d: count = %+v, replay = %+v; want applied, then the moved watermark %d", i, res, again, m.offset)
		}
		if got := m.values(); !reflect.DeepEqual(got, s.want) {
			t.Errorf("step %d: meters = %v; want %v", i, got, s.want)
		}
	}
	ttl, err := m.client.Do(t.Context(), m.client.B().Ttl().Key(enforcement.MeterSetName(m.counter, "keys")).Build()).AsInt64()
	if err != nil || time.Duration(ttl)*time.Second < enforcement.PeriodCounterTTL-time.Minute {
		t.Errorf("set ttl = %d, %v; want the period counter's", ttl, err)
	}
}

// TestCountMeterSetBound: a unique_count set stops growing at
// MaxMeterSetMembers: a call that would pass it adds key ids until the
// bound and no more, and a later one adds none, while a key already in
// the set is counted as before.
func TestCountMeterSetBound(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	r := meteredRecord("sub_set_bound_", start)
	r.Meters[1].Quota, r.Meters[3].Quota = nil, nil
	m := newMeterFixture(t, r)
	set := enforcement.MeterSetName(m.counter, "keys")
	const filled = enforcement.MaxMeterSetMembers - 2
	for i := 0; i < filled; i += 1000 {
		members := make([]string, 0, 1000)
		for j := i; j < min(i+1000, filled); j++ {
			members = append(members, "pre-"+strconv.Itoa(j))
		}
		if err := m.client.Do(t.Context(), m.client.B().Sadd().Key(set).Member(members...).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	for i, keys := range [][]string{{"pre-0", "k1", "k2", "k3", "k4"}, {"k5"}} {
		if res, _ := m.count(enforcement.MeterIncrement{Slug: "keys", Aggregation: "unique_count", Keys: keys}); !res.Applied {
			t.Fatalf("step %d: count = %+v; want applied", i, res)
		}
		if got := m.values()["keys"]; got != enforcement.MaxMeterSetMembers {
			t.Fatalf("step %d: keys = %d; want the bound %d", i, got, enforcement.MaxMeterSetMembers)
		}
	}
	in, err := m.client.Do(t.Context(), m.client.B().Smismember().Key(set).Member("k1", "k2", "k3").Build()).AsIntSlice()
	if err != nil || !slices.Equal(in, []int64{1, 1, 0}) {
		t.Errorf("k1, k2, k3 in the set = %v, %v; want the first two only", in, err)
	}
}

// TestCountMeterOverflow: a meter field that would pass the counter cap,
// or that holds no integer, refuses the whole call, watermark included.
func TestCountMeterOverflow(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	m := newMeterFixture(t, meteredRecord("sub_meter_overflow_", start))
	m.hset(t, m.counter, "m:units", strconv.FormatInt(1<<63-10, 10))
	res, _ := m.count(enforcement.MeterIncrement{Slug: "units", Aggregation: "sum", Value: 10}, enforcement.MeterIncrement{Slug: "calls", Aggregation: "count", Value: 1})
	if !res.Overflow {
		t.Fatalf("count past the cap = %+v; want overflow", res)
	}
	m.hset(t, m.counter, "m:peak-latency", "garbage")
	if res, _ := m.count(enforcement.MeterIncrement{Slug: "peak-latency", Aggregation: "max", Value: 1}); !res.Overflow {
		t.Fatalf("max over a garbled field = %+v; want overflow", res)
	}
	wm, err := enforcement.Watermarks(t.Context(), m.client, []enforcement.WatermarkOf{{Subject: m.id}})
	if err != nil || wm[0] != -1 {
		t.Fatalf("watermark = %v, %v; want none", wm, err)
	}
	if v, err := m.client.Do(t.Context(), m.client.B().Hmget().Key(m.counter).Field("requests", "m:calls").Build()).ToArray(); err != nil || !v[0].IsNil() || !v[1].IsNil() {
		t.Fatalf("counter after refusals = %v, %v; want nothing written", v, err)
	}
	if res, _ := m.count(enforcement.MeterIncrement{Slug: "units", Aggregation: "sum", Value: 9}); !res.Applied {
		t.Fatalf("count up to the cap = %+v; want applied", res)
	}
}

// TestMeterQuota: a meter's soft quota announces 80, 90 and 100% once each,
// with lines naming the meter; a hard one blocks the subscription, and a
// write of the record keeps the block while the meter is over quota and
// lifts it when the quota is raised.
func TestMeterQuota(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	r := meteredRecord("sub_meter_quota_", start)
	r.Meters[3].Quota = quota(10)
	m := newMeterFixture(t, r)
	key := 0
	keys := func(n int) enforcement.MeterIncrement {
		in := enforcement.MeterIncrement{Slug: "keys", Aggregation: "unique_count"}
		for range n {
			key++
			in.Keys = append(in.Keys, "k"+strconv.Itoa(key))
		}
		return in
	}
	for _, step := range []struct {
		inc  enforcement.MeterIncrement
		want []int
	}{
		{keys(7), nil}, {keys(1), []int{80}}, {enforcement.MeterIncrement{Slug: "keys", Aggregation: "unique_count", Keys: []string{"k1"}}, nil},
		{keys(2), []int{90, 100}}, {keys(3), nil},
	} {
		before := len(m.outbox())
		res, again := m.count(step.inc)
		if !res.Applied || again.Applied || res.Pushed != len(step.want) {
			t.Fatalf("count = %+v, replay %+v; want applied with %d lines, then nothing", res, again, len(step.want))
		}
		lines := m.outbox()[before:]
		for i, pct := range step.want {
			e, err := enforcement.ParseOutboxLine(m.id, lines[i])
			if err != nil || e.Meter != "keys" || e.Threshold != pct || e.Quota != 10 || e.Hard {
				t.Errorf("line %q = %+v, %v; want meter keys at %d%% of 10, soft", lines[i], e, err, pct)
			}
		}
	}
	if m.blocked() {
		t.Fatal("a soft meter quota blocked")
	}

	// The units meter has a hard quota of 10 units.
	m.count(enforcement.MeterIncrement{Slug: "units", Aggregation: "sum", Value: 9_999_999})
	if m.blocked() {
		t.Fatal("blocked below the hard meter quota")
	}
	before := len(m.outbox())
	m.count(enforcement.MeterIncrement{Slug: "units", Aggregation: "sum", Value: 1})
	if !m.blocked() {
		t.Fatal("not blocked at the hard meter quota")
	}
	last := m.outbox()[before:]
	if e, err := enforcement.ParseOutboxLine(m.id, last[len(last)-1]); err != nil || !e.Blocked() || e.Meter != "units" || e.Quota != 10_000_000 {
		t.Errorf("last line = %+v, %v; want the units meter's blocking 100%%", e, err)
	}
	r = m.rec
	r.Version++
	if _, err := m.store.PutSubscription(t.Context(), r); err != nil || !m.blocked() {
		t.Fatalf("rewrite of the record: %v, blocked %v; want the meter's block kept", err, m.blocked())
	}
	r.Version++
	r.Meters[1].Quota = quota(20_000_000)
	if _, err := m.store.PutSubscription(t.Context(), r); err != nil || m.blocked() {
		t.Fatalf("raised meter quota: %v, blocked %v; want the block lifted", err, m.blocked())
	}
	r.Version++
	r.Meters[1].Quota = quota(5_000_000)
	before = len(m.outbox())
	if _, err := m.store.PutSubscription(t.Context(), r); err != nil || !m.blocked() {
		t.Fatalf("lowered meter quota: %v, blocked %v; want blocked", err, m.blocked())
	}
	if got := len(m.outbox()) - before; got != 3 {
		t.Errorf("lowered meter quota announced %d lines; want 3 (80, 90, 100%% of the new quota)", got)
	}
}

// TestHealMeters: a meter counter rewritten compare-and-set, refused when
// Redis moved, and the block follows the healed value.
func TestHealMeters(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	m := newMeterFixture(t, meteredRecord("sub_heal_meters_", start))
	m.count(enforcement.MeterIncrement{Slug: "units", Aggregation: "sum", Value: 10_000_000})
	if !m.blocked() {
		t.Fatal("not blocked at the hard meter quota")
	}
	of := []enforcement.MetersOf{{ID: m.id, Start: start, Meters: meteredRecord("", start).Meters}}
	st, err := enforcement.ReadMeterCounters(t.Context(), m.client, of)
	if err != nil {
		t.Fatal(err)
	}
	m.count(enforcement.MeterIncrement{Slug: "calls", Aggregation: "count", Value: 1})
	heal := enforcement.MeterHeal{ID: m.id, Period: m.period, Read: st[0], Values: map[string]int64{"units": 4_000_000}}
	if res := enforcement.HealMeters(t.Context(), m.client, []enforcement.MeterHeal{heal}); res[0].Err != nil || res[0].Outcome != enforcement.Moved {
		t.Fatalf("heal after a count = %+v; want moved", res[0])
	}
	if st, err = enforcement.ReadMeterCounters(t.Context(), m.client, of); err != nil {
		t.Fatal(err)
	}
	heal.Read = st[0]
	if res := enforcement.HealMeters(t.Context(), m.client, []enforcement.MeterHeal{heal}); res[0].Err != nil || res[0].Outcome != enforcement.Healed {
		t.Fatalf("heal = %+v; want healed", res[0])
	}
	if got := m.values()["units"]; got != 4_000_000 || m.blocked() {
		t.Fatalf("after the heal: units %d, blocked %v; want 4000000 and no block", got, m.blocked())
	}
	// The thresholds the healed value is below are forgotten: counting
	// up to them again announces them again.
	before := len(m.outbox())
	m.count(enforcement.MeterIncrement{Slug: "units", Aggregation: "sum", Value: 6_000_000})
	if got := len(m.outbox()) - before; got != 3 || !m.blocked() {
		t.Fatalf("counting past the quota after the heal pushed %d lines, blocked %v; want 3, blocked", got, m.blocked())
	}
}

// TestMeterOutboxLine: a meter's crossing round-trips through its outbox
// line and its Kafka value, and has an ID of its own.
func TestMeterOutboxLine(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	e := enforcement.Crossing{SubscriptionID: "s", PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0),
		Threshold: 80, Quota: 1000, Used: 800, Meter: "tokens"}
	line := enforcement.OutboxLine(e)
	if want := "v1|1793491200|1796083200|80|1000|800|0|tokens"; line != want {
		t.Fatalf("OutboxLine = %q; want %q", line, want)
	}
	got, err := enforcement.ParseOutboxLine("s", line)
	if err != nil || got != e {
		t.Fatalf("ParseOutboxLine = %+v, %v; want %+v", got, err, e)
	}
	b, _ := e.Marshal()
	if back, err := enforcement.UnmarshalCrossing(b); err != nil || back != e {
		t.Fatalf("UnmarshalCrossing = %+v, %v", back, err)
	}
	req := e
	req.Meter = ""
	if e.ID() == req.ID() {
		t.Errorf("a meter's crossing and the request quota's share the ID %s", e.ID())
	}
	for _, bad := range []string{"v1|1|2|80|10|8|1|", "v1|1|2|80|10|8|1|Bad Slug", "v1|1|2|80|10|8|1|a|b"} {
		if _, err := enforcement.ParseOutboxLine("s", bad); !errors.Is(err, enforcement.ErrInvalidCrossing) {
			t.Errorf("ParseOutboxLine(%q) = %v; want ErrInvalidCrossing", bad, err)
		}
	}
}

// longRoutes is a JSON list of n distinct route patterns of 512 bytes.
// routeList is n route patterns of 512 bytes each.
func routeList(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/%02d/%s", i, strings.Repeat("x", 508))
	}
	return out
}

func longRoutes(n int) string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`"/%02d/%s"`, i, strings.Repeat("x", 508))
	}
	return strings.Join(out, ",")
}
