package drift

import (
	"strconv"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/schemas/usage"
)

// verdict is what comparing one subscription concluded.
type verdict int

const (
	// verdictInSync: Redis holds what ClickHouse says; nothing to do.
	verdictInSync verdict = iota
	// verdictInFlight: they disagree while ClickHouse is behind Redis, or
	// holds a fresh batch of a partition Redis has no watermark for.
	verdictInFlight
	// verdictDiffers: they disagree, and every partition has a readable
	// watermark: healed at once.
	verdictDiffers
	// verdictLost: a partition's watermark is lost or unreadable: healed
	// after the settle.
	verdictLost
)

// finding is the comparison of one subscription's Redis state with
// ClickHouse.
type finding struct {
	verdict verdict
	// target is the watermark hash a heal writes: Redis's readable
	// watermarks, plus ClickHouse's highest offset for each partition
	// Redis has none for.
	target map[int32]int64
	// want* are ClickHouse's figures up to target, got* Redis's.
	wantRequests, wantUnits int64
	gotRequests, gotUnits   int64
	// chUnits is ClickHouse's units, exact; unitsTooLarge reports that
	// they pass what a counter holds (usage.MaxCounterMicro), rows
	// written before the units cap: wantUnits is then meaningless and the
	// heal refuses (ErrUnitsPastCounter) rather than write a wrapped sum.
	chUnits       decimal.Decimal
	unitsTooLarge bool
	// behind: target adds or rewrites watermarks.
	behind bool
	// ahead: a watermark passes the highest offset ClickHouse holds of its
	// partition (ClickHouse is behind Redis).
	ahead bool
	// idle are the watermarks of partitions ClickHouse has no rows of
	// since the lookback: partition → offset. Whether they are ahead of
	// ClickHouse takes its whole history (resolveIdle).
	idle map[int32]int64
}

// assessment is a subscription, its Redis state as read and what comparing
// it found.
type assessment struct {
	sub subscription
	red enforcement.UsageState
	f   finding
}

// compare compares one subscription's Redis state, as read, with
// what ClickHouse holds of its subject (see clickhouseFigures). now judges
// whether a partition without a watermark is fresh.
func compare(red enforcement.UsageState, parts map[int32]part, now time.Time) finding {
	f := finding{target: map[int32]int64{}, idle: map[int32]int64{}}
	if len(parts) == 0 && len(red.Watermarks) == 0 && red.Requests == "" && red.UnitsMicro == "" {
		return f // never used: nothing to compare
	}
	wm, garbled := red.Readable()
	f.behind = garbled // unreadable: as if lost, and rewritten by the heal
	ahead, fresh := false, false
	for p, off := range wm {
		f.target[p] = off
		ch, ok := parts[p]
		switch {
		case !ok:
			f.idle[p] = off
		case off > ch.maxOffset:
			ahead = true
		}
	}
	for p, ch := range parts {
		f.wantRequests += ch.requests
		f.chUnits = f.chUnits.Add(ch.units)
		if _, ok := wm[p]; ok {
			continue
		}
		f.target[p] = ch.maxOffset // Redis lost this partition's watermark
		f.behind = true
		if now.Sub(ch.newest) < freshness {
			fresh = true
		}
	}
	f.ahead = ahead
	if micro := f.chUnits.Shift(6); micro.IsInteger() && !micro.IsNegative() &&
		micro.LessThanOrEqual(decimal.NewFromInt(usage.MaxCounterMicro)) {
		f.wantUnits = micro.IntPart()
	} else {
		f.unitsTooLarge = true
	}
	var err1, err2 error
	f.gotRequests, err1 = parseCounter(red.Requests)
	f.gotUnits, err2 = parseCounter(red.UnitsMicro)
	switch {
	case f.unitsTooLarge && !ahead && !fresh:
		f.verdict = verdictDiffers // reported, never written
	case err1 == nil && err2 == nil && f.gotRequests == f.wantRequests && f.gotUnits == f.wantUnits && !f.behind:
		// Also when ahead: Redis applied rows ClickHouse does not hold
		// (yet), and the figures agree all the same.
		f.verdict = verdictInSync
	case ahead, fresh:
		f.verdict = verdictInFlight
	case f.behind:
		f.verdict = verdictLost
	default:
		f.verdict = verdictDiffers
	}
	return f
}

// parseCounter reads a counter field; absent is zero.
func parseCounter(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	return strconv.ParseInt(v, 10, 64)
}
