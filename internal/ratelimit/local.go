package ratelimit

import (
	"math"
	"sync"
	"time"
)

// localLimiter is the GCRA of the script, in process, for decisions while
// Redis does not answer. It scales every limit by fraction, so that the
// instances together stay near the limit, and keeps TATs in nanoseconds of
// the caller's clock.
type localLimiter struct {
	fraction float64

	mu sync.Mutex
	// tats maps a limit key to its TAT. A key whose TAT has passed has a
	// full budget, the same as a missing key, so sweeps drop those.
	tats    map[string]int64
	sweepAt int
}

// localSweepMin is the size below which the map is never swept.
const localSweepMin = 1024

func newLocalLimiter(fraction float64) *localLimiter {
	return &localLimiter{fraction: fraction, tats: make(map[string]int64), sweepAt: localSweepMin}
}

// reset forgets every TAT: once Redis answers again it holds the truth,
// and the next outage starts from full local budgets.
func (l *localLimiter) reset() {
	l.mu.Lock()
	clear(l.tats)
	l.sweepAt = localSweepMin
	l.mu.Unlock()
}

// scaled returns the limit's interval and burst in nanoseconds at the
// local fraction.
func (l *localLimiter) scaled(lim Limit) (interval, burst int64) {
	interval = int64(math.Round(float64(lim.Period) / (float64(lim.Rate) * l.fraction)))
	burst = int64(float64(lim.burst()) * l.fraction)
	return max(interval, 1), max(burst, 1)
}

// allow decides like gcraScript: all limits or none.
func (l *localLimiter) allow(now time.Time, limits []Limit) Decision {
	t := now.UnixNano()
	var newTATs [maxLimits]int64
	refused := false
	pick, pickRem, pickRetry, pickReset := 0, int64(-1), int64(-1), int64(-1)

	l.mu.Lock()
	defer l.mu.Unlock()
	for i, lim := range limits {
		interval, burst := l.scaled(lim)
		tat, ok := l.tats[lim.Key]
		if !ok || tat < t {
			tat = t
		}
		newTAT := tat + interval
		diff := t - (newTAT - burst*interval)
		switch {
		case diff < 0:
			if !refused || -diff > pickRetry {
				pick, pickRetry, pickReset = i, -diff, tat-t
			}
			refused = true
		case !refused:
			newTATs[i] = newTAT
			rem, reset := diff/interval, newTAT-t
			if pickRem < 0 || rem < pickRem || (rem == pickRem && reset > pickReset) {
				pick, pickRem, pickReset = i, rem, reset
			}
		}
	}
	if refused {
		return Decision{Limit: limits[pick], RetryAfter: time.Duration(pickRetry), Reset: time.Duration(pickReset)}
	}
	if len(l.tats) >= l.sweepAt {
		l.sweep(t)
	}
	for i, lim := range limits {
		l.tats[lim.Key] = newTATs[i]
	}
	return Decision{Allowed: true, Limit: limits[pick], Remaining: int(pickRem), Reset: time.Duration(pickReset)}
}

// sweep drops the keys whose budget is full again and sets the next sweep
// at twice the size left, so sweeps cost O(1) per request amortized.
func (l *localLimiter) sweep(now int64) {
	for k, tat := range l.tats {
		if tat <= now {
			delete(l.tats, k)
		}
	}
	l.sweepAt = max(2*len(l.tats), localSweepMin)
}
