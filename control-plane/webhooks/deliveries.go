package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/internal/pagination"
)

// DeliveryStatus is where a delivery stands.
type DeliveryStatus string

// Delivery statuses.
const (
	// StatusPending: a job will (re)try it.
	StatusPending DeliveryStatus = "pending"
	// StatusSucceeded: an endpoint answered 2xx.
	StatusSucceeded DeliveryStatus = "succeeded"
	// StatusFailed: the attempts ran out, or the endpoint was disabled.
	StatusFailed DeliveryStatus = "failed"
)

// Delivery is one event on its way to one endpoint.
type Delivery struct {
	ID         uuid.UUID `json:"id"`
	EndpointID uuid.UUID `json:"endpoint_id"`
	// MessageID is the webhook-id header: the same for every endpoint an
	// event goes to and for every attempt, so receivers can deduplicate.
	MessageID string `json:"message_id"`
	EventType string `json:"event_type"`
	// Payload is the body sent: {"type", "timestamp", "data"}.
	Payload        json.RawMessage `json:"payload"`
	Status         DeliveryStatus  `json:"status"`
	Attempts       int             `json:"attempts"`
	LastStatusCode *int            `json:"last_status_code"`
	LastError      string          `json:"last_error"`
	CreatedAt      time.Time       `json:"created_at"`
	DeliveredAt    *time.Time      `json:"delivered_at"`
	// History holds the attempts, oldest first; only GetDelivery fills it.
	History []Attempt `json:"history,omitempty"`
}

// Attempt is one HTTP request of a delivery.
type Attempt struct {
	ID int64 `json:"id"`
	// StatusCode is nil when no response came back; Error says why.
	StatusCode *int      `json:"status_code"`
	Error      string    `json:"error"`
	DurationMS int       `json:"duration_ms"`
	CreatedAt  time.Time `json:"created_at"`
}

// DeliveryArgs is the job that sends one delivery.
type DeliveryArgs struct {
	DeliveryID uuid.UUID `json:"delivery_id"`
}

// Kind implements river.JobArgs.
func (DeliveryArgs) Kind() string { return "webhook_delivery" }

// openJobStates are the states of a job that will still run.
var openJobStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
	rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

// enqueue inserts the job of a delivery, unless it has an open one: a
// delivery is never sent by two jobs at once.
func (s *Service) enqueue(ctx context.Context, tx pgx.Tx, id uuid.UUID) error {
	_, err := s.cfg.Jobs.InsertTx(ctx, tx, DeliveryArgs{DeliveryID: id}, &river.InsertOpts{
		MaxAttempts: s.cfg.MaxAttempts,
		UniqueOpts:  river.UniqueOpts{ByArgs: true, ByState: openJobStates},
	})
	if err != nil {
		return fmt.Errorf("enqueue webhook delivery: %w", err)
	}
	return nil
}

// envelope is the body of every delivery.
type envelope struct {
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// Publish announces an event of the organization inside tx: for each of its
// enabled endpoints subscribed to eventType it records a delivery and
// enqueues its job, so the event goes out if and only if tx commits. data
// must encode to a JSON object.
func (s *Service) Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error {
	if eventType == EventAll || !knownEventTypes[eventType] {
		return fmt.Errorf("publish %q: %w", eventType, ErrUnknownEventType)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", eventType, err)
	}
	if string(raw) == "null" {
		raw = []byte("{}")
	}
	if !bytes.HasPrefix(raw, []byte("{")) {
		return fmt.Errorf("encode %s event: data must encode to a JSON object, not %.20s", eventType, raw)
	}
	rows, err := tx.Query(ctx, `SELECT id FROM webhook_endpoints
		WHERE organization_id = $1 AND enabled AND event_types && ARRAY[$2, '*']::text[]
		ORDER BY created_at, id`, orgID, eventType)
	if err != nil {
		return fmt.Errorf("query webhook subscribers: %w", err)
	}
	endpoints, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return fmt.Errorf("query webhook subscribers: %w", err)
	}
	if len(endpoints) == 0 {
		return nil
	}
	body, err := json.Marshal(envelope{Type: eventType, Timestamp: s.now().UTC().Format(time.RFC3339Nano), Data: raw})
	if err != nil {
		return fmt.Errorf("encode %s event: %w", eventType, err)
	}
	msgID := newMessageID()
	for _, ep := range endpoints {
		var id uuid.UUID
		err := tx.QueryRow(ctx, `INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, payload)
			VALUES ($1, $2, $3, $4) RETURNING id`, ep, msgID, eventType, body).Scan(&id)
		if err != nil {
			return fmt.Errorf("insert webhook delivery: %w", err)
		}
		if err := s.enqueue(ctx, tx, id); err != nil {
			return err
		}
		s.metrics.published.Inc()
	}
	s.log.DebugContext(ctx, "webhook event published", "organization_id", orgID, "event_type", eventType,
		"message_id", msgID, "endpoints", len(endpoints))
	return nil
}

const deliveryColumns = `d.id, d.endpoint_id, d.message_id, d.event_type, d.payload, d.status, d.attempts,
	d.last_status_code, d.last_error, d.created_at, d.delivered_at`

func scanDelivery(row pgx.Row) (Delivery, error) {
	var d Delivery
	var payload []byte
	err := row.Scan(&d.ID, &d.EndpointID, &d.MessageID, &d.EventType, &payload, &d.Status, &d.Attempts,
		&d.LastStatusCode, &d.LastError, &d.CreatedAt, &d.DeliveredAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, ErrDeliveryNotFound
	}
	d.Payload = compactJSON(payload)
	return d, err
}

// compactJSON returns b without the spaces Postgres adds to jsonb text.
func compactJSON(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

// ListDeliveries returns the deliveries of one endpoint of the
// organization, newest first, at most limit (default 50, at most 200) after
// the cursor, and the cursor of the next page ("" on the last).
func (s *Service) ListDeliveries(ctx context.Context, orgID, endpointID uuid.UUID, after string, limit int) ([]Delivery, string, error) {
	c, err := pagination.Decode(after)
	if err != nil {
		return nil, "", err
	}
	if _, err := s.GetEndpoint(ctx, orgID, endpointID); err != nil {
		return nil, "", err
	}
	limit = pagination.Limit(limit)
	rows, err := s.pool.Query(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries d
		WHERE d.endpoint_id = $1 AND ($2::timestamptz IS NULL OR (d.created_at, d.id) < ($2, $3))
		ORDER BY d.created_at DESC, d.id DESC LIMIT $4`, endpointID, c.Time(), c.ID, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("query webhook deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Delivery, error) { return scanDelivery(row) })
	if err != nil {
		return nil, "", fmt.Errorf("query webhook deliveries: %w", err)
	}
	out, next := pagination.Page(out, limit, func(d Delivery) pagination.Cursor { return pagination.Cursor{At: d.CreatedAt, ID: d.ID} })
	return out, next, nil
}

// GetDelivery returns one delivery to an endpoint of the organization, with
// its attempts.
func (s *Service) GetDelivery(ctx context.Context, orgID, id uuid.UUID) (Delivery, error) {
	d, err := scanDelivery(s.pool.QueryRow(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries d
		JOIN webhook_endpoints e ON e.id = d.endpoint_id
		WHERE d.id = $1 AND e.organization_id = $2`, id, orgID))
	if err != nil {
		return Delivery{}, wrapNotFound("get webhook delivery", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, status_code, error, duration_ms, created_at
		FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id`, id)
	if err != nil {
		return Delivery{}, fmt.Errorf("query webhook attempts: %w", err)
	}
	d.History, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Attempt])
	if err != nil {
		return Delivery{}, fmt.Errorf("query webhook attempts: %w", err)
	}
	return d, nil
}

// Redeliver sends a delivery to an endpoint of the organization again,
// with the same message id, so receivers that saw it can recognise it: it
// returns to pending and gets a new job with a fresh attempt budget. A
// delivery still pending keeps the job it has.
func (s *Service) Redeliver(ctx context.Context, orgID, id uuid.UUID) (Delivery, error) {
	var out Delivery
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = scanDelivery(tx.QueryRow(ctx, `UPDATE webhook_deliveries d SET status = 'pending', delivered_at = NULL
			FROM webhook_endpoints e
			WHERE d.id = $1 AND e.id = d.endpoint_id AND e.organization_id = $2
			RETURNING `+deliveryColumns, id, orgID))
		if err != nil {
			return err
		}
		// The worker completes a delivery's job in the transaction that
		// settles it, so a settled delivery has no open job to block this.
		return s.enqueue(ctx, tx, id)
	})
	if err != nil {
		return Delivery{}, wrapNotFound("redeliver webhook", err)
	}
	s.log.InfoContext(ctx, "webhook redelivery queued", "organization_id", orgID, "delivery_id", id, "message_id", out.MessageID)
	return out, nil
}
