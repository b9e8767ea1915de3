package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/schemas/usage"
)

// The Redis sink: it groups a batch's events per subject and partition and
// counts them through internal/enforcement, which owns the Redis layout,
// the counting scripts, the quota rule and the period arithmetic.

// errOverflow is how a batch whose own sum does not fit reaches the caller.
var errOverflow = errors.New("counter would overflow")

// recordTTL bounds how long a cached copy of a subscription record's
// periods lives without word from Redis.
const recordTTL = time.Minute

// item is what the Redis sink needs of one unique, valid event.
type item struct {
	subject    string
	keyID      string
	partition  int32
	offset     int64
	time       time.Time
	unitsMicro int64
	// apiID is the event's data.api_id, held against the subscription
	// record's api_id.
	apiID string
	// apiMismatch marks an event whose api_id is not its subscription's:
	// apply sets it, the event advances the watermark but counts nowhere,
	// and the caller dead-letters it (ReasonSubjectAPIMismatch). The
	// decision is stored with the watermark and a replay reads it back.
	apiMismatch bool
	// gatewayRefused marks a request the gateway refused itself: it
	// advances the watermark but counts nowhere, since quotas are enforced
	// from these counters and a refusal is never billed.
	gatewayRefused bool
	// event is the decoded event, which the meters of the subscription
	// record classify; nil adds to no meter.
	event *usage.Event
	// countedMeters is the meters field of the subscription record that
	// apply counted the event with ("" for none), nil when this process
	// has not applied it. compensate refunds what those meters added: a
	// plan change may have replaced the record's meters meanwhile.
	countedMeters *string
}

// redisSink keeps the per-subject counters exactly once.
type redisSink struct {
	client rueidis.Client
	// watermarks caches, per partition, the watermark of each subject seen;
	// the script's compare-and-set makes a stale entry harmless.
	watermarks map[int32]map[string]int64
	// meters decodes the records' meters fields.
	meters meterCache
	// store rates hard budgets (enforceBudgets); log reports the budgets
	// it cannot rate (nil: none reported).
	store *enforcement.Store
	log   *slog.Logger
}

func newRedisSink(client rueidis.Client) *redisSink {
	return &redisSink{client: client, watermarks: map[int32]map[string]int64{}, meters: meterCache{}, store: enforcement.New(client)}
}

// forget drops the cached state of partitions this processor no longer owns.
func (s *redisSink) forget(partitions []int32) {
	for _, p := range partitions {
		delete(s.watermarks, p)
	}
}

type subjectPartition struct {
	subject   string
	partition int32
}

// apply adds the items to the counters. Items of one subject and partition
// must be in offset order. It returns after every group is applied or on the
// first error; calling it again with the same items is safe. outboxed names
// the subjects whose quota outbox got lines, for the caller to drain (even
// when err is not nil: the groups applied before the error count).
//
// refused are the items the counters refused: because an addition would
// pass usage.MaxCounterMicro, or, marked apiMismatch, because the
// subscription record names another API than the event (a producer allowed
// to write for one API may not spend another API's subscription); the caller
// dead-letters them. An event of a subject without a record is not checked:
// a canceled subscription's late events still count. A group whose
// sum does not fit is applied again one event at a time, so only the events
// that do not fit are refused and every other one counts. An item at or
// below its watermark was settled by an earlier call (a replay after a
// crash, or another processor): its decision is read back from the refusal
// hash, where both kinds of refusal are stored with the watermark, never
// made again, so every call reports the same ones whatever became of the
// record since; an item settled without a stored refusal was counted.
func (s *redisSink) apply(ctx context.Context, items []item) (outboxed []string, overflowed []item, err error) {
	groups := map[subjectPartition][]item{}
	var order []subjectPartition
	for _, it := range items {
		k := subjectPartition{it.subject, it.partition}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], it)
	}
	if err := s.loadWatermarks(ctx, order); err != nil {
		return nil, nil, err
	}
	periods, err := s.periods(ctx, order)
	if err != nil {
		return nil, nil, err
	}
	// Every count of this call reads its meters from periods: noted on the
	// caller's items for a later compensation (an item at or below its
	// watermark was counted earlier, with meters this notes only if the
	// record has not changed since).
	for i := range items {
		var counted string
		if rec := periods[items[i].subject]; rec != nil {
			counted = rec.Meters
		}
		items[i].countedMeters = &counted
	}
	// Only the items after the watermark are decided from the record here
	// (counterArgs skips the others); the counting script stores the
	// decision.
	for _, k := range order {
		rec := periods[k.subject]
		g := groups[k]
		for i := range g {
			g[i].apiMismatch = rec != nil && rec.APIID != "" && g[i].apiID != rec.APIID
		}
	}
	// decided holds, per group, the watermark below which its items were
	// settled before this call: counted or refused, the refusal hash tells.
	decided := map[subjectPartition]int64{}
	outboxed, poisoned, err := s.countGroups(ctx, order, groups, periods, decided)
	if err != nil {
		return outboxed, nil, err
	}
	for _, k := range poisoned {
		refused, pushed, err := s.applyEach(ctx, k, groups[k], periods[k.subject])
		if pushed && !slices.Contains(outboxed, k.subject) {
			outboxed = append(outboxed, k.subject)
		}
		if err != nil {
			return outboxed, nil, err
		}
		overflowed = append(overflowed, refused...)
	}
	if err := s.enforceBudgets(ctx, order, periods); err != nil {
		return outboxed, nil, err
	}
	// Every item after its group's decided watermark was applied by this
	// call (or the call failed above), its mismatch stored with it.
	var mismatched []item
	for _, k := range order {
		for _, it := range groups[k] {
			if it.apiMismatch && it.offset > decided[k] {
				mismatched = append(mismatched, it)
			}
		}
	}
	earlier, err := s.refusedEarlier(ctx, groups, decided)
	if err != nil {
		return outboxed, nil, err
	}
	return outboxed, append(append(overflowed, earlier...), mismatched...), nil
}

// countGroups counts every group in one round trip per attempt, again for
// the groups whose watermark moved meanwhile, up to five attempts. It
// records in decided the watermark each group was last computed against,
// and returns the subjects whose outbox got lines and the groups whose sum
// does not fit (poisoned), to be applied one event at a time.
func (s *redisSink) countGroups(ctx context.Context, order []subjectPartition, groups map[subjectPartition][]item,
	periods map[string]*enforcement.RecordedPeriod, decided map[subjectPartition]int64) (outboxed []string, poisoned []subjectPartition, err error) {
	pending := order
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt == 5 {
			return outboxed, nil, fmt.Errorf("redis counters: watermarks of %d subjects keep moving", len(pending))
		}
		var (
			counts []enforcement.Count
			sent   []subjectPartition
		)
		for _, k := range pending {
			wm := s.watermarks[k.partition][k.subject]
			decided[k] = wm
			rec := periods[k.subject]
			c, _, serr := counterArgs(k, groups[k], wm, rec, s.meters.meters(rec))
			switch {
			case errors.Is(serr, errOverflow):
				poisoned = append(poisoned, k) // the batch's own sum does not fit
				continue
			case c == nil:
				continue // everything already applied
			}
			counts = append(counts, *c)
			sent = append(sent, k)
		}
		if len(sent) == 0 {
			break
		}
		pending = pending[:0]
		for i, r := range enforcement.ApplyCounts(ctx, s.client, counts...) {
			k := sent[i]
			switch {
			case r.Err != nil:
				return outboxed, nil, fmt.Errorf("redis counters for %s: %w", k.subject, r.Err)
			case r.Overflow:
				poisoned = append(poisoned, k)
			case r.Applied:
				s.setWatermark(k, counts[i].Through)
				if r.Pushed > 0 && !slices.Contains(outboxed, k.subject) {
					outboxed = append(outboxed, k.subject)
				}
			default:
				s.setWatermark(k, r.Watermark)
				pending = append(pending, k)
			}
		}
	}
	return outboxed, poisoned, nil
}

// applyEach applies a group's items one at a time, after its sum was
// refused: an item that does not fit is skipped (enforcement.SkipEvent)
// and returned, every other one counts. A moved watermark is an error: the
// caller's retry starts again from the new one.
func (s *redisSink) applyEach(ctx context.Context, k subjectPartition, items []item, sub *enforcement.RecordedPeriod) (refused []item, pushed bool, err error) {
	for _, it := range items {
		wm := s.watermarks[k.partition][k.subject]
		if it.offset <= wm {
			continue
		}
		c, last, serr := counterArgs(k, []item{it}, wm, sub, s.meters.meters(sub))
		// One event never passes the cap, but a counter near it may not
		// take even one.
		r := enforcement.CountResult{Overflow: true}
		if serr == nil {
			r = enforcement.ApplyCounts(ctx, s.client, *c)[0]
			if r.Err != nil {
				return refused, pushed, fmt.Errorf("redis counters for %s: %w", k.subject, r.Err)
			}
		}
		if r.Overflow {
			r = enforcement.SkipEvent(ctx, s.client, k.subject, k.partition, wm, it.offset)
			if r.Err != nil {
				return refused, pushed, r.Err
			}
			if r.Applied {
				s.setWatermark(k, it.offset)
				refused = append(refused, it)
				continue
			}
		}
		if !r.Applied {
			s.setWatermark(k, r.Watermark)
			return refused, pushed, fmt.Errorf("redis counters for %s: watermark moved to %d", k.subject, r.Watermark)
		}
		s.setWatermark(k, last)
		pushed = pushed || r.Pushed > 0
	}
	return refused, pushed, nil
}

// refusedEarlier returns the items at or below their group's decided
// watermark that the refusal hash names: refused by an earlier call, with
// apiMismatch as stored, not as the record reads now. Outside replays no
// item is at or below it, and no round trip is made.
func (s *redisSink) refusedEarlier(ctx context.Context, groups map[subjectPartition][]item, decided map[subjectPartition]int64) ([]item, error) {
	var (
		queries []enforcement.RefusalQuery
		asked   [][]item
	)
	for k, wm := range decided {
		var old []item
		q := enforcement.RefusalQuery{Subject: k.subject, Partition: k.partition}
		for _, it := range groups[k] {
			if it.offset <= wm {
				old = append(old, it)
				q.Offsets = append(q.Offsets, it.offset)
			}
		}
		if len(old) > 0 {
			queries = append(queries, q)
			asked = append(asked, old)
		}
	}
	answers, err := enforcement.Refusals(ctx, s.client, queries)
	if err != nil {
		return nil, err
	}
	var out []item
	for i, refusals := range answers {
		for j, r := range refusals {
			if r == enforcement.NotRefused {
				continue
			}
			it := asked[i][j]
			it.apiMismatch = r == enforcement.RefusedMismatch
			out = append(out, it)
		}
	}
	return out, nil
}

func (s *redisSink) setWatermark(k subjectPartition, wm int64) {
	m := s.watermarks[k.partition]
	if m == nil {
		m = map[string]int64{}
		s.watermarks[k.partition] = m
	}
	m[k.subject] = wm
}

// counterArgs builds the count of the items after watermark wm, or nil
// when there are none. Items the gateway refused, and items whose API is
// not their subscription's, only move the watermark (the latter are also
// named, for the script to store the refusal): a count may carry no
// counter at all. last is the watermark the count moves to. Each period
// counter carries what its items add to meters, the record's meters.
//
// The sums are checked (usage.CheckedAdd): errOverflow when one of them
// would pass usage.MaxCounterMicro, before anything is sent.
func counterArgs(k subjectPartition, items []item, wm int64, sub *enforcement.RecordedPeriod, meters []metering.Meter) (c *enforcement.Count, last int64, err error) {
	count := enforcement.Count{Subject: k.subject, Partition: k.partition, Watermark: wm}
	byName := map[string]int{}
	overflow := false
	var ma *meterAdder
	if len(meters) > 0 {
		ma = &meterAdder{meters: meters, at: map[meterOf]int{}, seen: map[meterOf]map[string]bool{}}
	}
	add := func(name string, it item, ttl time.Duration, p *enforcement.Period) {
		i, ok := byName[name]
		if !ok {
			i = len(count.Increments)
			byName[name] = i
			count.Increments = append(count.Increments, enforcement.Increment{Name: name, TTL: ttl, Period: p})
		}
		in := &count.Increments[i]
		in.Requests++
		units, err := usage.CheckedAdd(in.UnitsMicro, it.unitsMicro)
		if err != nil {
			overflow = true
		}
		in.UnitsMicro = units
		if p != nil && ma != nil {
			ma.add(in, i, it.event)
		}
	}
	last = wm
	for _, it := range items {
		if it.offset <= wm {
			continue
		}
		last = it.offset
		if it.apiMismatch {
			count.Mismatched = append(count.Mismatched, it.offset)
			continue
		}
		if it.gatewayRefused {
			continue
		}
		p := enforcement.PeriodAt(sub, it.time)
		add(enforcement.PeriodCounterName(k.subject, p.Start), it, enforcement.PeriodCounterTTL, &p)
		if it.keyID != "" {
			add(enforcement.KeyDayCounterName(k.subject, it.keyID, it.time), it, enforcement.KeyDayCounterTTL, nil)
		}
	}
	if overflow || ma != nil && ma.overflow {
		return nil, wm, errOverflow
	}
	if last == wm {
		return nil, wm, nil
	}
	count.Through = last
	return &count, last, nil
}

// compensate removes items that apply counted but ClickHouse refused for
// good. Items the gateway refused were never counted and are skipped. The
// meters refunded are those the item was counted with (countedMeters);
// only for an item this process did not apply (a restart between the
// count and ClickHouse's refusal) are they the record's current ones,
// which differ only after a plan change in between; the drift check then
// heals the count and sum meters from ClickHouse.
func (s *redisSink) compensate(ctx context.Context, items []item, topic string) error {
	items = slices.DeleteFunc(slices.Clone(items), func(it item) bool { return it.gatewayRefused })
	if len(items) == 0 {
		return nil
	}
	subs := make([]subjectPartition, 0, len(items))
	for _, it := range items {
		subs = append(subs, subjectPartition{subject: it.subject, partition: it.partition})
	}
	periods, err := s.periods(ctx, subs)
	if err != nil {
		return err
	}
	cs := make([]enforcement.Compensation, 0, len(items))
	for _, it := range items {
		rec := periods[it.subject]
		p := enforcement.PeriodAt(rec, it.time)
		c := enforcement.Compensation{Subject: it.subject, Topic: topic, Partition: it.partition, Offset: it.offset,
			Counters: []string{enforcement.PeriodCounterName(it.subject, p.Start)}, UnitsMicro: it.unitsMicro}
		if it.event != nil {
			counted := rec
			if it.countedMeters != nil {
				counted = &enforcement.RecordedPeriod{Meters: *it.countedMeters}
			}
			c.Meters = meterRefunds(s.meters.meters(counted), it.event)
		}
		if it.keyID != "" {
			c.Counters = append(c.Counters, enforcement.KeyDayCounterName(it.subject, it.keyID, it.time))
		}
		cs = append(cs, c)
	}
	return enforcement.Compensate(ctx, s.client, cs...)
}

// loadWatermarks fetches, in one round trip, the watermarks of the subjects
// this process has not seen on their partition yet.
func (s *redisSink) loadWatermarks(ctx context.Context, order []subjectPartition) error {
	var missing []subjectPartition
	var of []enforcement.WatermarkOf
	for _, k := range order {
		if _, ok := s.watermarks[k.partition][k.subject]; ok {
			continue
		}
		missing = append(missing, k)
		of = append(of, enforcement.WatermarkOf{Subject: k.subject, Partition: k.partition})
	}
	wms, err := enforcement.Watermarks(ctx, s.client, of)
	if err != nil {
		return err
	}
	for i, wm := range wms {
		s.setWatermark(missing[i], wm)
	}
	return nil
}

// periods reads the subscription records' period bounds and api_id through
// the client-side cache (enforcement.RecordedPeriods). The quota is read
// by the counting script itself, never from this cache.
func (s *redisSink) periods(ctx context.Context, order []subjectPartition) (map[string]*enforcement.RecordedPeriod, error) {
	ids := make([]string, len(order))
	for i, k := range order {
		ids[i] = k.subject
	}
	return enforcement.RecordedPeriods(ctx, s.client, ids, recordTTL)
}
