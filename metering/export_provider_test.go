package metering

import "time"

// ProviderPieces names the sources [from, to) is read from, in order.
func ProviderPieces(from, to time.Time, loc *time.Location) []string {
	var out []string
	for _, p := range providerPieces(from, to, loc) {
		out = append(out, [...]string{pieceDay: "day", pieceHour: "hour", pieceQuarter: "quarter", pieceMinute: "minute"}[p.Kind])
	}
	return out
}
