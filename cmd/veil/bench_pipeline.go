package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/migrate"
	"github.com/veil-platform/veil/schemas/usage"
)

// pipelineFigures is the final JSON line of veil bench pipeline.
type pipelineFigures struct {
	Broker              string  `json:"broker"`
	Events              int     `json:"events"`
	Unique              int     `json:"unique"`
	Invalid             int     `json:"invalid"`
	Duplicates          int     `json:"duplicates"`
	EndToEndPerSec      float64 `json:"end_to_end_events_per_sec"`
	RawProducePerSec    float64 `json:"raw_produce_events_per_sec"`
	RawClickHousePerSec float64 `json:"raw_clickhouse_rows_per_sec"`
	VsProduce           float64 `json:"ratio_to_raw_produce"`
	VsClickHouse        float64 `json:"ratio_to_raw_clickhouse"`
	Cores               int     `json:"cores"`
}

func benchPipeline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		mig        migrateFlags
		redisAddr  string
		brokers    string
		n          int
		dupRate    float64
		invRate    float64
		dupS, invS string
		batch      int
		cpuprofile string
		log        logFlags
	)
	f := newFlags("bench pipeline", `Produces N events (with duplicates and invalid ones) to a fresh topic, then runs a processor in
this process and measures until every unique event is in ClickHouse and Redis. In the same run it
measures the raw produce rate to the broker and the raw ClickHouse insert rate of the same rows, and
prints the ratios and a final JSON line. Uses a scratch ClickHouse database and topic, dropped after.`, stdout)
	mig.register(f)
	f.String(&redisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "Kafka seed brokers; empty runs an in-process kfake broker")
	f.Int(&n, "events", "", 1_000_000, "events to produce")
	f.String(&dupS, "dup-rate", "", "0.1", "share of events that repeat an earlier one")
	f.String(&invS, "invalid-rate", "", "0.01", "share of events that are invalid")
	f.Int(&batch, "batch-records", "", processors.DefaultBatchRecords, "processor batch size")
	f.String(&cpuprofile, "cpuprofile", "", "", "write a CPU profile of the processing phase to this file")
	f.String(&log.level, "log-level", "VEIL_LOG_LEVEL", "warn", "log level")
	if err := f.Parse(args); err != nil {
		return err
	}
	var err error
	if dupRate, err = strconv.ParseFloat(dupS, 64); err != nil || dupRate < 0 || dupRate >= 1 {
		return fmt.Errorf("--dup-rate %q: want a share in [0, 1)", dupS)
	}
	if invRate, err = strconv.ParseFloat(invS, 64); err != nil || invRate < 0 || invRate >= 1 {
		return fmt.Errorf("--invalid-rate %q: want a share in [0, 1)", invS)
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}

	seeds, brokerName, closeBroker, err := benchBroker(brokers, logger)
	if err != nil {
		return err
	}
	defer closeBroker()
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, dlq := "veil.bench.raw."+stamp, "veil.bench.dlq."+stamp
	db := "veil_bench_" + stamp
	mig.clickhouseDB = db

	admin, err := broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: "veil-bench", Logger: logger,
		Opts: []kgo.Opt{kgo.ProducerLinger(5 * time.Millisecond), kgo.MaxBufferedRecords(500_000),
			kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()), kgo.ProducerBatchMaxBytes(4 << 20)}})
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := broker.EnsureTopics(ctx, admin, []broker.TopicSpec{{Name: topic, Partitions: broker.DefaultPartitions}, {Name: dlq, Partitions: 1}}); err != nil {
		return err
	}
	if _, err := migrate.ClickHouse(ctx, migrate.ClickHouseConfig{Addr: mig.clickhouseAddr, Database: db}, logger); err != nil {
		return err
	}
	st, err := openStores(ctx, mig, redisAddr, 0)
	if err != nil {
		return err
	}
	defer st.close()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = st.ch.Exec(cctx, "DROP DATABASE IF EXISTS "+db)
		_, _ = kadm.NewClient(admin).DeleteTopics(cctx, topic, dlq)
	}()

	fmt.Fprintf(stdout, "veil bench pipeline: %s, %d events (dup %.0f%%, invalid %.0f%%), %d cores, %s\n",
		brokerName, n, 100*dupRate, 100*invRate, runtime.NumCPU(), runtime.Version())

	// The events, generated up front so generation is not measured.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	now := time.Now().UTC()
	recs := make([]*kgo.Record, 0, n)
	var unique []usage.Event
	fig := pipelineFigures{Broker: brokerName, Events: n, Cores: runtime.NumCPU()}
	subjects := make([]string, 1000)
	for i := range subjects {
		// Subjects are subscription ids, UUIDs; stamped so runs do not share counters.
		subjects[i] = uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "bench-%s-%d", stamp, i)).String()
	}
	for i := 0; i < n; i++ {
		switch r := rng.Float64(); {
		case r < invRate:
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(subjects[i%len(subjects)]), Value: []byte(`{"specversion":"1.0","id":"x` + strconv.Itoa(i) + `"}`)})
			fig.Invalid++
		case r < invRate+dupRate && len(recs) > 0:
			prev := recs[rng.IntN(len(recs))]
			recs = append(recs, &kgo.Record{Topic: topic, Key: prev.Key, Value: prev.Value})
			fig.Duplicates++
		default:
			// Live traffic: times within the last minute; each subscription
			// calls with one of its own three keys, one of four routes.
			sub := rng.IntN(len(subjects))
			e := usage.Event{ID: stamp + "-" + strconv.Itoa(i), Source: "/bench", Type: usage.TypeAPIRequest,
				Subject: subjects[sub], Time: now.Add(-time.Duration(rng.IntN(60)) * time.Second).Truncate(time.Second),
				Data: usage.Data{APIID: "api_bench", KeyID: "key_" + strconv.Itoa(sub*3+rng.IntN(3)), Method: "GET", Route: benchRoutes[rng.IntN(len(benchRoutes))],
					Path: "/v1/items/" + strconv.Itoa(i), Status: 200, LatencyMS: uint32(rng.IntN(200)), RequestBytes: 120,
					ResponseBytes: uint64(rng.IntN(10000)), Units: decimal.New(int64(1+rng.IntN(1000)), -2)}}
			b, _ := json.Marshal(e)
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(e.Subject), Value: b})
			unique = append(unique, e)
		}
	}
	fig.Unique = len(unique)

	// Raw produce: the same records, straight from franz-go.
	start := time.Now()
	if err := admin.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	fig.RawProducePerSec = float64(n) / time.Since(start).Seconds()
	fmt.Fprintf(stdout, "raw produce      %10.0f events/s\n", fig.RawProducePerSec)

	// End to end through a processor.
	if cpuprofile != "" {
		pf, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
	}
	pset := metrics.NewSet()
	p, err := processors.New(processors.Config{Logger: logger, Metrics: pset, Brokers: seeds,
		Group: "veil-bench-" + stamp, Topic: topic, DLQTopic: dlq, ClickHouse: st.ch, Redis: st.redis, BatchRecords: batch})
	if err != nil {
		return err
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start = time.Now()
	go func() { done <- p.Run(pctx) }()
	waitDeadline := time.Now().Add(5 * time.Minute)
	for {
		var rows uint64
		if err := st.ch.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&rows); err != nil {
			stop()
			return err
		}
		if rows >= uint64(fig.Unique) {
			break
		}
		if time.Now().After(waitDeadline) {
			stop()
			return fmt.Errorf("usage_events holds %d rows after 5 minutes; want %d", rows, fig.Unique)
		}
		select {
		case err := <-done:
			stop()
			return fmt.Errorf("processor stopped: %v", err)
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Redis is written after ClickHouse in each batch: wait for the last
	// subjects' counters to reach their totals.
	if err := waitRedisTotals(ctx, st, unique); err != nil {
		stop()
		return err
	}
	elapsed := time.Since(start)
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	stop()
	<-done
	fig.EndToEndPerSec = float64(n) / elapsed.Seconds()
	printTimeSplit(stdout, pset, elapsed)
	fmt.Fprintf(stdout, "end to end       %10.0f events/s  (%d events, %d unique in ClickHouse and Redis, in %s)\n", fig.EndToEndPerSec, n, fig.Unique, elapsed.Round(time.Millisecond))

	// Raw ClickHouse insert of the same unique rows into a table of the same
	// structure, without the roll-up views.
	if err := st.ch.Exec(ctx, "CREATE TABLE raw_insert AS usage_events"); err != nil {
		return fmt.Errorf("create raw_insert: %w", err)
	}
	start = time.Now()
	const chunk = 50_000
	for i := 0; i < len(unique); i += chunk {
		b, err := st.ch.PrepareBatch(ctx, "INSERT INTO raw_insert (id, source, type, subject, time, api_id, key_id, method, route, path, status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)")
		if err != nil {
			return err
		}
		for j, e := range unique[i:min(i+chunk, len(unique))] {
			d := e.Data
			if err := b.Append(e.ID, e.Source, e.Type, e.Subject, e.Time, d.APIID, d.KeyID, d.Method, d.Route, d.Path,
				d.Status, d.LatencyMS, d.RequestBytes, d.ResponseBytes, d.Units, now, int32(0), int64(i+j)); err != nil {
				return err
			}
		}
		if err := b.Send(); err != nil {
			return err
		}
	}
	fig.RawClickHousePerSec = float64(len(unique)) / time.Since(start).Seconds()
	fmt.Fprintf(stdout, "raw clickhouse   %10.0f rows/s (same unique rows, no roll-up views)\n", fig.RawClickHousePerSec)
	fig.VsProduce = fig.EndToEndPerSec / fig.RawProducePerSec
	fig.VsClickHouse = fig.EndToEndPerSec / fig.RawClickHousePerSec
	fmt.Fprintf(stdout, "end to end is %.1f%% of raw produce and %.1f%% of raw ClickHouse insert\n", 100*fig.VsProduce, 100*fig.VsClickHouse)
	return json.NewEncoder(stdout).Encode(fig)
}

var benchRoutes = []string{"/v1/items/{id}", "/v1/items", "/v1/search", "/v1/items/{id}/reviews"}

// waitRedisTotals polls until every subject's period counter holds its
// unique events.
func waitRedisTotals(ctx context.Context, st stores, unique []usage.Event) error {
	want := map[string]int64{}
	for _, e := range unique {
		want[processors.PeriodKey(e.Subject, monthStartOf(e.Time))]++
	}
	deadline := time.Now().Add(5 * time.Minute)
	for key, n := range want {
		for {
			got, err := st.redis.Do(ctx, st.redis.B().Hget().Key(key).Field("requests").Build()).AsInt64()
			if err == nil && got == n {
				break
			}
			if got > n {
				return fmt.Errorf("redis %s holds %d requests; want %d", key, got, n)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("redis %s holds %d requests after 5 minutes; want %d (%v)", key, got, n, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func monthStartOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// printTimeSplit shows where the processor's wall time went, from its
// duration histograms' sums.
func printTimeSplit(w io.Writer, set *metrics.Set, elapsed time.Duration) {
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	fmt.Fprintf(w, "processor time split over %s:", elapsed.Round(time.Millisecond))
	for _, line := range strings.Split(buf.String(), "\n") {
		series, val, ok := strings.Cut(line, " ")
		name, labels, _ := strings.Cut(series, "{")
		if !ok || !strings.HasPrefix(name, "veil_processor_") || !strings.HasSuffix(name, "_duration_seconds_sum") {
			continue
		}
		secs, _ := strconv.ParseFloat(val, 64)
		label := strings.TrimSuffix(strings.TrimPrefix(name, "veil_processor_"), "_duration_seconds_sum")
		if labels != "" {
			label += "{" + labels
		}
		fmt.Fprintf(w, " %s %.2fs", label, secs)
	}
	fmt.Fprintln(w)
}
