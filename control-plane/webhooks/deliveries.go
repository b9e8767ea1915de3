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

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/webhooks/internal/db"
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

// Attempt is one HTTP request of a delivery. Its fields are the columns of
// AttemptList (internal/db), in their order, so that a row converts to it.
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
	endpoints, err := db.New(tx).EndpointSubscribers(ctx, db.EndpointSubscribersParams{OrganizationID: orgID, EventType: eventType})
	if err != nil {
		return fmt.Errorf("query webhook subscribers: %w", err)
	}
	return s.deliver(ctx, tx, orgID, endpoints, eventType, data)
}

// Event is one event of PublishMany.
type Event struct {
	OrgID uuid.UUID
	Data  any
}

// PublishMany is Publish of events of one type, the subscribers of their
// organizations read in one query: for jobs that announce thousands of
// events in one transaction, most of them to no endpoint.
func (s *Service) PublishMany(ctx context.Context, tx pgx.Tx, eventType string, events []Event) error {
	if eventType == EventAll || !knownEventTypes[eventType] {
		return fmt.Errorf("publish %q: %w", eventType, ErrUnknownEventType)
	}
	orgs := make([]uuid.UUID, len(events))
	for i, e := range events {
		orgs[i] = e.OrgID
	}
	rows, err := db.New(tx).EndpointSubscribersOf(ctx, db.EndpointSubscribersOfParams{OrganizationIds: orgs, EventType: eventType})
	if err != nil {
		return fmt.Errorf("query webhook subscribers: %w", err)
	}
	subscribers := map[uuid.UUID][]uuid.UUID{}
	for _, r := range rows {
		subscribers[r.OrganizationID] = append(subscribers[r.OrganizationID], r.ID)
	}
	for _, e := range events {
		if err := s.deliver(ctx, tx, e.OrgID, subscribers[e.OrgID], eventType, e.Data); err != nil {
			return err
		}
	}
	return nil
}

// deliver records and enqueues one delivery of an event per endpoint.
func (s *Service) deliver(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, endpoints []uuid.UUID, eventType string, data any) error {
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
	if len(endpoints) == 0 {
		return nil
	}
	q := db.New(tx)
	body, err := json.Marshal(envelope{Type: eventType, Timestamp: s.now().UTC().Format(time.RFC3339Nano), Data: raw})
	if err != nil {
		return fmt.Errorf("encode %s event: %w", eventType, err)
	}
	msgID := newMessageID()
	for _, ep := range endpoints {
		id, err := q.DeliveryInsert(ctx, db.DeliveryInsertParams{EndpointID: ep, MessageID: msgID, EventType: eventType, Payload: body})
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

// deliveryFrom returns the delivery of a row, its payload compacted.
func deliveryFrom(r db.WebhookDelivery) Delivery {
	return Delivery{
		ID: r.ID, EndpointID: r.EndpointID, MessageID: r.MessageID, EventType: r.EventType,
		Payload: compactJSON(r.Payload), Status: DeliveryStatus(r.Status), Attempts: r.Attempts,
		LastStatusCode: r.LastStatusCode, LastError: r.LastError, CreatedAt: r.CreatedAt, DeliveredAt: r.DeliveredAt,
	}
}

// deliveryNotFound turns "no row" into ErrDeliveryNotFound.
func deliveryNotFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrDeliveryNotFound
	}
	return err
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
	return listPage(after, limit, func(c pagination.Cursor, rows int32) ([]db.WebhookDelivery, error) {
		if _, err := s.GetEndpoint(ctx, orgID, endpointID); err != nil {
			return nil, err
		}
		out, err := db.New(s.pool).DeliveryList(ctx, db.DeliveryListParams{
			EndpointID: endpointID, BeforeCreatedAt: c.Time(), BeforeID: c.ID, MaxRows: rows,
		})
		if err != nil {
			return nil, fmt.Errorf("query webhook deliveries: %w", err)
		}
		return out, nil
	}, deliveryFrom, func(d Delivery) pagination.Cursor { return pagination.Cursor{At: d.CreatedAt, ID: d.ID} })
}

// GetDelivery returns one delivery to an endpoint of the organization, with
// its attempts.
func (s *Service) GetDelivery(ctx context.Context, orgID, id uuid.UUID) (Delivery, error) {
	q := db.New(s.pool)
	row, err := q.DeliveryGetByID(ctx, db.DeliveryGetByIDParams{ID: id, OrganizationID: orgID})
	if err != nil {
		return Delivery{}, wrapNotFound("get webhook delivery", deliveryNotFound(err))
	}
	d := deliveryFrom(row)
	attempts, err := q.AttemptList(ctx, id)
	if err != nil {
		return Delivery{}, fmt.Errorf("query webhook attempts: %w", err)
	}
	d.History = make([]Attempt, 0, len(attempts))
	for _, a := range attempts {
		d.History = append(d.History, Attempt(a))
	}
	return d, nil
}

// Redeliver sends a delivery to an endpoint of by's organization again,
// with the same message id, so receivers that saw it can recognise it: it
// returns to pending and gets a new job with a fresh attempt budget. A
// delivery still pending keeps the job it has. The request is audited as
// by's change to the endpoint in the same transaction.
func (s *Service) Redeliver(ctx context.Context, by identity.Actor, id uuid.UUID) (Delivery, error) {
	var out Delivery
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		row, err := db.New(tx).DeliveryRequeue(ctx, db.DeliveryRequeueParams{ID: id, OrganizationID: by.OrgID})
		if err != nil {
			return deliveryNotFound(err)
		}
		out = deliveryFrom(row)
		// The worker completes a delivery's job in the transaction that
		// settles it, so a settled delivery has no open job to block this.
		if err := s.enqueue(ctx, tx, id); err != nil {
			return err
		}
		return s.recordChange(ctx, tx, by, "webhook.redeliver", out.EndpointID, nil, map[string]string{"delivery_id": id.String()})
	})
	if err != nil {
		return Delivery{}, wrapNotFound("redeliver webhook", err)
	}
	s.log.InfoContext(ctx, "webhook redelivery queued", "organization_id", by.OrgID, "delivery_id", id, "message_id", out.MessageID)
	return out, nil
}
