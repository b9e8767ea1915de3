package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
)

// meteredPlane is what the end-to-end tests of the metered loop run on:
// Kafka topics, ClickHouse and Redis databases of their own, a gateway
// producing to the raw topic, and the control plane's options wired to them.
type meteredPlane struct {
	kafka                *testenv.Kafka
	raw, dlq, quotaTopic string
	ch                   driver.Conn
	rc                   rueidis.Client
	e                    *cpEnv
	opts                 cpOptions
}

// newMeteredPlane migrates a fresh Postgres and starts the gateway with
// events from source into a raw topic of partitions partitions; the test
// adjusts m.opts, then starts the control plane and startProcessor.
func newMeteredPlane(t *testing.T, partitions int32, source string) *meteredPlane {
	t.Helper()
	m := &meteredPlane{kafka: testenv.NewKafka(t)}
	m.raw, m.dlq, m.quotaTopic = m.kafka.Topic(t, partitions), m.kafka.Topic(t, 1), m.kafka.Topic(t, 1)
	ch, chAddr, chDB := testenv.ClickHouseDB(t)
	brokers := strings.Join(m.kafka.Brokers, ",")
	m.e = newCPEnvWith(t, func(db int) []string {
		return []string{"VEIL_REDIS_DB=" + strconv.Itoa(db), "VEIL_KAFKA_BROKERS=" + brokers, "VEIL_GATEWAY_TOPIC=" + m.raw,
			"VEIL_GATEWAY_SPOOL_DIR=" + t.TempDir(), "VEIL_GATEWAY_EVENT_SOURCE=" + source}
	})
	m.ch, m.rc = ch, m.e.redis
	m.opts = m.e.options(4)
	m.opts.keyAuth, m.opts.kafkaBrokers, m.opts.quotaTopic = true, brokers, m.quotaTopic
	m.opts.clickhouseAddr, m.opts.clickhouseDB = chAddr, chDB
	return m
}

// processorConfig is a processor of the plane's topics and stores in
// consumer group group, quick to batch and to rebalance.
func (m *meteredPlane) processorConfig(t *testing.T, group string, batchRecords int) processors.Config {
	return processors.Config{
		Logger: testenv.Logger(t), Metrics: metrics.NewSet(), Brokers: m.kafka.Brokers, Group: group + "-" + testenv.Suffix(),
		Topic: m.raw, DLQTopic: m.dlq, QuotaTopic: m.quotaTopic, ClickHouse: m.ch, Redis: m.rc,
		BatchRecords: batchRecords, BatchWait: 50 * time.Millisecond, QuotaSweepInterval: 200 * time.Millisecond,
		KafkaOpts: pipelinetest.QuickRebalance(),
	}
}

// getSubscription reads the subscription id as tok.
func getSubscription(t *testing.T, c *controlPlane, tok string, id uuid.UUID) client.Subscription {
	t.Helper()
	resp, err := c.GetSubscriptionWithResponse(t.Context(), id, nil, client.Bearer(tok))
	expect(t, 200, resp, err)
	return *resp.JSON200
}

// getQuota reads the subscription's quota as tok.
func getQuota(t *testing.T, c *controlPlane, tok string, id uuid.UUID) client.QuotaStatus {
	t.Helper()
	resp, err := c.GetSubscriptionQuotaWithResponse(t.Context(), id, nil, client.Bearer(tok))
	expect(t, 200, resp, err)
	return *resp.JSON200
}

// thresholds are the quota's crossed thresholds as ints.
func thresholds(q client.QuotaStatus) []int {
	out := []int{}
	for _, th := range q.ThresholdsCrossed {
		out = append(out, int(th))
	}
	return out
}
