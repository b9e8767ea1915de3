package billing

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/enforcement"
)

func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

func fmtPeriods(ps []newPeriod) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "[%s %s", p.Start.Format("2006-01-02T15:04:05"), p.End.Format("2006-01-02T15:04:05"))
		if p.trial {
			b.WriteString(" trial")
		}
		b.WriteString("] ")
	}
	return strings.TrimSpace(b.String())
}

// rolled is the current period the subscriptions' roll gives a
// subscription started (and anchored) at start on interval, by now: the
// same loop as rollPeriods.
func rolled(start time.Time, interval string, now time.Time) (time.Time, time.Time) {
	s, e := start, enforcement.PeriodEndAnchored(start, interval, start)
	for !e.After(now) {
		s, e = e, enforcement.PeriodEndAnchored(e, interval, start)
	}
	return s, e
}

// endedCase is a subscription, a time and the periods endedPeriods
// gives it then, as fmtPeriods writes them.
type endedCase struct {
	name string
	sub  periodSub
	now  time.Time
	want string
}

func checkEndedPeriods(t *testing.T, cases []endedCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := fmtPeriods(endedPeriods(c.sub, c.now)); got != c.want {
				t.Fatalf("endedPeriods = %s; want %s", got, c.want)
			}
		})
	}
}

func monthlyFrom(v uuid.UUID, at time.Time) []historyRow {
	return []historyRow{{version: v, status: "active", at: at, interval: "month"}}
}

// TestEndedPeriodsAnchored: the periods meet the ones the subscriptions'
// roll gives the gateway: enforcement.PeriodEndAnchored from each
// period's start, held at the month's end and back on the 31st after.
func TestEndedPeriodsAnchored(t *testing.T) {
	t.Parallel()
	v := uuid.New()
	jan31 := day(2026, 1, 31)
	cs, ce := rolled(jan31, "month", day(2026, 5, 10))
	leap := time.Date(2028, 1, 31, 17, 45, 10, 0, time.UTC)
	ls, le := rolled(leap, "month", day(2028, 6, 1))
	checkEndedPeriods(t, []endedCase{
		{
			name: "monthly from Jan 31, as rolled",
			sub:  periodSub{status: "active", curStart: cs, curEnd: ce, firstAt: jan31, anchor: jan31, history: monthlyFrom(v, jan31)},
			now:  day(2026, 5, 10),
			want: "[2026-01-31T00:00:00 2026-02-28T00:00:00] [2026-02-28T00:00:00 2026-03-31T00:00:00] [2026-03-31T00:00:00 2026-04-30T00:00:00]",
		},
		{
			name: "monthly from Jan 31 of a leap year, at its time of day",
			sub:  periodSub{status: "active", curStart: ls, curEnd: le, firstAt: leap, anchor: leap, history: monthlyFrom(v, leap)},
			now:  day(2028, 6, 1),
			want: "[2028-01-31T17:45:10 2028-02-29T17:45:10] [2028-02-29T17:45:10 2028-03-31T17:45:10] " +
				"[2028-03-31T17:45:10 2028-04-30T17:45:10] [2028-04-30T17:45:10 2028-05-31T17:45:10]",
		},
		{
			name: "not rolled past a clamped end: steps on as the roll will",
			sub: periodSub{status: "active", curStart: jan31, curEnd: day(2026, 2, 28), firstAt: jan31, anchor: jan31,
				history: monthlyFrom(v, jan31)},
			now:  day(2026, 4, 1),
			want: "[2026-01-31T00:00:00 2026-02-28T00:00:00] [2026-02-28T00:00:00 2026-03-31T00:00:00]",
		},
	})
}

// TestEndedPeriodsBeforeTheAnchor: a subscription that existed before
// anchors is anchored at the start of the period it was in (migration
// 00018); its earlier periods are the ones the roll made by adding a
// month or a year (Jan 31, Mar 3, Apr 3), the ones after step from the
// anchor, and none is split or shortened.
func TestEndedPeriodsBeforeTheAnchor(t *testing.T) {
	t.Parallel()
	v := uuid.New()
	jan31, apr3, may3 := day(2026, 1, 31), day(2026, 4, 3), day(2026, 5, 3)
	leap := day(2024, 2, 29)
	yearly := []historyRow{{version: v, status: "active", at: leap, interval: "year"}}
	checkEndedPeriods(t, []endedCase{
		{
			name: "Jan 31 rolled to Apr 3, recorded to Apr 3: whole periods from the anchor",
			sub: periodSub{status: "active", curStart: apr3, curEnd: may3, firstAt: jan31, anchor: apr3,
				lastEnd: apr3, history: monthlyFrom(v, jan31)},
			now:  day(2026, 6, 10),
			want: "[2026-04-03T00:00:00 2026-05-03T00:00:00] [2026-05-03T00:00:00 2026-06-03T00:00:00]",
		},
		{
			name: "Jan 31 rolled to Apr 3, nothing recorded: the periods as rolled",
			sub: periodSub{status: "active", curStart: apr3, curEnd: may3, firstAt: jan31, anchor: apr3,
				history: monthlyFrom(v, jan31)},
			now: day(2026, 6, 10),
			want: "[2026-01-31T00:00:00 2026-03-03T00:00:00] [2026-03-03T00:00:00 2026-04-03T00:00:00] " +
				"[2026-04-03T00:00:00 2026-05-03T00:00:00] [2026-05-03T00:00:00 2026-06-03T00:00:00]",
		},
		{
			name: "yearly from Feb 29 2024, nothing recorded: Mar 1, Mar 1, then from the anchor",
			sub: periodSub{status: "active", curStart: day(2026, 3, 1), curEnd: day(2027, 3, 1), firstAt: leap, anchor: day(2026, 3, 1),
				history: yearly},
			now: day(2028, 3, 2),
			want: "[2024-02-29T00:00:00 2025-03-01T00:00:00] [2025-03-01T00:00:00 2026-03-01T00:00:00] " +
				"[2026-03-01T00:00:00 2027-03-01T00:00:00] [2027-03-01T00:00:00 2028-03-01T00:00:00]",
		},
		{
			name: "a step before the anchor past the current period's start stops there",
			sub: periodSub{status: "active", curStart: day(2026, 2, 1), curEnd: day(2026, 3, 1), firstAt: day(2026, 1, 10), anchor: day(2026, 2, 1),
				history: monthlyFrom(v, day(2026, 1, 10))},
			now:  day(2026, 3, 1),
			want: "[2026-01-10T00:00:00 2026-02-01T00:00:00] [2026-02-01T00:00:00 2026-03-01T00:00:00]",
		},
	})
}

// TestEndedPeriodsRoll: what is recorded of the current period and the
// ones after it, by status, plan changes and trial.
func TestEndedPeriodsRoll(t *testing.T) {
	t.Parallel()
	v1, v2 := uuid.New(), uuid.New()
	mar1 := day(2026, 3, 1)
	monthly := periodSub{status: "active", curStart: mar1, curEnd: day(2026, 4, 1), firstAt: mar1, anchor: mar1, history: monthlyFrom(v1, mar1)}
	with := func(status string, lastEnd time.Time) periodSub {
		s := monthly
		s.status, s.lastEnd = status, lastEnd
		return s
	}
	recorded := monthly
	recorded.curStart, recorded.curEnd, recorded.lastEnd = day(2026, 4, 1), day(2026, 5, 1), day(2026, 4, 1)
	trialEnd := day(2026, 2, 14)
	checkEndedPeriods(t, []endedCase{
		{name: "nothing ended yet", sub: monthly, now: day(2026, 3, 31)},
		{name: "the current period ended, not rolled yet", sub: monthly, now: day(2026, 4, 1),
			want: "[2026-03-01T00:00:00 2026-04-01T00:00:00]"},
		{name: "not rolled for two periods: steps on as the roll will", sub: with("past_due", time.Time{}), now: day(2026, 5, 2),
			want: "[2026-03-01T00:00:00 2026-04-01T00:00:00] [2026-04-01T00:00:00 2026-05-01T00:00:00]"},
		{name: "recorded up to the last: nothing new", sub: recorded, now: day(2026, 4, 30)},
		{name: "canceled: the period it was canceled in is the last", sub: with("canceled", time.Time{}), now: day(2026, 9, 1),
			want: "[2026-03-01T00:00:00 2026-04-01T00:00:00]"},
		{
			name: "a change to a yearly plan renews yearly from the next period",
			sub: periodSub{status: "active", curStart: day(2026, 4, 1), curEnd: day(2027, 4, 1), firstAt: mar1, anchor: mar1,
				history: []historyRow{
					{version: v1, status: "active", at: mar1, interval: "month"},
					{version: v2, status: "active", at: day(2026, 3, 20), interval: "year"},
				}},
			now:  day(2027, 4, 1),
			want: "[2026-03-01T00:00:00 2026-04-01T00:00:00] [2026-04-01T00:00:00 2027-04-01T00:00:00]",
		},
		{
			name: "wholly in trial, then partly",
			sub: periodSub{status: "active", curStart: mar1, curEnd: day(2026, 4, 1), firstAt: day(2026, 1, 1), anchor: day(2026, 1, 1),
				trialEnds: &trialEnd, history: monthlyFrom(v1, day(2026, 1, 1))},
			now:  day(2026, 3, 2),
			want: "[2026-01-01T00:00:00 2026-02-01T00:00:00 trial] [2026-02-01T00:00:00 2026-03-01T00:00:00]",
		},
	})
}

// TestEndedPeriodsCarried: a subscription that took over a canceled one's
// period starts at its own start and ends at that period's end, on the
// boundaries of the anchor it kept.
func TestEndedPeriodsCarried(t *testing.T) {
	t.Parallel()
	v := uuid.New()
	mar1, mar10 := day(2026, 3, 1), day(2026, 3, 10)
	checkEndedPeriods(t, []endedCase{
		{
			name: "from its start to the period it took over",
			sub: periodSub{status: "active", curStart: mar1, curEnd: day(2026, 4, 1), firstAt: mar10, anchor: mar1,
				history: monthlyFrom(v, mar10)},
			now:  day(2026, 4, 1),
			want: "[2026-03-10T00:00:00 2026-04-01T00:00:00]",
		},
		{
			name: "found after its roll: the same period",
			sub: periodSub{status: "active", curStart: day(2026, 4, 1), curEnd: day(2026, 5, 1), firstAt: mar10, anchor: mar1,
				history: monthlyFrom(v, mar10)},
			now:  day(2026, 4, 2),
			want: "[2026-03-10T00:00:00 2026-04-01T00:00:00]",
		},
		{
			name: "from a Jan 31 subscription: that one's boundaries",
			sub: periodSub{status: "active", curStart: day(2026, 2, 28), curEnd: day(2026, 3, 31), firstAt: mar10, anchor: day(2026, 1, 31),
				history: monthlyFrom(v, mar10)},
			now:  day(2026, 5, 1),
			want: "[2026-03-10T00:00:00 2026-03-31T00:00:00] [2026-03-31T00:00:00 2026-04-30T00:00:00]",
		},
	})
}

func TestEndedPeriodsBounded(t *testing.T) {
	t.Parallel()
	start := day(2000, 1, 1)
	sub := periodSub{status: "active", curStart: start, curEnd: day(2000, 2, 1), firstAt: start, anchor: start,
		history: []historyRow{{version: uuid.New(), at: start, interval: "month"}}}
	if n := len(endedPeriods(sub, day(2030, 1, 1))); n != maxPeriodsPerRun {
		t.Fatalf("len(endedPeriods over 30 years) = %d; want %d", n, maxPeriodsPerRun)
	}
}

func fmtSegments(gs []segment, names map[uuid.UUID]string) string {
	var b strings.Builder
	for _, g := range gs {
		fmt.Fprintf(&b, "%s[%s %s", names[g.version], g.from.Format("01-02T15:04:05.000"), g.to.Format("01-02T15:04:05.000"))
		if !g.countFrom.Equal(g.from) {
			fmt.Fprintf(&b, " count from %s", g.countFrom.Format("01-02T15:04:05.000"))
		}
		b.WriteString("] ")
	}
	return strings.TrimSpace(b.String())
}

func TestSegmentsOf(t *testing.T) {
	t.Parallel()
	a, b := uuid.New(), uuid.New()
	names := map[uuid.UUID]string{a: "A", b: "B"}
	start, end := day(2026, 3, 1), day(2026, 4, 1)
	mid := time.Date(2026, 3, 16, 12, 30, 15, 250000000, time.UTC)
	later := day(2026, 3, 25)
	row := func(v uuid.UUID, status string, at time.Time) historyRow {
		return historyRow{version: v, status: status, at: at, interval: "month"}
	}
	trialEnds := day(2026, 3, 10)
	longTrial := day(2026, 6, 1)
	cases := []struct {
		name              string
		h                 []historyRow
		trial, canceledAt *time.Time
		want              string
	}{
		{name: "one version", h: []historyRow{row(a, "active", day(2026, 1, 1))},
			want: "A[03-01T00:00:00.000 04-01T00:00:00.000]"},
		{name: "a change mid-period, to the sub-second",
			h:    []historyRow{row(a, "active", day(2026, 1, 1)), row(b, "active", mid)},
			want: "A[03-01T00:00:00.000 03-16T12:30:15.250] B[03-16T12:30:15.250 04-01T00:00:00.000]"},
		{name: "status rows keeping the version do not split",
			h:    []historyRow{row(a, "active", day(2026, 1, 1)), row(a, "past_due", mid), row(a, "suspended", later)},
			want: "A[03-01T00:00:00.000 04-01T00:00:00.000]"},
		{name: "a change at the period's start is in force from it",
			h:    []historyRow{row(a, "active", day(2026, 1, 1)), row(b, "active", start)},
			want: "B[03-01T00:00:00.000 04-01T00:00:00.000]"},
		{name: "a change after the period is not in it",
			h:    []historyRow{row(a, "active", day(2026, 1, 1)), row(b, "active", end)},
			want: "A[03-01T00:00:00.000 04-01T00:00:00.000]"},
		{name: "there and back: three segments",
			h:    []historyRow{row(a, "active", day(2026, 1, 1)), row(b, "active", mid), row(a, "active", later)},
			want: "A[03-01T00:00:00.000 03-16T12:30:15.250] B[03-16T12:30:15.250 03-25T00:00:00.000] A[03-25T00:00:00.000 04-01T00:00:00.000]"},
		{name: "canceled mid-period ends the last segment",
			h:          []historyRow{row(a, "active", day(2026, 1, 1)), row(b, "active", mid), row(b, "canceled", later)},
			canceledAt: &later,
			want:       "A[03-01T00:00:00.000 03-16T12:30:15.250] B[03-16T12:30:15.250 03-25T00:00:00.000]"},
		{name: "a trial ending mid-period counts from its end",
			h: []historyRow{row(a, "trialing", start)}, trial: &trialEnds,
			want: "A[03-01T00:00:00.000 04-01T00:00:00.000 count from 03-10T00:00:00.000]"},
		{name: "wholly in trial: nothing counted",
			h: []historyRow{row(a, "trialing", start)}, trial: &longTrial,
			want: "A[03-01T00:00:00.000 04-01T00:00:00.000 count from 06-01T00:00:00.000]"},
		{name: "a period before the first row takes the first row's version",
			h:    []historyRow{row(b, "active", day(2026, 3, 10))},
			want: "B[03-01T00:00:00.000 04-01T00:00:00.000]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := fmtSegments(segmentsOf(c.h, start, end, c.trial, c.canceledAt), names); got != c.want {
				t.Fatalf("segmentsOf = %s; want %s", got, c.want)
			}
		})
	}
}
