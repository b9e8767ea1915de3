package quota

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/enforcement"
)

// Consumer tuning.
const (
	// consumerBatch bounds the records handled between two commits.
	consumerBatch = 500
	// consumerRetryMin and consumerRetryMax bound the wait before handling
	// a record again after a failure (Postgres down: handling touches
	// nothing else); the wait doubles from the one to the other.
	consumerRetryMin = 100 * time.Millisecond
	consumerRetryMax = 30 * time.Second
)

// Results of a consumed record, the result label of
// veil_controlplane_quota_events_total.
const (
	eventHandled = "handled"
	eventInvalid = "invalid"
	eventRetried = "retried"
)

// RunConsumer consumes threshold crossings from cfg.Topic in consumer
// group cfg.Group and hands each to HandleCrossing, until ctx ends; then it
// returns nil. Several control planes share the partitions.
//
// A record that is not a valid quota event is logged, counted and skipped:
// it never holds up the partition. Offsets are committed only once every
// record of a poll was handled. HandleCrossing only writes Postgres (the
// email is a job, sent and retried by QuotaEmailWorker), so the one
// failure left is Postgres's, which no record can skip past: a record
// whose handling fails is tried again in place, with a backoff doubling
// up to 30 s, for as long as it takes. Since HandleCrossing claims each
// notice once, a record handled again after a crash or a rebalance
// queues nothing twice.
//
// Without cfg.Brokers it fails at once.
func (s *Service) RunConsumer(ctx context.Context) error {
	if len(s.cfg.Brokers) == 0 {
		return fmt.Errorf("run quota consumer: %w: set the brokers to consume %s from", broker.ErrNoBrokers, s.cfg.Topic)
	}
	// Rebalances are not blocked while a poll is handled: handling may wait
	// out an outage for longer than a rebalance may take, and the client
	// drops the pending offsets of partitions it loses, so a late commit
	// cannot rewind another member's.
	opts := []kgo.Opt{
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}
	cl, err := broker.NewClient(broker.ClientConfig{
		Brokers:  s.cfg.Brokers,
		ClientID: "veil-control-plane-quota",
		Logger:   s.log,
		Metrics:  s.cfg.Metrics,
		Opts:     append(opts, s.cfg.KafkaOpts...),
	})
	if err != nil {
		return fmt.Errorf("run quota consumer: %w", err)
	}
	defer cl.Close()
	s.log.InfoContext(ctx, "quota consumer started", "topic", s.cfg.Topic, "group", s.cfg.Group)

	for {
		fs := cl.PollRecords(ctx, consumerBatch)
		if ctx.Err() != nil {
			return nil
		}
		failed := false
		fs.EachError(func(topic string, partition int32, err error) {
			failed = true
			s.log.WarnContext(ctx, "fetch quota events", "topic", topic, "partition", partition, "error", err)
		})
		records := fs.Records()
		if len(records) == 0 {
			if failed && !consumerSleep(ctx, consumerRetryMin) {
				return nil
			}
			continue
		}
		for _, r := range records {
			if !s.consumeCrossing(ctx, r) {
				return nil
			}
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			// The notices are claimed: whoever reads these records again
			// sends nothing, so a failed commit costs only a re-read.
			s.log.WarnContext(ctx, "commit quota event offsets", "error", err)
		}
	}
}

// consumeCrossing handles one record, retrying until it is handled or
// skipped; it reports false when ctx ended first.
func (s *Service) consumeCrossing(ctx context.Context, r *kgo.Record) bool {
	log := s.log.With("topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
	e, err := enforcement.UnmarshalCrossing(r.Value)
	if err != nil {
		log.WarnContext(ctx, "invalid quota event skipped", "error", err, "key", string(r.Key))
		s.eventCounter(eventInvalid).Inc()
		return true
	}
	wait := consumerRetryMin
	for attempt := 1; ; attempt++ {
		sent, err := s.HandleCrossing(ctx, e)
		switch {
		case err == nil:
			s.eventCounter(eventHandled).Inc()
			if sent > 0 {
				log.InfoContext(ctx, "quota notices sent", "event_id", e.ID(), "notices", sent)
			}
			return true
		case errors.Is(err, enforcement.ErrInvalidCrossing):
			log.WarnContext(ctx, "invalid quota event skipped", "error", err)
			s.eventCounter(eventInvalid).Inc()
			return true
		case ctx.Err() != nil:
			return false
		}
		s.eventCounter(eventRetried).Inc()
		log.ErrorContext(ctx, "handle quota event; retrying", "event_id", e.ID(), "attempt", attempt, "retry_in", wait, "error", err)
		if !consumerSleep(ctx, wait) {
			return false
		}
		wait = min(2*wait, consumerRetryMax)
	}
}

// eventCounter is veil_controlplane_quota_events_total of a result.
func (s *Service) eventCounter(result string) *metrics.Counter {
	return s.cfg.Metrics.GetOrCreateCounter(fmt.Sprintf(`veil_controlplane_quota_events_total{result=%q}`, result))
}

// consumerSleep waits d; it reports false when ctx ended first.
func consumerSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
