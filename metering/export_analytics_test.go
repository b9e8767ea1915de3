package metering

import "time"

// SetRawAnalyticsWindow moves the longest window Analytics reads from
// usage_events alone, for the external tests; it returns the restore.
func SetRawAnalyticsWindow(d time.Duration) (restore func()) {
	before := rawAnalyticsWindow
	rawAnalyticsWindow = d
	return func() { rawAnalyticsWindow = before }
}

// SetExportSliceRows moves the rows an export reads per query, for the
// external tests; it returns the restore.
func SetExportSliceRows(n uint64) (restore func()) {
	before := exportSliceRows
	exportSliceRows = n
	return func() { exportSliceRows = before }
}
