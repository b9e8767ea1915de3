package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/broker"
)

// The demo's events belong to five made-up subscriptions. Subjects are
// subscription ids, UUIDs: demoSubjectPrefix followed by 12 digits.
const (
	demoSubjectPrefix = "00000000-0000-4000-8000-"
	demoSubject0      = demoSubjectPrefix + "000000000000"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		ingestURL string
		token     string
		brokers   string
		events    int
		batch     int
		mig       migrateFlags
		redisAddr string
		redisDB   int
		cpURL     string
		gwURL     string
		jwtSecret string
		mailpit   string
	)
	f := newFlags("demo", `Walks the demo scenario against a running veil dev: waits until ingest is ready, posts events in
batches with a progress bar, shows how a bad event is refused, then reads the topic back and checks that
every accepted event is in Kafka.`, stdout)
	f.String(&ingestURL, "ingest-url", "VEIL_DEMO_INGEST_URL", "http://127.0.0.1:8081", "base URL of the ingest service")
	f.String(&token, "token", "VEIL_DEMO_TOKEN", DevIngestToken, "ingest bearer token")
	f.String(&brokers, "kafka-brokers", "VEIL_DEMO_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers to read the topic back from")
	mig.register(f)
	f.String(&redisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.Int(&redisDB, "redis-db", "VEIL_REDIS_DB", 0, "Redis logical database of the control plane's key and subscription records")
	f.String(&cpURL, "control-plane-url", "VEIL_DEMO_CONTROL_PLANE_URL", "http://127.0.0.1:8080", "base URL of the control plane")
	f.String(&gwURL, "gateway-url", "VEIL_GATEWAY_URL", defaultGatewayURL, "base URL of the gateway")
	f.String(&jwtSecret, "jwt-secret", "VEIL_JWT_SECRET", identity.DevJWTSecret, "HS256 secret veil dev verifies tokens with")
	f.String(&mailpit, "mailpit-url", "VEIL_DEMO_MAILPIT_URL", "", "mailpit's HTTP API, to show the emails veil dev sent (empty: show none)")
	f.Int(&events, "events", "", 5000, "events to send")
	f.Int(&batch, "batch", "", 100, "events per request")
	if err := f.Parse(args); err != nil {
		return err
	}
	if events < 1 || batch < 1 || batch > ingest.DefaultMaxEvents {
		return fmt.Errorf("--events must be positive and --batch between 1 and %d", ingest.DefaultMaxEvents)
	}
	client := &http.Client{Timeout: 30 * time.Second}

	step := func(format string, a ...any) { fmt.Fprintf(stdout, "\n==> "+format+"\n", a...) }

	step("waiting for ingest at %s to be ready", ingestURL)
	if err := waitReady(ctx, client, ingestURL+"/readyz", 90*time.Second); err != nil {
		return err
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.ParseBrokers(brokers)...))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	start, err := adm.ListEndOffsets(ctx, broker.TopicUsageRaw)
	if err != nil {
		return fmt.Errorf("read end offsets of %s: %w", broker.TopicUsageRaw, err)
	}

	run := fmt.Sprintf("demo-%d", time.Now().Unix())
	source := "/demo/" + run
	step("sending %d events in batches of %d to POST %s/v1/events", events, batch, ingestURL)
	bar := progressbar.NewOptions(events,
		progressbar.OptionSetWriter(stdout),
		progressbar.OptionSetDescription("events"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("events"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(stdout) }),
	)
	accepted := 0
	now := time.Now().UTC()
	for sent := 0; sent < events; {
		n := min(batch, events-sent)
		var body bytes.Buffer
		body.WriteByte('[')
		for i := 0; i < n; i++ {
			if i > 0 {
				body.WriteByte(',')
			}
			id := sent + i
			fmt.Fprintf(&body, `{"specversion":"1.0","id":"%s-%d","source":%q,"type":"veil.api.request","time":%q,"subject":"`+demoSubjectPrefix+`%012d","data":{"api_id":"api_weather","key_id":"key_demo_%d","method":"GET","route":"/v1/forecast/{city}","path":"/v1/forecast/city-%d","status":200,"latency_ms":%d,"request_bytes":0,"response_bytes":%d,"units":1}}`,
				run, id, source, now.Add(-time.Duration(events-id)*time.Millisecond).Format(time.RFC3339Nano), id%5, id%10, id%40, 5+id%90, 1000+id%3000)
		}
		body.WriteByte(']')
		status, answer, err := post(ctx, client, ingestURL+"/v1/events", token, ingest.MediaTypeBatch, body.Bytes())
		if err != nil {
			return err
		}
		if status != http.StatusAccepted {
			return fmt.Errorf("ingest answered %d: %s", status, answer)
		}
		accepted += n
		sent += n
		_ = bar.Add(n)
	}

	step("a batch with one bad event: the good ones are accepted, the bad one is named with its reason")
	bad := fmt.Sprintf(`[{"specversion":"1.0","id":"%s-good","source":%q,"type":"veil.usage.record","time":%q,"subject":"`+demoSubject0+`","data":{"api_id":"api_weather","units":3}},`+
		`{"specversion":"1.0","id":"%s-bad","source":%q,"type":"veil.usage.record","time":%q,"subject":"`+demoSubject0+`","data":{"api_id":"api_weather","units":-2}}]`,
		run, source, now.Format(time.RFC3339), run, source, now.Format(time.RFC3339))
	status, answer, err := post(ctx, client, ingestURL+"/v1/events", token, ingest.MediaTypeBatch, []byte(bad))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "HTTP %d\n%s\n", status, indentJSON(answer))
	if status != http.StatusMultiStatus {
		return fmt.Errorf("the mixed batch got %d; want 207", status)
	}
	accepted++

	step("reading %s back from Kafka", broker.TopicUsageRaw)
	found, perPartition, err := countSource(ctx, cl, adm, start, source)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "events of this run in the topic: %d of %d accepted\n", found, accepted)
	fmt.Fprintf(stdout, "by partition (key = subject, so each subscription stays in one partition): %v\n", perPartition)
	if found != accepted {
		return fmt.Errorf("the topic holds %d of this run's events; want %d", found, accepted)
	}

	if err := demoProcessed(ctx, stdout, step, mig, redisAddr, redisDB, source, found); err != nil {
		return err
	}

	apiID, slug, err := demoCatalog(ctx, stdout, step, cpURL, gwURL, jwtSecret)
	if err != nil {
		return err
	}
	if err := demoKeys(ctx, stdout, step, cpURL, gwURL, slug, jwtSecret, apiID, redisAddr, redisDB, mailpit); err != nil {
		return err
	}

	step("what runs where")
	fmt.Fprintf(stdout, `  ingest       %s   POST /v1/events, /healthz, /readyz; /metrics on 127.0.0.1:9181
  processor    http://127.0.0.1:8082   /metrics (veil_processor_*)
  kafka        %s   topics %s (events), %s (dead letters), %s (quota crossings)
  clickhouse   %s   database %s (usage_events, usage_rejects, usage_rollup_minute|hour|day)
  redis        %s   usage counters veil:usage:{subscription}:…
  postgres     127.0.0.1:5432   database veil
  control      %s   REST API (/v1/apis, /v1/admin/approvals, /v1/webhooks, /v1/audit), /openapi.json; /metrics on 127.0.0.1:9180
  gateway      %s   Caddy; admin API on a unix socket in the data directory, /metrics on 127.0.0.1:9183
Try: bin/veil usage --subscription `+demoSubject0+`
     clickhouse-client --database %s --query 'SELECT subject, count() FROM usage_events GROUP BY subject'
`, ingestURL, brokers, broker.TopicUsageRaw, broker.TopicUsageDLQ, broker.TopicQuotaEvents, mig.clickhouseAddr, mig.clickhouseDB, redisAddr, cpURL, gwURL, mig.clickhouseDB)
	fmt.Fprintln(stdout, "\ndemo finished: every accepted event is in Kafka, ClickHouse and the Redis counters; the demo API went from draft to active through an approval and answers through the gateway, which enforced the consumer's rate limit and quota")
	return nil
}

// demoProcessed waits until the processor has written this run's events to
// ClickHouse, then shows a roll-up query and one subscription's counters.
func demoProcessed(ctx context.Context, stdout io.Writer, step func(string, ...any), mig migrateFlags, redisAddr string, redisDB int, source string, want int) error {
	st, err := openStores(ctx, mig, redisAddr, redisDB)
	if err != nil {
		return err
	}
	defer st.close()

	step("waiting for the processor to write them to ClickHouse (exactly once)")
	bar := progressbar.NewOptions(want, progressbar.OptionSetWriter(stdout), progressbar.OptionSetDescription("rows"),
		progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(stdout) }))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var n uint64
		if err := st.ch.QueryRow(ctx, "SELECT count() FROM usage_events WHERE source = ?", source).Scan(&n); err != nil {
			return fmt.Errorf("count rows: %w", err)
		}
		_ = bar.Set(int(n))
		if int(n) == want {
			break
		}
		if int(n) > want || time.Now().After(deadline) {
			return fmt.Errorf("usage_events holds %d rows of this run; want %d", n, want)
		}
		time.Sleep(200 * time.Millisecond)
	}

	step("a roll-up query: requests, units and latency per subscription over the last hour (usage_rollup_minute)")
	const q = `SELECT subject, countMerge(requests) AS requests, sumMerge(units) AS units,
       quantilesMerge(0.5, 0.99)(latency_ms) AS p50_p99_ms
FROM usage_rollup_minute
WHERE api_id = 'api_weather' AND bucket >= now() - 3600
GROUP BY subject ORDER BY subject`
	fmt.Fprintln(stdout, q)
	rows, err := st.ch.Query(ctx, q)
	if err != nil {
		return fmt.Errorf("roll-up query: %w", err)
	}
	defer rows.Close()
	fmt.Fprintf(stdout, "%-14s %10s %12s %s\n", "subject", "requests", "units", "p50/p99 ms")
	for rows.Next() {
		var (
			subject  string
			requests uint64
			units    decimal.Decimal
			q        []float64
		)
		if err := rows.Scan(&subject, &requests, &units, &q); err != nil {
			return fmt.Errorf("scan roll-up: %w", err)
		}
		fmt.Fprintf(stdout, "%-14s %10d %12s %v\n", subject, requests, units, q)
	}
	if err := rows.Err(); err != nil {
		return err
	}

	step("the same usage in Redis, where the gateway will read it: veil usage --subscription " + demoSubject0)
	var out bytes.Buffer
	if err := runUsage(ctx, []string{"--subscription", demoSubject0, "--clickhouse-addr", mig.clickhouseAddr,
		"--clickhouse-database", mig.clickhouseDB, "--redis-addr", redisAddr, "--redis-db", strconv.Itoa(redisDB)}, &out, io.Discard); err != nil {
		return err
	}
	fmt.Fprint(stdout, out.String())
	var rep usageReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return err
	}
	if rep.ClickHouse.Events != uint64(rep.Redis.Requests) {
		return fmt.Errorf("ClickHouse holds %d events of %s this period, Redis %d", rep.ClickHouse.Events, demoSubject0, rep.Redis.Requests)
	}
	return nil
}

func waitReady(ctx context.Context, client *http.Client, url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("answered %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", url, d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func post(ctx context.Context, client *http.Client, url, token, ctype string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("post events: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func indentJSON(b []byte) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "  ", "  ") != nil {
		return string(b)
	}
	return "  " + strings.TrimSpace(out.String())
}

// countSource reads the topic from the offsets in start to its current end
// and counts the events whose source is source.
func countSource(ctx context.Context, cl *kgo.Client, adm *kadm.Client, start kadm.ListedOffsets, source string) (int, map[int32]int, error) {
	end, err := adm.ListEndOffsets(ctx, broker.TopicUsageRaw)
	if err != nil {
		return 0, nil, fmt.Errorf("read end offsets: %w", err)
	}
	from := map[string]map[int32]kgo.Offset{broker.TopicUsageRaw: {}}
	remaining := map[int32]int64{}
	end.Each(func(o kadm.ListedOffset) {
		s, _ := start.Lookup(o.Topic, o.Partition)
		if o.Offset > s.Offset {
			from[broker.TopicUsageRaw][o.Partition] = kgo.NewOffset().At(s.Offset)
			remaining[o.Partition] = o.Offset
		}
	})
	reader, err := kgo.NewClient(kgo.SeedBrokers(cl.OptValue(kgo.SeedBrokers).([]string)...), kgo.ConsumePartitions(from))
	if err != nil {
		return 0, nil, err
	}
	defer reader.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	found := 0
	perPartition := map[int32]int{}
	needle := []byte(`"source":"` + source + `"`)
	for len(remaining) > 0 {
		fs := reader.PollFetches(ctx)
		if ctx.Err() != nil {
			return found, perPartition, fmt.Errorf("reading the topic back timed out with %d partitions unread", len(remaining))
		}
		fs.EachRecord(func(r *kgo.Record) {
			if bytes.Contains(r.Value, needle) {
				found++
				perPartition[r.Partition]++
			}
			if r.Offset+1 >= remaining[r.Partition] {
				delete(remaining, r.Partition)
			}
		})
	}
	return found, perPartition, nil
}
