package analytics_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/analytics"
)

func TestParseWindow(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 34, 56, 0, time.UTC)
	for _, tc := range []struct {
		query, from, to, zone string
		days                  int
	}{
		// 30 dates: from the local midnight 29 days before today.
		{"", "2026-02-09T00:00:00Z", "2026-03-10T12:34:56Z", "UTC", 30},
		{"tz=Asia/Kolkata", "2026-02-08T18:30:00Z", "2026-03-10T12:34:56Z", "Asia/Kolkata", 30},
		// Kathmandu is 5:45 ahead; its 03-10 began at 18:15 UTC on 03-09.
		{"tz=Asia/Kathmandu&to=2026-03-10T00:00:00Z", "2026-02-08T18:15:00Z", "2026-03-10T00:00:00Z", "Asia/Kathmandu", 30},
		// New York moves to EDT on 03-08: the window still starts at a
		// local midnight (EST, 05:00 UTC).
		{"tz=America/New_York", "2026-02-09T05:00:00Z", "2026-03-10T12:34:56Z", "America/New_York", 30},
		{"from=2026-03-01T10:00:00%2B02:00&to=2026-03-02T00:00:00Z", "2026-03-01T08:00:00Z", "2026-03-02T00:00:00Z", "UTC", 1},
	} {
		q, _ := url.ParseQuery(tc.query)
		w, err := analytics.ParseWindow(q, now, analytics.AnalyticsWindow)
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		if w.From.Format(time.RFC3339) != tc.from || w.To.Format(time.RFC3339) != tc.to || w.Zone != tc.zone {
			t.Errorf("%q: %s to %s in %s; want %s to %s in %s", tc.query, w.From.Format(time.RFC3339), w.To.Format(time.RFC3339), w.Zone, tc.from, tc.to, tc.zone)
		}
		if days := w.Days(w.DayStarts()); len(days) != tc.days || days[len(days)-1] != w.To.Add(-time.Second).In(w.Loc).Format(time.DateOnly) {
			t.Errorf("%q: days %v; want %d ending on to's date", tc.query, days, tc.days)
		}
	}
}

func TestParseWindowRefuses(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		query string
		rule  analytics.WindowRule
	}{
		{"tz=Mars/Olympus", analytics.AnalyticsWindow},
		{"tz=", analytics.AnalyticsWindow},
		{"tz=Local", analytics.AnalyticsWindow},
		{"tz=../../../../etc/localtime", analytics.AnalyticsWindow},
		{"tz=/etc/localtime", analytics.AnalyticsWindow},
		{"tz=" + strings.Repeat("A", 65), analytics.AnalyticsWindow},
		{"from=2026-03-10T12:00:00Z", analytics.AnalyticsWindow},                             // from = to (now)
		{"from=2026-03-11T00:00:00Z", analytics.AnalyticsWindow},                             // after to
		{"from=2025-02-01T00:00:00Z", analytics.AnalyticsWindow},                             // over 400 days
		{"from=2026-03-01", analytics.AnalyticsWindow},                                       // not RFC 3339
		{"to=2200-01-01T00:00:00Z", analytics.AnalyticsWindow},                               // past 2100
		{"from=1970-01-01T00:00:00Z&to=1970-01-05T00:00:00Z", analytics.AnalyticsWindow},     // New York's 1969-12-31
		{"to=1970-01-05T00:00:00Z", analytics.AnalyticsWindow},                               // default from in 1969
		{"from=2026-03-01T00:00:00Z", analytics.ExportWindow},                                // to required
		{"from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:01Z", analytics.ExportWindow},        // over 31 days
		{"from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&tz=UTC", analytics.ExportWindow}, // empty
	} {
		q, _ := url.ParseQuery(tc.query)
		if _, err := analytics.ParseWindow(q, now, tc.rule); !errors.Is(err, analytics.ErrInvalidParameter) {
			t.Errorf("%q: %v; want ErrInvalidParameter", tc.query, err)
		}
	}
	q, _ := url.ParseQuery("from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z")
	if _, err := analytics.ParseWindow(q, now, analytics.ExportWindow); err != nil {
		t.Errorf("31 days exactly: %v", err)
	}
}

// TestLoadZoneIANAOnly: files of the zone directory that are not IANA
// names (the server's own zone, leap-second and POSIX variants, which
// ClickHouse does not load) are refused as a bad parameter; IANA names of
// one, two and three parts are taken.
func TestLoadZoneIANAOnly(t *testing.T) {
	for _, name := range []string{"localtime", "posixrules", "Factory", "right/Europe/Paris", "posix/Europe/Paris", "Europe/paris"} {
		if loc, err := analytics.LoadZone(name); !errors.Is(err, analytics.ErrInvalidParameter) {
			t.Errorf("LoadZone(%q) = %v, %v; want ErrInvalidParameter", name, loc, err)
		}
	}
	for _, name := range []string{"UTC", "EST5EDT", "Etc/GMT+5", "Asia/Kolkata", "America/Argentina/Buenos_Aires"} {
		if _, err := analytics.LoadZone(name); err != nil {
			t.Errorf("LoadZone(%q): %v", name, err)
		}
	}
}
