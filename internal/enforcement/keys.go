package enforcement

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The Redis names of enforcement, all in this file (the layout is in the
// package comment). Every name of one subscription carries its id as a
// Redis Cluster hash tag, so that one script touches one slot.

const (
	keyPrefix    = "veil:key:"
	outboxPrefix = "veil:quota:outbox:{"
)

// KeyName is the Redis key of the key record with that hash.
func KeyName(hash string) string { return keyPrefix + hash }

// SubscriptionName is the Redis key of the subscription record with that
// id. It is the same key the processors read periods from.
func SubscriptionName(id string) string { return "veil:sub:{" + id + "}" }

// BlockName is the Redis key of a subscription's quota block.
func BlockName(id string) string { return "veil:block:{" + id + "}" }

// PeriodCounterName is the Redis hash of a subscription's request counter
// for the period starting at start (kept by the processors): requests,
// units_micro, period_end, crossed_<pct>.
func PeriodCounterName(id string, start time.Time) string {
	return "veil:usage:{" + id + "}:p:" + strconv.FormatInt(start.Unix(), 10)
}

// MeterSetName is the Redis set of the key ids a unique_count meter has
// seen in the period counter named counter (a PeriodCounterName): the
// meter's value is its SCARD. The scripts that count and read the meters
// build the same name in Lua, counter .. meterSetInfix .. slug, so it
// shares the counter's hash tag and slot.
func MeterSetName(counter, slug string) string { return counter + meterSetInfix + slug }

// meterSetInfix joins a period counter's name and a meter's slug into the
// name of the meter's set (MeterSetName), in Go and in the scripts.
const meterSetInfix = ":u:"

// KeyDayCounterName is the Redis hash of one key's counter for the UTC day
// of day (kept by the processors): requests, units_micro.
func KeyDayCounterName(id, keyID string, day time.Time) string {
	return "veil:usage:{" + id + "}:k:" + keyID + ":" + day.UTC().Format("20060102")
}

// WatermarkName is the Redis hash of a subscription's per-partition Kafka
// offset watermarks (kept by the processors).
func WatermarkName(id string) string { return "veil:wm:{" + id + "}" }

// RefusalName is the Redis hash of the events a subscription's counters
// refused (field <partition>:<offset>); see [Refusal].
func RefusalName(id string) string { return "veil:overflow:{" + id + "}" }

// CompensationName is the marker that makes taking one event back out of
// its counters happen once (see [Compensate]).
func CompensationName(id, topic string, partition int32, offset int64) string {
	return fmt.Sprintf("veil:comp:{%s}:%s:%d:%d", id, topic, partition, offset)
}

// RateLimitPrefix starts the Redis keys of a subscription's rate limits
// (internal/ratelimit's GCRA state): the gateway appends
// k:<key id>:s, k:<key id>:m (a key's own limits), s:s and s:m (the
// subscription's), so one script decides them together.
func RateLimitPrefix(id string) string { return "veil:rl:{" + id + "}:" }

// QuotaOutboxName is the Redis list of a subscription's quota threshold
// crossings waiting to be produced to veil.quota.events.
func QuotaOutboxName(id string) string { return outboxPrefix + id + "}" }

// QuotaOutboxPattern matches every QuotaOutboxName, for a SCAN.
const QuotaOutboxPattern = "veil:quota:outbox:{*}"

// outboxSubject is the subscription id of a QuotaOutboxName.
func outboxSubject(name string) (string, bool) {
	s, ok := strings.CutPrefix(name, outboxPrefix)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(s, "}")
}
