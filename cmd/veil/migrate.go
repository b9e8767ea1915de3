package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/schemas/migrate"
)

type migrateFlags struct {
	postgresURL    string
	clickhouseAddr string
	clickhouseDB   string
	partitions     int
	only           string
	timeout        time.Duration
}

func (m *migrateFlags) register(f *flags) {
	f.String(&m.postgresURL, "postgres-url", "VEIL_POSTGRES_URL", defaultPostgresURL, "Postgres connection URL")
	f.String(&m.clickhouseAddr, "clickhouse-addr", "VEIL_CLICKHOUSE_ADDR", defaultClickHouseAddr, "ClickHouse native-protocol address")
	f.String(&m.clickhouseDB, "clickhouse-database", "VEIL_CLICKHOUSE_DATABASE", defaultClickHouseDB, "ClickHouse database")
	f.Int(&m.partitions, "kafka-partitions", "VEIL_KAFKA_PARTITIONS", broker.DefaultPartitions, "partitions of veil.usage.raw when it is created")
}

// defaultMigrateTimeout bounds a run of the migrations (veil migrate
// --timeout; veil dev and the benches use it as is).
const defaultMigrateTimeout = 2 * time.Hour

var migrateTargets = []string{"postgres", "clickhouse", "kafka"}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		m       migrateFlags
		log     logFlags
		brokers string
	)
	f := newFlags("migrate", "Applies the embedded Postgres and ClickHouse migrations (creating the databases if needed) and creates\nVeil's Kafka topics. Idempotent and records the versions it applied. Runs that share a Postgres wait\nfor each other: the ClickHouse migrations hold an advisory lock there (a roll-up's backfill copied twice\nat once would count the usage history twice).", stdout)
	m.register(f)
	log.register(f)
	f.String(&brokers, "kafka-brokers", "VEIL_KAFKA_BROKERS", defaultKafkaBrokers, "comma-separated Kafka seed brokers")
	f.String(&m.only, "only", "", strings.Join(migrateTargets, ","), "comma-separated subset of postgres, clickhouse, kafka")
	f.Duration(&m.timeout, "timeout", "VEIL_MIGRATE_TIMEOUT", defaultMigrateTimeout,
		"how long the whole run may take (a roll-up's backfill copies the usage history: minutes per hundred million events)")
	if err := f.Parse(args); err != nil {
		return err
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	targets := broker.ParseBrokers(m.only)
	for _, t := range targets {
		if !slices.Contains(migrateTargets, t) {
			return fmt.Errorf("--only: unknown target %q; want some of %s", t, strings.Join(migrateTargets, ", "))
		}
	}
	return m.apply(ctx, targets, broker.ParseBrokers(brokers), logger, stdout)
}

// apply migrates each target and prints one line per target.
func (m *migrateFlags) apply(ctx context.Context, targets, brokers []string, logger *slog.Logger, out io.Writer) error {
	timeout := m.timeout
	if timeout <= 0 {
		timeout = defaultMigrateTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, t := range targets {
		switch t {
		case "postgres":
			res, err := migrate.Postgres(ctx, m.postgresURL, logger)
			if err != nil {
				return fmt.Errorf("%w (is Postgres running? make services starts it)", err)
			}
			fmt.Fprintf(out, "postgres: %d migrations applied %v\n", len(res.Versions), res.Versions)
		case "clickhouse":
			// Runs that share the Postgres wait for each other: a
			// roll-up's backfill run twice at once would count twice.
			res, err := migrate.ClickHouse(ctx, migrate.ClickHouseConfig{Addr: m.clickhouseAddr, Database: m.clickhouseDB, LockURL: m.postgresURL}, logger)
			if err != nil {
				return fmt.Errorf("%w (is ClickHouse running? make services starts it)", err)
			}
			fmt.Fprintf(out, "clickhouse: %d migrations applied %v\n", len(res.Versions), res.Versions)
		case "kafka":
			if err := ensureTopics(ctx, brokers, int32(m.partitions), logger); err != nil {
				return err
			}
			fmt.Fprintf(out, "kafka: topics %s, %s and %s present\n", broker.TopicUsageRaw, broker.TopicUsageDLQ, broker.TopicQuotaEvents)
		}
	}
	return nil
}

func ensureTopics(ctx context.Context, brokers []string, partitions int32, logger *slog.Logger) error {
	cl, err := broker.NewClient(broker.ClientConfig{Brokers: brokers, ClientID: "veil-migrate", Logger: logger})
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := broker.EnsureTopics(ctx, cl, broker.Topics(partitions)); err != nil {
		return fmt.Errorf("%w (is Kafka running at %s? make kafka starts it)", err, strings.Join(brokers, ","))
	}
	return nil
}
