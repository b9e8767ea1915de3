package catalog_test

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/pagination"
)

// defaultSLA is the documented time allowed per priority.
var defaultSLA = map[catalog.Priority]time.Duration{
	catalog.PriorityLow:    7 * 24 * time.Hour,
	catalog.PriorityNormal: 72 * time.Hour,
	catalog.PriorityHigh:   24 * time.Hour,
	catalog.PriorityUrgent: 4 * time.Hour,
}

func TestSubmit(t *testing.T) {
	// A configured SLA replaces its priority's default, the others stay.
	e := setup(t, func(c *catalog.Config) {
		c.SLA = map[catalog.Priority]time.Duration{catalog.PriorityUrgent: 30 * time.Minute}
	})
	sla := maps.Clone(defaultSLA)
	sla[catalog.PriorityUrgent] = 30 * time.Minute
	ctx := t.Context()
	for _, p := range []catalog.Priority{catalog.PriorityLow, catalog.PriorityNormal, catalog.PriorityHigh, catalog.PriorityUrgent} {
		a := e.createAPI(e.provider, "api-"+string(p))
		r, err := e.svc.Submit(ctx, e.provider, a.ID, catalog.SubmitInput{Priority: p, Note: "v1 ready"})
		if err != nil {
			t.Fatalf("Submit(%s) = %v; want nil", p, err)
		}
		if r.Status != catalog.ApprovalPending || r.Priority != p || r.EscalationLevel != 0 || r.SubmittedBy != "provider-1" ||
			r.APIID != a.ID || r.APIName != a.Name || r.OrganizationID != e.org || r.Overdue || r.DecidedBy != nil || r.DecidedAt != nil {
			t.Errorf("Submit(%s) = %+v; want a pending, undecided request of %s by provider-1", p, r, a.ID)
		}
		if want := start.Add(sla[p]); !r.DueAt.Equal(want) || !r.CreatedAt.Equal(start) {
			t.Errorf("Submit(%s) created %s, due %s; want created %s, due %s", p, r.CreatedAt, r.DueAt, start, want)
		}
		if got := e.api(a.ID).State; got != catalog.StatePendingApproval {
			t.Errorf("state after Submit(%s) = %s; want pending_approval", p, got)
		}
		want := []transition{
			{"draft", "submitted", "provider-1", "v1 ready"},
			{"submitted", "pending_approval", "provider-1", "awaiting review"},
		}
		if got := e.transitions(a.ID); !slices.Equal(got, want) {
			t.Errorf("transitions after Submit(%s) = %v; want %v", p, got, want)
		}
		_, err = e.svc.Submit(ctx, e.provider, a.ID, catalog.SubmitInput{Priority: p})
		wantErr(t, "Submit("+string(p)+") again", err, catalog.ErrInvalidTransition)
		if n := e.count(`SELECT count(*) FROM approval_requests WHERE api_id = $1`, a.ID); n != 1 {
			t.Errorf("approval requests after a second Submit(%s) = %d; want 1", p, n)
		}
		if got, want := e.publishedTypes(a.ID), []string{"api.created", "api.state_changed", "api.state_changed"}; !slices.Equal(got, want) {
			t.Errorf("published about the API by Submit(%s) = %v; want %v", p, got, want)
		}
		if got := e.publishedTypes(r.ID); !slices.Equal(got, []string{"approval.submitted"}) {
			t.Errorf("published about the request by Submit(%s) = %v; want [approval.submitted]", p, got)
		}
		if got := e.auditActions(r.ID); !slices.Equal(got, []string{"approval.submit"}) {
			t.Errorf("audit of the request after Submit(%s) = %v; want [approval.submit]", p, got)
		}
	}

	a := e.createAPI(e.provider, "api-default")
	if r := e.submit(e.provider, a.ID, ""); r.Priority != catalog.PriorityNormal || !r.DueAt.Equal(start.Add(72*time.Hour)) {
		t.Errorf("Submit(no priority) = %s due %s; want normal due %s", r.Priority, r.DueAt, start.Add(72*time.Hour))
	}
	b := e.createAPI(e.provider, "api-refused")
	_, err := e.svc.Submit(ctx, e.provider, b.ID, catalog.SubmitInput{Priority: "asap"})
	wantFields(t, "Submit(priority asap)", err, "priority")
	_, err = e.svc.Submit(ctx, e.otherProvider, b.ID, catalog.SubmitInput{})
	wantErr(t, "Submit by another organization", err, catalog.ErrAPINotFound)
	_, err = e.svc.Submit(ctx, e.consumer, b.ID, catalog.SubmitInput{})
	wantErr(t, "Submit by a consumer of the organization", err, identity.ErrForbidden)
	if got := e.api(b.ID).State; got != catalog.StateDraft {
		t.Errorf("state after refused submissions = %s; want draft", got)
	}
}

func TestDecideApprove(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	a, r := e.pending("weather")
	e.clock.Advance(90 * time.Minute)

	got, err := e.svc.Decide(ctx, e.admin, r.ID, catalog.DecisionApprove, "  looks good  ")
	if err != nil {
		t.Fatalf("Decide(approve) = %v; want nil", err)
	}
	if got.Status != catalog.ApprovalApproved || got.DecidedBy == nil || *got.DecidedBy != "admin-1" || got.DecidedAt == nil ||
		!got.DecidedAt.Equal(start.Add(90*time.Minute)) || got.DecisionReason != "looks good" {
		t.Errorf("Decide(approve) = %+v; want approved by admin-1 at %s for %q", got, start.Add(90*time.Minute), "looks good")
	}
	if api := e.api(a.ID); api.State != catalog.StateApproved || api.StateReason != "looks good" {
		t.Errorf("API after approval = %s (%q); want approved (looks good)", api.State, api.StateReason)
	}
	if got, want := e.jobs(a.ID), []job{{"api_register", "available", 3}}; !slices.Equal(got, want) {
		t.Errorf("jobs after approval = %v; want %v", got, want)
	}
	trs := e.transitions(a.ID)
	if last := trs[len(trs)-1]; last != (transition{"pending_approval", "approved", "admin-1", "looks good"}) {
		t.Errorf("last transition = %v; want pending_approval → approved by admin-1", last)
	}
	audits := e.audits(r.ID)
	if len(audits) != 2 || audits[1].Action != "approval.approve" || audits[1].Actor != "admin-1" || audits[1].Role != "admin" ||
		audits[1].Before["status"] != "pending" || audits[1].After["status"] != "approved" {
		t.Errorf("audit of the request = %+v; want approval.submit, then approval.approve by admin-1 from pending to approved", audits)
	}
	if got := e.publishedTypes(r.ID); !slices.Equal(got, []string{"approval.submitted", "approval.decided"}) {
		t.Errorf("published about the request = %v; want [approval.submitted approval.decided]", got)
	}

	for _, d := range []catalog.Decision{catalog.DecisionApprove, catalog.DecisionReject, catalog.DecisionRequestChanges, catalog.DecisionEscalate} {
		_, err := e.svc.Decide(ctx, e.otherAdmin, r.ID, d, "again")
		wantErr(t, "Decide("+string(d)+") on an approved request", err, catalog.ErrApprovalClosed)
	}
	if n := len(e.jobs(a.ID)); n != 1 {
		t.Errorf("jobs after decisions on a closed request = %d; want 1", n)
	}
}

// TestDecideRollsBack checks that an approval is all or nothing: when any
// step fails, neither the API, the request nor the job queue changes.
func TestDecideRollsBack(t *testing.T) {
	e := setup(t)
	ctx := t.Context()

	check := func(what string, a catalog.API, r catalog.Approval, state catalog.State) {
		t.Helper()
		if got := e.api(a.ID).State; got != state {
			t.Errorf("%s: API state = %s; want %s", what, got, state)
		}
		if got := e.jobs(a.ID); len(got) != 0 {
			t.Errorf("%s: jobs = %v; want none", what, got)
		}
		if n := len(e.transitions(a.ID)); n != 2 {
			t.Errorf("%s: transitions = %d; want the 2 of the submission", what, n)
		}
		got, err := e.svc.GetApproval(ctx, e.admin, r.ID)
		if err != nil || got.Status != catalog.ApprovalPending || got.DecidedBy != nil || len(got.History) != 1 {
			t.Errorf("%s: request = %s decided by %v with %d events, %v; want pending, undecided, 1 event", what, got.Status, got.DecidedBy, len(got.History), err)
		}
		if got := e.auditActions(r.ID); !slices.Equal(got, []string{"approval.submit"}) {
			t.Errorf("%s: audit of the request = %v; want [approval.submit]", what, got)
		}
	}

	// The API left pending_approval behind the service's back: the
	// transition fails and nothing is enqueued.
	a, r := e.pending("changed")
	e.setState(a.ID, catalog.StateDraft)
	_, err := e.svc.Decide(ctx, e.admin, r.ID, catalog.DecisionApprove, "")
	wantErr(t, "Decide(approve) of a changed API", err, catalog.ErrInvalidTransition)
	check("approve a changed API", a, r, catalog.StateDraft)

	// The last step fails, after the transition and the job insert.
	b := e.createAPI(e.provider, "unlucky")
	r = e.submit(e.provider, b.ID, catalog.PriorityNormal)
	committed, calls := len(e.published()), e.rec.calls.Load()
	e.rec.failPublishing("approval.decided")
	_, err = e.svc.Decide(ctx, e.admin, r.ID, catalog.DecisionApprove, "")
	wantErr(t, "Decide(approve) with the publisher refusing", err, errPublish)
	check("approve with the publisher refusing", b, r, catalog.StatePendingApproval)
	if got := e.rec.calls.Load() - calls; got != 2 {
		t.Errorf("publisher calls of the failed approval = %d; want 2 (api.state_changed, approval.decided)", got)
	}
	if got := len(e.published()); got != committed {
		t.Errorf("committed announcements after the failed approval = %d; want %d", got, committed)
	}

	e.rec.failPublishing("")
	e.decide(r.ID, catalog.DecisionApprove, "")
	if got, want := e.jobs(b.ID), []job{{"api_register", "available", 3}}; !slices.Equal(got, want) {
		t.Errorf("jobs after the approval succeeded = %v; want %v", got, want)
	}
}

func TestDecideRejectAndRequestChanges(t *testing.T) {
	e := setup(t)
	ctx := t.Context()

	for _, d := range []catalog.Decision{catalog.DecisionReject, catalog.DecisionRequestChanges} {
		a := e.createAPI(e.provider, "api-"+strings.ReplaceAll(string(d), "_", "-"))
		r := e.submit(e.provider, a.ID, catalog.PriorityNormal)
		for _, reason := range []string{"", "   "} {
			_, err := e.svc.Decide(ctx, e.admin, r.ID, d, reason)
			wantFields(t, "Decide("+string(d)+", "+reason+")", err, "reason")
		}
		if got := e.api(a.ID).State; got != catalog.StatePendingApproval {
			t.Errorf("state after Decide(%s) without a reason = %s; want pending_approval", d, got)
		}

		got := e.decide(r.ID, d, "the docs are missing")
		api := e.api(a.ID)
		switch d {
		case catalog.DecisionReject:
			if got.Status != catalog.ApprovalRejected || api.State != catalog.StateRejected || api.StateReason != "the docs are missing" {
				t.Errorf("Decide(reject) = request %s, API %s (%q); want rejected, rejected (the docs are missing)", got.Status, api.State, api.StateReason)
			}
		case catalog.DecisionRequestChanges:
			if got.Status != catalog.ApprovalChangesRequested || api.State != catalog.StateDraft || api.StateReason != "changes requested: the docs are missing" {
				t.Errorf("Decide(request_changes) = request %s, API %s (%q); want changes_requested, draft (changes requested: …)", got.Status, api.State, api.StateReason)
			}
			// Back in draft, what the gateway serves may change again.
			if _, err := e.svc.UpdateAPI(ctx, e.provider, a.ID, catalog.APIPatch{HealthCheckPath: ptr("/ready")}); err != nil {
				t.Errorf("UpdateAPI(health path) after request_changes = %v; want nil", err)
			}
		}
		if got.DecisionReason != "the docs are missing" {
			t.Errorf("Decide(%s) reason = %q; want the docs are missing", d, got.DecisionReason)
		}
		if jobs := e.jobs(a.ID); len(jobs) != 0 {
			t.Errorf("jobs after Decide(%s) = %v; want none", d, jobs)
		}

		// The provider may submit again: a new request opens.
		again := e.submit(e.provider, a.ID, catalog.PriorityHigh)
		if again.ID == r.ID || again.Status != catalog.ApprovalPending || e.api(a.ID).State != catalog.StatePendingApproval {
			t.Errorf("Submit after Decide(%s) = %s (%s), API %s; want a new pending request", d, again.ID, again.Status, e.api(a.ID).State)
		}
	}
}

func TestDecideEscalate(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	a, r := e.pending("weather")

	steps := []struct {
		advance  time.Duration
		priority catalog.Priority
		level    int
		due      time.Duration // from start
	}{
		{2 * time.Hour, catalog.PriorityHigh, 1, 2*time.Hour + 24*time.Hour},
		{time.Hour, catalog.PriorityUrgent, 2, 3*time.Hour + 4*time.Hour},
		{time.Hour, catalog.PriorityUrgent, 3, 4*time.Hour + 4*time.Hour}, // urgent stays urgent
	}
	for _, s := range steps {
		e.clock.Advance(s.advance)
		got, err := e.svc.Decide(ctx, e.admin, r.ID, catalog.DecisionEscalate, "")
		if err != nil {
			t.Fatalf("Decide(escalate) = %v; want nil", err)
		}
		if got.Status != catalog.ApprovalEscalated || got.Priority != s.priority || got.EscalationLevel != s.level || !got.DueAt.Equal(start.Add(s.due)) {
			t.Errorf("Decide(escalate) at %s = %s, %s, level %d, due %s; want escalated, %s, level %d, due %s",
				e.clock.Now(), got.Status, got.Priority, got.EscalationLevel, got.DueAt, s.priority, s.level, start.Add(s.due))
		}
	}
	if got := e.api(a.ID).State; got != catalog.StatePendingApproval {
		t.Errorf("state after escalations = %s; want pending_approval", got)
	}
	if got, want := e.publishedTypes(r.ID), []string{"approval.submitted", "approval.escalated", "approval.escalated", "approval.escalated"}; !slices.Equal(got, want) {
		t.Errorf("published about the request = %v; want %v", got, want)
	}
	// An escalated request is still open.
	if got := e.decide(r.ID, catalog.DecisionApprove, ""); got.Status != catalog.ApprovalApproved {
		t.Errorf("Decide(approve) of an escalated request = %s; want approved", got.Status)
	}
}

func TestDecidePermissions(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	a, r := e.pending("weather")
	own := e.createAPI(e.admin, "platform-api") // an API of the admins' own organization
	ownReq := e.submit(e.admin, own.ID, catalog.PriorityNormal)
	orgAdmin := identity.Actor{Subject: "acme-admin", Role: identity.RoleAdmin, OrgID: e.org}

	tests := []struct {
		name  string
		actor identity.Actor
		id    uuid.UUID
		d     catalog.Decision
		want  error
	}{
		{"provider approves own", e.provider, r.ID, catalog.DecisionApprove, identity.ErrForbidden},
		{"other provider approves", e.otherProvider, r.ID, catalog.DecisionApprove, identity.ErrForbidden},
		{"consumer escalates", e.consumer, r.ID, catalog.DecisionEscalate, identity.ErrForbidden},
		{"admin of the organization approves", orgAdmin, r.ID, catalog.DecisionApprove, catalog.ErrSelfApproval},
		{"admin of the organization escalates", orgAdmin, r.ID, catalog.DecisionEscalate, catalog.ErrSelfApproval},
		{"admin approves the platform's own", e.admin, ownReq.ID, catalog.DecisionApprove, catalog.ErrSelfApproval},
		{"unknown request", e.admin, uuid.New(), catalog.DecisionApprove, catalog.ErrApprovalNotFound},
	}
	for _, tt := range tests {
		_, err := e.svc.Decide(ctx, tt.actor, tt.id, tt.d, "")
		wantErr(t, "Decide("+tt.name+")", err, tt.want)
	}
	_, err := e.svc.Decide(ctx, e.admin, r.ID, "maybe", "")
	wantFields(t, "Decide(maybe)", err, "action")
	_, err = e.svc.Decide(ctx, e.admin, r.ID, catalog.DecisionReject, strings.Repeat("x", 5001))
	wantFields(t, "Decide(reject, 5001 characters)", err, "reason")

	for _, id := range []uuid.UUID{r.ID, ownReq.ID} {
		got, err := e.svc.GetApproval(ctx, e.admin, id)
		if err != nil || got.Status != catalog.ApprovalPending || got.EscalationLevel != 0 || len(got.History) != 1 {
			t.Errorf("GetApproval(%s) after refused decisions = %s, level %d, %d events, %v; want pending, 0, 1", id, got.Status, got.EscalationLevel, len(got.History), err)
		}
	}
	for _, id := range []uuid.UUID{a.ID, own.ID} {
		if got := e.api(id).State; got != catalog.StatePendingApproval {
			t.Errorf("state of %s after refused decisions = %s; want pending_approval", id, got)
		}
	}
}

func TestComment(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	_, r := e.pending("weather")

	tests := []struct {
		actor identity.Actor
		text  string
		want  error
	}{
		{e.admin, "which regions?", nil},
		{e.provider, "  all of them  ", nil},
		{e.consumer, "me too", identity.ErrForbidden}, // reads the request, takes no part
		{e.otherProvider, "mine?", catalog.ErrApprovalNotFound},
		{identity.Actor{Subject: "globex-admin", Role: identity.RoleAdmin, OrgID: e.otherOrg}, "ok", nil},
	}
	var want []catalog.ApprovalEvent
	for _, tt := range tests {
		ev, err := e.svc.Comment(ctx, tt.actor, r.ID, tt.text)
		if !errors.Is(err, tt.want) {
			t.Errorf("Comment(%s, %q) = %v; want %v", tt.actor.Subject, tt.text, err, tt.want)
			continue
		}
		if err != nil {
			continue
		}
		if ev.Action != "comment" || ev.Actor != tt.actor.Subject || ev.Comment != strings.TrimSpace(tt.text) {
			t.Errorf("Comment(%s, %q) = %+v; want a comment by %s", tt.actor.Subject, tt.text, ev, tt.actor.Subject)
		}
		want = append(want, ev)
	}
	for _, text := range []string{"", "   ", strings.Repeat("x", 5001)} {
		_, err := e.svc.Comment(ctx, e.admin, r.ID, text)
		wantFields(t, "Comment(blank or too long)", err, "comment")
	}
	_, err := e.svc.Comment(ctx, e.admin, uuid.New(), "hello")
	wantErr(t, "Comment(unknown request)", err, catalog.ErrApprovalNotFound)

	got, err := e.svc.GetApproval(ctx, e.admin, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.History) != 1+len(want) || !slices.Equal(got.History[1:], want) {
		t.Errorf("history = %+v; want the submission then %+v", got.History, want)
	}
	if n := e.count(`SELECT count(*) FROM audit_log WHERE action = 'approval.comment' AND target_id = $1`, r.ID.String()); n != len(want) {
		t.Errorf("audited comments = %d; want %d", n, len(want))
	}
	if n := e.count(`SELECT count(*) FROM test_published WHERE event_type = 'approval.commented'`); n != len(want) {
		t.Errorf("published comments = %d; want %d", n, len(want))
	}
}

func TestGetApproval(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	_, r := e.pending("weather")
	if _, err := e.svc.Comment(ctx, e.provider, r.ID, "docs at /docs"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	e.decide(r.ID, catalog.DecisionEscalate, "needs security review")
	if _, err := e.svc.Comment(ctx, e.otherAdmin, r.ID, "reviewed"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	e.decide(r.ID, catalog.DecisionApprove, "fine")

	want := []struct{ action, actor, comment string }{
		{"submitted", "provider-1", "please review"},
		{"comment", "provider-1", "docs at /docs"},
		{"escalated", "admin-1", "needs security review"},
		{"comment", "admin-2", "reviewed"},
		{"approved", "admin-1", "fine"},
	}
	for _, actor := range []identity.Actor{e.admin, e.provider, e.consumer} {
		got, err := e.svc.GetApproval(ctx, actor, r.ID)
		if err != nil {
			t.Fatalf("GetApproval(%s) = %v; want nil", actor.Subject, err)
		}
		if len(got.History) != len(want) {
			t.Fatalf("GetApproval(%s) history = %+v; want %d events", actor.Subject, got.History, len(want))
		}
		for i, w := range want {
			h := got.History[i]
			if h.Action != w.action || h.Actor != w.actor || h.Comment != w.comment {
				t.Errorf("GetApproval(%s) history[%d] = %s by %s (%q); want %s by %s (%q)", actor.Subject, i, h.Action, h.Actor, h.Comment, w.action, w.actor, w.comment)
			}
			if i > 0 && h.CreatedAt.Before(got.History[i-1].CreatedAt) {
				t.Errorf("GetApproval(%s) history[%d] at %s is before history[%d]", actor.Subject, i, h.CreatedAt, i-1)
			}
		}
		if got.Status != catalog.ApprovalApproved || got.Priority != catalog.PriorityHigh || got.EscalationLevel != 1 ||
			got.DecidedAt == nil || !got.DecidedAt.Equal(start.Add(2*time.Hour)) || got.Overdue {
			t.Errorf("GetApproval(%s) = %s, %s, level %d, decided %v, overdue %v; want approved, high, 1, %s, false",
				actor.Subject, got.Status, got.Priority, got.EscalationLevel, got.DecidedAt, got.Overdue, start.Add(2*time.Hour))
		}
	}
	_, err := e.svc.GetApproval(ctx, e.otherProvider, r.ID)
	wantErr(t, "GetApproval by another organization", err, catalog.ErrApprovalNotFound)
	_, err = e.svc.GetApproval(ctx, e.admin, uuid.New())
	wantErr(t, "GetApproval(unknown)", err, catalog.ErrApprovalNotFound)
}

func TestListApprovalsFilters(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	open := e.request(e.provider, "acme-normal", catalog.PriorityNormal)
	late := e.request(e.provider, "acme-urgent", catalog.PriorityUrgent)
	rejected := e.request(e.otherProvider, "globex-low", catalog.PriorityLow)
	e.decide(rejected.ID, catalog.DecisionReject, "no")
	escalated := e.request(e.otherProvider, "globex-escalated", catalog.PriorityLow)
	e.decide(escalated.ID, catalog.DecisionEscalate, "") // low → normal, due in 72 h
	e.clock.Advance(5 * time.Hour)                       // only the urgent one is past due

	tests := []struct {
		name string
		f    catalog.ApprovalFilter
		want []uuid.UUID
	}{
		{"all", catalog.ApprovalFilter{}, []uuid.UUID{open.ID, late.ID, rejected.ID, escalated.ID}},
		{"pending", catalog.ApprovalFilter{Status: catalog.ApprovalPending}, []uuid.UUID{open.ID, late.ID}},
		{"escalated", catalog.ApprovalFilter{Status: catalog.ApprovalEscalated}, []uuid.UUID{escalated.ID}},
		{"rejected", catalog.ApprovalFilter{Status: catalog.ApprovalRejected}, []uuid.UUID{rejected.ID}},
		{"urgent", catalog.ApprovalFilter{Priority: catalog.PriorityUrgent}, []uuid.UUID{late.ID}},
		{"normal", catalog.ApprovalFilter{Priority: catalog.PriorityNormal}, []uuid.UUID{open.ID, escalated.ID}},
		{"globex", catalog.ApprovalFilter{OrganizationID: e.otherOrg}, []uuid.UUID{rejected.ID, escalated.ID}},
		{"one api", catalog.ApprovalFilter{APIID: open.APIID}, []uuid.UUID{open.ID}},
		{"overdue", catalog.ApprovalFilter{Overdue: true}, []uuid.UUID{late.ID}},
		{"acme pending normal", catalog.ApprovalFilter{OrganizationID: e.org, Status: catalog.ApprovalPending, Priority: catalog.PriorityNormal}, []uuid.UUID{open.ID}},
		{"nothing", catalog.ApprovalFilter{Status: catalog.ApprovalExpired}, nil},
	}
	for _, tt := range tests {
		got, next, err := e.svc.ListApprovals(ctx, e.admin, tt.f)
		if err != nil || next != "" {
			t.Errorf("ListApprovals(%s) = next %q, %v; want one page", tt.name, next, err)
			continue
		}
		if ids := approvalIDs(got); !sameSet(ids, tt.want) {
			t.Errorf("ListApprovals(%s) = %v; want %v", tt.name, ids, tt.want)
		}
		for _, r := range got {
			if r.Overdue != (r.ID == late.ID) {
				t.Errorf("ListApprovals(%s): %s overdue = %v; want %v", tt.name, r.ID, r.Overdue, r.ID == late.ID)
			}
		}
	}
	_, _, err := e.svc.ListApprovals(ctx, e.provider, catalog.ApprovalFilter{})
	wantErr(t, "ListApprovals by a provider", err, identity.ErrForbidden)
	_, _, err = e.svc.ListApprovals(ctx, e.admin, catalog.ApprovalFilter{After: "not-a-cursor"})
	wantErr(t, "ListApprovals(bad cursor)", err, pagination.ErrBadCursor)
}

// TestListApprovalsPages walks more than one page, with requests created
// at the same instant and at different ones, and a request added between
// pages: every request shows up exactly once, oldest first.
func TestListApprovalsPages(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	var all []catalog.Approval
	for i := range 8 {
		if i%3 == 0 {
			e.clock.Advance(time.Second)
		}
		a := e.createAPI(e.provider, "page-"+string(rune('a'+i)))
		all = append(all, e.submit(e.provider, a.ID, catalog.PriorityNormal))
	}
	var got []catalog.Approval
	after, pages := "", 0
	for {
		page, next, err := e.svc.ListApprovals(ctx, e.admin, catalog.ApprovalFilter{Limit: 3, After: after})
		if err != nil {
			t.Fatalf("ListApprovals(page %d) = %v; want nil", pages+1, err)
		}
		pages++
		got = append(got, page...)
		if pages == 1 {
			// Added while paging: it sorts last, so it appears on a later page.
			e.clock.Advance(time.Second)
			all = append(all, e.request(e.provider, "page-late", catalog.PriorityNormal))
		}
		if next == "" {
			break
		}
		if len(page) != 3 {
			t.Errorf("ListApprovals(page %d) = %d requests with a next cursor; want 3", pages, len(page))
		}
		after = next
	}
	if pages != 3 {
		t.Errorf("pages = %d; want 3 (9 requests by 3)", pages)
	}
	ids := approvalIDs(got)
	if !sameSet(ids, approvalIDs(all)) || len(ids) != len(all) {
		t.Errorf("ListApprovals over all pages = %v; want each of %v once", ids, approvalIDs(all))
	}
	for i := 1; i < len(got); i++ {
		p, c := got[i-1], got[i]
		if c.CreatedAt.Before(p.CreatedAt) || (c.CreatedAt.Equal(p.CreatedAt) && c.ID.String() <= p.ID.String()) {
			t.Errorf("ListApprovals[%d] = (%s, %s) after (%s, %s); want ascending (created_at, id)", i, c.CreatedAt, c.ID, p.CreatedAt, p.ID)
		}
	}
}

func TestDecideBulk(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	first := e.request(e.provider, "first", catalog.PriorityNormal)
	second := e.request(e.otherProvider, "second", catalog.PriorityLow)
	closed := e.request(e.provider, "closed", catalog.PriorityNormal)
	e.decide(closed.ID, catalog.DecisionReject, "no")
	own := e.request(e.admin, "own", catalog.PriorityNormal)
	missing := uuid.New()

	ids := []uuid.UUID{first.ID, closed.ID, missing, own.ID, second.ID}
	res, err := e.svc.DecideBulk(ctx, e.admin, ids, catalog.DecisionApprove, "batch")
	if err != nil || len(res) != len(ids) {
		t.Fatalf("DecideBulk = %d results, %v; want %d, nil", len(res), err, len(ids))
	}
	wantErrs := []error{nil, catalog.ErrApprovalClosed, catalog.ErrApprovalNotFound, catalog.ErrSelfApproval, nil}
	for i, r := range res {
		if r.ID != ids[i] || !errors.Is(r.Err, wantErrs[i]) || (r.Err == nil) != (r.Approval != nil) {
			t.Errorf("DecideBulk result[%d] = %s, %v, approval %v; want %s, %v", i, r.ID, r.Err, r.Approval != nil, ids[i], wantErrs[i])
		}
		if r.Approval != nil && r.Approval.Status != catalog.ApprovalApproved {
			t.Errorf("DecideBulk result[%d] status = %s; want approved", i, r.Approval.Status)
		}
	}
	for _, tt := range []struct {
		r     catalog.Approval
		state catalog.State
		jobs  int
	}{{first, catalog.StateApproved, 1}, {second, catalog.StateApproved, 1}, {closed, catalog.StateRejected, 0}, {own, catalog.StatePendingApproval, 0}} {
		if got := e.api(tt.r.APIID).State; got != tt.state {
			t.Errorf("state of %s after DecideBulk = %s; want %s", tt.r.APIName, got, tt.state)
		}
		if got := len(e.jobs(tt.r.APIID)); got != tt.jobs {
			t.Errorf("jobs of %s after DecideBulk = %d; want %d", tt.r.APIName, got, tt.jobs)
		}
	}

	_, err = e.svc.DecideBulk(ctx, e.provider, ids, catalog.DecisionApprove, "")
	wantErr(t, "DecideBulk by a provider", err, identity.ErrForbidden)
	_, err = e.svc.DecideBulk(ctx, e.admin, nil, catalog.DecisionApprove, "")
	wantFields(t, "DecideBulk(no ids)", err, "ids")
	_, err = e.svc.DecideBulk(ctx, e.admin, make([]uuid.UUID, 101), catalog.DecisionApprove, "")
	wantFields(t, "DecideBulk(101 ids)", err, "ids")
	res, err = e.svc.DecideBulk(ctx, e.admin, []uuid.UUID{own.ID}, catalog.DecisionReject, "")
	if err != nil || len(res) != 1 {
		t.Fatalf("DecideBulk(reject without reason) = %v, %v; want one result", res, err)
	}
	wantFields(t, "DecideBulk(reject without reason) result", res[0].Err, "reason")
}

func TestApprovalStats(t *testing.T) {
	e := setup(t)
	ctx := t.Context()

	st, err := e.svc.ApprovalStats(ctx, e.admin)
	if err != nil {
		t.Fatal(err)
	}
	if st.MedianDecisionSeconds != nil || st.Overdue != 0 || st.SLABreaches != 0 || len(st.OpenByPriority) != 4 || st.OpenByPriority[catalog.PriorityUrgent] != 0 {
		t.Errorf("ApprovalStats(empty) = %+v; want zeros for the 4 priorities and no median", st)
	}
	_, err = e.svc.ApprovalStats(ctx, e.provider)
	wantErr(t, "ApprovalStats by a provider", err, identity.ErrForbidden)

	req := func(slug string, p catalog.Priority) catalog.Approval {
		return e.request(e.provider, slug, p)
	}
	// All submitted at start.
	r1 := req("r1", catalog.PriorityNormal)
	r2 := req("r2", catalog.PriorityUrgent) // due +4 h, decided at +5 h: after its due time
	r3 := req("r3", catalog.PriorityLow)
	r4 := req("r4", catalog.PriorityHigh)
	req("r5", catalog.PriorityUrgent) // open, due +4 h: overdue at the end
	req("r6", catalog.PriorityNormal) // open, due +72 h
	r7 := req("r7", catalog.PriorityLow)

	e.clock.Advance(time.Hour)
	e.decide(r1.ID, catalog.DecisionApprove, "")  // 3600 s
	e.decide(r7.ID, catalog.DecisionEscalate, "") // low → normal, due +73 h; not a decision
	e.clock.Advance(4 * time.Hour)
	e.decide(r2.ID, catalog.DecisionReject, "no") // 18000 s
	e.clock.Advance(5 * time.Hour)
	e.decide(r3.ID, catalog.DecisionRequestChanges, "more") // 36000 s
	e.clock.Advance(10 * time.Hour)
	e.decide(r4.ID, catalog.DecisionApprove, "") // 72000 s, before its due time (+24 h)

	st, err = e.svc.ApprovalStats(ctx, e.admin)
	if err != nil {
		t.Fatal(err)
	}
	wantOpen := map[catalog.Priority]int{catalog.PriorityLow: 0, catalog.PriorityNormal: 2, catalog.PriorityHigh: 0, catalog.PriorityUrgent: 1}
	if !maps.Equal(st.OpenByPriority, wantOpen) {
		t.Errorf("ApprovalStats().OpenByPriority = %v; want %v", st.OpenByPriority, wantOpen)
	}
	wantStatus := map[catalog.ApprovalStatus]int{catalog.ApprovalApproved: 2, catalog.ApprovalRejected: 1, catalog.ApprovalChangesRequested: 1,
		catalog.ApprovalPending: 2, catalog.ApprovalEscalated: 1}
	if !maps.Equal(st.ByStatus, wantStatus) {
		t.Errorf("ApprovalStats().ByStatus = %v; want %v", st.ByStatus, wantStatus)
	}
	// The median of 3600, 18000, 36000 and 72000 s.
	if st.MedianDecisionSeconds == nil || *st.MedianDecisionSeconds != 27000 {
		t.Errorf("ApprovalStats().MedianDecisionSeconds = %v; want 27000", deref(st.MedianDecisionSeconds))
	}
	if st.Overdue != 1 || st.DecidedAfterDue != 1 || st.SLABreaches != 2 {
		t.Errorf("ApprovalStats() overdue, decided after due, breaches = %d, %d, %d; want 1, 1, 2", st.Overdue, st.DecidedAfterDue, st.SLABreaches)
	}
}

func TestSweepOverdue(t *testing.T) {
	e := setup(t, func(c *catalog.Config) { c.MaxEscalations = 2 })
	ctx := t.Context()
	a, r := e.pending("slow") // due +72 h
	b := e.createAPI(e.provider, "patient")
	calm := e.submit(e.provider, b.ID, catalog.PriorityLow) // due +7 days

	steps := []struct {
		at       time.Duration // from start
		rep      catalog.SweepReport
		status   catalog.ApprovalStatus
		priority catalog.Priority
		level    int
		due      time.Duration // from start
	}{
		{71 * time.Hour, catalog.SweepReport{}, catalog.ApprovalPending, catalog.PriorityNormal, 0, 72 * time.Hour},
		{73 * time.Hour, catalog.SweepReport{Escalated: 1}, catalog.ApprovalEscalated, catalog.PriorityHigh, 1, 97 * time.Hour},
		{73 * time.Hour, catalog.SweepReport{}, catalog.ApprovalEscalated, catalog.PriorityHigh, 1, 97 * time.Hour},
		{98 * time.Hour, catalog.SweepReport{Escalated: 1}, catalog.ApprovalEscalated, catalog.PriorityUrgent, 2, 102 * time.Hour},
		{103 * time.Hour, catalog.SweepReport{Expired: 1}, catalog.ApprovalExpired, catalog.PriorityUrgent, 2, 102 * time.Hour},
		{200 * time.Hour, catalog.SweepReport{Escalated: 1}, catalog.ApprovalExpired, catalog.PriorityUrgent, 2, 102 * time.Hour},
	}
	for _, s := range steps {
		e.clock.Advance(start.Add(s.at).Sub(e.clock.Now()))
		rep, err := e.svc.SweepOverdue(ctx)
		if err != nil || rep != s.rep {
			t.Errorf("SweepOverdue() at +%s = %+v, %v; want %+v", s.at, rep, err, s.rep)
		}
		got, err := e.svc.GetApproval(ctx, e.admin, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != s.status || got.Priority != s.priority || got.EscalationLevel != s.level || !got.DueAt.Equal(start.Add(s.due)) {
			t.Errorf("request after SweepOverdue() at +%s = %s, %s, level %d, due %s; want %s, %s, level %d, due %s",
				s.at, got.Status, got.Priority, got.EscalationLevel, got.DueAt, s.status, s.priority, s.level, start.Add(s.due))
		}
		if s.at < 168*time.Hour {
			if c, _ := e.svc.GetApproval(ctx, e.admin, calm.ID); c.Status != catalog.ApprovalPending || c.EscalationLevel != 0 {
				t.Errorf("not-yet-due request after SweepOverdue() at +%s = %s, level %d; want pending, 0", s.at, c.Status, c.EscalationLevel)
			}
		}
	}

	const reason = "approval request expired without a decision"
	got, err := e.svc.GetApproval(ctx, e.admin, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.DecidedAt == nil || !got.DecidedAt.Equal(start.Add(103*time.Hour)) || got.DecisionReason != reason {
		t.Errorf("expired request decided %v for %q; want at %s for %q", got.DecidedAt, got.DecisionReason, start.Add(103*time.Hour), reason)
	}
	var actions []string
	for _, h := range got.History {
		actions = append(actions, h.Action+"/"+h.Actor)
	}
	if want := []string{"submitted/provider-1", "escalated/system", "escalated/system", "expired/system"}; !slices.Equal(actions, want) {
		t.Errorf("history of the expired request = %v; want %v", actions, want)
	}
	api := e.api(a.ID)
	if api.State != catalog.StateRejected || api.StateReason != reason {
		t.Errorf("API of the expired request = %s (%q); want rejected (%s)", api.State, api.StateReason, reason)
	}
	trs := e.transitions(a.ID)
	if last := trs[len(trs)-1]; last != (transition{"pending_approval", "rejected", "system", reason}) {
		t.Errorf("last transition = %v; want pending_approval → rejected by system", last)
	}
	if got, want := e.publishedTypes(r.ID), []string{"approval.submitted", "approval.escalated", "approval.escalated", "approval.expired"}; !slices.Equal(got, want) {
		t.Errorf("published about the request = %v; want %v", got, want)
	}
	// The last sweep escalated the other request once it was due.
	if c, _ := e.svc.GetApproval(ctx, e.admin, calm.ID); c.Status != catalog.ApprovalEscalated || c.Priority != catalog.PriorityNormal {
		t.Errorf("other request after its due time = %s, %s; want escalated, normal", c.Status, c.Priority)
	}
	// A rejected API may be submitted again.
	if again := e.submit(e.provider, a.ID, catalog.PriorityNormal); again.Status != catalog.ApprovalPending {
		t.Errorf("Submit after expiry = %s; want pending", again.Status)
	}
}

func approvalIDs(rs []catalog.Approval) []uuid.UUID {
	var out []uuid.UUID
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func sameSet(a, b []uuid.UUID) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[uuid.UUID]int{}
	for _, id := range a {
		seen[id]++
	}
	for _, id := range b {
		if seen[id] != 1 {
			return false
		}
	}
	return true
}

func deref(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}
