package metering

import "time"

// SetRawAnalyticsWindow moves the longest window Analytics reads from
// usage_events alone, for the external tests; it returns the restore.
func SetRawAnalyticsWindow(d time.Duration) (restore func()) {
	before := rawAnalyticsWindow
	rawAnalyticsWindow = d
	return func() { rawAnalyticsWindow = before }
}
