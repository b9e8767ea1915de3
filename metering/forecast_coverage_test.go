package metering

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// poisson draws a Poisson count of mean mu (Knuth for small means, the
// normal approximation beyond).
func poisson(r *rand.Rand, mu float64) float64 {
	if mu > 50 {
		return max(0, math.Round(mu+math.Sqrt(mu)*r.NormFloat64()))
	}
	l, k, p := math.Exp(-mu), 0.0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// The 80 % range holds the real total in roughly 80 % of simulated
// periods: steady, growing and weekly series with noise, small Poisson
// counts, from a period's start and from its middle. Each case draws 28
// days of history and the period's real days ahead from the same model.
func TestProjectRangeCoverage(t *testing.T) {
	t.Parallel()
	weekly := func(d int) float64 {
		// Day d after the history's start; the history ends on a Monday
		// 28 days later, so d = 0 is a Monday too.
		if wd := d % 7; wd == 5 || wd == 6 {
			return 0.3
		}
		return 1
	}
	cases := []struct {
		name  string
		ahead int
		draw  func(r *rand.Rand, d int) float64
	}{
		{"steady", 30, func(r *rand.Rand, _ int) float64 { return max(0, 100+20*r.NormFloat64()) }},
		{"steady, 10 days left", 10, func(r *rand.Rand, _ int) float64 { return max(0, 100+20*r.NormFloat64()) }},
		{"growing", 30, func(r *rand.Rand, d int) float64 { return max(0, 50+3*float64(d)+15*r.NormFloat64()) }},
		{"weekly", 30, func(r *rand.Rand, d int) float64 { return max(0, 200*weekly(d)*(1+0.1*r.NormFloat64())) }},
		{"poisson, 5 a day", 30, func(r *rand.Rand, _ int) float64 { return poisson(r, 5) }},
		{"poisson, steady 400 a day", 20, func(r *rand.Rand, _ int) float64 { return poisson(r, 400) }},
	}
	for _, c := range cases {
		r := rand.New(rand.NewPCG(18, uint64(len(c.name))))
		hits, n := 0, 1000
		for range n {
			h := make([]float64, 28)
			for i := range h {
				h[i] = c.draw(r, i)
			}
			truth := 0.0
			for k := range c.ahead {
				truth += c.draw(r, 28+k)
			}
			p := Project(ForecastInput{Aggregation: AggCount, Used: decimal.Zero, History: h, HistoryEnd: monday,
				CountedFrom: monday, AsOf: monday, End: monday.Add(time.Duration(c.ahead) * day)})
			lo, _ := p.Low.Float64()
			hi, _ := p.High.Float64()
			if truth >= lo && truth <= hi {
				hits++
			}
		}
		share := float64(hits) / float64(n)
		t.Logf("%s: %.1f%%", c.name, 100*share)
		if share < 0.70 || share > 0.95 {
			t.Errorf("%s: the 80%% range held the real total in %.1f%% of %d periods; want 70–95%%", c.name, 100*share, n)
		}
	}
}
