// Package bench holds the benchmarks of `veil bench`: ingest throughput
// against franz-go's raw produce, the pipeline (a processor into
// ClickHouse and Redis) against raw produce and raw inserts, the gateway's
// veil handler against plain Caddy, and how fast a used-up quota stops
// traffic at the gateway. Each prints its figures and, but for ingest, a
// final JSON line; cmd/veil parses the flags and calls them.
package bench

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/datastore"
	"github.com/veil-platform/veil/schemas/migrate"
)

// startBroker returns the named brokers, or starts an in-process kfake
// broker when none is named; the caller calls closeBroker when done.
func startBroker(brokers []string, logger *slog.Logger) (seeds []string, name string, closeBroker func(), err error) {
	if len(brokers) > 0 {
		return brokers, "Apache Kafka at " + strings.Join(brokers, ","), func() {}, nil
	}
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{Logger: logger})
	if err != nil {
		return nil, "", nil, err
	}
	return emb.Addrs(), "kfake (in-process) at " + strings.Join(emb.Addrs(), ","), emb.Close, nil
}

// result is one measured phase.
type result struct {
	name      string
	events    int64
	requests  int64
	failures  int64
	elapsed   time.Duration
	latencies []time.Duration // sorted
}

func (r result) eventsPerSec() float64 { return float64(r.events) / r.elapsed.Seconds() }

func (r result) requestsPerSec() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r result) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[int(q*float64(len(r.latencies)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// scratch is a run's own topics and migrated ClickHouse database, removed
// by drop.
type scratch struct {
	admin  *kgo.Client
	ch     driver.Conn // with the scratch database selected
	db     string
	topics []string
}

// newScratch creates the topics and a ClickHouse database named after
// stamp with Veil's migrations; admin is a client of the run (its opts
// tune it for producing).
func newScratch(ctx context.Context, seeds []string, clientID string, opts []kgo.Opt, topics []broker.TopicSpec, clickhouseAddr, stamp string, logger *slog.Logger) (_ *scratch, err error) {
	s := &scratch{db: "veil_bench_" + stamp}
	for _, t := range topics {
		s.topics = append(s.topics, t.Name)
	}
	if s.admin, err = broker.NewClient(broker.ClientConfig{Brokers: seeds, ClientID: clientID, Logger: logger, Opts: opts}); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.drop(ctx)
		}
	}()
	if err := broker.EnsureTopics(ctx, s.admin, topics); err != nil {
		return nil, err
	}
	if _, err := migrate.ClickHouse(ctx, migrate.ClickHouseConfig{Addr: clickhouseAddr, Database: s.db}, logger); err != nil {
		return nil, err
	}
	if s.ch, err = datastore.OpenClickHouse(datastore.ClickHouse{Addr: clickhouseAddr, Database: s.db}); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.ch.Ping(pctx); err != nil {
		return nil, fmt.Errorf("ping ClickHouse at %s (make services starts it): %w", clickhouseAddr, err)
	}
	return s, nil
}

// drop removes the database and the topics and closes the clients.
func (s *scratch) drop(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if s.ch != nil {
		_ = s.ch.Exec(cctx, "DROP DATABASE IF EXISTS "+s.db)
		_ = s.ch.Close()
	}
	_, _ = kadm.NewClient(s.admin).DeleteTopics(cctx, s.topics...)
	s.admin.Close()
}
