package processors

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/enforcement"
)

const (
	// outboxReadLines bounds the lines read from one outbox per drain; the
	// rest wait for the next one. An outbox holds at most three lines per
	// quota and period, so the bound matters only after a long outage.
	outboxReadLines = 1000
	// outboxScanCount is the COUNT hint of the sweep's SCAN.
	outboxScanCount = 1000
	// quotaProduceTimeout bounds how long a drain waits for the broker, so
	// an unreachable quota topic delays a batch by at most that much; the
	// lines stay in Redis for the sweep.
	quotaProduceTimeout = 10 * time.Second
)

// outboxLine is one line read from a subject's outbox.
type outboxLine struct {
	subject, line string
	threshold     int
}

// drainQuotaOutboxes produces the lines waiting in the subjects' quota
// outboxes to Config.QuotaTopic, keyed by subject, and removes each line
// once the broker acknowledged it. Lines are removed by value (LREM), never
// by position: another drainer running at once, or a writer pushing more,
// must not lose a line that was not produced. A line read by two drainers is
// produced twice, which the consumer's dedupe by Crossing.ID absorbs.
//
// A malformed line is logged, counted and removed: no later attempt can
// produce it. A line the broker refused is counted and stays. It returns how
// many lines it produced; the error reports Redis failures only.
func (p *Processor) drainQuotaOutboxes(ctx context.Context, cl *kgo.Client, subjects []string) (int, error) {
	subjects = slices.Compact(slices.Sorted(slices.Values(subjects)))
	if len(subjects) == 0 {
		return 0, nil
	}
	read, readErrs := enforcement.ReadOutboxes(ctx, p.cfg.Redis, subjects, outboxReadLines)
	var (
		lines   = map[*kgo.Record]outboxLine{}
		records []*kgo.Record
		done    []enforcement.OutboxEntry
		errs    []error
	)
	now := p.cfg.Now().UTC()
	for i, got := range read {
		if readErrs[i] != nil {
			errs = append(errs, readErrs[i])
			continue
		}
		for _, line := range got {
			l := outboxLine{subject: subjects[i], line: line}
			e, err := enforcement.ParseOutboxLine(l.subject, line)
			var value []byte
			if err == nil {
				e.At = now
				l.threshold = e.Threshold
				value, err = e.Marshal()
			}
			if err != nil {
				p.cfg.Logger.ErrorContext(ctx, "malformed quota outbox line; dropping it",
					"subscription_id", l.subject, "line", line, "err", err)
				p.m.quotaOutboxErrors.Inc()
				done = append(done, enforcement.OutboxEntry{Subject: l.subject, Line: l.line})
				continue
			}
			rec := &kgo.Record{Topic: p.cfg.QuotaTopic, Key: []byte(l.subject), Value: value}
			lines[rec] = l
			records = append(records, rec)
		}
	}
	produced := 0
	if len(records) > 0 {
		pctx, cancel := context.WithTimeout(ctx, quotaProduceTimeout)
		results := cl.ProduceSync(pctx, records...)
		cancel()
		var (
			failed   int
			firstErr error
		)
		for _, res := range results {
			if res.Err != nil {
				failed++
				if firstErr == nil {
					firstErr = res.Err
				}
				continue
			}
			l := lines[res.Record]
			done = append(done, enforcement.OutboxEntry{Subject: l.subject, Line: l.line})
			produced++
			p.m.quotaProduced.Inc()
			p.m.quotaCrossing(l.threshold).Inc()
		}
		if failed > 0 {
			p.m.quotaOutboxErrors.Add(failed)
			if ctx.Err() == nil {
				p.cfg.Logger.WarnContext(ctx, "produce quota events; they stay in the outbox for the sweep",
					"topic", p.cfg.QuotaTopic, "failed", failed, "err", firstErr)
			}
		}
	}
	errs = append(errs, enforcement.RemoveOutboxEntries(ctx, p.cfg.Redis, done)...)
	if len(errs) > 0 {
		p.m.quotaOutboxErrors.Add(len(errs))
	}
	return produced, errors.Join(errs...)
}

// sweepQuotaOutboxes drains every quota outbox at once and then every
// QuotaSweepInterval until ctx ends. It is what produces the lines of a
// processor that crashed between its script and its produce, the lines a
// failed produce left, and the lines other writers push (the control
// plane's drift heal).
func (p *Processor) sweepQuotaOutboxes(ctx context.Context, cl *kgo.Client) {
	tick := time.NewTicker(p.cfg.QuotaSweepInterval)
	defer tick.Stop()
	for {
		n, err := p.sweepOnce(ctx, cl)
		p.m.quotaSweepProduced.Add(n)
		if err != nil && ctx.Err() == nil {
			p.cfg.Logger.WarnContext(ctx, "sweep quota outboxes", "produced", n, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sweepOnce scans for quota outboxes and drains the ones found, a SCAN page
// at a time. It returns how many lines it produced.
func (p *Processor) sweepOnce(ctx context.Context, cl *kgo.Client) (int, error) {
	produced := 0
	var errs []error
	err := enforcement.ScanOutboxes(ctx, p.cfg.Redis, outboxScanCount, func(subjects []string) {
		n, err := p.drainQuotaOutboxes(ctx, cl, subjects)
		produced += n
		if err != nil {
			errs = append(errs, err)
		}
	})
	if err != nil {
		errs = append(errs, err)
	}
	return produced, errors.Join(errs...)
}
