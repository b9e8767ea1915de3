package processors

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/broker"
)

// Run consumes until ctx ends or a fatal error occurs.
func (p *Processor) Run(ctx context.Context) error {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200 * time.Millisecond),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.dropPartitions("revoked")),
		kgo.OnPartitionsLost(p.dropPartitions("lost")),
		kgo.ProducerLinger(0),
	}
	cl, err := broker.NewClient(broker.ClientConfig{
		Brokers:  p.cfg.Brokers,
		ClientID: "veil-processor",
		Logger:   p.cfg.Logger,
		Metrics:  p.cfg.Metrics,
		Opts:     append(opts, p.cfg.KafkaOpts...),
	})
	if err != nil {
		return err
	}
	defer cl.Close()

	sweepCtx, stopSweep := context.WithCancel(ctx)
	var sweeping sync.WaitGroup
	sweeping.Go(func() { p.sweepQuotaOutboxes(sweepCtx, cl) })
	defer func() {
		stopSweep()
		sweeping.Wait()
	}()

	for ctx.Err() == nil {
		pollStart := time.Now()
		records := p.pollBatch(ctx, cl)
		p.m.pollSeconds.UpdateDuration(pollStart)
		if len(records) == 0 {
			cl.AllowRebalance()
			continue
		}
		if err := p.process(ctx, cl, records); err != nil {
			cl.AllowRebalance()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			// The sinks hold the batch; whoever owns the partitions next
			// recognises it, so a failed commit costs only a re-read.
			p.cfg.Logger.WarnContext(ctx, "commit offsets", "err", err)
			p.m.commitErrors.Inc()
		}
		cl.AllowRebalance()
	}
	return nil
}

// pollBatch gathers records until the batch is full or BatchWait passes.
func (p *Processor) pollBatch(ctx context.Context, cl *kgo.Client) []*kgo.Record {
	var records []*kgo.Record
	deadline := time.Now().Add(p.cfg.BatchWait)
	for len(records) < p.cfg.BatchRecords {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		fs := cl.PollRecords(pctx, p.cfg.BatchRecords-len(records))
		cancel()
		fs.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.cfg.Logger.WarnContext(ctx, "fetch", "topic", topic, "partition", partition, "err", err)
			}
		})
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if n := len(fp.Records); n > 0 {
				p.setLag(fp.Partition, fp.HighWatermark-fp.Records[n-1].Offset-1)
			}
			records = append(records, fp.Records...)
		})
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			break
		}
	}
	return records
}

func (p *Processor) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	p.cfg.Logger.InfoContext(ctx, "partitions assigned", "partitions", assigned[p.cfg.Topic])
}

func (p *Processor) dropPartitions(why string) func(context.Context, *kgo.Client, map[string][]int32) {
	return func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
		parts := m[p.cfg.Topic]
		p.mu.Lock()
		for _, part := range parts {
			delete(p.parts, part)
			delete(p.lag, part)
		}
		p.mu.Unlock()
		p.redis.forget(parts)
		p.cfg.Logger.InfoContext(ctx, "partitions "+why, "partitions", parts)
	}
}

func (p *Processor) setLag(partition int32, lag int64) {
	p.mu.Lock()
	p.lag[partition] = lag
	p.mu.Unlock()
}
