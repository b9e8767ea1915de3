package metering

import (
	"strconv"
	"strings"
	"time"
)

// A window of consumer analytics is read as pieces, each from the coarsest
// table whose buckets fit inside one of its days: a day of the caller's
// time zone starts at a local midnight, which is a whole UTC day only in
// UTC, a whole hour in most zones, a whole minute in the half- and
// quarter-hour zones (Asia/Kolkata, Asia/Kathmandu), and anything at all
// for the window's own ends. So each day is covered by whole UTC days from
// usage_rollup_day, the hours around them from usage_rollup_hour, the
// minutes around those from usage_rollup_minute, and the seconds left at a
// ragged end from usage_events: exact, and for one subscription only a few
// thousand roll-up rows however long the window.

// rollupTable is where a piece is read from.
type rollupTable int

const (
	tableDay rollupTable = iota
	tableHour
	tableMinute
	tableRaw
)

// span is a half-open range [from, to) of instants, whole seconds.
type span struct{ from, to time.Time }

// piecePlan holds, per table, the ranges read from it: disjoint, in order,
// together covering the window exactly, none crossing a day start.
type piecePlan [tableRaw + 1][]span

// levels are the bucket widths of the roll-ups, coarsest first.
var levels = [...]time.Duration{24 * time.Hour, time.Hour, time.Minute}

// planPieces splits [from, to) at each of cuts (ascending, inside the
// window) and covers each part with the coarsest buckets that fit.
func planPieces(from, to time.Time, cuts []time.Time) piecePlan {
	var p piecePlan
	start := from
	for _, c := range append(append([]time.Time(nil), cuts...), to) {
		p.cover(tableDay, start, c)
		start = c
	}
	return p
}

// cover adds [a, b) at table level t: its whole buckets of that width,
// and what is left at either end one level finer.
func (p *piecePlan) cover(t rollupTable, a, b time.Time) {
	if !a.Before(b) {
		return
	}
	if t == tableRaw {
		p.add(t, a, b)
		return
	}
	d := levels[t]
	// Truncate counts from the zero time, midnight UTC: whole UTC days,
	// hours and minutes, the roll-ups' buckets.
	lo := a.Truncate(d)
	if lo.Before(a) {
		lo = lo.Add(d)
	}
	hi := b.Truncate(d)
	if !lo.Before(hi) {
		p.cover(t+1, a, b)
		return
	}
	p.cover(t+1, a, lo)
	p.add(t, lo, hi)
	p.cover(t+1, hi, b)
}

// add appends [a, b) to table t's ranges, joining it to the last one when
// they meet.
func (p *piecePlan) add(t rollupTable, a, b time.Time) {
	s := p[t]
	if n := len(s); n > 0 && s[n-1].to.Equal(a) {
		s[n-1].to = b
		return
	}
	p[t] = append(s, span{a, b})
}

// from and to are the window the plan covers.
func (p *piecePlan) from() time.Time {
	var out time.Time
	for _, s := range p {
		if len(s) > 0 && (out.IsZero() || s[0].from.Before(out)) {
			out = s[0].from
		}
	}
	return out
}

func (p *piecePlan) to() time.Time {
	var out time.Time
	for _, s := range p {
		if n := len(s); n > 0 && s[n-1].to.After(out) {
			out = s[n-1].to
		}
	}
	return out
}

// rangeSQL is the condition that selects t's ranges. Every value is a
// number or a date formatted here, never caller text.
//
// A window of many days in a zone whose midnight is not a whole UTC hour
// has hundreds of disjoint ranges per table, and ClickHouse 18.16 spends
// tens of seconds analysing an OR of that many (whatever the data), so a
// long list becomes one outer range, which the primary key prunes by, and
// a set test on the hour or minute a bucket falls in (a hash lookup): the
// hours read, or the hours skipped, whichever is the shorter list. Hours
// are counted as seconds since the epoch divided by 3600, so that the
// server's time zone does not enter.
func (p *piecePlan) rangeSQL(t rollupTable) string {
	col, lit := "bucket", func(x time.Time) string { return "toDateTime(" + strconv.FormatInt(x.Unix(), 10) + ")" }
	switch t {
	case tableDay:
		// 18.16 compares a Date with a DateTime as raw numbers: bound the
		// day roll-up's Date bucket with dates.
		lit = func(x time.Time) string { return "toDate('" + x.UTC().Format(time.DateOnly) + "')" }
	case tableRaw:
		col = "time"
	}
	s := p[t]
	rng := func(a, b time.Time) string { return "(" + col + " >= " + lit(a) + " AND " + col + " < " + lit(b) + ")" }
	if t != tableDay && len(s) > maxOrRanges {
		if set, ok := setTest(s, col); ok {
			return "(" + rng(s[0].from, s[len(s)-1].to) + " AND " + set + ")"
		}
	}
	conds := make([]string, 0, len(s))
	for _, x := range s {
		conds = append(conds, rng(x.from, x.to))
	}
	return "(" + strings.Join(conds, " OR ") + ")"
}

// maxOrRanges is the most ranges rangeSQL joins with OR.
const maxOrRanges = 4

// setTest is a condition that, inside the outer range of spans s
// (ascending, disjoint), selects exactly s: the hours (or minutes) s
// touches, or those between its spans, whichever list is shorter. It is
// exact only when every gap between spans starts and ends on a whole unit,
// so it reports false when no unit fits.
func setTest(s []span, col string) (string, bool) {
	for _, unit := range []time.Duration{time.Hour, time.Minute} {
		aligned := true
		for i := 1; i < len(s) && aligned; i++ {
			aligned = s[i-1].to.Truncate(unit).Equal(s[i-1].to) && s[i].from.Truncate(unit).Equal(s[i].from)
		}
		if !aligned {
			continue
		}
		u := int64(unit / time.Second)
		var in, out []string
		for i, x := range s {
			for n := x.from.Unix() / u; n*u < x.to.Unix(); n++ {
				if len(in) <= maxSetUnits && (len(in) == 0 || in[len(in)-1] != strconv.FormatInt(n, 10)) {
					in = append(in, strconv.FormatInt(n, 10))
				}
			}
			if i > 0 {
				for n := s[i-1].to.Unix() / u; n*u < x.from.Unix() && len(out) <= maxSetUnits; n++ {
					out = append(out, strconv.FormatInt(n, 10))
				}
			}
			if len(in) > maxSetUnits && len(out) > maxSetUnits {
				break
			}
		}
		key := "intDiv(toUInt32(" + col + "), " + strconv.FormatInt(u, 10) + ")"
		switch {
		case len(out) <= len(in) && len(out) <= maxSetUnits:
			return key + " NOT IN (" + strings.Join(out, ", ") + ")", true
		case len(in) <= maxSetUnits:
			return key + " IN (" + strings.Join(in, ", ") + ")", true
		}
	}
	return "", false
}

// maxSetUnits bounds a set test's list: a few per day of the longest
// window.
const maxSetUnits = 4 * MaxAnalyticsDays

// DayStarts returns the instants strictly inside (from, to) at which a
// day begins in loc, ascending: local midnights, or, where a clock change
// skips midnight (America/Sao_Paulo until 2019, Asia/Beirut), the first
// instant of the day. It returns nil for a window over MaxAnalyticsDays
// days long, after MaxAnalyticsDays of them.
func DayStarts(from, to time.Time, loc *time.Location) []time.Time {
	var out []time.Time
	for d := nextDayStart(from, loc); d.Before(to); d = nextDayStart(d, loc) {
		if len(out) == MaxAnalyticsDays {
			return out
		}
		out = append(out, d)
	}
	return out
}

// nextDayStart is the first instant after t whose date in loc is later
// than t's.
func nextDayStart(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	want := time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC) // the next date, normalized
	isNext := func(u time.Time) bool {
		uy, um, ud := u.In(loc).Date()
		return uy == want.Year() && um == want.Month() && ud == want.Day()
	}
	next := time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	if !isNext(next) {
		// A midnight that a clock change skips comes back from time.Date
		// in the offset before the change, an instant of the day before:
		// the day starts with the change, where that offset ends.
		_, end := next.ZoneBounds()
		return end
	}
	// A midnight that a change back repeats may come back as its second
	// occurrence: the day starts at the first, in the offset before.
	if start, _ := next.ZoneBounds(); !start.IsZero() && start.After(t) && isNext(start.Add(-time.Second)) {
		_, off := start.Add(-time.Second).Zone()
		if first := time.Date(y, m, d+1, 0, 0, 0, 0, time.FixedZone("", off)); first.After(t) {
			return first
		}
	}
	return next
}
