package metering

import (
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// monday is the end of the synthetic histories: a Monday, midnight UTC,
// so that history day i starts on the weekday (i + 28 − n) mod 7 after
// Monday.
var monday = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

func series(n int, f func(i int) float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func countInput(hist []float64, used string, ahead time.Duration) ForecastInput {
	return ForecastInput{
		Aggregation: AggCount, Used: decimal.RequireFromString(used), History: hist,
		HistoryEnd: monday, CountedFrom: monday.Add(-14 * day), AsOf: monday, End: monday.Add(ahead),
	}
}

func checkProjection(t *testing.T, name string, got Projection, point, low, high string) {
	t.Helper()
	if !got.Projected.Equal(decimal.RequireFromString(point)) || !got.Low.Equal(decimal.RequireFromString(low)) ||
		!got.High.Equal(decimal.RequireFromString(high)) {
		t.Errorf("%s: projected %s [%s, %s]; want %s [%s, %s]", name, got.Projected, got.Low, got.High, point, low, high)
	}
}

// checkPoint checks the projection's point and that its range holds it
// strictly: no history says the future is exact.
func checkPoint(t *testing.T, name string, got Projection, point string) {
	t.Helper()
	if !got.Projected.Equal(decimal.RequireFromString(point)) || !got.Low.LessThan(got.Projected) || !got.High.GreaterThan(got.Projected) {
		t.Errorf("%s: projected %s [%s, %s]; want %s strictly within the range", name, got.Projected, got.Low, got.High, point)
	}
}

// Series with known answers: a steady rate, linear growth, a weekly
// pattern and a one-day burst each project exactly what their pattern
// continued gives; even a series the fit explains exactly keeps a range
// (counts vary at least like a Poisson count).
func TestProjectKnownSeries(t *testing.T) {
	t.Parallel()
	steady := series(28, func(int) float64 { return 100 })
	checkPoint(t, "steady", Project(countInput(steady, "1500", 10*day)), "2500")

	// 50 + 10·i: the next 10 days are i = 28 … 37, 10·325 + 500.
	growing := series(28, func(i int) float64 { return 50 + 10*float64(i) })
	checkPoint(t, "growing", Project(countInput(growing, "0", 10*day)), "3750")

	// 100 on weekdays, 20 on Saturdays and Sundays: a week ahead is
	// 5·100 + 2·20, whatever the week's average says (77.14 a day).
	weekly := series(28, func(i int) float64 {
		switch monday.Add(-time.Duration(28-i) * day).Weekday() {
		case time.Saturday, time.Sunday:
			return 20
		}
		return 100
	})
	checkPoint(t, "weekly", Project(countInput(weekly, "0", 7*day)), "540")
	// Two days ahead from Monday are weekdays: 200, not 2 × 77.14.
	checkPoint(t, "weekly, two days", Project(countInput(weekly, "0", 2*day)), "200")

	// A day of 5000 among days of 100 does not go on: 10 days ahead are
	// 1000 (a mean would say 2750).
	burst := series(28, func(i int) float64 {
		if i == 25 {
			return 5000
		}
		return 100
	})
	checkPoint(t, "burst", Project(countInput(burst, "7000", 10*day)), "8000")
}

// The range widens with the horizon faster than independent days alone
// would (√days): the line's level and slope are uncertain too, and their
// error adds up over every day ahead.
func TestProjectRange(t *testing.T) {
	t.Parallel()
	noisy := series(28, func(i int) float64 { return 100 + 10*float64(1-2*(i%2)) })
	near := Project(countInput(noisy, "0", day))
	far := Project(countInput(noisy, "0", 16*day))
	if !near.Low.LessThan(near.Projected) || !near.Projected.LessThan(near.High) {
		t.Errorf("one day: %s [%s, %s]; want low < point < high", near.Projected, near.Low, near.High)
	}
	nearWidth, farWidth := near.High.Sub(near.Low), far.High.Sub(far.Low)
	if !farWidth.GreaterThan(nearWidth.Mul(decimal.NewFromInt(4))) {
		t.Errorf("range over 16 days %s, over one %s; want more than √16 = 4 times as wide", farWidth, nearWidth)
	}
	// The series ends low (90), so the robust line leans a little down:
	// 16 days of 100 within a few units.
	if far.Projected.Sub(decimal.NewFromInt(1600)).Abs().GreaterThan(decimal.NewFromInt(5)) ||
		!far.Low.LessThan(far.Projected) || !far.Projected.LessThan(far.High) {
		t.Errorf("16 days: %s [%s, %s]; want about 1600 within a range", far.Projected, far.Low, far.High)
	}
}

// A brand new subscription: without a whole day of history the pace so
// far goes on weighed by the share of a day elapsed, with a range from
// nothing more to the whole pace, and the answer says it is early; with
// no usage at all nothing is projected.
func TestProjectNewSubscription(t *testing.T) {
	t.Parallel()
	in := ForecastInput{
		Aggregation: AggSum, Scale: 6, Used: decimal.RequireFromString("12.5"),
		HistoryEnd: monday, CountedFrom: monday.Add(-5 * time.Hour), AsOf: monday, End: monday.Add(10 * time.Hour),
	}
	// 2.5 an hour for 10 hours is 25 more; 5 of 24 hours count: 5.208333.
	checkProjection(t, "five hours", Project(in), "17.708333", "12.5", "37.5")
	if m := Project(in).Method; m != ForecastMethodEarly {
		t.Errorf("five hours: method %q; want %q", m, ForecastMethodEarly)
	}
	// A day of pace counts whole: 12.5 a day for the 30 days ahead.
	day1 := in
	day1.CountedFrom, day1.End = monday.Add(-24*time.Hour), monday.Add(30*day)
	checkProjection(t, "one day", Project(day1), "387.5", "12.5", "762.5")
	in.Used = decimal.Zero
	checkProjection(t, "nothing used", Project(in), "0", "0", "0")
	in.CountedFrom = monday
	checkProjection(t, "just started", Project(in), "0", "0", "0")
	// A few days: their median, no trend, a range of at least half.
	few := countInput([]float64{10, 30, 20}, "60", 4*day)
	if got := Project(few); !got.Projected.Equal(decimal.NewFromInt(140)) ||
		got.Low.GreaterThan(decimal.NewFromInt(100)) || got.High.LessThan(decimal.NewFromInt(180)) {
		t.Errorf("three days: projected %s [%s, %s]; want 140 within at least [100, 180]", got.Projected, got.Low, got.High)
	}
}

// The last day ahead is prorated, as is the rest of the day AsOf falls in.
func TestProjectPartialDays(t *testing.T) {
	t.Parallel()
	in := countInput(series(28, func(int) float64 { return 24 }), "0", 0)
	in.AsOf = monday.Add(30 * time.Minute)
	in.End = in.AsOf.Add(60 * time.Hour)
	checkPoint(t, "60 hours at 1 an hour", Project(in), "60")
}

// max and unique_count project what is used so far; a period already
// over stays as it is.
func TestProjectMaxAndUniqueCount(t *testing.T) {
	t.Parallel()
	for _, agg := range []Aggregation{AggMax, AggUniqueCount} {
		in := countInput(series(28, func(i int) float64 { return float64(i) }), "42", 10*day)
		in.Aggregation = agg
		quota := decimal.NewFromInt(40)
		in.Quota = &quota
		got := Project(in)
		checkProjection(t, string(agg), got, "42", "42", "42")
		if got.RunsOutAt == nil || !got.RunsOutAt.Equal(in.AsOf) {
			t.Errorf("%s over its quota: runs out at %v; want as of %s", agg, got.RunsOutAt, in.AsOf)
		}
		in.Quota = nil
		if got := Project(in); got.RunsOutAt != nil {
			t.Errorf("%s without quota: runs out at %v; want nil", agg, got.RunsOutAt)
		}
	}
	in := countInput(series(28, func(int) float64 { return 100 }), "10", 10*day)
	in.Aggregation = AggMax
	quota := decimal.NewFromInt(20)
	in.Quota = &quota
	if got := Project(in); got.RunsOutAt != nil {
		t.Errorf("max below its quota: runs out at %v; want nil (a maximum has no pace)", got.RunsOutAt)
	}
}

// The quota runs out where the path reaches it, within the day; not
// within the period is nil; reached already is as of now.
func TestProjectRunsOut(t *testing.T) {
	t.Parallel()
	steady := series(28, func(int) float64 { return 100 })
	in := countInput(steady, "500", 10*day)
	quota := decimal.NewFromInt(1050)
	in.Quota = &quota
	// 550 more at 100 a day: 5.5 days.
	if got := Project(in).RunsOutAt; got == nil || !got.Equal(monday.Add(5*day+12*time.Hour)) {
		t.Errorf("runs out at %v; want %s", got, monday.Add(5*day+12*time.Hour))
	}
	quota = decimal.NewFromInt(1501)
	if got := Project(in).RunsOutAt; got != nil {
		t.Errorf("quota beyond the period's 1500: runs out at %v; want nil", got)
	}
	quota = decimal.NewFromInt(500)
	if got := Project(in).RunsOutAt; got == nil || !got.Equal(in.AsOf) {
		t.Errorf("quota reached: runs out at %v; want as of %s", got, in.AsOf)
	}
}

// BenchmarkProject: one meter's projection from 28 days of history (the
// Theil–Sen fit's 378 pairwise slopes dominate).
func BenchmarkProject(b *testing.B) {
	hist := series(28, func(i int) float64 { return 100 + float64(i%7)*10 + float64(i) })
	in := countInput(hist, "1000", 20*day)
	quota := decimal.NewFromInt(5000)
	in.Quota = &quota
	for b.Loop() {
		Project(in)
	}
}

// One call two minutes into a subscription is not the month's pace: the
// projection stays near what is used instead of 100,000 times it, and
// says it is early; with a day of history it is the usual method.
func TestProjectFirstMinutes(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	asOf := start.Add(2 * time.Minute)
	in := ForecastInput{Aggregation: AggSum, Scale: 6, Used: decimal.NewFromInt(5),
		HistoryEnd: asOf.Truncate(time.Hour), CountedFrom: start, AsOf: asOf, End: start.AddDate(0, 0, 30)}
	p := Project(in)
	if p.Projected.GreaterThan(decimal.NewFromInt(500)) || p.Method != ForecastMethodEarly {
		t.Errorf("two minutes, one call of 5: projected %s (%s); want at most 500, method %s", p.Projected, p.Method, ForecastMethodEarly)
	}
	in.History, in.HistoryEnd = []float64{5}, start.Add(day)
	in.AsOf = in.HistoryEnd
	if p := Project(in); p.Method != ForecastMethod {
		t.Errorf("a day of history: method %s; want %s", p.Method, ForecastMethod)
	}
}

// A hard quota caps the projection and its range (the gateway refuses
// calls past it); a soft one does not.
func TestProjectStopsAtHardQuota(t *testing.T) {
	t.Parallel()
	in := countInput(series(28, func(int) float64 { return 100 }), "2900", 6*day)
	quota := decimal.NewFromInt(3000)
	in.Quota, in.QuotaHard = &quota, true
	p := Project(in)
	if !p.Projected.Equal(quota) || !p.High.Equal(quota) || p.Low.GreaterThan(quota) || p.Low.LessThan(in.Used) {
		t.Errorf("hard quota 3000, 2900 used, 100 a day for 6 days: %s [%s, %s]; want 3000 [≤ 3000, 3000]", p.Projected, p.Low, p.High)
	}
	in.QuotaHard = false
	if p := Project(in); !p.Projected.Equal(decimal.NewFromInt(3500)) {
		t.Errorf("soft quota: projected %s; want 3500", p.Projected)
	}
}

// Days of a trial still running are not billed: with 10 days of trial
// and 10 billed days ahead at 100 a day, the projection adds 1000.
func TestProjectSkipsTrialDays(t *testing.T) {
	t.Parallel()
	in := countInput(series(28, func(int) float64 { return 100 }), "0", 20*day)
	in.CountedFrom = monday.Add(10 * day)
	if p := Project(in); !p.Projected.Equal(decimal.NewFromInt(1000)) {
		t.Errorf("10 trial days then 10 billed: projected %s; want 1000", p.Projected)
	}
}
