package processors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/veil-platform/veil/schemas/usage"
)

// row is one unique event bound for usage_events.
type row struct {
	event     usage.Event
	partition int32
	offset    int64
	raw       []byte // the record as consumed, for the dead-letter queue
}

// reject is one refused record bound for usage_rejects and the DLQ.
type reject struct {
	reason    usage.Reason
	detail    string
	topic     string
	partition int32
	offset    int64
	raw       []byte
}

// chSink writes usage_events and usage_rejects, and reads back what they
// hold so that a processor taking over a partition knows what is written.
type chSink struct {
	conn driver.Conn
}

// Both inserts name their columns: the form ClickHouse 18.16 takes from
// clickhouse-go.
const (
	insertEvents = `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
status, latency_ms, request_bytes, response_bytes, units, refusal, ingested_at, kafka_partition, kafka_offset)`
	insertRejects  = `INSERT INTO usage_rejects (received_at, reason, detail, source_topic, source_partition, source_offset, raw)`
	insertSuspects = `INSERT INTO usage_billing_suspect (subject, hour, recorded_at)`
)

func (s *chSink) insertEvents(ctx context.Context, rows []row, now time.Time) error {
	if len(rows) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, insertEvents)
	if err != nil {
		return fmt.Errorf("prepare usage_events insert: %w", err)
	}
	now = now.UTC().Truncate(time.Second)
	for _, r := range rows {
		e, d := r.event, r.event.Data
		if err := batch.Append(e.ID, e.Source, e.Type, e.Subject, e.Time, d.APIID, d.KeyID, d.Method, d.Route, d.Path,
			d.Status, d.LatencyMS, d.RequestBytes, d.ResponseBytes, d.Units, d.Refusal, now, r.partition, r.offset); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append to usage_events batch: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into usage_events: %w", len(rows), err)
	}
	return nil
}

// insertSuspects records the (subject, UTC hour) of rows that a failed
// insert wrote to usage_events, once each, in usage_billing_suspect.
func (s *chSink) insertSuspects(ctx context.Context, rows []row, now time.Time) error {
	if len(rows) == 0 {
		return nil
	}
	type hourOf struct {
		subject string
		hour    int64
	}
	seen := map[hourOf]bool{}
	batch, err := s.conn.PrepareBatch(ctx, insertSuspects)
	if err != nil {
		return fmt.Errorf("prepare usage_billing_suspect insert: %w", err)
	}
	now = now.UTC().Truncate(time.Second)
	for _, r := range rows {
		// usage_events stores whole seconds: the hour of the stored time.
		k := hourOf{r.event.Subject, r.event.Time.Unix() / 3600 * 3600}
		if seen[k] {
			continue
		}
		seen[k] = true
		if err := batch.Append(k.subject, time.Unix(k.hour, 0).UTC(), now); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append to usage_billing_suspect batch: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into usage_billing_suspect: %w", len(seen), err)
	}
	return nil
}

func (s *chSink) insertRejects(ctx context.Context, rejects []reject, now time.Time) error {
	if len(rejects) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, insertRejects)
	if err != nil {
		return fmt.Errorf("prepare usage_rejects insert: %w", err)
	}
	now = now.UTC().Truncate(time.Second)
	for _, r := range rejects {
		if err := batch.Append(now, string(r.reason), r.detail, r.topic, r.partition, r.offset, string(r.raw)); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append to usage_rejects batch: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into usage_rejects: %w", len(rejects), err)
	}
	return nil
}

// loadSeen adds to seen every event of the partition whose time is after
// since, with the offset it was written from.
func (s *chSink) loadSeen(ctx context.Context, partition int32, since time.Time, seen *seenSet) error {
	rows, err := s.conn.Query(ctx,
		"SELECT source, id, toUInt32(time), kafka_offset FROM usage_events WHERE kafka_partition = ? AND time >= ?",
		partition, since.UTC().Truncate(time.Second))
	if err != nil {
		return fmt.Errorf("read written events of partition %d: %w", partition, err)
	}
	defer rows.Close()
	var (
		source, id string
		at         uint32
		offset     int64
	)
	for rows.Next() {
		if err := rows.Scan(&source, &id, &at, &offset); err != nil {
			return fmt.Errorf("scan written event: %w", err)
		}
		seen.add(keyOf(source, id), offset, at/3600)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read written events of partition %d: %w", partition, err)
	}
	return nil
}

// rejectedOffsets returns the offsets at or after from that usage_rejects
// already holds for the partition.
func (s *chSink) rejectedOffsets(ctx context.Context, topic string, partition int32, from int64) (map[int64]bool, error) {
	return s.offsets(ctx, "rejected", partition,
		"SELECT source_offset FROM usage_rejects WHERE source_topic = ? AND source_partition = ? AND source_offset >= ?",
		topic, partition, from)
}

// writtenOffsets returns the offsets at or after from that usage_events
// already holds for the partition; used after a failed insert, which may
// have written some of its rows.
func (s *chSink) writtenOffsets(ctx context.Context, partition int32, from int64) (map[int64]bool, error) {
	return s.offsets(ctx, "written", partition,
		"SELECT kafka_offset FROM usage_events WHERE kafka_partition = ? AND kafka_offset >= ?", partition, from)
}

// offsets runs query, which selects one column of offsets of partition,
// and returns them as a set; what ("rejected", "written") names them in
// errors.
func (s *chSink) offsets(ctx context.Context, what string, partition int32, query string, args ...any) (map[int64]bool, error) {
	rows, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s offsets of partition %d: %w", what, partition, err)
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var o int64
		if err := rows.Scan(&o); err != nil {
			return nil, fmt.Errorf("scan %s offset: %w", what, err)
		}
		out[o] = true
	}
	return out, rows.Err()
}

// isDataError reports whether ClickHouse refused the data itself (a server
// exception), as opposed to being unreachable: only data errors count
// towards sending a record to the dead-letter queue.
func isDataError(err error) bool {
	var exc *clickhouse.Exception
	return errors.As(err, &exc)
}
