package broker

import (
	"net"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Hooks exports franz-go client metrics to a VictoriaMetrics set. Labels are
// bounded: the client id, the broker node id and the topic.
type Hooks struct {
	set      *metrics.Set
	clientID string
}

// NewHooks returns hooks that register metrics named veil_kafka_* in set.
func NewHooks(set *metrics.Set, clientID string) *Hooks {
	return &Hooks{set: set, clientID: clientID}
}

func (h *Hooks) counter(name string, labels ...string) *metrics.Counter {
	return h.set.GetOrCreateCounter(h.name(name, labels...))
}

func (h *Hooks) histogram(name string, labels ...string) *metrics.PrometheusHistogram {
	return h.set.GetOrCreatePrometheusHistogram(h.name(name, labels...))
}

func (h *Hooks) name(name string, labels ...string) string {
	b := make([]byte, 0, 96)
	b = append(b, name...)
	b = append(b, `{client="`...)
	b = append(b, h.clientID...)
	b = append(b, '"')
	for i := 0; i+1 < len(labels); i += 2 {
		b = append(b, ',')
		b = append(b, labels[i]...)
		b = append(b, `="`...)
		b = append(b, labels[i+1]...)
		b = append(b, '"')
	}
	return string(append(b, '}'))
}

func node(meta kgo.BrokerMetadata) string { return strconv.Itoa(int(meta.NodeID)) }

// OnBrokerConnect counts connection attempts and failures.
func (h *Hooks) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.counter("veil_kafka_connect_errors_total", "node", node(meta)).Inc()
		return
	}
	h.counter("veil_kafka_connects_total", "node", node(meta)).Inc()
}

// OnBrokerDisconnect counts closed connections.
func (h *Hooks) OnBrokerDisconnect(meta kgo.BrokerMetadata, _ net.Conn) {
	h.counter("veil_kafka_disconnects_total", "node", node(meta)).Inc()
}

// OnBrokerWrite counts bytes written and write errors.
func (h *Hooks) OnBrokerWrite(meta kgo.BrokerMetadata, _ int16, n int, _, _ time.Duration, err error) {
	h.counter("veil_kafka_write_bytes_total", "node", node(meta)).Add(n)
	if err != nil {
		h.counter("veil_kafka_write_errors_total", "node", node(meta)).Inc()
	}
}

// OnBrokerRead counts bytes read and read errors.
func (h *Hooks) OnBrokerRead(meta kgo.BrokerMetadata, _ int16, n int, _, _ time.Duration, err error) {
	h.counter("veil_kafka_read_bytes_total", "node", node(meta)).Add(n)
	if err != nil {
		h.counter("veil_kafka_read_errors_total", "node", node(meta)).Inc()
	}
}

// OnBrokerE2E observes request round-trip time per request kind.
func (h *Hooks) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	if e2e.Err() != nil {
		return
	}
	h.histogram("veil_kafka_request_duration_seconds", "node", node(meta), "api_key", strconv.Itoa(int(key))).Update(e2e.DurationE2E().Seconds())
}

// OnProduceBatchWritten counts records and bytes produced per topic.
func (h *Hooks) OnProduceBatchWritten(_ kgo.BrokerMetadata, topic string, _ int32, m kgo.ProduceBatchMetrics) {
	h.counter("veil_kafka_produced_records_total", "topic", topic).Add(m.NumRecords)
	h.counter("veil_kafka_produced_bytes_total", "topic", topic).Add(m.CompressedBytes)
}

// OnFetchBatchRead counts records and bytes fetched per topic.
func (h *Hooks) OnFetchBatchRead(_ kgo.BrokerMetadata, topic string, _ int32, m kgo.FetchBatchMetrics) {
	h.counter("veil_kafka_fetched_records_total", "topic", topic).Add(m.NumRecords)
	h.counter("veil_kafka_fetched_bytes_total", "topic", topic).Add(m.CompressedBytes)
}

var (
	_ kgo.HookBrokerConnect       = (*Hooks)(nil)
	_ kgo.HookBrokerDisconnect    = (*Hooks)(nil)
	_ kgo.HookBrokerWrite         = (*Hooks)(nil)
	_ kgo.HookBrokerRead          = (*Hooks)(nil)
	_ kgo.HookBrokerE2E           = (*Hooks)(nil)
	_ kgo.HookProduceBatchWritten = (*Hooks)(nil)
	_ kgo.HookFetchBatchRead      = (*Hooks)(nil)
)
