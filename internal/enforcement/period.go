package enforcement

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// Billing-period arithmetic, in one place: the control plane opens and
// rolls periods with [PeriodEnd]; the processors count an event into the
// period [PeriodAt] names, the one the control plane's roll will name.

// Period is a billing period [Start, End).
type Period struct {
	Start, End time.Time
}

// PeriodEnd is the end of a billing period of the plan interval ("month"
// or "year"; anything else counts as a month) that starts at start.
func PeriodEnd(start time.Time, interval string) time.Time {
	if interval == "year" {
		return start.AddDate(1, 0, 0)
	}
	return start.AddDate(0, 1, 0)
}

// CalendarMonth is the calendar month (UTC) that holds t: the period of a
// subscription without a record.
func CalendarMonth(t time.Time) Period {
	t = t.UTC()
	start := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return Period{Start: start, End: start.AddDate(0, 1, 0)}
}

// RecordedPeriod is what a subscription record says of its periods, as
// the processors read it.
type RecordedPeriod struct {
	// Start and End bound the current period.
	Start, End time.Time
	// PrevStart is where the period before began, when the record was
	// rolled (its counter is [PrevStart, Start)); zero when unknown.
	PrevStart time.Time
	// APIID is the record's api_id; "" when the record has none.
	APIID string
	// Meters is the record's meters field as stored (see [DecodeMeters]);
	// "" when the record has none.
	Meters string
}

// PeriodAt returns the billing period that holds t for a subscription
// whose record says rec: the record's period when it holds t, the one
// before when the record was rolled from it, a neighbouring one stepped by
// the record's interval otherwise, and the calendar month when there is no
// record (rec nil).
func PeriodAt(rec *RecordedPeriod, t time.Time) Period {
	if rec == nil {
		return CalendarMonth(t)
	}
	if !t.Before(rec.Start) && t.Before(rec.End) {
		return Period{Start: rec.Start, End: rec.End}
	}
	if !rec.PrevStart.IsZero() && !t.Before(rec.PrevStart) && t.Before(rec.Start) {
		return Period{Start: rec.PrevStart, End: rec.Start}
	}
	// An event of a neighbouring period (the record not rolled yet at the
	// period's end, or a late event of the one before): step by the
	// record's own interval, so the counter is the one the control plane
	// will name when it rolls the record.
	step := func(at time.Time, n int) time.Time {
		switch {
		case rec.Start.AddDate(0, 1, 0).Equal(rec.End):
			return at.AddDate(0, n, 0)
		case rec.Start.AddDate(1, 0, 0).Equal(rec.End):
			return at.AddDate(n, 0, 0)
		}
		return at.Add(time.Duration(n) * rec.End.Sub(rec.Start))
	}
	start, end := rec.Start, rec.End
	for range 36 {
		switch {
		case !t.Before(end):
			start, end = end, step(end, 1)
		case t.Before(start):
			start, end = step(start, -1), start
		default:
			return Period{Start: start, End: end}
		}
	}
	return CalendarMonth(t)
}

// RecordedPeriods reads the period bounds, api_id and meters of the
// subscription records of ids through the client-side cache (no round trip while a
// record is unchanged; Redis invalidates the copy when the control plane
// rewrites it; ttl bounds its life otherwise). A subscription without a
// usable record maps to nil: the calendar month applies.
func RecordedPeriods(ctx context.Context, client rueidis.Client, ids []string, ttl time.Duration) (map[string]*RecordedPeriod, error) {
	out := make(map[string]*RecordedPeriod, len(ids))
	var (
		cmds  []rueidis.CacheableTTL
		asked []string
	)
	for _, id := range ids {
		if _, ok := out[id]; ok {
			continue
		}
		out[id] = nil
		asked = append(asked, id)
		cmds = append(cmds, rueidis.CT(client.B().Hmget().Key(SubscriptionName(id)).
			Field("period_start", "period_end", "prev_period_start", "api_id", "meters").Cache(), ttl))
	}
	if len(cmds) == 0 {
		return out, nil
	}
	for i, r := range client.DoMultiCache(ctx, cmds...) {
		vals, err := r.ToArray()
		if err != nil {
			return nil, fmt.Errorf("read subscription %s: %w", asked[i], err)
		}
		if len(vals) != 5 {
			continue
		}
		start, err1 := vals[0].AsInt64()
		end, err2 := vals[1].AsInt64()
		if err1 != nil || err2 != nil || end <= start {
			continue // no record, or an unusable one: the calendar month applies
		}
		p := &RecordedPeriod{Start: time.Unix(start, 0).UTC(), End: time.Unix(end, 0).UTC()}
		if prev, err := vals[2].AsInt64(); err == nil && prev < start {
			p.PrevStart = time.Unix(prev, 0).UTC()
		}
		p.APIID, _ = vals[3].ToString() // nil: a record without api_id, not checked
		p.Meters, _ = vals[4].ToString()
		out[asked[i]] = p
	}
	return out, nil
}

// CurrentPeriod returns the billing period that holds t for the
// subscription, as the processors count it (see [PeriodAt]).
func CurrentPeriod(ctx context.Context, client rueidis.Client, id string, t time.Time) (Period, error) {
	recs, err := RecordedPeriods(ctx, client, []string{id}, time.Minute)
	if err != nil {
		return Period{}, err
	}
	return PeriodAt(recs[id], t), nil
}
