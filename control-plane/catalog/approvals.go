package catalog

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/catalog/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/validation"
)

// Priority orders approval requests; it sets the SLA.
type Priority string

// Priorities, lowest first.
const (
	PriorityLow    Priority = "low"
	PriorityNormal Priority = "normal"
	PriorityHigh   Priority = "high"
	PriorityUrgent Priority = "urgent"
)

var priorities = []Priority{PriorityLow, PriorityNormal, PriorityHigh, PriorityUrgent}

func (p Priority) valid() bool {
	for _, q := range priorities {
		if p == q {
			return true
		}
	}
	return false
}

// raised returns the next priority up (urgent stays urgent).
func (p Priority) raised() Priority {
	for i, q := range priorities {
		if q == p && i+1 < len(priorities) {
			return priorities[i+1]
		}
	}
	return PriorityUrgent
}

// ApprovalStatus is where a request is.
type ApprovalStatus string

// Approval statuses; pending and escalated are open.
const (
	ApprovalPending          ApprovalStatus = "pending"
	ApprovalEscalated        ApprovalStatus = "escalated"
	ApprovalApproved         ApprovalStatus = "approved"
	ApprovalRejected         ApprovalStatus = "rejected"
	ApprovalChangesRequested ApprovalStatus = "changes_requested"
	ApprovalExpired          ApprovalStatus = "expired"
)

func (s ApprovalStatus) open() bool { return s == ApprovalPending || s == ApprovalEscalated }

// Approval is a request to admit an API.
type Approval struct {
	ID              uuid.UUID       `json:"id"`
	APIID           uuid.UUID       `json:"api_id"`
	APIName         string          `json:"api_name"`
	OrganizationID  uuid.UUID       `json:"organization_id"`
	Status          ApprovalStatus  `json:"status"`
	Priority        Priority        `json:"priority"`
	EscalationLevel int             `json:"escalation_level"`
	SubmittedBy     string          `json:"submitted_by"`
	DueAt           time.Time       `json:"due_at"`
	Overdue         bool            `json:"overdue"`
	DecidedBy       *string         `json:"decided_by"`
	DecidedAt       *time.Time      `json:"decided_at"`
	DecisionReason  string          `json:"decision_reason"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
	History         []ApprovalEvent `json:"history,omitempty"`
}

// ApprovalEvent is one entry of a request's history.
type ApprovalEvent struct {
	Action    string    `json:"action"`
	Actor     string    `json:"actor"`
	Comment   string    `json:"comment"`
	CreatedAt time.Time `json:"created_at"`
}

// SubmitInput submits an API for review.
type SubmitInput struct {
	Priority Priority `json:"priority"`
	Note     string   `json:"note"`
}

// Submit sends a draft (or rejected) API for review: the API moves through
// submitted to pending_approval and an approval request opens with an SLA
// due time, in one transaction.
func (s *Service) Submit(ctx context.Context, actor identity.Actor, apiID uuid.UUID, in SubmitInput) (Approval, error) {
	if in.Priority == "" {
		in.Priority = PriorityNormal
	}
	if !in.Priority.valid() {
		return Approval{}, &validation.Error{Fields: []validation.Field{{Field: "priority", Detail: "must be low, normal, high or urgent"}}}
	}
	var out Approval
	err := s.changeAPI(ctx, actor, apiID, func(tx pgx.Tx, a API) error {
		var err error
		if a, err = s.transition(ctx, tx, actor, a, StateSubmitted, in.Note); err != nil {
			return err
		}
		if a, err = s.transition(ctx, tx, actor, a, StatePendingApproval, "awaiting review"); err != nil {
			return err
		}
		// Every time of a request (created, due, decided) comes from one
		// clock, so that decision times and SLA figures compare like with
		// like.
		now := s.now()
		due := now.Add(s.cfg.SLA[in.Priority])
		id, err := db.New(tx).ApprovalInsert(ctx, db.ApprovalInsertParams{
			ApiID: a.ID, OrganizationID: a.OrganizationID, Priority: db.ApprovalPriority(in.Priority), SubmittedBy: actor.Subject, DueAt: due, Now: now,
		})
		if err != nil {
			return fmt.Errorf("insert approval request: %w", err)
		}
		out, err = s.logApproval(ctx, tx, id, actor, nil, approvalStep{
			event: "submitted", comment: in.Note, audit: "approval.submit", publish: "approval.submitted",
		})
		return err
	})
	return out, err
}

// approvalStep is what one step of a request writes: the event of its
// history with its comment, the audit action and the webhook event ("":
// none).
type approvalStep struct {
	event, comment, audit, publish string
}

// logApproval writes step's history event of request id, said by actor,
// then audits and announces the request as it now stands (before is the
// request before the step, nil for a new one), and returns it.
func (s *Service) logApproval(ctx context.Context, tx pgx.Tx, id uuid.UUID, actor identity.Actor, before any, step approvalStep) (Approval, error) {
	if err := s.approvalEvent(ctx, tx, id, step.event, actor, step.comment); err != nil {
		return Approval{}, err
	}
	after, err := s.loadApproval(ctx, tx, id, false)
	if err != nil {
		return Approval{}, err
	}
	return after, s.recordApproval(ctx, tx, actor, step.audit, after, before, step.publish)
}

func (s *Service) approvalEvent(ctx context.Context, tx pgx.Tx, id uuid.UUID, action string, actor identity.Actor, comment string) error {
	err := db.New(tx).ApprovalEventInsert(ctx, db.ApprovalEventInsertParams{ApprovalID: id, Action: action, Actor: actor.Subject, Comment: comment})
	if err != nil {
		return fmt.Errorf("record approval event: %w", err)
	}
	return nil
}

func (s *Service) loadApproval(ctx context.Context, q pgx.Tx, id uuid.UUID, lock bool) (Approval, error) {
	if lock {
		return s.withOverdue(toApproval(db.New(q).ApprovalGetByIDForUpdate(ctx, id)))
	}
	return s.withOverdue(toApproval(db.New(q).ApprovalGetByID(ctx, id)))
}

func (s *Service) recordApproval(ctx context.Context, tx pgx.Tx, actor identity.Actor, action string, after Approval, before any, event string) error {
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: after.OrganizationID,
		Action: action, TargetType: "approval", TargetID: after.ID.String(), Before: before, After: after,
	}); err != nil {
		return err
	}
	if event == "" {
		return nil
	}
	if err := s.cfg.Publisher.Publish(ctx, tx, after.OrganizationID, event, map[string]any{"approval": after}); err != nil {
		return fmt.Errorf("publish %s: %w", event, err)
	}
	return nil
}

// GetApproval returns a request with its history. Admins see every request,
// an organization its own.
func (s *Service) GetApproval(ctx context.Context, actor identity.Actor, id uuid.UUID) (Approval, error) {
	q := db.New(s.pool)
	r, err := s.withOverdue(toApproval(q.ApprovalGetByID(ctx, id)))
	if err != nil {
		return Approval{}, err
	}
	if !actor.IsAdmin() && actor.OrgID != r.OrganizationID {
		return Approval{}, ErrApprovalNotFound
	}
	events, err := q.ApprovalEventList(ctx, id)
	if err != nil {
		return Approval{}, fmt.Errorf("load approval history: %w", err)
	}
	r.History = make([]ApprovalEvent, 0, len(events))
	for _, e := range events {
		r.History = append(r.History, ApprovalEvent(e))
	}
	return r, nil
}

// ApprovalFilter selects requests.
type ApprovalFilter struct {
	Status         ApprovalStatus
	Priority       Priority
	OrganizationID uuid.UUID
	APIID          uuid.UUID
	Overdue        bool
	After          string
	Limit          int
}

// ListApprovals lists requests oldest first (admins only).
func (s *Service) ListApprovals(ctx context.Context, actor identity.Actor, f ApprovalFilter) ([]Approval, string, error) {
	if !actor.IsAdmin() {
		return nil, "", identity.ErrForbidden
	}
	after, err := pagination.Decode(f.After)
	if err != nil {
		return nil, "", err
	}
	limit := pagination.Limit(f.Limit)
	var org, api *uuid.UUID
	if f.OrganizationID != uuid.Nil {
		org = &f.OrganizationID
	}
	if f.APIID != uuid.Nil {
		api = &f.APIID
	}
	rows, err := db.New(s.pool).ApprovalList(ctx, db.ApprovalListParams{
		Status: string(f.Status), Priority: string(f.Priority), OrganizationID: org, ApiID: api, Overdue: f.Overdue,
		Now: s.now(), AfterAt: after.Time(), AfterID: after.ID, RowLimit: int32(limit + 1),
	})
	if err != nil {
		return nil, "", fmt.Errorf("list approvals: %w", err)
	}
	var out []Approval
	for _, row := range rows {
		r, err := s.withOverdue(toApproval(row, nil))
		if err != nil {
			return nil, "", err
		}
		out = append(out, r)
	}
	out, next := pagination.Page(out, limit, func(r Approval) pagination.Cursor { return pagination.Cursor{At: r.CreatedAt, ID: r.ID} })
	return out, next, nil
}

// Decision is what an admin decides on a request.
type Decision string

// Decisions.
const (
	DecisionApprove        Decision = "approve"
	DecisionReject         Decision = "reject"
	DecisionEscalate       Decision = "escalate"
	DecisionRequestChanges Decision = "request_changes"
)

// Decide applies one decision. Approve moves the API to approved and
// enqueues its gateway registration in the same transaction; reject needs a
// reason; request changes sends the API back to draft; escalate raises the
// priority and the escalation level. Nobody decides on their own
// organization's API.
func (s *Service) Decide(ctx context.Context, actor identity.Actor, id uuid.UUID, d Decision, reason string) (Approval, error) {
	if !actor.IsAdmin() {
		return Approval{}, identity.ErrForbidden
	}
	reason = strings.TrimSpace(reason)
	if (d == DecisionReject || d == DecisionRequestChanges) && reason == "" {
		return Approval{}, &validation.Error{Fields: []validation.Field{{Field: "reason", Detail: "is required to " + strings.ReplaceAll(string(d), "_", " ")}}}
	}
	if utf8.RuneCountInString(reason) > 5000 {
		return Approval{}, &validation.Error{Fields: []validation.Field{{Field: "reason", Detail: "must be at most 5000 characters"}}}
	}
	var out Approval
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		r, err := s.loadApproval(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if actor.Role != identity.RoleSystem && actor.OrgID == r.OrganizationID {
			return ErrSelfApproval
		}
		if !r.Status.open() {
			return fmt.Errorf("%w: it is %s", ErrApprovalClosed, r.Status)
		}
		before := r
		a, err := s.lockAPI(ctx, tx, actor, r.APIID)
		if err != nil {
			return err
		}
		event := "approval.decided"
		switch d {
		case DecisionApprove:
			if a, err = s.transition(ctx, tx, actor, a, StateApproved, reason); err != nil {
				return err
			}
			if err := s.enqueueRegister(ctx, tx, a.ID); err != nil {
				return err
			}
			err = s.closeApproval(ctx, tx, id, ApprovalApproved, actor, reason)
		case DecisionReject:
			if _, err = s.transition(ctx, tx, actor, a, StateRejected, reason); err != nil {
				return err
			}
			err = s.closeApproval(ctx, tx, id, ApprovalRejected, actor, reason)
		case DecisionRequestChanges:
			if _, err = s.transition(ctx, tx, actor, a, StateDraft, "changes requested: "+reason); err != nil {
				return err
			}
			err = s.closeApproval(ctx, tx, id, ApprovalChangesRequested, actor, reason)
		case DecisionEscalate:
			event = "approval.escalated"
			err = s.escalate(ctx, tx, r, actor, reason)
		default:
			return &validation.Error{Fields: []validation.Field{{Field: "action", Detail: "must be approve, reject, escalate or request_changes"}}}
		}
		if err != nil {
			return err
		}
		action := map[Decision]string{DecisionApprove: "approved", DecisionReject: "rejected", DecisionRequestChanges: "changes_requested", DecisionEscalate: "escalated"}[d]
		out, err = s.logApproval(ctx, tx, id, actor, before, approvalStep{
			event: action, comment: reason, audit: "approval." + string(d), publish: event,
		})
		return err
	})
	return out, err
}

func (s *Service) closeApproval(ctx context.Context, tx pgx.Tx, id uuid.UUID, status ApprovalStatus, actor identity.Actor, reason string) error {
	now := s.now()
	err := db.New(tx).ApprovalClose(ctx, db.ApprovalCloseParams{
		ID: id, Status: db.ApprovalStatus(status), DecidedBy: &actor.Subject, DecidedAt: &now, DecisionReason: reason,
	})
	if err != nil {
		return fmt.Errorf("close approval request: %w", err)
	}
	return nil
}

func (s *Service) escalate(ctx context.Context, tx pgx.Tx, r Approval, actor identity.Actor, reason string) error {
	p := r.Priority.raised()
	err := db.New(tx).ApprovalEscalate(ctx, db.ApprovalEscalateParams{ID: r.ID, Priority: db.ApprovalPriority(p), DueAt: s.now().Add(s.cfg.SLA[p])})
	if err != nil {
		return fmt.Errorf("escalate approval request: %w", err)
	}
	return nil
}

// Comment adds a comment to a request. Admins comment on any request, the
// submitting organization on its own.
func (s *Service) Comment(ctx context.Context, actor identity.Actor, id uuid.UUID, text string) (ApprovalEvent, error) {
	text = strings.TrimSpace(text)
	if text == "" || utf8.RuneCountInString(text) > 5000 {
		return ApprovalEvent{}, &validation.Error{Fields: []validation.Field{{Field: "comment", Detail: "must be 1 to 5000 characters"}}}
	}
	var ev ApprovalEvent
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		r, err := s.loadApproval(ctx, tx, id, false)
		if err != nil {
			return err
		}
		switch {
		case actor.IsAdmin():
		case actor.OrgID != r.OrganizationID:
			return ErrApprovalNotFound
		case actor.Role != identity.RoleProvider:
			return identity.ErrForbidden // a consumer of the organization reads it, but does not take part
		}
		row, err := db.New(tx).ApprovalCommentInsert(ctx, db.ApprovalCommentInsertParams{ApprovalID: id, Actor: actor.Subject, Comment: text})
		if err != nil {
			return fmt.Errorf("insert comment: %w", err)
		}
		ev = ApprovalEvent(row)
		if err := audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: r.OrganizationID,
			Action: "approval.comment", TargetType: "approval", TargetID: id.String(), After: ev,
		}); err != nil {
			return err
		}
		return s.cfg.Publisher.Publish(ctx, tx, r.OrganizationID, "approval.commented", map[string]any{"approval_id": id, "comment": ev})
	})
	return ev, err
}

// BulkResult is the outcome of one decision of a bulk request.
type BulkResult struct {
	ID       uuid.UUID `json:"id"`
	Approval *Approval `json:"approval,omitempty"`
	Err      error     `json:"-"`
}

// DecideBulk applies one decision to many requests, each in its own
// transaction, so one refusal does not undo the others.
func (s *Service) DecideBulk(ctx context.Context, actor identity.Actor, ids []uuid.UUID, d Decision, reason string) ([]BulkResult, error) {
	if !actor.IsAdmin() {
		return nil, identity.ErrForbidden
	}
	if len(ids) == 0 || len(ids) > 100 {
		return nil, &validation.Error{Fields: []validation.Field{{Field: "ids", Detail: "must hold 1 to 100 ids"}}}
	}
	out := make([]BulkResult, len(ids))
	for i, id := range ids {
		r, err := s.Decide(ctx, actor, id, d, reason)
		out[i] = BulkResult{ID: id, Err: err}
		if err == nil {
			out[i].Approval = &r
		}
	}
	return out, nil
}

// Stats summarises the review queue.
type Stats struct {
	OpenByPriority        map[Priority]int       `json:"open_by_priority"`
	ByStatus              map[ApprovalStatus]int `json:"by_status"`
	Overdue               int                    `json:"overdue"`
	MedianDecisionSeconds *float64               `json:"median_decision_seconds"`
	DecidedAfterDue       int                    `json:"decided_after_due"`
	SLABreaches           int                    `json:"sla_breaches"`
}

// ApprovalStats computes the queue statistics (admins only).
func (s *Service) ApprovalStats(ctx context.Context, actor identity.Actor) (Stats, error) {
	if !actor.IsAdmin() {
		return Stats{}, identity.ErrForbidden
	}
	st := Stats{OpenByPriority: map[Priority]int{}, ByStatus: map[ApprovalStatus]int{}}
	for _, p := range priorities {
		st.OpenByPriority[p] = 0
	}
	counts, err := db.New(s.pool).ApprovalCountByStatusPriority(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("approval stats: %w", err)
	}
	for _, c := range counts {
		status, n := ApprovalStatus(c.Status), int(c.Count)
		st.ByStatus[status] += n
		if status.open() {
			st.OpenByPriority[Priority(c.Priority)] += n
		}
	}
	if err := approvalStatsAt(ctx, s.pool, s.now(), &st); err != nil {
		return Stats{}, fmt.Errorf("approval stats: %w", err)
	}
	st.SLABreaches = st.Overdue + st.DecidedAfterDue
	return st, nil
}

// SweepReport says what one overdue sweep did.
type SweepReport struct {
	Escalated int `json:"escalated"`
	Expired   int `json:"expired"`
}

// SweepOverdue escalates open requests past their due time and expires
// those already escalated MaxEscalations times; an expired request rejects
// its API. The scheduled approval job runs it.
func (s *Service) SweepOverdue(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	ids, err := db.New(s.pool).ApprovalListOverdueIDs(ctx, s.now())
	if err != nil {
		return rep, fmt.Errorf("find overdue approvals: %w", err)
	}
	for _, id := range ids {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			r, err := s.loadApproval(ctx, tx, id, true)
			if err != nil {
				return err
			}
			if !r.Status.open() || !s.now().After(r.DueAt) {
				return nil // decided or moved meanwhile
			}
			before := r
			if r.EscalationLevel < s.cfg.MaxEscalations {
				if err := s.escalate(ctx, tx, r, identity.System, "overdue"); err != nil {
					return err
				}
				if _, err := s.logApproval(ctx, tx, id, identity.System, before, approvalStep{
					event: "escalated", comment: "overdue: no decision by the due time", audit: "approval.escalate", publish: "approval.escalated",
				}); err != nil {
					return err
				}
				rep.Escalated++
				return nil
			}
			a, err := s.lockAPI(ctx, tx, identity.System, r.APIID)
			if err != nil {
				return err
			}
			reason := "approval request expired without a decision"
			if _, err := s.transition(ctx, tx, identity.System, a, StateRejected, reason); err != nil {
				return err
			}
			now := s.now()
			if err := db.New(tx).ApprovalExpire(ctx, db.ApprovalExpireParams{ID: id, DecidedAt: &now, DecisionReason: reason}); err != nil {
				return fmt.Errorf("expire approval request: %w", err)
			}
			if _, err := s.logApproval(ctx, tx, id, identity.System, before, approvalStep{
				event: "expired", comment: reason, audit: "approval.expire", publish: "approval.expired",
			}); err != nil {
				return err
			}
			rep.Expired++
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("sweep approval %s: %w", id, err)
		}
	}
	return rep, nil
}
