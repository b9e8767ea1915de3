package processors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/schemas/usage"
)

// partitionState is what a processor knows about a partition it owns. It is
// built on the first batch after the partition is assigned and dropped when
// the partition is revoked or lost.
type partitionState struct {
	seen *seenSet
	// rejected holds offsets usage_rejects already has, at or after the
	// first offset processed since assignment.
	rejected map[int64]bool
}

// batch is one poll's records sorted into what each sink must do.
type batch struct {
	rows    []row
	items   []item
	rejects []reject
	// rejectsForCH are the rejects usage_rejects does not hold yet.
	rejectsForCH []reject
	// sinkFailed are rows ClickHouse refused DataAttempts times and then
	// alone: they go to the dead-letter queue instead.
	sinkFailed []reject
	// unsettled is set after a failed insert into usage_events, until the
	// rows it wrote are known (Processor.settleWritten).
	unsettled bool
	// fresh are the keys this batch writes, merged into the seen sets once
	// the sinks hold it.
	fresh map[int32]map[eventKey]seenEntry
	dupes int
}

// state returns the partition's state, building it from ClickHouse on the
// first batch after assignment.
func (p *Processor) state(ctx context.Context, partition int32, firstOffset int64) (*partitionState, error) {
	p.mu.Lock()
	st := p.parts[partition]
	p.mu.Unlock()
	if st != nil {
		return st, nil
	}
	start := time.Now()
	st = &partitionState{seen: newSeenSet()}
	since := p.cfg.Now().Add(-p.cfg.LateWindow)
	if err := p.ch.loadSeen(ctx, partition, since, st.seen); err != nil {
		return nil, err
	}
	rejected, err := p.ch.rejectedOffsets(ctx, p.cfg.Topic, partition, firstOffset)
	if err != nil {
		return nil, err
	}
	st.rejected = rejected
	p.mu.Lock()
	p.parts[partition] = st
	p.mu.Unlock()
	p.cfg.Logger.InfoContext(ctx, "partition state rebuilt from clickhouse", "partition", partition,
		"events", st.seen.len(), "first_offset", firstOffset, "duration", time.Since(start))
	return st, nil
}

// classify decodes, validates and dedupes the records.
func (p *Processor) classify(ctx context.Context, records []*kgo.Record) (*batch, error) {
	b := &batch{fresh: map[int32]map[eventKey]seenEntry{}}
	now := p.cfg.Now()
	states := map[int32]*partitionState{}
	for _, r := range records {
		st, ok := states[r.Partition]
		if !ok {
			var err error
			if err = p.retry(ctx, "clickhouse", func() error {
				st, err = p.state(ctx, r.Partition, r.Offset)
				return err
			}); err != nil {
				return nil, err
			}
			states[r.Partition] = st
		}
		e, err := usage.Decode(r.Value)
		if err == nil {
			err = e.CheckTime(now, p.cfg.MaxFuture, p.cfg.LateWindow)
		}
		if err != nil {
			rej := reject{reason: usage.ReasonMalformedJSON, detail: err.Error(), topic: r.Topic, partition: r.Partition, offset: r.Offset, raw: r.Value}
			var ve *usage.Error
			if errors.As(err, &ve) {
				rej.reason, rej.detail = ve.Reason, ve.Detail
			}
			b.rejects = append(b.rejects, rej)
			if !st.rejected[r.Offset] {
				b.rejectsForCH = append(b.rejectsForCH, rej)
			}
			continue
		}
		k := keyOf(e.Source, e.ID)
		fresh := b.fresh[r.Partition]
		if fresh == nil {
			fresh = map[eventKey]seenEntry{}
			b.fresh[r.Partition] = fresh
		}
		if _, dup := fresh[k]; dup {
			b.dupes++
			continue
		}
		writtenAt, seen := st.seen.lookup(k)
		if seen && writtenAt != r.Offset {
			b.dupes++
			continue
		}
		// Not a duplicate. When ClickHouse already holds it from this very
		// offset (a crashed owner wrote it), only Redis may still need it;
		// the watermark tells.
		if !seen {
			b.rows = append(b.rows, row{event: e, partition: r.Partition, offset: r.Offset, raw: r.Value})
		}
		fresh[k] = seenEntry{offset: r.Offset, hour: uint32(e.Time.Unix() / 3600)}
		b.items = append(b.items, item{
			subject: e.Subject, keyID: e.Data.KeyID, partition: r.Partition, offset: r.Offset,
			time: e.Time, unitsMicro: e.Data.Units.Shift(6).IntPart(), apiID: e.Data.APIID, gatewayRefused: e.Data.Refusal != "",
			event: &e,
		})
	}
	return b, nil
}

// divertRefused takes the events the Redis counters refused out of the
// batch's rows and sends them to the dead-letter queue and usage_rejects
// instead, with reason counter_overflow or subject_api_mismatch.
func (p *Processor) divertRefused(b *batch, refusedItems []item) {
	if len(refusedItems) == 0 {
		return
	}
	refused := map[[2]int64]*item{}
	for i, it := range refusedItems {
		refused[[2]int64{int64(it.partition), it.offset}] = &refusedItems[i]
	}
	kept := b.rows[:0]
	for _, r := range b.rows {
		it := refused[[2]int64{int64(r.partition), r.offset}]
		if it == nil {
			kept = append(kept, r)
			continue
		}
		// Not written: a resend of the same event is not a duplicate.
		delete(b.fresh[r.partition], keyOf(r.event.Source, r.event.ID))
		rej := reject{reason: ReasonCounterOverflow, topic: p.cfg.Topic, partition: r.partition, offset: r.offset, raw: r.raw,
			detail: fmt.Sprintf("event %s of subject %s (%s units): adding its units to the subject's counters would pass %d micro-units",
				r.event.ID, r.event.Subject, r.event.Data.Units, usage.MaxCounterMicro)}
		if it.apiMismatch {
			rej.reason = ReasonSubjectAPIMismatch
			rej.detail = fmt.Sprintf("event %s: subject %s is a subscription of another API than %q",
				r.event.ID, r.event.Subject, r.event.Data.APIID)
		}
		b.rejects = append(b.rejects, rej)
		p.mu.Lock()
		st := p.parts[r.partition]
		p.mu.Unlock()
		if st == nil || !st.rejected[r.offset] {
			b.rejectsForCH = append(b.rejectsForCH, rej)
		}
	}
	b.rows = kept
}

// remember merges the keys a batch wrote into the partitions' seen sets,
// once every sink holds the batch, and now and then prunes the sets.
func (p *Processor) remember(b *batch) {
	p.mu.Lock()
	for part, keys := range b.fresh {
		if st := p.parts[part]; st != nil {
			for k, e := range keys {
				st.seen.add(k, e.offset, e.hour)
			}
		}
	}
	// Forget events older than the late-event window now and then: they are
	// refused before dedupe, so remembering them serves nothing.
	if time.Since(p.lastPrune) > 10*time.Minute {
		minHour := uint32(p.cfg.Now().Add(-p.cfg.LateWindow).Unix() / 3600)
		for _, st := range p.parts {
			st.seen.prune(minHour)
		}
		p.lastPrune = time.Now()
	}
	p.mu.Unlock()
}
