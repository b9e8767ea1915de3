package processors

import (
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/VictoriaMetrics/metrics"

	"github.com/veil-platform/veil/internal/enforcement"
)

type processorMetrics struct {
	set          *metrics.Set
	consumed     *metrics.Counter
	written      *metrics.Counter
	duplicates   *metrics.Counter
	commitErrors *metrics.Counter
	batchRecords *metrics.PrometheusHistogram
	eventLag     *metrics.PrometheusHistogram
	// Where a batch's time goes, besides the sinks.
	pollSeconds     *metrics.PrometheusHistogram
	classifySeconds *metrics.PrometheusHistogram
	// Of the written events, those the gateway refused itself: stored,
	// never counted towards quotas.
	gatewayRefusals *metrics.Counter
	// Quota events produced to the quota topic, in all and by threshold
	// (whether the drain after a batch or the sweep produced them), and of
	// them the sweep's: a steady stream there means drains after batches
	// fail, or another writer pushes lines.
	quotaProduced      *metrics.Counter
	quotaCrossings     map[int]*metrics.Counter
	quotaSweepProduced *metrics.Counter
	// Outbox lines the broker refused, malformed lines dropped, and Redis
	// failures while draining.
	quotaOutboxErrors *metrics.Counter
}

func newProcessorMetrics(set *metrics.Set, p *Processor) processorMetrics {
	m := processorMetrics{
		set:          set,
		consumed:     set.NewCounter("veil_processor_events_consumed_total"),
		written:      set.NewCounter("veil_processor_events_written_total"),
		duplicates:   set.NewCounter("veil_processor_events_duplicate_total"),
		commitErrors: set.NewCounter("veil_processor_commit_errors_total"),
		batchRecords: set.NewPrometheusHistogramExt("veil_processor_batch_records",
			[]float64{1, 10, 100, 1000, 5000, 10000, 25000, 50000, 100000}),
		pollSeconds:        set.NewPrometheusHistogram("veil_processor_poll_duration_seconds"),
		classifySeconds:    set.NewPrometheusHistogram("veil_processor_classify_duration_seconds"),
		gatewayRefusals:    set.NewCounter("veil_processor_gateway_refusals_total"),
		quotaProduced:      set.NewCounter("veil_processor_quota_events_produced_total"),
		quotaCrossings:     map[int]*metrics.Counter{},
		quotaSweepProduced: set.NewCounter("veil_processor_quota_sweep_produced_total"),
		quotaOutboxErrors:  set.NewCounter("veil_processor_quota_outbox_errors_total"),
		// From the event's time to the moment every sink holds it.
		eventLag: set.NewPrometheusHistogramExt("veil_processor_event_lag_seconds",
			[]float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400}),
	}
	for _, pct := range enforcement.Thresholds {
		m.quotaCrossings[pct] = set.NewCounter(fmt.Sprintf(`veil_processor_quota_produced_by_threshold_total{threshold="%d"}`, pct))
	}
	// Consumer lag per owned partition: records behind the high watermark
	// as of the last fetch.
	set.RegisterMetricsWriter(func(w io.Writer) {
		p.mu.Lock()
		parts := make([]int32, 0, len(p.lag))
		for part := range p.lag {
			parts = append(parts, part)
		}
		sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
		for _, part := range parts {
			fmt.Fprintf(w, "veil_processor_consumer_lag{partition=%q} %d\n", strconv.Itoa(int(part)), p.lag[part])
		}
		p.mu.Unlock()
	})
	return m
}

// quotaCrossing is the crossings counter of a threshold; ParseOutbox admits
// no other thresholds than enforcement.Thresholds.
func (m processorMetrics) quotaCrossing(pct int) *metrics.Counter {
	if c, ok := m.quotaCrossings[pct]; ok {
		return c
	}
	return m.set.GetOrCreateCounter(fmt.Sprintf(`veil_processor_quota_produced_by_threshold_total{threshold="%d"}`, pct))
}

func (m processorMetrics) sinkSeconds(sink string) *metrics.PrometheusHistogram {
	return m.set.GetOrCreatePrometheusHistogram(`veil_processor_sink_duration_seconds{sink="` + sink + `"}`)
}

func (m processorMetrics) sinkErrors(sink string) *metrics.Counter {
	return m.set.GetOrCreateCounter(`veil_processor_sink_errors_total{sink="` + sink + `"}`)
}
