package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/identity"
)

// analyticsEndpoint is one measured request: a route with its query and
// the token of who asks.
type analyticsEndpoint struct {
	name, path, token string
	// export: the answer is streamed, and the time to its first byte is
	// measured too; rows are its lines (less a CSV header).
	export, csv bool
	// rows reads how many usage rows the answer covers from its body.
	rows func(body []byte) int64
}

// EndpointFigures is one endpoint's measured latency, in milliseconds.
type EndpointFigures struct {
	Name     string  `json:"name"`
	Path     string  `json:"path"`
	Missing  bool    `json:"missing,omitempty"` // the control plane has no such route
	Error    string  `json:"error,omitempty"`   // the first failed request; not measured further
	Rows     int64   `json:"rows"`
	Requests int     `json:"requests"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	TTFBP50  float64 `json:"ttfb_p50_ms,omitempty"`
	TTFBP99  float64 `json:"ttfb_p99_ms,omitempty"`
}

// analyticsTokens mints the bench's bearer tokens: a member of the
// busiest subscription's consumer, a member of the busiest API's
// provider, and an admin.
func analyticsTokens(secret []byte, p analyticsPlan) (consumer, provider, admin string, err error) {
	mint := func(org, user string, role identity.Role) string {
		if err != nil {
			return ""
		}
		var tok string
		tok, err = identity.Mint(secret, identity.DefaultIssuer, identity.DefaultAudience,
			identity.Principal{Subject: user, Org: org, Role: role}, 24*time.Hour, time.Now())
		return tok
	}
	consumer = mint(fmt.Sprintf("bench-consumer-%d", p.subConsumer[0]), "bench-consumer-member", identity.RoleConsumer)
	provider = mint(fmt.Sprintf("bench-provider-%d", p.apiProvider[0]), "bench-provider-member", identity.RoleProvider)
	admin = mint("bench-admins", "bench-admin", identity.RoleAdmin)
	return consumer, provider, admin, err
}

// analyticsEndpoints lists what is measured: for the busiest
// subscription (the busiest subscriber of the busiest API) and its
// busiest key, the preview, the analytics in UTC and in a half-hour zone
// over the whole load, and a day's export; for the busiest API and its
// provider's quietest, their analytics (and the quietest's export of a
// day), the busiest's in the half-hour zone too; that provider's
// analytics of all its APIs, in both zones; the admin overview.
func analyticsEndpoints(ctx context.Context, pool *pgxpool.Pool, p analyticsPlan, ids loadIDs, load analyticsLoad, secret []byte) ([]analyticsEndpoint, error) {
	consumer, provider, admin, err := analyticsTokens(secret, p)
	if err != nil {
		return nil, err
	}
	var providerOrg string
	if err := pool.QueryRow(ctx, `SELECT id::text FROM organizations WHERE slug = $1`,
		fmt.Sprintf("bench-provider-%d", p.apiProvider[0])).Scan(&providerOrg); err != nil {
		return nil, fmt.Errorf("read the provider's id: %w", err)
	}
	window := func(from, to time.Time, tz string) string {
		return "from=" + url.QueryEscape(from.Format(time.RFC3339)) + "&to=" + url.QueryEscape(to.Format(time.RFC3339)) + "&tz=" + url.QueryEscape(tz)
	}
	month := window(load.From, load.To, "UTC")
	dayFrom, dayTo := load.To.Add(-24*time.Hour), load.To
	day := "from=" + url.QueryEscape(dayFrom.Format(time.RFC3339)) + "&to=" + url.QueryEscape(dayTo.Format(time.RFC3339))
	quiet := 0 // the provider's quietest API
	for a, pr := range p.apiProvider {
		if pr == p.apiProvider[0] {
			quiet = a
		}
	}
	sub, key, big, small := ids.subs[0], ids.keys[0], ids.apis[0], ids.apis[quiet]
	return []analyticsEndpoint{
		{name: "preview, busiest subscription", path: "/v1/subscriptions/" + sub + "/preview", token: consumer, rows: previewCalls},
		{name: "subscription analytics, 30 d, UTC", path: "/v1/subscriptions/" + sub + "/analytics?" + month, token: consumer, rows: totalCalls},
		{name: "subscription analytics, 30 d, Asia/Kolkata", path: "/v1/subscriptions/" + sub + "/analytics?" + window(load.From, load.To, "Asia/Kolkata"), token: consumer, rows: totalCalls},
		{name: "key analytics, 30 d, UTC", path: "/v1/keys/" + key + "/analytics?" + month, token: consumer, rows: totalCalls},
		{name: "key analytics, 30 d, Asia/Kolkata", path: "/v1/keys/" + key + "/analytics?" + window(load.From, load.To, "Asia/Kolkata"), token: consumer, rows: totalCalls},
		{name: "subscription export, 1 d, NDJSON", path: "/v1/subscriptions/" + sub + "/usage/export?format=ndjson&" + day, token: consumer, export: true},
		{name: "API export, quiet API, 1 d, CSV", path: "/v1/apis/" + small + "/usage/export?format=csv&" + day, token: provider, export: true, csv: true},
		{name: "API analytics, busiest API, 30 d", path: "/v1/apis/" + big + "/analytics?" + month, token: provider, rows: totalCalls},
		{name: "API analytics, quiet API, 30 d", path: "/v1/apis/" + small + "/analytics?" + month, token: provider, rows: totalCalls},
		{name: "API analytics, busiest API, 30 d, Asia/Kolkata", path: "/v1/apis/" + big + "/analytics?" + window(load.From, load.To, "Asia/Kolkata"), token: provider, rows: totalCalls},
		{name: "provider analytics, all its APIs, 30 d", path: "/v1/providers/" + providerOrg + "/analytics?" + month, token: provider, rows: totalCalls},
		{name: "provider analytics, all its APIs, 30 d, Asia/Kolkata", path: "/v1/providers/" + providerOrg + "/analytics?" + window(load.From, load.To, "Asia/Kolkata"), token: provider, rows: totalCalls},
		{name: "admin overview", path: "/v1/admin/overview", token: admin, rows: overviewCalls},
	}, nil
}

// measureAnalytics serves the control plane on loopback and measures
// every endpoint: cfg.Warmup unmeasured rounds, then cfg.Requests
// measured ones, each round one request per endpoint in turn, so that
// background load hits every endpoint alike.
func measureAnalytics(ctx context.Context, cfg AnalyticsConfig, pool *pgxpool.Pool, ch driver.Conn, p analyticsPlan, ids loadIDs, load analyticsLoad, stderr io.Writer) ([]EndpointFigures, error) {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	base, stop, err := serveControlPlane(ctx, cfg, pool, ch, secret)
	if err != nil {
		return nil, err
	}
	defer stop()
	eps, err := analyticsEndpoints(ctx, pool, p, ids, load, secret)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	figs := make([]EndpointFigures, len(eps))
	lat, ttfb := make([][]time.Duration, len(eps)), make([][]time.Duration, len(eps))
	for i, ep := range eps {
		figs[i] = EndpointFigures{Name: ep.name, Path: strings.SplitN(ep.path, "?", 2)[0]}
	}
	for round := -cfg.Warmup - 1; round < cfg.Requests; round++ {
		for i, ep := range eps {
			if figs[i].Missing || figs[i].Error != "" {
				continue
			}
			r, err := fetch(ctx, client, base, ep, round == -cfg.Warmup-1)
			switch {
			case errors.Is(err, errNoRoute):
				figs[i].Missing = true
				fmt.Fprintf(stderr, "%s: no such route yet, not measured\n", ep.name)
				continue
			case err != nil:
				// One failing route must not cost the figures of the
				// others (a 100M load is measured for many minutes).
				figs[i].Error = err.Error()
				fmt.Fprintf(stderr, "%s: %v\n", ep.name, err)
				continue
			}
			if round == -cfg.Warmup-1 {
				figs[i].Rows = r.rows
			}
			if round >= 0 {
				lat[i], ttfb[i] = append(lat[i], r.total), append(ttfb[i], r.ttfb)
			}
		}
	}
	for i := range figs {
		if figs[i].Missing || figs[i].Error != "" {
			continue
		}
		slices.Sort(lat[i])
		slices.Sort(ttfb[i])
		figs[i].Requests = len(lat[i])
		figs[i].P50, figs[i].P99, figs[i].Max = ms(nearestRank(lat[i], 0.5)), ms(nearestRank(lat[i], 0.99)), ms(nearestRank(lat[i], 1))
		if eps[i].export {
			figs[i].TTFBP50, figs[i].TTFBP99 = ms(nearestRank(ttfb[i], 0.5)), ms(nearestRank(ttfb[i], 0.99))
		}
	}
	return figs, nil
}

// nearestRank is the q-quantile of sorted by the nearest-rank method: the
// smallest value with at least q of the values at or below it.
func nearestRank(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

var errNoRoute = errors.New("no such route")

// fetched is one answer's timing and, when asked for, its rows.
type fetched struct {
	total, ttfb time.Duration
	rows        int64
}

// fetch sends one GET and reads the answer to its end; a 404 that says
// no route is errNoRoute, any other status but 200 an error. With count,
// it counts the rows the answer covers.
func fetch(ctx context.Context, client *http.Client, base string, ep analyticsEndpoint, count bool) (fetched, error) {
	var f fetched
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+ep.path, nil)
	if err != nil {
		return f, err
	}
	req.Header.Set("Authorization", "Bearer "+ep.token)
	began := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return f, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode == http.StatusNotFound && bytes.Contains(b, []byte("no route for")) {
			return f, errNoRoute
		}
		return f, fmt.Errorf("GET %s: %d %s", ep.path, resp.StatusCode, b)
	}
	var body bytes.Buffer
	lines := &lineCounter{}
	var dst io.Writer = lines
	if !ep.export {
		dst = &body
	}
	// The first Read returns once the first bytes of the body are in.
	first := make([]byte, 1)
	n, err := io.ReadFull(resp.Body, first)
	f.ttfb = time.Since(began)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return f, fmt.Errorf("GET %s: read: %w", ep.path, err)
	}
	_, _ = dst.Write(first[:n])
	if _, err := io.Copy(dst, resp.Body); err != nil {
		return f, fmt.Errorf("GET %s: read: %w", ep.path, err)
	}
	f.total = time.Since(began)
	if !count {
		return f, nil
	}
	switch {
	case ep.export && ep.csv:
		f.rows = max(lines.n-1, 0)
	case ep.export:
		f.rows = lines.n
	case ep.rows != nil:
		f.rows = ep.rows(body.Bytes())
	}
	return f, nil
}

// lineCounter counts the lines written to it.
type lineCounter struct{ n int64 }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n += int64(bytes.Count(p, []byte{'\n'}))
	return len(p), nil
}

// number reads a JSON number or a decimal string.
func number(v any) int64 {
	switch x := v.(type) {
	case float64:
		return int64(x)
	case string:
		var f float64
		if _, err := fmt.Sscan(x, &f); err == nil {
			return int64(f)
		}
	}
	return -1
}

// totalCalls reads totals.calls of an analytics answer.
func totalCalls(body []byte) int64 {
	var a struct {
		Totals map[string]any `json:"totals"`
	}
	if json.Unmarshal(body, &a) != nil || a.Totals == nil {
		return -1
	}
	return number(a.Totals["calls"])
}

// previewCalls reads the calls meter's use of a preview.
func previewCalls(body []byte) int64 {
	var p struct {
		Meters []map[string]any `json:"meters"`
	}
	if json.Unmarshal(body, &p) != nil {
		return -1
	}
	for _, m := range p.Meters {
		if m["meter"] == "calls" {
			return number(m["used"])
		}
	}
	return -1
}

// overviewCalls reads the platform's calls of the last 30 days from the
// admin overview: the first calls figure under a key that says 30d.
func overviewCalls(body []byte) int64 {
	var o map[string]any
	if json.Unmarshal(body, &o) != nil {
		return -1
	}
	var walk func(v any, in30 bool) int64
	walk = func(v any, in30 bool) int64 {
		m, ok := v.(map[string]any)
		if !ok {
			return -1
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			is30 := in30 || strings.Contains(k, "30d")
			if is30 && strings.HasPrefix(k, "calls") {
				if n := number(m[k]); n >= 0 {
					return n
				}
			}
			if n := walk(m[k], is30); n >= 0 {
				return n
			}
		}
		return -1
	}
	return walk(o, false)
}

// listenLoopback listens on a free loopback port.
func listenLoopback() (net.Listener, error) {
	return net.Listen("tcp", "127.0.0.1:0")
}

// OutlookFigures is the one run of the outlooks job before measuring.
type OutlookFigures struct {
	Refreshed int     `json:"refreshed"`
	Failed    int     `json:"failed"`
	Seconds   float64 `json:"seconds"`
}

// refreshOutlooks runs the outlooks job once over every subscription, as
// the control plane's job keeps subscription_outlooks filled (provider
// analytics read the quota health from it).
func refreshOutlooks(ctx context.Context, cfg AnalyticsConfig, pool *pgxpool.Pool, ch driver.Conn) (OutlookFigures, error) {
	bill, err := billing.New(billing.Config{Pool: pool, ClickHouse: ch, Logger: cfg.Logger})
	if err != nil {
		return OutlookFigures{}, err
	}
	began := time.Now()
	rep, err := bill.RefreshOutlooks(ctx, billing.OutlookSchedule{PerRun: 1 << 20, Metrics: metrics.NewSet()})
	if err != nil {
		return OutlookFigures{}, fmt.Errorf("refresh outlooks: %w", err)
	}
	return OutlookFigures{Refreshed: rep.Refreshed, Failed: rep.Failed, Seconds: time.Since(began).Seconds()}, nil
}
