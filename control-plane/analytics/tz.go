package analytics

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/veil-platform/veil/metering"
)

// ErrInvalidParameter is wrapped by every refusal of a query parameter:
// an unknown time zone, a time that does not parse, from not before to, a
// window too long (400 invalid-parameter).
var ErrInvalidParameter = errors.New("invalid parameter")

// InvalidParameter refuses the query parameter name: detail says what it
// must be.
func InvalidParameter(name, format string, args ...any) error {
	return fmt.Errorf("%w: %s %s", ErrInvalidParameter, name, fmt.Sprintf(format, args...))
}

// Window is a checked window of an analytics view or an export: [From,
// To) in UTC, and the time zone its days are cut in.
type Window struct {
	From, To time.Time
	// Zone is the IANA name asked for (UTC by default), Loc its rules.
	Zone string
	Loc  *time.Location
}

// WindowRule says how ParseWindow reads from and to.
type WindowRule struct {
	// DefaultDays, when from is absent, starts the window at the local
	// midnight DefaultDays-1 days before to's date, so that it shows
	// DefaultDays whole dates (the last one up to to). 0 makes from and
	// to required.
	DefaultDays int
	// Max is the longest window.
	Max time.Duration
}

// Rules of the consumer analytics (default the last 30 days, at most 400)
// and of the exports (a window is required, at most 31 days).
var (
	AnalyticsWindow = WindowRule{DefaultDays: 30, Max: 400 * 24 * time.Hour}
	ExportWindow    = WindowRule{Max: metering.MaxExportWindow}
)

// Times outside these bounds are refused: usage is stored as DateTime,
// seconds from 1970 that end in 2106, and ClickHouse labels no date before
// 1970-01-01 (a day that starts on 1970-01-01 in a zone west of UTC began
// on 1969-12-31: from a day later, every zone's dates are 1970 or later).
var (
	earliest = time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC)
	latest   = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// ParseWindow reads from, to (RFC 3339) and tz (an IANA name, default
// UTC) from q.
func ParseWindow(q url.Values, now time.Time, rule WindowRule) (Window, error) {
	w := Window{Zone: "UTC", Loc: time.UTC, To: now.UTC()}
	if q.Has("tz") {
		loc, err := LoadZone(q.Get("tz"))
		if err != nil {
			return Window{}, err
		}
		w.Zone, w.Loc = q.Get("tz"), loc
	}
	if rule.DefaultDays == 0 && (!q.Has("from") || !q.Has("to")) {
		return Window{}, InvalidParameter("from", "and to are required")
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"to", &w.To}, {"from", &w.From}} {
		if !q.Has(p.name) {
			continue
		}
		t, err := time.Parse(time.RFC3339, q.Get(p.name))
		if err != nil {
			return Window{}, InvalidParameter(p.name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		if t.Before(earliest) || !t.Before(latest) {
			return Window{}, InvalidParameter(p.name, "must be between %s and %s", earliest.Format(time.DateOnly), latest.Format(time.DateOnly))
		}
		*p.dst = t.UTC()
	}
	if !q.Has("from") {
		y, m, d := w.To.In(w.Loc).Date()
		w.From = dayStart(y, m, d-(rule.DefaultDays-1), w.Loc).UTC()
	}
	switch {
	case w.From.Before(earliest):
		// A default window can reach back past earliest.
		return Window{}, InvalidParameter("from", "must be between %s and %s", earliest.Format(time.DateOnly), latest.Format(time.DateOnly))
	case !w.From.Before(w.To):
		return Window{}, InvalidParameter("from", "must be before to")
	case w.To.Sub(w.From) > rule.Max:
		return Window{}, InvalidParameter("to", "is more than %d days after from", int(rule.Max/(24*time.Hour)))
	}
	return w, nil
}

// LoadZone returns the rules of an IANA time zone name. It refuses the
// names time.LoadLocation would take that are not zones: empty (UTC in
// disguise), Local (the server's own), anything but letters, digits,
// _ + - and /, and the files of the zone directory that are not IANA
// names, which ClickHouse does not load or which mean the server's own
// zone: every part of an IANA name starts with a capital letter, so
// localtime, posixrules, posix/… and right/… are refused, and Factory by
// name.
func LoadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" || name == "Factory" || len(name) > 64 ||
		strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-/") != "" ||
		strings.Contains(name, "..") || strings.HasPrefix(name, "/") || !capitalParts(name) {
		return nil, InvalidParameter("tz", "must be an IANA time zone name such as Europe/Paris")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, InvalidParameter("tz", "%q is not a time zone this server knows", name)
	}
	return loc, nil
}

// capitalParts reports whether every /-separated part of name starts
// with a capital letter.
func capitalParts(name string) bool {
	for part := range strings.SplitSeq(name, "/") {
		if part == "" || part[0] < 'A' || part[0] > 'Z' {
			return false
		}
	}
	return true
}

// DayStarts are the instants inside the window where a day of its zone
// begins.
func (w Window) DayStarts() []time.Time { return metering.DayStarts(w.From, w.To, w.Loc) }

// Days labels the window's days, one more than DayStarts: the local date
// each begins on.
func (w Window) Days(starts []time.Time) []string {
	out := make([]string, 0, len(starts)+1)
	out = append(out, w.From.In(w.Loc).Format(time.DateOnly))
	for _, s := range starts {
		out = append(out, s.In(w.Loc).Format(time.DateOnly))
	}
	return out
}

// dayStart is the first instant of a local date (its midnight, or the
// clock change that skips it).
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	noonBefore := time.Date(y, m, d-1, 12, 0, 0, 0, loc)
	return metering.DayStarts(noonBefore, noonBefore.Add(48*time.Hour), loc)[0]
}
