package metering_test

import (
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/veil-platform/veil/metering"
)

func TestExport(t *testing.T) {
	r := setupAnalytics(t)
	from, to, _ := analyticsWindow(t)
	for _, tc := range []struct {
		name string
		q    metering.ExportQuery
		keep func(analyticsEvent) bool
	}{
		{"subscription", metering.ExportQuery{Subject: "sub_a"}, func(e analyticsEvent) bool { return e.subject == "sub_a" }},
		{"API", metering.ExportQuery{APIID: "api_x"}, func(analyticsEvent) bool { return true }},
		{"other API", metering.ExportQuery{APIID: "api_y"}, func(analyticsEvent) bool { return false }},
		{"key", metering.ExportQuery{Subject: "sub_a", KeyID: "key_2"}, func(e analyticsEvent) bool { return e.subject == "sub_a" && e.key == "key_2" }},
		{"route and method", metering.ExportQuery{APIID: "api_x", Method: "GET", Route: "/v1/items/{id}"},
			func(e analyticsEvent) bool { return e.method == "GET" && e.route == "/v1/items/{id}" }},
		{"5xx", metering.ExportQuery{APIID: "api_x", StatusClass: 5}, func(e analyticsEvent) bool { return e.status/100 == 5 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.From, q.To = from, to
			var want []analyticsEvent
			for _, e := range analyticsDataset {
				if at := utc(t, e.at); tc.keep(e) && !at.Before(from) && at.Before(to) {
					want = append(want, e)
				}
			}
			// Rows come by time, then source and id: ids follow the
			// dataset's order, so a stable sort by time is that order.
			sort.SliceStable(want, func(i, j int) bool { return utc(t, want[i].at).Before(utc(t, want[j].at)) })
			var got []metering.ExportRow
			if err := r.Export(t.Context(), q, func(x metering.ExportRow) error { got = append(got, x); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d rows; want %d: %+v", len(got), len(want), got)
			}
			for i, x := range got {
				w := want[i]
				if x.Subject != w.subject || !x.Time.Equal(utc(t, w.at)) || x.KeyID != w.key || x.Status != w.status ||
					x.LatencyMS != w.latency || x.Units.String() != w.units || x.Route != w.route || x.Method != w.method || x.APIID != "api_x" {
					t.Errorf("row %d: %+v; want %+v", i, x, w)
				}
			}
		})
	}
}

func TestExportStopsOnError(t *testing.T) {
	r := setupAnalytics(t)
	from, to, _ := analyticsWindow(t)
	stop := errors.New("stop")
	n := 0
	err := r.Export(t.Context(), metering.ExportQuery{APIID: "api_x", From: from, To: to}, func(metering.ExportRow) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("err %v after %d rows; want stop after 1", err, n)
	}
	for name, q := range map[string]metering.ExportQuery{
		"no scope":     {From: from, To: to},
		"empty":        {Subject: "sub_a", From: to, To: from},
		"over 31 days": {Subject: "sub_a", From: from, To: from.Add(metering.MaxExportWindow + time.Second)},
	} {
		if err := r.Export(t.Context(), q, func(metering.ExportRow) error { return nil }); !errors.Is(err, metering.ErrBadQuery) {
			t.Errorf("%s: %v; want ErrBadQuery", name, err)
		}
	}
}
