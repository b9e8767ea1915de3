// Package audit records who changed what in the control plane. Every
// mutation writes one entry in the same transaction as the change, so the log
// holds exactly the changes that happened. The queries are in internal/db
// (sqlc).
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/audit/internal/db"
)

// Meta describes the request behind a change. The HTTP layer puts it in the
// context; jobs leave it empty.
type Meta struct {
	SourceIP  string
	UserAgent string
	RequestID string
}

type metaKey struct{}

// WithMeta returns ctx carrying m.
func WithMeta(ctx context.Context, m Meta) context.Context {
	return context.WithValue(ctx, metaKey{}, m)
}

// MetaFrom returns the request metadata in ctx, or the zero Meta.
func MetaFrom(ctx context.Context) Meta {
	m, _ := ctx.Value(metaKey{}).(Meta)
	return m
}

// Entry is one audited change. Before and After are any JSON-encodable
// values (nil when the target did not exist before or after).
type Entry struct {
	ID             int64           `json:"id"`
	CreatedAt      time.Time       `json:"created_at"`
	Actor          string          `json:"actor"`
	ActorRole      string          `json:"actor_role"`
	OrganizationID *uuid.UUID      `json:"organization_id,omitempty"`
	Action         string          `json:"action"`
	TargetType     string          `json:"target_type"`
	TargetID       string          `json:"target_id"`
	Before         json.RawMessage `json:"before,omitempty"`
	After          json.RawMessage `json:"after,omitempty"`
	SourceIP       string          `json:"source_ip"`
	UserAgent      string          `json:"user_agent"`
	RequestID      string          `json:"request_id"`
}

// Change is what a caller records; the request metadata comes from ctx.
type Change struct {
	Actor          string
	ActorRole      string
	OrganizationID uuid.UUID // uuid.Nil for platform-wide changes
	Action         string    // e.g. "api.create", "approval.approve"
	TargetType     string
	TargetID       string
	Before, After  any
}

// Record writes c inside tx.
func Record(ctx context.Context, tx pgx.Tx, c Change) error {
	p, err := entryOf(ctx, c)
	if err != nil {
		return err
	}
	if err := db.New(tx).AuditInsert(ctx, p); err != nil {
		return fmt.Errorf("insert audit entry: %w", err)
	}
	return nil
}

// RecordMany writes changes inside tx in one round trip: for jobs that
// change thousands of rows in one transaction.
func RecordMany(ctx context.Context, tx pgx.Tx, changes []Change) error {
	rows := make([]db.AuditInsertManyParams, len(changes))
	for i, c := range changes {
		p, err := entryOf(ctx, c)
		if err != nil {
			return err
		}
		rows[i] = db.AuditInsertManyParams(p)
	}
	if _, err := db.New(tx).AuditInsertMany(ctx, rows); err != nil {
		return fmt.Errorf("insert audit entries: %w", err)
	}
	return nil
}

// entryOf is the row of c, with the request metadata of ctx.
func entryOf(ctx context.Context, c Change) (db.AuditInsertParams, error) {
	before, err := encode(c.Before)
	if err != nil {
		return db.AuditInsertParams{}, fmt.Errorf("encode audit before: %w", err)
	}
	after, err := encode(c.After)
	if err != nil {
		return db.AuditInsertParams{}, fmt.Errorf("encode audit after: %w", err)
	}
	var org *uuid.UUID
	if c.OrganizationID != uuid.Nil {
		org = &c.OrganizationID
	}
	m := MetaFrom(ctx)
	return db.AuditInsertParams{
		Actor: c.Actor, ActorRole: c.ActorRole, OrganizationID: org, Action: c.Action,
		TargetType: c.TargetType, TargetID: c.TargetID, Before: before, After: after,
		SourceIP: m.SourceIP, UserAgent: m.UserAgent, RequestID: m.RequestID,
	}, nil
}

func encode(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	return json.Marshal(v)
}

// Filter selects entries. A nil OrganizationID means every organization
// (admins only; the HTTP layer enforces that).
type Filter struct {
	OrganizationID *uuid.UUID
	TargetType     string
	TargetID       string
	Action         string
	// Actor is the subject who made the change ("" for anyone).
	Actor string
	// Since and Until bound the entries' times: [Since, Until), either
	// nil for no bound.
	Since, Until *time.Time
	BeforeID     int64 // cursor: entries with a smaller id
	Limit        int
}

// ErrBadFilter reports an unusable filter.
var ErrBadFilter = errors.New("bad audit filter")

// List returns entries newest first.
func List(ctx context.Context, pool *pgxpool.Pool, f Filter) ([]Entry, error) {
	if f.Limit <= 0 || f.Limit > 501 {
		return nil, fmt.Errorf("%w: limit %d outside 1..500", ErrBadFilter, f.Limit)
	}
	rows, err := db.New(pool).AuditList(ctx, db.AuditListParams{
		OrganizationID: f.OrganizationID, TargetType: f.TargetType, TargetID: f.TargetID, Action: f.Action,
		Actor: f.Actor, Since: f.Since, Until: f.Until, BeforeID: f.BeforeID, MaxRows: int32(f.Limit),
	})
	if err != nil {
		return nil, fmt.Errorf("query audit log: %w", err)
	}
	out := make([]Entry, 0, len(rows))
	for _, r := range rows {
		out = append(out, Entry{
			ID: r.ID, CreatedAt: r.CreatedAt, Actor: r.Actor, ActorRole: r.ActorRole, OrganizationID: r.OrganizationID,
			Action: r.Action, TargetType: r.TargetType, TargetID: r.TargetID, Before: r.Before, After: r.After,
			SourceIP: r.SourceIP, UserAgent: r.UserAgent, RequestID: r.RequestID,
		})
	}
	return out, nil
}

// RecordNow writes c in a transaction of its own. It is for operations whose
// effect lies outside Postgres (the gateway's routes, Redis), which no
// transaction of ours can hold: record the request before the first change,
// so that a failure to record changes nothing. A change to Postgres is
// recorded with Record, in the transaction that makes it.
func RecordNow(ctx context.Context, pool *pgxpool.Pool, c Change) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return Record(ctx, tx, c) })
}
