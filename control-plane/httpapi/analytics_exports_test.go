package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestExportsAreCapped: an organization holds two exports open (its client
// reads nothing, so each handler blocks writing); a third is refused with
// 429 and Retry-After, another organization's export still starts, and
// analytics still answer meanwhile.
func TestExportsAreCapped(t *testing.T) {
	f := newAnalyticsFixture(t)
	// Enough rows that an unread export fills the socket and blocks.
	if err := f.ch.Exec(t.Context(), fmt.Sprintf(`INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
		status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)
		SELECT concat('x', toString(number)), '/gateway', 'veil.api.request', '%s', toDateTime('2026-03-10 00:00:00', 'UTC') + intDiv(number, 4),
		'%s', '%s', 'GET', '/v1/items/{id}', concat('/v1/items/', toString(number)), toUInt16(200), toUInt32(1), toUInt64(1), toUInt64(2),
		CAST(1 AS Decimal(18, 6)), now(), toInt32(0), toInt64(number) FROM system.numbers LIMIT 200000`, f.subID, f.apiID, f.key1)); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	open := func(sub, tok string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "GET", f.e.Server.URL+"/v1/subscriptions/"+sub+"/usage/export?from=2026-03-10T00:00:00Z&to=2026-03-11T00:00:00Z", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = resp.Body.Close() })
		return resp
	}
	for i := range 2 {
		if resp := open(f.subID, f.buyer); resp.StatusCode != http.StatusOK {
			t.Fatalf("export %d: %d", i+1, resp.StatusCode)
		}
	}
	third := open(f.subID, f.buyer)
	if third.StatusCode != http.StatusTooManyRequests || third.Header.Get("Retry-After") == "" ||
		!strings.HasPrefix(third.Header.Get("Content-Type"), "application/problem+json") {
		t.Errorf("third export: %d, Retry-After %q, %s; want a 429 problem with Retry-After", third.StatusCode,
			third.Header.Get("Retry-After"), third.Header.Get("Content-Type"))
	}
	if resp := open(f.otherSub, f.other); resp.StatusCode != http.StatusOK {
		t.Errorf("another organization's export: %d; want 200", resp.StatusCode)
	}
	other := "/v1/subscriptions/" + f.otherSub + "/analytics?from=2026-03-01T00:00:00Z&to=2026-03-05T00:00:00Z"
	if status, b := f.e.do("GET", other, f.other, nil); status != http.StatusOK {
		t.Errorf("analytics while exports are held: %d %s", status, b)
	}
}
