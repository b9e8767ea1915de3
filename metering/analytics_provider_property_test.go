package metering_test

import (
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

type propEvent struct {
	id, subject, api, method, route string
	at                              time.Time
	status                          uint16
	latency                         uint32
	units                           decimal.Decimal
}

var propZones = []string{"UTC", "Europe/London", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
	"Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham", "Pacific/Kiritimati", "Pacific/Pago_Pago"}

// TestProviderUsageAgreesWithEvents: ProviderUsage against sums computed in
// Go from the events themselves (each call's day is its time in the zone),
// for zones with every kind of midnight (UTC, UTC+0 with summer time, whole
// hours, half and quarter hours, a 30-minute clock change, a skipped
// midnight, +12:45/+13:45, +14, -11) and random ragged windows of whole
// minutes from an hour to 240 days, seeded.
func TestProviderUsageAgreesWithEvents(t *testing.T) {
	conn := clickHouseUTC(t)
	rng := rand.New(rand.NewSource(18))
	var evs []propEvent
	add := func(at time.Time) {
		i := len(evs)
		evs = append(evs, propEvent{
			id: fmt.Sprint("x", i), subject: fmt.Sprint("s", rng.Intn(30)), api: []string{"api_a", "api_b", "api_c"}[rng.Intn(3)],
			method: []string{"GET", "POST"}[rng.Intn(2)], route: fmt.Sprint("/r", rng.Intn(6)), at: at.Truncate(time.Second),
			status: []uint16{200, 201, 404, 429, 500, 503}[rng.Intn(6)], latency: uint32(rng.Intn(2000)),
			units: decimal.New(int64(rng.Intn(1000)), -3),
		})
	}
	start := time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC)
	end := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	// Events around every local midnight of every zone, and at random.
	for _, z := range propZones {
		loc, _ := time.LoadLocation(z)
		for d := start.In(loc); d.Before(end); d = d.AddDate(0, 0, 1) {
			y, m, dd := d.Date()
			mid := time.Date(y, m, dd, 0, 0, 0, 0, loc)
			if rng.Intn(3) == 0 {
				for _, off := range []time.Duration{-time.Second, 0, 59 * time.Second, -61 * time.Second, time.Duration(rng.Intn(7200)-3600) * time.Second} {
					add(mid.Add(off))
				}
			}
		}
	}
	for range 3000 {
		add(start.Add(time.Duration(rng.Int63n(int64(end.Sub(start))))))
	}
	// DST transition instants, ± a little.
	for _, z := range propZones {
		loc, _ := time.LoadLocation(z)
		for a := start; a.Before(end); {
			_, e := a.In(loc).ZoneBounds()
			if e.IsZero() || !e.Before(end) {
				break
			}
			for _, off := range []time.Duration{-time.Second, 0, time.Minute, 30 * time.Minute, -30 * time.Minute, 59 * time.Minute} {
				add(e.Add(off))
			}
			a = e
		}
	}
	// Events far before and after the windows, which none may count.
	for _, s := range []string{"1971-06-01 00:44:00", "1971-06-01 00:45:00", "1971-06-02 12:00:00", "1970-01-01 00:00:00", "1970-01-01 04:59:59",
		"1970-01-01 05:00:00", "2099-12-31 09:59:00", "2099-12-31 10:00:00", "2099-12-31 23:59:59"} {
		add(utc(t, s))
	}
	var rows [][]any
	now := time.Now().UTC().Truncate(time.Second)
	for i, e := range evs {
		rows = append(rows, []any{e.id, "/gateway", "veil.api.request", e.subject, e.at, e.api, "k", e.method, e.route, e.route,
			e.status, e.latency, uint64(1), uint64(1), e.units, now, int32(0), int64(i)})
	}
	insertEvents(t, conn, rows)
	t.Logf("%d events", len(evs))

	type win struct {
		zone     string
		from, to time.Time
	}
	var wins []win
	for _, z := range propZones {
		for range 12 {
			a := start.Add(time.Duration(rng.Int63n(int64(end.Sub(start))))).Truncate(time.Minute)
			var l time.Duration
			switch rng.Intn(4) {
			case 0:
				l = time.Duration(1+rng.Intn(120)) * time.Minute
			case 1:
				l = time.Duration(1+rng.Intn(72*60)) * time.Minute
			default:
				l = time.Duration(1+rng.Intn(240*24*60)) * time.Minute
			}
			b := a.Add(l)
			if b.After(end) {
				b = end
			}
			wins = append(wins, win{z, a, b})
		}
		wins = append(wins, win{z, start, end})
	}
	wins = append(wins,
		win{"Pacific/Kiritimati", utc(t, "2099-12-31 00:00:00"), utc(t, "2100-01-01 00:00:00")},
		win{"UTC", utc(t, "2099-12-31 00:00:00"), utc(t, "2100-01-01 00:00:00")},
		win{"Pacific/Chatham", utc(t, "2099-12-30 00:00:00"), utc(t, "2100-01-01 00:00:00")},
	)
	apis := []string{"api_a", "api_b", "api_c"}
	for _, w := range wins {
		loc, _ := time.LoadLocation(w.zone)
		q := metering.ProviderQuery{APIs: apis, From: w.from, To: w.to, Zone: w.zone, Top: 100, ByAPI: true}
		got, err := metering.ProviderUsage(t.Context(), conn, q)
		name := fmt.Sprintf("%s [%s, %s)", w.zone, w.from.Format(time.DateTime), w.to.Format(time.DateTime))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		type agg struct {
			calls, s5, c4 uint64
			units         decimal.Decimal
		}
		addTo := func(m map[string]*agg, k string, e propEvent) {
			a := m[k]
			if a == nil {
				a = &agg{}
				m[k] = a
			}
			a.calls++
			a.units = a.units.Add(e.units)
			switch e.status / 100 {
			case 5:
				a.s5++
			case 4:
				a.c4++
			}
		}
		days, routes, byAPI, cons := map[string]*agg{}, map[string]*agg{}, map[string]*agg{}, map[string]*agg{}
		total := map[string]*agg{}
		uniq := map[string]map[string]bool{"": {}}
		for _, e := range evs {
			if e.at.Before(w.from) || !e.at.Before(w.to) {
				continue
			}
			addTo(total, "", e)
			addTo(days, e.at.In(loc).Format(time.DateOnly), e)
			addTo(routes, e.method+" "+e.route, e)
			addTo(byAPI, e.api, e)
			addTo(cons, e.subject, e)
			uniq[""][e.subject] = true
			if uniq[e.api] == nil {
				uniq[e.api] = map[string]bool{}
			}
			uniq[e.api][e.subject] = true
		}
		same := func(what string, g metering.ProviderStats, a *agg) {
			if a == nil {
				a = &agg{}
			}
			if g.Calls != a.calls || g.ServerErrors != a.s5 || g.ClientErrors != a.c4 || !g.Units.Equal(a.units) {
				t.Errorf("%s: %s = calls %d 5xx %d 4xx %d units %s; want %d %d %d %s", name, what, g.Calls, g.ServerErrors, g.ClientErrors, g.Units, a.calls, a.s5, a.c4, a.units)
			}
		}
		same("total", got.Total, total[""])
		if got.UniqueConsumers != uint64(len(uniq[""])) {
			t.Errorf("%s: unique = %d; want %d", name, got.UniqueConsumers, len(uniq[""]))
		}
		var gotDays, wantDays []string
		for _, d := range got.Days {
			gotDays = append(gotDays, d.Day)
			same("day "+d.Day, d.ProviderStats, days[d.Day])
		}
		for d := range days {
			wantDays = append(wantDays, d)
		}
		sort.Strings(wantDays)
		if !slices.Equal(gotDays, wantDays) {
			t.Errorf("%s: days %v; want %v", name, gotDays, wantDays)
		}
		if len(got.Routes) != len(routes) {
			t.Errorf("%s: %d routes; want %d", name, len(got.Routes), len(routes))
		}
		for _, r := range got.Routes {
			same("route "+r.Method+" "+r.Route, r.ProviderStats, routes[r.Method+" "+r.Route])
		}
		if len(got.APIs) != len(byAPI) {
			t.Errorf("%s: %d APIs; want %d", name, len(got.APIs), len(byAPI))
		}
		for _, a := range got.APIs {
			same("api "+a.APIID, a.ProviderStats, byAPI[a.APIID])
			if a.UniqueConsumers != uint64(len(uniq[a.APIID])) {
				t.Errorf("%s: api %s unique = %d; want %d", name, a.APIID, a.UniqueConsumers, len(uniq[a.APIID]))
			}
		}
		if len(got.Consumers) != len(cons) {
			t.Errorf("%s: %d consumers; want %d", name, len(got.Consumers), len(cons))
		}
		for _, c := range got.Consumers {
			a := cons[c.Subject]
			if a == nil || a.calls != c.Calls || !a.units.Equal(c.Units) {
				t.Errorf("%s: consumer %s = %d %s; want %+v", name, c.Subject, c.Calls, c.Units, a)
			}
		}
	}
}
