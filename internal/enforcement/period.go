package enforcement

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// Billing-period arithmetic, in one place: the control plane opens and
// rolls periods with [PeriodEndAnchored]; the processors count an event
// into the period [PeriodAt] names, the one the control plane's roll will
// name.

// Period is a billing period [Start, End).
type Period struct {
	Start, End time.Time
}

// PeriodEndAnchored is the end of a billing period of the plan interval
// ("month" or "year"; anything else counts as a month) that starts at
// start, for a subscription anchored at anchor (subscriptions.billing_anchor).
// The boundaries are the anchor's day of every month at its time of day
// (UTC), held at the month's last day when the month is shorter, so that
// periods do not drift after a short month: a monthly subscription
// anchored on Jan 31 renews on Feb 28 (29 in a leap year), Mar 31, Apr 30;
// a yearly one anchored on Feb 29 renews on Feb 28 until the next leap
// year. A start on a boundary (the anchor, or any end this returned) gets
// a whole interval: the boundary 1 or 12 months on, never a stub.
//
// A start off the boundaries is not moved onto them: the period ends on
// the boundary 1 or 12 months after the last boundary at or before start,
// so it is shorter than the interval by as much as start is past that
// boundary (monthly, anchor Jan 31: Mar 3 ends Mar 31; yearly, anchor Feb
// 28: Mar 3 2026 ends Feb 28 2027). No roll steps from such a start:
// periods that start before the anchor were rolled by [PeriodEndUnanchored],
// and subscriptions that existed before anchors are anchored at their
// current period's start (migration 00018).
func PeriodEndAnchored(start time.Time, interval string, anchor time.Time) time.Time {
	start, anchor = start.UTC(), anchor.UTC()
	y, m, _ := start.Date()
	n := intervalMonths(interval)
	if start.Before(anchoredIn(y, m, anchor)) {
		n-- // the last boundary at or before start is the month before's
	}
	return anchoredIn(y, m+time.Month(n), anchor)
}

// PeriodEndUnanchored is the end of a period of interval that starts at
// start by the rule periods were rolled with before anchors (time.AddDate:
// Jan 31 + a month is Mar 3). A subscription's periods that start before
// its anchor were rolled this way and counted so by the gateway, so they
// are stepped the same way when recorded.
func PeriodEndUnanchored(start time.Time, interval string) time.Time {
	if interval == "year" {
		return start.AddDate(1, 0, 0)
	}
	return start.AddDate(0, 1, 0)
}

// PeriodStartAnchored is the start of the period before the one that
// starts at end (see [PeriodEndAnchored]).
func PeriodStartAnchored(end time.Time, interval string, anchor time.Time) time.Time {
	end, anchor = end.UTC(), anchor.UTC()
	y, m, _ := end.Date()
	n := intervalMonths(interval)
	if end.After(anchoredIn(y, m, anchor)) {
		n-- // end is off the boundaries, after its month's
	}
	return anchoredIn(y, m-time.Month(n), anchor)
}

func intervalMonths(interval string) int {
	if interval == "year" {
		return 12
	}
	return 1
}

// anchoredIn is the boundary of anchor's periods in month m of year y (m
// may be out of 1..12: it carries into the year): the anchor's day and
// time of day, the day held at the month's last.
func anchoredIn(y int, m time.Month, anchor time.Time) time.Time {
	first := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	y, m = first.Year(), first.Month()
	last := first.AddDate(0, 1, -1).Day()
	h, mi, sec := anchor.Clock()
	return time.Date(y, m, min(anchor.Day(), last), h, mi, sec, anchor.Nanosecond(), time.UTC)
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
	// Anchor is the subscription's billing anchor (period_anchor, see
	// [PeriodEndAnchored]); zero when the record has none.
	Anchor time.Time
	// Budget is the record's budget field as stored (see [Budget]); ""
	// when the record has no hard budget.
	Budget string
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
		if !rec.Anchor.IsZero() {
			return anchoredStep(rec, at, n)
		}
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

// yearlyPeriod separates the record's interval by its length: a monthly
// period, anchored, lasts at most 31 days, a yearly one more than 11
// months.
const yearlyPeriod = 190 * 24 * time.Hour

// anchoredStep is the boundary n (1 or -1) periods from at for an anchored
// record, whose interval its current period's length tells.
func anchoredStep(rec *RecordedPeriod, at time.Time, n int) time.Time {
	interval := "month"
	if rec.End.Sub(rec.Start) > yearlyPeriod {
		interval = "year"
	}
	if n > 0 {
		return PeriodEndAnchored(at, interval, rec.Anchor)
	}
	// Before the anchor, periods were rolled unanchored, which no step
	// back can undo exactly (Jan 31 and Feb 3 both roll to Mar 3); the
	// anchored step back names the month before on the anchor's day, the
	// unanchored rule's answer too unless that month is shorter than the
	// anchor's day. The record's prev_period_start names the period just
	// before exactly.
	return PeriodStartAnchored(at, interval, rec.Anchor)
}

// RecordedPeriods reads the period bounds, anchor, api_id, meters and budget of the
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
			Field("period_start", "period_end", "prev_period_start", "api_id", "meters", "period_anchor", "budget").Cache(), ttl))
	}
	if len(cmds) == 0 {
		return out, nil
	}
	for i, r := range client.DoMultiCache(ctx, cmds...) {
		vals, err := r.ToArray()
		if err != nil {
			return nil, fmt.Errorf("read subscription %s: %w", asked[i], err)
		}
		if len(vals) != 7 {
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
		// An anchor DecodeSubscription refuses (garbled or out of range)
		// counts as none here, with unanchored steps: an event cannot be
		// refused for it, and the reconciliation finds the record corrupt
		// and writes it again.
		if v, err := vals[5].ToString(); err == nil {
			p.Anchor, _ = parseAnchor(v)
		}
		p.Budget, _ = vals[6].ToString()
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
