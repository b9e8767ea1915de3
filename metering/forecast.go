package metering

// Projection of a meter's usage to its period's end (Project), from its
// daily usage over up to the last four weeks, including earlier periods.
// No I/O: the history comes from MeterSeries.
//
// The method, robust so that a burst is not taken for the new pace:
//
//   - The history is whole days (24 h) ending at the last whole hour
//     before AsOf, oldest first.
//   - Weekly pattern: with at least two weeks of history, each weekday's
//     factor is the median, over that weekday's days, of the day's usage
//     divided by the week's median day around it; factors are normalized
//     to average 1. With less history every factor is 1.
//   - Level and trend: a Theil–Sen line through the deseasonalized days:
//     the slope is the median of the slopes between every pair of days,
//     the intercept the median of what each day leaves. A day 10 times
//     the others moves neither median. With fewer than 7 days the slope
//     is 0 (a few days say nothing of growth) and the level their median.
//   - The rest of the period, day by day from AsOf, is the line at that
//     day times its weekday's factor, never below zero, the last day
//     prorated to the period's end.
//   - Range (ForecastConfidence, 80 %): the point ± 1.33 standard
//     deviations of the cumulative usage ahead, which adds up a day's
//     noise about the line (the residuals' robust spread; for counts at
//     least Poisson noise), the error of the line's level and of its
//     slope (extrapolated, it grows with the square of the days ahead),
//     and the error of the weekday factors. Simulated steady, growing,
//     weekly and Poisson series hold the real total in 75–87 % of
//     periods (TestProjectRangeCoverage). It assumes the history's
//     pattern goes on: a change of pace (a new client, a launch) falls
//     outside it. With fewer than 7 days of history at least half the
//     point either side. The low end never goes below what is used
//     already.
//   - Less than a day of history (a new subscription): the pace so far,
//     usage counted this period over the time since counting began,
//     shrunk toward nothing more by the share of a day that has passed
//     (a first call two minutes in is not a pace: 1/720 of it counts),
//     with a range from nothing more to the whole pace (twice it after a
//     day). Such a projection answers ForecastMethodEarly: its range is
//     not calibrated.
//
// Aggregations: count and sum project as above. max is the largest value
// so far: the period's maximum only rises, and a peak cannot be
// projected from a pace, so its projection and range are what is used.
// unique_count is the distinct keys so far, likewise: new keys do not
// arrive at a rate a history of totals shows.
//
// The path starts at AsOf or, during a trial, at CountedFrom (the trial's
// end): a trial's days are not billed. A hard quota caps the projection
// and its range: the gateway refuses calls past it.
//
// RunsOutAt is when used plus the projection's point path reaches the
// quota, interpolated within the day; AsOf when it is reached already,
// nil when the path stays below it until the period's end.

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/shopspring/decimal"
)

// ForecastConfidence is the probability the projected range aims to hold.
const ForecastConfidence = "0.8"

// ForecastMethod names the method in answers, so a client can tell a
// change of it.
const ForecastMethod = "theil-sen-weekly-v2"

// ForecastMethodEarly names a projection from less than a day of history
// (Projection.Method).
const ForecastMethodEarly = "pace-so-far-v1"

// ForecastDays is how many days of history a projection reads.
const ForecastDays = 28

const day = 24 * time.Hour

// minTrendDays is the history a trend needs; minWeeklyDays a weekly
// pattern.
const (
	minTrendDays  = 7
	minWeeklyDays = 14
)

// ForecastInput is one meter's period so far and its history.
type ForecastInput struct {
	Aggregation Aggregation
	// Scale is the meter's decimal places (Meter.Scale): projections are
	// rounded to it.
	Scale int32
	// Used is the period's value so far, as the invoice counts it.
	Used decimal.Decimal
	// History holds whole days of usage, oldest first; the last ends at
	// HistoryEnd (at or before AsOf).
	History    []float64
	HistoryEnd time.Time
	// CountedFrom is when this period's counting began (its start or a
	// trial's end): with less than a day of history, Used over the time
	// since is the pace.
	CountedFrom time.Time
	AsOf, End   time.Time
	// Quota, when set, is what RunsOutAt compares the path with; when
	// QuotaHard the gateway refuses calls past it, so no projection goes
	// beyond it.
	Quota     *decimal.Decimal
	QuotaHard bool
}

// Projection is a meter's value at the period's end: a point and a
// range, and when the quota runs out at that pace.
type Projection struct {
	Projected, Low, High decimal.Decimal
	RunsOutAt            *time.Time
	// Method is ForecastMethod, or ForecastMethodEarly when less than a
	// day of history gave only the pace so far.
	Method string
}

// Project projects in's meter to the period's end.
func Project(in ForecastInput) Projection {
	out := Projection{Projected: in.Used, Low: in.Used, High: in.Used, Method: ForecastMethod}
	if len(in.History) == 0 && in.Aggregation != AggMax && in.Aggregation != AggUniqueCount {
		out.Method = ForecastMethodEarly
	}
	ahead := in.End.Sub(in.AsOf)
	if in.Aggregation == AggMax || in.Aggregation == AggUniqueCount || ahead <= 0 {
		out.RunsOutAt = runsOut(in, nil)
		return out
	}
	path := dailyPath(in)
	point, lo, hi := 0.0, 0.0, 0.0
	for _, p := range path {
		point += p.point
		lo, hi = p.low, p.high
	}
	out.Projected = addRounded(in.Used, point, in.Scale)
	out.Low = addRounded(in.Used, max(lo, 0), in.Scale)
	out.High = addRounded(in.Used, max(hi, point), in.Scale)
	if out.Low.GreaterThan(out.Projected) {
		out.Low = out.Projected
	}
	out.RunsOutAt = runsOut(in, path)
	if in.QuotaHard && in.Quota != nil {
		// Never below what is used: a meter may overshoot by the calls
		// in flight when the block landed.
		limit := decimal.Max(*in.Quota, in.Used)
		out.Projected, out.Low, out.High = decimal.Min(out.Projected, limit), decimal.Min(out.Low, limit), decimal.Min(out.High, limit)
	}
	return out
}

// step is one day (or the last part of one) ahead: its span, its
// projected usage, and the range of the cumulative usage ahead at its end.
type step struct {
	from, to        time.Time
	point           float64
	low, high       float64
	cumulativePoint float64
}

// dailyPath is the projected usage of each day from AsOf to End.
func dailyPath(in ForecastInput) []step {
	n := len(in.History)
	if n == 0 {
		return shortPath(in)
	}
	f := weekdayFactors(in.History, in.HistoryEnd)
	des := make([]float64, n)
	for i, v := range in.History {
		des[i] = v / f[weekdayOf(in.HistoryEnd, n, i)]
	}
	slope, icpt := 0.0, median(des)
	if n >= minTrendDays {
		slope, icpt = theilSen(des)
	}
	u := uncertaintyOf(in.Aggregation, des, slope, icpt)
	var path []step
	cum := 0.0
	var w, wx, noise float64  // Σ weight, Σ weight·(index − centre), Σ factor²·fraction
	var perWeekday [7]float64 // Σ fraction per weekday: a factor's error repeats on each
	// Day k ahead starts k days after HistoryEnd; index n+k on the line.
	start := in.HistoryEnd
	for k := 0; start.Before(in.End); k++ {
		end := start.Add(day)
		// Days of a trial still running are not billed: the path starts
		// where counting does.
		from, to := maxTime(start, maxTime(in.AsOf, in.CountedFrom)), minTimeOf(end, in.End)
		if !to.After(from) {
			start = end
			continue
		}
		frac := to.Sub(from).Hours() / 24
		fw := f[weekdayAt(start)]
		x := float64(n + k)
		v := max(icpt+slope*x, 0) * fw * frac
		cum += v
		w += fw * frac
		wx += fw * frac * (x - u.centre)
		noise += fw * fw * frac
		perWeekday[weekdayAt(start)] += frac
		v2 := u.level*w*w + u.slope*wx*wx + u.day*noise
		for _, s := range perWeekday {
			v2 += u.factor * s * s
		}
		sd := math.Sqrt(v2)
		lo, hi := cum-forecastZ*sd, cum+forecastZ*sd
		if n < minTrendDays {
			lo, hi = min(lo, cum/2), max(hi, cum*1.5)
		}
		path = append(path, step{from: from, to: to, point: v, low: lo, high: hi, cumulativePoint: cum})
		start = end
	}
	return path
}

// forecastZ is Student's t 90th percentile at the ~20 degrees of freedom
// a four-week fit leaves (the normal's is 1.28; σ is itself estimated):
// point ± forecastZ standard deviations holds 80 % (ForecastConfidence).
const forecastZ = 1.33

// uncertainty is the fit's variances, in deseasonalized daily units: a
// day about the line, the line's level at the history's centre, its
// slope, and a weekday's factor (relative, times the level squared).
type uncertainty struct {
	day, level, slope, factor float64
	centre                    float64
}

// uncertaintyOf estimates how far the line and a day may be off. A day's
// spread is the residuals' median absolute deviation (a burst does not
// widen it), corrected for the parameters fitted (line and weekday
// factors), and for counts at least the level itself (calls arriving
// independently vary like a Poisson count), so that a steady history
// does not claim an exact future. The level's variance is a median's
// (π/2 · σ²/n); the slope's a Theil–Sen slope's (about 1.1 · σ²/Σ(i −
// centre)²); each weekday factor's a median's over its n/7 days.
func uncertaintyOf(agg Aggregation, des []float64, slope, icpt float64) uncertainty {
	n := float64(len(des))
	u := uncertainty{centre: (n - 1) / 2}
	resid := make([]float64, len(des))
	for i, v := range des {
		resid[i] = v - (icpt + slope*float64(i))
	}
	m := median(resid)
	dev := make([]float64, len(resid))
	for i, r := range resid {
		dev[i] = math.Abs(r - m)
	}
	sigma := 1.4826 * median(dev)
	u.day = sigma * sigma
	params := 2.0
	if len(des) >= minWeeklyDays {
		params += 7
	}
	if n > params {
		u.day *= n / (n - params)
	}
	if agg == AggCount {
		u.day = max(u.day, max(icpt+slope*(n-1), 0))
	}
	u.level = math.Pi / 2 * u.day / n
	if len(des) >= minTrendDays {
		u.slope = 1.1 * u.day / (n * (n*n - 1) / 12)
	}
	if len(des) >= minWeeklyDays {
		u.factor = math.Pi / 2 * u.day * 7 / n
	}
	return u
}

// shortPath is the path of a meter with less than a day of history: the
// pace since counting began, weighed by the share of a day elapsed (a
// few minutes' usage says little of a month's), its range from nothing
// more to the whole pace, or twice it once a day has passed.
func shortPath(in ForecastInput) []step {
	elapsed := in.AsOf.Sub(in.CountedFrom)
	if elapsed <= 0 {
		return nil
	}
	used, _ := in.Used.Float64()
	pace := used / elapsed.Hours() * in.End.Sub(in.AsOf).Hours()
	weight := min(elapsed.Hours()/24, 1)
	point := weight * pace
	return []step{{from: in.AsOf, to: in.End, point: point, low: 0, high: max(pace, 2*point), cumulativePoint: point}}
}

// runsOut is when used plus the path's point reaches the quota.
func runsOut(in ForecastInput, path []step) *time.Time {
	if in.Quota == nil {
		return nil
	}
	if !in.Used.LessThan(*in.Quota) {
		t := in.AsOf
		return &t
	}
	need, _ := in.Quota.Sub(in.Used).Float64()
	cum := 0.0
	for _, p := range path {
		if p.point > 0 && cum+p.point >= need {
			t := p.from.Add(time.Duration((need - cum) / p.point * float64(p.to.Sub(p.from)))).Truncate(time.Second)
			if t.Before(in.End) {
				return &t
			}
			return nil
		}
		cum += p.point
	}
	return nil
}

// weekdayFactors are each weekday's usage relative to the average day,
// all 1 with less than minWeeklyDays of history or no usage.
func weekdayFactors(h []float64, end time.Time) [7]float64 {
	f := [7]float64{1, 1, 1, 1, 1, 1, 1}
	n := len(h)
	if n < minWeeklyDays {
		return f
	}
	var ratios [7][]float64
	// Each day against the median of the 7 days centred on it (the
	// first and last 3 days against the first or last whole week).
	for i := range h {
		lo := min(max(i-3, 0), n-7)
		m := median(h[lo : lo+7])
		if m <= 0 {
			continue
		}
		wd := weekdayOf(end, n, i)
		ratios[wd] = append(ratios[wd], h[i]/m)
	}
	sum := 0.0
	for d := range f {
		if len(ratios[d]) == 0 {
			return [7]float64{1, 1, 1, 1, 1, 1, 1}
		}
		f[d] = median(ratios[d])
		sum += f[d]
	}
	if sum <= 0 {
		return [7]float64{1, 1, 1, 1, 1, 1, 1}
	}
	for d := range f {
		// A weekday without usage keeps a small factor, so that dividing
		// by it stays finite.
		f[d] = max(f[d]*7/sum, 1e-9)
	}
	return f
}

// weekdayOf is the weekday of history day i of n ending at end (the
// weekday its start falls on, UTC).
func weekdayOf(end time.Time, n, i int) int {
	return weekdayAt(end.Add(-time.Duration(n-i) * day))
}

func weekdayAt(t time.Time) int { return int(t.UTC().Weekday()) }

// theilSen fits y = icpt + slope·i: the median of pairwise slopes, then
// the median of y − slope·i.
func theilSen(y []float64) (slope, icpt float64) {
	n := len(y)
	slopes := make([]float64, 0, n*(n-1)/2)
	for i := range n {
		for j := i + 1; j < n; j++ {
			slopes = append(slopes, (y[j]-y[i])/float64(j-i))
		}
	}
	slope = median(slopes)
	rest := make([]float64, n)
	for i, v := range y {
		rest[i] = v - slope*float64(i)
	}
	return slope, median(rest)
}

func median(v []float64) float64 { return quantile(v, 0.5) }

// quantile is the q-quantile of v, linearly interpolated; 0 for none.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (s[i+1]-s[i])*(pos-float64(i))
}

// addRounded is used plus extra rounded to scale places, never less
// than used.
func addRounded(used decimal.Decimal, extra float64, scale int32) decimal.Decimal {
	if extra <= 0 || math.IsNaN(extra) || math.IsInf(extra, 0) {
		return used
	}
	// Beyond any quota or sum a meter can reach: a runaway trend stops
	// here instead of overflowing.
	extra = min(extra, 1e18)
	return used.Add(decimal.NewFromFloat(extra).Round(scale))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTimeOf(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
