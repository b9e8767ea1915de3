package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// analyticsShape is the population `veil bench analytics` spreads its
// usage over: providers, their APIs (API a belongs to provider a mod
// Providers, so every provider has popular and quiet APIs) and consumer
// organizations, each subscribed to two different APIs.
type analyticsShape struct {
	Providers, APIs, Consumers int
}

// defaultAnalyticsShape is close to the data set of docs/analyst-sql.md:
// 2,000 subscriptions of 50 APIs, about 5,000 keys.
var defaultAnalyticsShape = analyticsShape{Providers: 10, APIs: 50, Consumers: 1000}

// The skew of the generated traffic: a call's API is the one at rank
// floor(APIs * u^apiSkew) for u uniform in [0, 1), its subscription the
// one at rank floor(n * u^subSkew) among the API's n subscribers, and so
// on. An exponent s gives the top k of n items a share of (k/n)^(1/s):
// with 50 APIs the busiest takes about 27% of the calls and the top five
// 46%; the top subscription of an API a fifth of its calls.
const (
	apiSkew      = 3.0
	subSkew      = 2.0
	keySkew      = 2.0
	endpointSkew = 2.0
)

// analyticsPlan assigns the shape's subscriptions (slots) to APIs and
// consumers. Slots are sorted by API rank, and within an API by traffic
// rank: slot apiOffset[a]+j is API a's j-th busiest subscriber.
type analyticsPlan struct {
	shape       analyticsShape
	apiProvider []int // provider of each API
	apiSubs     []int // subscribers of each API
	apiOffset   []int // first slot of each API
	subAPI      []int
	subConsumer []int
	subRank     []int // rank among its API's subscribers
	subKeys     []int // keys of each subscription (2 or 3)
	keyOffset   []int // first key of each subscription in the flat key list
	keys        int
}

// validate checks that the shape can be planned: every consumer has two
// subscriptions on two different APIs, so no API may have more
// subscribers than there are consumers.
func (s analyticsShape) validate() error {
	if s.Providers < 1 || s.APIs < s.Providers || s.Consumers < s.APIs {
		return fmt.Errorf("analytics shape %+v: want 1 or more providers, at least as many APIs, at least as many consumers as APIs", s)
	}
	return nil
}

// planAnalytics spreads 2*Consumers subscriptions over the APIs, the
// busier APIs having more subscribers (weights 1/(rank+1), at least 3),
// and gives consumer c the slots c and c+Consumers, which fall on two
// different APIs as long as no API has Consumers subscribers or more.
func planAnalytics(s analyticsShape) (analyticsPlan, error) {
	if err := s.validate(); err != nil {
		return analyticsPlan{}, err
	}
	subs := 2 * s.Consumers
	p := analyticsPlan{shape: s, apiProvider: make([]int, s.APIs), apiSubs: make([]int, s.APIs), apiOffset: make([]int, s.APIs)}
	var harmonic float64
	for a := range s.APIs {
		harmonic += 1 / float64(a+1)
	}
	total := 0
	for a := range s.APIs {
		p.apiProvider[a] = a % s.Providers
		p.apiSubs[a] = max(3, int(float64(subs)/float64(a+1)/harmonic))
		total += p.apiSubs[a]
	}
	p.apiSubs[0] += subs - total
	if p.apiSubs[0] >= s.Consumers || p.apiSubs[0] < 3 {
		return analyticsPlan{}, fmt.Errorf("analytics shape %+v: the busiest API would have %d subscribers", s, p.apiSubs[0])
	}
	slot := 0
	for a := range s.APIs {
		p.apiOffset[a] = slot
		for j := range p.apiSubs[a] {
			p.subAPI = append(p.subAPI, a)
			p.subRank = append(p.subRank, j)
			p.subConsumer = append(p.subConsumer, slot%s.Consumers)
			p.subKeys = append(p.subKeys, 2+slot%2)
			p.keyOffset = append(p.keyOffset, p.keys)
			p.keys += 2 + slot%2
			slot++
		}
	}
	return p, nil
}

// skewedRank is the rank the load's SQL picks among n items for a
// uniform u in [0, 1): floor(n * u^skew), kept below n.
func skewedRank(n int, u, skew float64) int {
	return min(n-1, int(float64(n)*math.Pow(u, skew)))
}

// benchEndpoint is a method and route template of the generated calls;
// errFactor scales its share of 4xx and 5xx answers.
type benchEndpoint struct {
	method, route string
	errFactor     float64
}

// benchEndpoints are ordered busiest first (endpointSkew picks among them).
var benchEndpoints = []benchEndpoint{
	{"GET", "/v1/items/{id}", 1}, {"GET", "/v1/search", 1.5}, {"GET", "/v1/items", 1}, {"POST", "/v1/items", 2},
	{"GET", "/v1/users/{id}", 1}, {"PUT", "/v1/items/{id}", 1}, {"GET", "/v1/orders/{id}", 1}, {"POST", "/v1/orders", 3},
	{"GET", "/v1/orders", 1}, {"DELETE", "/v1/items/{id}", 1}, {"GET", "/v1/reports/{id}", 2}, {"POST", "/v1/search", 1},
	{"GET", "/v1/users", 1}, {"PUT", "/v1/users/{id}", 1}, {"POST", "/v1/uploads", 4}, {"GET", "/v1/uploads/{id}", 1},
	{"DELETE", "/v1/orders/{id}", 1}, {"GET", "/v1/health", 0.2}, {"POST", "/v1/webhooks", 1}, {"GET", "/v1/export", 5},
}

// loadIDs are the seeded ids the generated rows carry, in plan order.
type loadIDs struct {
	apis, subs, keys []string
}

// usageInsert is the statement that generates rows [from, from+n) of a
// load of total rows spread evenly over [start, start+span): each chunk
// covers a contiguous stretch of time, as live ingestion writes it, so
// parts keep narrow time ranges. Every random draw is a hash of the row
// number (u(i) below), so a load is the same every time but for the event
// ids. Statuses: about 1% 5xx, 7% 4xx (401 and 429 refused by the
// gateway, with units 0), scaled per endpoint; latency 5 ms plus an
// exponential of 60 ms mean, 1% ten times slower, 5xx 200 ms and up,
// refusals 1 to 3 ms; units 1, or a fraction up to 5 for 10% of calls.
func usageInsert(p analyticsPlan, ids loadIDs, start time.Time, span time.Duration, total, from, n int64) string {
	methods, routes, factors := make([]string, len(benchEndpoints)), make([]string, len(benchEndpoints)), make([]string, len(benchEndpoints))
	for i, e := range benchEndpoints {
		methods[i], routes[i], factors[i] = e.method, e.route, strconv.FormatFloat(e.errFactor, 'f', -1, 64)
	}
	u := func(i int) string { return fmt.Sprintf("(cityHash64(number, %d) / 18446744073709551616.)", i) }
	r := strings.NewReplacer(
		"{APIS}", strArray(ids.apis), "{SUBS}", strArray(ids.subs), "{KEYS}", strArray(ids.keys),
		"{APISUBS}", intArray(p.apiSubs), "{APIOFF}", intArray(p.apiOffset), "{SUBKEYS}", intArray(p.subKeys), "{KEYOFF}", intArray(p.keyOffset),
		"{METHODS}", strArray(methods), "{ROUTES}", strArray(routes), "{ERRF}", "["+strings.Join(factors, ", ")+"]",
		"{NAPI}", strconv.Itoa(len(ids.apis)), "{NEP}", strconv.Itoa(len(benchEndpoints)),
		"{APISKEW}", fmtF(apiSkew), "{SUBSKEW}", fmtF(subSkew), "{KEYSKEW}", fmtF(keySkew), "{EPSKEW}", fmtF(endpointSkew),
		"{START}", strconv.FormatInt(start.Unix(), 10), "{SPAN}", strconv.FormatInt(int64(span/time.Second), 10),
		"{TOTAL}", strconv.FormatInt(total, 10), "{FROM}", strconv.FormatInt(from, 10), "{N}", strconv.FormatInt(n, 10),
		"{U1}", u(1), "{U2}", u(2), "{U3}", u(3), "{U4}", u(4), "{U5}", u(5), "{U6}", u(6), "{U7}", u(7), "{U8}", u(8), "{U9}", u(9),
	)
	return r.Replace(usageInsertSQL)
}

// usageInsertSQL is usageInsert's template. Indexes into the arrays are
// 1-based; a, s, k and e are the API, subscription slot, key and endpoint.
const usageInsertSQL = `
INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path, status,
	latency_ms, request_bytes, response_bytes, units, refusal, ingested_at, kafka_partition, kafka_offset)
SELECT id, source, type, subject, time, api_id, key_id, method, route, path, status,
	latency_ms, request_bytes, response_bytes, units, refusal, ingested_at, kafka_partition, kafka_offset
FROM (
	SELECT
		toString(generateUUIDv4()) AS id, '/gateway/bench' AS source, 'veil.api.request' AS type,
		toUInt32(least({NAPI}, 1 + floor({NAPI} * pow({U1}, {APISKEW})))) AS a,
		arrayElement({APISUBS}, a) AS apisubs,
		arrayElement({APIOFF}, a) + toUInt32(least(apisubs, 1 + floor(apisubs * pow({U2}, {SUBSKEW})))) AS s,
		arrayElement({SUBKEYS}, s) AS subkeys,
		arrayElement({KEYOFF}, s) + toUInt32(least(subkeys, 1 + floor(subkeys * pow({U3}, {KEYSKEW})))) AS k,
		toUInt32(least({NEP}, 1 + floor({NEP} * pow({U4}, {EPSKEW})))) AS e,
		arrayElement({SUBS}, s) AS subject, arrayElement({APIS}, a) AS api_id, arrayElement({KEYS}, k) AS key_id,
		toDateTime({START} + intDiv(number * {SPAN}, {TOTAL})) AS time,
		arrayElement({METHODS}, e) AS method, arrayElement({ROUTES}, e) AS route,
		if(route LIKE '%/{id}', concat(substring(route, 1, length(route) - 4), toString(cityHash64(number, 10) % 100000)), route) AS path,
		{U5} / arrayElement({ERRF}, e) AS ue,
		toUInt16(multiIf(ue < 0.007, 500, ue < 0.010, 503, ue < 0.030, 400, ue < 0.040, 401, ue < 0.045, 403,
			ue < 0.065, 404, ue < 0.080, 429, method = 'POST', 201, method = 'DELETE', 204, 200)) AS status,
		multiIf(status = 401, 'invalid_key', status = 429, if({U6} < 0.3, 'quota_exhausted', 'rate_limited'), '') AS refusal,
		toUInt32(multiIf(refusal != '', 1 + 2 * {U7}, status >= 500, 200 - 200 * log(1 - {U7}),
			(5 - 60 * log(1 - {U7})) * if({U8} < 0.01, 10, 1))) AS latency_ms,
		toUInt64(if(method IN ('POST', 'PUT'), 200 - 1500 * log(1 - {U6}), 200 * {U6})) AS request_bytes,
		toUInt64(if(refusal != '', 90, 100 - 2000 * log(1 - {U8}))) AS response_bytes,
		multiIf(refusal != '', toDecimal64(0, 6), {U9} < 0.9, toDecimal64(1, 6), toDecimal64(round(5 * {U6}, 6), 6)) AS units,
		time + 1 AS ingested_at, toInt32(number % 12) AS kafka_partition, toInt64(intDiv(number, 12)) AS kafka_offset
	FROM numbers({FROM}, {N})
)`

func fmtF(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// strArray is a ClickHouse array literal of strings.
func strArray(ss []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('\'')
		b.WriteString(strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s))
		b.WriteByte('\'')
	}
	b.WriteByte(']')
	return b.String()
}

// intArray is a ClickHouse array literal of 1-based offsets or counts.
func intArray(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
