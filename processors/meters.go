package processors

import (
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/usage"
)

// Meters: a subscription record names the meters its plan version prices
// (enforcement.MeterSpec); each admitted event adds to those that select
// it (metering.Meter.Contribution, KeyValue), in the period counter the
// event counts into, by the same counting call as the request counters.
// A refused event, a 5xx and an event no meter selects add nothing.

// meterCacheMax bounds the decoded meters kept: one entry per distinct
// meters field, which is one per plan version in use.
const meterCacheMax = 4096

// meterCache decodes a record's meters field once per distinct value: the
// field changes only with a plan change, and decoding JSON on every batch
// of every subscription would cost the hot path for nothing.
type meterCache map[string][]metering.Meter

// meters returns the meters of a record's period view; none without a
// record, or for a field that does not decode (a record the control plane
// validated cannot hold one: counting requests goes on regardless).
func (c meterCache) meters(rec *enforcement.RecordedPeriod) []metering.Meter {
	if rec == nil || rec.Meters == "" || rec.Meters == "[]" {
		return nil
	}
	if ms, ok := c[rec.Meters]; ok {
		return ms
	}
	specs, err := enforcement.DecodeMeters(rec.Meters)
	var ms []metering.Meter
	if err == nil {
		ms = make([]metering.Meter, len(specs))
		for i, s := range specs {
			ms[i] = metering.MeterOfSpec(s)
		}
	}
	if len(c) >= meterCacheMax {
		clear(c)
	}
	c[rec.Meters] = ms
	return ms
}

// meterAdder gathers one count's meter increments, per period counter
// (by its index in Count.Increments) and meter.
type meterAdder struct {
	meters []metering.Meter
	// at is the index of a counter's meter in its Increment.Meters.
	at map[meterOf]int
	// seen holds the key ids already in a unique_count increment.
	seen     map[meterOf]map[string]bool
	overflow bool
}

type meterOf struct {
	counter int
	slug    string
}

// add adds what e contributes to each meter to increment in, the counter
// at index counter.
func (a *meterAdder) add(in *enforcement.Increment, counter int, e *usage.Event) {
	if e == nil || !metering.Billable(e) {
		return
	}
	for _, m := range a.meters {
		var (
			key string
			v   int64
		)
		if m.Aggregation == metering.AggUniqueCount {
			if key = m.KeyValue(e); key == "" {
				continue
			}
		} else {
			var ok bool
			if v, ok = m.Contribution(e); !ok {
				continue
			}
		}
		mi := a.increment(in, counter, m)
		switch m.Aggregation {
		case metering.AggUniqueCount:
			k := meterOf{counter, m.Slug}
			if a.seen[k] == nil {
				a.seen[k] = map[string]bool{}
			}
			if !a.seen[k][key] {
				a.seen[k][key] = true
				mi.Keys = append(mi.Keys, key)
			}
		case metering.AggMax:
			mi.Value = max(mi.Value, v)
		default:
			sum, err := usage.CheckedAdd(mi.Value, v)
			if err != nil {
				a.overflow = true
			}
			mi.Value = sum
		}
	}
}

// increment is counter's increment of meter m, added on first use.
func (a *meterAdder) increment(in *enforcement.Increment, counter int, m metering.Meter) *enforcement.MeterIncrement {
	k := meterOf{counter, m.Slug}
	i, ok := a.at[k]
	if !ok {
		i = len(in.Meters)
		a.at[k] = i
		in.Meters = append(in.Meters, enforcement.MeterIncrement{Slug: m.Slug, Aggregation: string(m.Aggregation)})
	}
	return &in.Meters[i]
}

// meterRefunds is what e added to the meters that add (count, sum), by
// slug, for a compensation.
func meterRefunds(meters []metering.Meter, e *usage.Event) map[string]int64 {
	var out map[string]int64
	for _, m := range meters {
		if m.Aggregation != metering.AggCount && m.Aggregation != metering.AggSum {
			continue
		}
		if v, ok := m.Contribution(e); ok && v > 0 {
			if out == nil {
				out = map[string]int64{}
			}
			out[m.Slug] = v
		}
	}
	return out
}
