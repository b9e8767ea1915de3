package enforcement

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Crossing is a subscription's period counter crossing a share of its
// request quota, or of one meter's quota (a threshold): written by the scripts that count or change
// a quota into the subscription's outbox, atomically with the change that
// crossed it, produced from there to veil.quota.events (the JSON of
// Crossing, keyed by subscription), and consumed by the control plane,
// which turns each into notices once.
//
// An outbox line is a compact form the Lua scripts can build:
//
//	v1|<period_start>|<period_end>|<threshold>|<quota>|<used>|<hard>[|<meter>]
//
// with Unix seconds for the period bounds, threshold one of Thresholds, the
// quota in force when it was crossed, the counter right after, hard "1" or
// "0", and, for a meter's quota, the meter's slug (quota and used are then
// integers at the meter's scale); a line without a meter is the request
// quota's.
type Crossing struct {
	SubscriptionID string    `json:"subscription_id"`
	PeriodStart    time.Time `json:"period_start"`
	PeriodEnd      time.Time `json:"period_end"`
	// Threshold is one of Thresholds.
	Threshold int `json:"threshold"`
	// Quota is the period's request quota when it was crossed (a credit
	// raises it, and the thresholds of the new quota are crossed anew).
	Quota int64 `json:"quota"`
	// Used is the period counter right after the batch that crossed it.
	Used int64 `json:"used"`
	// Hard reports whether the quota blocks at 100% (a meter's hard quota
	// blocks the whole subscription too).
	Hard bool `json:"hard"`
	// Meter is the slug of the meter whose quota was crossed; "" for the
	// request quota. Quota and Used are then the meter's, integers at its
	// scale (micro-units for a meter of units).
	Meter string `json:"meter,omitempty"`
	// At is when the crossing was produced.
	At time.Time `json:"at"`
}

// ID identifies the crossing: one notice per subscription, period,
// threshold, quota and meter.
func (e Crossing) ID() string {
	id := fmt.Sprintf("%s:%d:%d:%d", e.SubscriptionID, e.PeriodStart.Unix(), e.Threshold, e.Quota)
	if e.Meter != "" {
		id += ":" + e.Meter
	}
	return id
}

// Blocked reports whether the crossing blocked the subscription.
func (e Crossing) Blocked() bool { return e.Hard && e.Threshold == 100 }

// ErrInvalidCrossing wraps every decoding and validation failure of a
// crossing.
var ErrInvalidCrossing = errors.New("invalid quota event")

// Validate reports whether e is well formed.
func (e Crossing) Validate() error {
	switch {
	case e.SubscriptionID == "":
		return fmt.Errorf("%w: no subscription_id", ErrInvalidCrossing)
	case !validThreshold(e.Threshold):
		return fmt.Errorf("%w: threshold %d is not one of %s", ErrInvalidCrossing, e.Threshold, thresholdList())
	case e.Quota <= 0:
		return fmt.Errorf("%w: quota %d is not positive", ErrInvalidCrossing, e.Quota)
	case e.Used < 0:
		return fmt.Errorf("%w: used %d is negative", ErrInvalidCrossing, e.Used)
	case e.PeriodStart.IsZero() || !e.PeriodEnd.After(e.PeriodStart):
		return fmt.Errorf("%w: period [%s, %s) is empty", ErrInvalidCrossing, e.PeriodStart, e.PeriodEnd)
	case e.Meter != "" && !MeterSlugRe.MatchString(e.Meter):
		return fmt.Errorf("%w: meter %q is not a meter slug", ErrInvalidCrossing, e.Meter)
	}
	return nil
}

func validThreshold(t int) bool { return slices.Contains(Thresholds, t) }

// Marshal returns the Kafka record value of e.
func (e Crossing) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(e)
}

// UnmarshalCrossing decodes and validates a Kafka record value.
func UnmarshalCrossing(b []byte) (Crossing, error) {
	var e Crossing
	if err := json.Unmarshal(b, &e); err != nil {
		return Crossing{}, fmt.Errorf("%w: %w", ErrInvalidCrossing, err)
	}
	e.PeriodStart, e.PeriodEnd, e.At = e.PeriodStart.UTC(), e.PeriodEnd.UTC(), e.At.UTC()
	return e, e.Validate()
}

// outboxVersion starts every outbox line.
const outboxVersion = "v1"

// OutboxLine is the outbox line of e (see [Crossing]).
func OutboxLine(e Crossing) string {
	hard := "0"
	if e.Hard {
		hard = "1"
	}
	line := fmt.Sprintf("%s|%d|%d|%d|%d|%d|%s", outboxVersion, e.PeriodStart.Unix(), e.PeriodEnd.Unix(), e.Threshold, e.Quota, e.Used, hard)
	if e.Meter != "" {
		line += "|" + e.Meter
	}
	return line
}

// ParseOutboxLine reads an outbox line of the subscription's outbox.
func ParseOutboxLine(subscriptionID, entry string) (Crossing, error) {
	f := strings.Split(entry, "|")
	if len(f) != 7 && len(f) != 8 || f[0] != outboxVersion || (f[6] != "0" && f[6] != "1") {
		return Crossing{}, fmt.Errorf("%w: outbox entry %q", ErrInvalidCrossing, entry)
	}
	var n [5]int64
	for i := range n {
		v, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return Crossing{}, fmt.Errorf("%w: outbox entry %q", ErrInvalidCrossing, entry)
		}
		n[i] = v
	}
	e := Crossing{
		SubscriptionID: subscriptionID,
		PeriodStart:    time.Unix(n[0], 0).UTC(), PeriodEnd: time.Unix(n[1], 0).UTC(),
		Threshold: int(n[2]), Quota: n[3], Used: n[4], Hard: f[6] == "1",
	}
	if len(f) == 8 {
		if f[7] == "" {
			return Crossing{}, fmt.Errorf("%w: outbox entry %q", ErrInvalidCrossing, entry)
		}
		e.Meter = f[7]
	}
	return e, e.Validate()
}
