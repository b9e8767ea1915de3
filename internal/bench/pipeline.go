package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/processors"
	"github.com/veil-platform/veil/schemas/usage"
)

// PipelineConfig configures Pipeline.
type PipelineConfig struct {
	// Brokers are Kafka seed brokers; empty runs an in-process kfake broker.
	Brokers []string
	// ClickHouseAddr is where the scratch database is made.
	ClickHouseAddr string
	// RedisAddr is the Redis of the counters (database 0; the subjects
	// are the run's own).
	RedisAddr string
	// Events is how many events are produced.
	Events int
	// DupRate and InvalidRate are the shares, in [0, 1), of events that
	// repeat an earlier one and of invalid ones.
	DupRate, InvalidRate float64
	// BatchRecords is the processor's batch size.
	BatchRecords int
	// CPUProfile, when set, is where a CPU profile of the processing phase
	// is written.
	CPUProfile string
	Logger     *slog.Logger
}

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

// pipelineRun is what the phases of one run share.
type pipelineRun struct {
	cfg        PipelineConfig
	seeds      []string
	stamp      string
	topic, dlq string
	s          *scratch
	redis      rueidis.Client
	fig        pipelineFigures
}

// Pipeline produces cfg.Events events (with duplicates and invalid ones) to
// a fresh topic, then runs a processor in this process and measures until
// every unique event is in ClickHouse and Redis. In the same run it
// measures the raw produce rate to the broker and the raw ClickHouse insert
// rate of the same rows, and prints the ratios and a final JSON line.
func Pipeline(ctx context.Context, cfg PipelineConfig, stdout io.Writer) error {
	seeds, brokerName, closeBroker, err := startBroker(cfg.Brokers, cfg.Logger)
	if err != nil {
		return err
	}
	defer closeBroker()
	r := &pipelineRun{cfg: cfg, seeds: seeds, stamp: strconv.FormatInt(time.Now().UnixNano(), 36)}
	r.topic, r.dlq = "veil.bench.raw."+r.stamp, "veil.bench.dlq."+r.stamp
	r.s, err = newScratch(ctx, seeds, "veil-bench",
		[]kgo.Opt{kgo.ProducerLinger(5 * time.Millisecond), kgo.MaxBufferedRecords(500_000),
			kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()), kgo.ProducerBatchMaxBytes(4 << 20)},
		[]broker.TopicSpec{{Name: r.topic, Partitions: broker.DefaultPartitions}, {Name: r.dlq, Partitions: 1}},
		cfg.ClickHouseAddr, r.stamp, cfg.Logger)
	if err != nil {
		return err
	}
	defer r.s.drop(ctx)
	if r.redis, err = datastore.OpenRedis(datastore.Redis{Addr: cfg.RedisAddr}); err != nil {
		return err
	}
	defer r.redis.Close()

	fmt.Fprintf(stdout, "veil bench pipeline: %s, %d events (dup %.0f%%, invalid %.0f%%), %d cores, %s\n",
		brokerName, cfg.Events, 100*cfg.DupRate, 100*cfg.InvalidRate, runtime.NumCPU(), runtime.Version())
	r.fig = pipelineFigures{Broker: brokerName, Events: cfg.Events, Cores: runtime.NumCPU()}
	now := time.Now().UTC()
	recs, unique := r.generate(now)

	// Raw produce: the same records, straight from franz-go.
	start := time.Now()
	if err := r.s.admin.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	r.fig.RawProducePerSec = float64(cfg.Events) / time.Since(start).Seconds()
	fmt.Fprintf(stdout, "raw produce      %10.0f events/s\n", r.fig.RawProducePerSec)

	if err := r.endToEnd(ctx, unique, stdout); err != nil {
		return err
	}
	if r.fig.RawClickHousePerSec, err = rawInsert(ctx, r.s.ch, unique, now); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "raw clickhouse   %10.0f rows/s (same unique rows, no roll-up views)\n", r.fig.RawClickHousePerSec)
	r.fig.VsProduce = r.fig.EndToEndPerSec / r.fig.RawProducePerSec
	r.fig.VsClickHouse = r.fig.EndToEndPerSec / r.fig.RawClickHousePerSec
	fmt.Fprintf(stdout, "end to end is %.1f%% of raw produce and %.1f%% of raw ClickHouse insert\n", 100*r.fig.VsProduce, 100*r.fig.VsClickHouse)
	return json.NewEncoder(stdout).Encode(r.fig)
}

var benchRoutes = []string{"/v1/items/{id}", "/v1/items", "/v1/search", "/v1/items/{id}/reviews"}

// generate makes the run's records up front, so generation is not
// measured, and counts them into the figures; it returns the records and
// the unique events among them.
func (r *pipelineRun) generate(now time.Time) ([]*kgo.Record, []usage.Event) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	recs := make([]*kgo.Record, 0, r.cfg.Events)
	var unique []usage.Event
	subjects := make([]string, 1000)
	for i := range subjects {
		// Subjects are subscription ids, UUIDs; stamped so runs do not share counters.
		subjects[i] = uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "bench-%s-%d", r.stamp, i)).String()
	}
	for i := 0; i < r.cfg.Events; i++ {
		switch x := rng.Float64(); {
		case x < r.cfg.InvalidRate:
			recs = append(recs, &kgo.Record{Topic: r.topic, Key: []byte(subjects[i%len(subjects)]), Value: []byte(`{"specversion":"1.0","id":"x` + strconv.Itoa(i) + `"}`)})
			r.fig.Invalid++
		case x < r.cfg.InvalidRate+r.cfg.DupRate && len(recs) > 0:
			prev := recs[rng.IntN(len(recs))]
			recs = append(recs, &kgo.Record{Topic: r.topic, Key: prev.Key, Value: prev.Value})
			r.fig.Duplicates++
		default:
			// Live traffic: times within the last minute; each subscription
			// calls with one of its own three keys, one of four routes.
			sub := rng.IntN(len(subjects))
			e := usage.Event{ID: r.stamp + "-" + strconv.Itoa(i), Source: "/bench", Type: usage.TypeAPIRequest,
				Subject: subjects[sub], Time: now.Add(-time.Duration(rng.IntN(60)) * time.Second).Truncate(time.Second),
				Data: usage.Data{APIID: "api_bench", KeyID: "key_" + strconv.Itoa(sub*3+rng.IntN(3)), Method: "GET", Route: benchRoutes[rng.IntN(len(benchRoutes))],
					Path: "/v1/items/" + strconv.Itoa(i), Status: 200, LatencyMS: uint32(rng.IntN(200)), RequestBytes: 120,
					ResponseBytes: uint64(rng.IntN(10000)), Units: decimal.New(int64(1+rng.IntN(1000)), -2)}}
			b, _ := json.Marshal(e)
			recs = append(recs, &kgo.Record{Topic: r.topic, Key: []byte(e.Subject), Value: b})
			unique = append(unique, e)
		}
	}
	r.fig.Unique = len(unique)
	return recs, unique
}

// endToEnd runs a processor until every unique event is in ClickHouse and
// Redis, and prints the rate and where the processor's time went.
func (r *pipelineRun) endToEnd(ctx context.Context, unique []usage.Event, stdout io.Writer) error {
	if r.cfg.CPUProfile != "" {
		pf, err := os.Create(r.cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
	}
	pset := metrics.NewSet()
	p, err := processors.New(processors.Config{Logger: r.cfg.Logger, Metrics: pset, Brokers: r.seeds,
		Group: "veil-bench-" + r.stamp, Topic: r.topic, DLQTopic: r.dlq, ClickHouse: r.s.ch, Redis: r.redis, BatchRecords: r.cfg.BatchRecords})
	if err != nil {
		return err
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Run(pctx) }()
	if err := waitRows(ctx, r.s.ch, uint64(r.fig.Unique), done); err != nil {
		return err
	}
	// Redis is written after ClickHouse in each batch: wait for the last
	// subjects' counters to reach their totals.
	if err := waitRedisTotals(ctx, r.redis, unique); err != nil {
		return err
	}
	elapsed := time.Since(start)
	if r.cfg.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	stop()
	<-done
	r.fig.EndToEndPerSec = float64(r.cfg.Events) / elapsed.Seconds()
	printTimeSplit(stdout, pset, elapsed)
	fmt.Fprintf(stdout, "end to end       %10.0f events/s  (%d events, %d unique in ClickHouse and Redis, in %s)\n",
		r.fig.EndToEndPerSec, r.cfg.Events, r.fig.Unique, elapsed.Round(time.Millisecond))
	return nil
}

// waitRows polls until usage_events holds want rows, the processor stops
// (done), ctx ends or 5 minutes pass.
func waitRows(ctx context.Context, ch driver.Conn, want uint64, done <-chan error) error {
	waitDeadline := time.Now().Add(5 * time.Minute)
	for {
		var rows uint64
		if err := ch.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&rows); err != nil {
			return err
		}
		if rows >= want {
			return nil
		}
		if time.Now().After(waitDeadline) {
			return fmt.Errorf("usage_events holds %d rows after 5 minutes; want %d", rows, want)
		}
		select {
		case err := <-done:
			return fmt.Errorf("processor stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// rawInsert inserts the unique rows into a table of usage_events'
// structure, without the roll-up views, and returns the rows per second.
func rawInsert(ctx context.Context, ch driver.Conn, unique []usage.Event, ingested time.Time) (float64, error) {
	if err := ch.Exec(ctx, "CREATE TABLE raw_insert AS usage_events"); err != nil {
		return 0, fmt.Errorf("create raw_insert: %w", err)
	}
	start := time.Now()
	const chunk = 50_000
	for i := 0; i < len(unique); i += chunk {
		b, err := ch.PrepareBatch(ctx, "INSERT INTO raw_insert (id, source, type, subject, time, api_id, key_id, method, route, path, status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)")
		if err != nil {
			return 0, err
		}
		for j, e := range unique[i:min(i+chunk, len(unique))] {
			d := e.Data
			if err := b.Append(e.ID, e.Source, e.Type, e.Subject, e.Time, d.APIID, d.KeyID, d.Method, d.Route, d.Path,
				d.Status, d.LatencyMS, d.RequestBytes, d.ResponseBytes, d.Units, ingested, int32(0), int64(i+j)); err != nil {
				return 0, err
			}
		}
		if err := b.Send(); err != nil {
			return 0, err
		}
	}
	return float64(len(unique)) / time.Since(start).Seconds(), nil
}

// waitRedisTotals polls until every subject's period counter holds its
// unique events.
func waitRedisTotals(ctx context.Context, rc rueidis.Client, unique []usage.Event) error {
	want := map[string]int64{}
	for _, e := range unique {
		// The subjects have no subscription record: the calendar month.
		want[enforcement.PeriodCounterName(e.Subject, enforcement.CalendarMonth(e.Time).Start)]++
	}
	deadline := time.Now().Add(5 * time.Minute)
	for key, n := range want {
		for {
			got, err := rc.Do(ctx, rc.B().Hget().Key(key).Field("requests").Build()).AsInt64()
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
