package metering

import "time"

// RollupSpan exposes, to the external tests, the whole hours of w the
// roll-up would read from since on (ok false when none).
func RollupSpan(w MeterWindow, since time.Time) (first, last time.Time, ok bool) {
	rw, ok := splitWindow(w, since)
	return time.Unix(rw.hoursAt[0], 0).UTC(), time.Unix(rw.hoursAt[1], 0).UTC(), ok
}
