package webhooks

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/internal/testenv"
)

func TestDeliveredOnlyWhenCommitted(t *testing.T) {
	e := setup(t, nil)
	e.start()
	r := newReceiver(t)
	ep, secret := e.createEndpoint(e.org, r.srv.URL, "*")
	r.setSecret(secret)
	ctx := t.Context()

	errRollback := errors.New("business change refused")
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if err := e.svc.Publish(ctx, tx, e.org, EventAPIDeleted, map[string]string{"id": "rolled-back"}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("rolled-back tx = %v; want %v", err, errRollback)
	}
	e.publish(e.org, EventAPICreated)

	testenv.Deadline(t, 10*time.Second, func() error {
		if got := r.received(); len(got) != 1 {
			return fmt.Errorf("receiver got %d deliveries (rejected %v); want 1", len(got), r.rejected())
		}
		return nil
	})
	if got := r.received(); got[0].Type != EventAPICreated {
		t.Errorf("delivered type = %s; want %s", got[0].Type, EventAPICreated)
	}
	// The rolled-back event left neither a delivery nor a job behind, so
	// nothing can send it later.
	if ds := e.deliveries(ep.ID); len(ds) != 1 || ds[0].EventType != EventAPICreated {
		t.Errorf("deliveries = %+v; want only the committed api.created", ds)
	}
	var jobs int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'webhook_delivery'`).Scan(&jobs); err != nil || jobs != 1 {
		t.Errorf("delivery jobs = %d, %v; want 1", jobs, err)
	}
	d := e.waitStatus(e.org, e.deliveries(ep.ID)[0].ID, StatusSucceeded)
	if d.DeliveredAt == nil || d.Attempts != 1 || d.LastStatusCode == nil || *d.LastStatusCode != http.StatusNoContent {
		t.Errorf("delivery = %+v; want delivered on the first attempt with 204", d)
	}
	if rej := r.rejected(); len(rej) != 0 {
		t.Errorf("receiver rejected %v", rej)
	}
}

func TestPublishFiltersByType(t *testing.T) {
	e := setup(t, nil)
	created, _ := e.createEndpoint(e.org, "https://hooks.example.com/created", EventAPICreated)
	all, _ := e.createEndpoint(e.org, "https://hooks.example.com/all", EventAll)
	approvals, _ := e.createEndpoint(e.org, "https://hooks.example.com/approvals", EventApprovalDecided, EventAPIDeleted)
	off := false
	disabled, _, err := e.svc.CreateEndpoint(t.Context(), member(e.org), EndpointInput{URL: "https://hooks.example.com/off", EventTypes: []string{"*"}, Enabled: &off})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := e.createEndpoint(e.otherOrg, "https://hooks.example.com/other", EventAll)

	e.publish(e.org, EventAPICreated, EventApprovalDecided)

	types := func(id uuid.UUID) []string {
		var out []string
		for _, d := range e.deliveries(id) {
			out = append(out, d.EventType)
		}
		// One transaction stamps its deliveries with one created_at.
		slices.Sort(out)
		return out
	}
	tests := []struct {
		name string
		id   uuid.UUID
		want []string
	}{
		{"api.created only", created.ID, []string{EventAPICreated}},
		{"*", all.ID, []string{EventAPICreated, EventApprovalDecided}},
		{"approval.decided and api.deleted", approvals.ID, []string{EventApprovalDecided}},
		{"disabled", disabled.ID, nil},
		{"other organization", other.ID, nil},
	}
	for _, tt := range tests {
		if got := types(tt.id); !slices.Equal(got, tt.want) {
			t.Errorf("deliveries to %s endpoint = %v; want %v", tt.name, got, tt.want)
		}
	}
	// One event is one message: every endpoint sees the same webhook-id.
	byType := func(id uuid.UUID, typ string) Delivery {
		i := slices.IndexFunc(e.deliveries(id), func(d Delivery) bool { return d.EventType == typ })
		return e.deliveries(id)[i]
	}
	if a, b := byType(created.ID, EventAPICreated), byType(all.ID, EventAPICreated); a.MessageID != b.MessageID || a.ID == b.ID {
		t.Errorf("api.created message ids = %s and %s; want one message in two deliveries", a.MessageID, b.MessageID)
	}
	if err := pgx.BeginFunc(t.Context(), e.pool, func(tx pgx.Tx) error {
		return e.svc.Publish(t.Context(), tx, e.org, "api.exploded", map[string]any{})
	}); !errors.Is(err, ErrUnknownEventType) {
		t.Errorf("Publish(api.exploded) = %v; want ErrUnknownEventType", err)
	}
}

func TestRetriesUntilSuccess(t *testing.T) {
	e := setup(t, nil)
	e.start()
	r := newReceiver(t)
	r.answer(http.StatusOK, http.StatusInternalServerError, http.StatusBadGateway, http.StatusTooManyRequests)
	ep, secret := e.createEndpoint(e.org, r.srv.URL, EventAPIActivated)
	r.setSecret(secret)
	e.publish(e.org, EventAPIActivated)

	d := e.waitStatus(e.org, e.deliveries(ep.ID)[0].ID, StatusSucceeded)
	var codes []int
	for _, a := range d.History {
		if a.StatusCode == nil {
			t.Fatalf("attempt %+v has no status code", a)
		}
		codes = append(codes, *a.StatusCode)
	}
	if want := []int{500, 502, 429, 200}; d.Attempts != 4 || !slices.Equal(codes, want) {
		t.Errorf("delivery attempts = %d with codes %v; want 4 with %v", d.Attempts, codes, want)
	}
	if d.History[0].Error != "status 500 Internal Server Error" || d.LastError != "" {
		t.Errorf("attempt errors = %q … last %q; want the status of the failures and none at the end", d.History[0].Error, d.LastError)
	}
	got := r.received()
	if len(got) != 4 {
		t.Fatalf("receiver got %d requests (rejected %v); want 4", len(got), r.rejected())
	}
	for i, g := range got {
		if g.ID != d.MessageID || string(g.Body) != string(got[0].Body) {
			t.Errorf("attempt %d: webhook-id %s, body %s; want %s and the body of the first", i+1, g.ID, g.Body, d.MessageID)
		}
	}
	if n := e.metrics.GetOrCreateCounter(`veil_controlplane_webhook_attempts_total{result="failure"}`).Get(); n != 3 {
		t.Errorf("failed attempts metric = %d; want 3", n)
	}
}

func TestFailsAfterMaxAttemptsThenRedelivers(t *testing.T) {
	e := setup(t, func(c *Config) { c.MaxAttempts = 3 })
	e.start()
	r := newReceiver(t)
	r.answer(http.StatusNoContent, 503, 503, 503)
	ep, secret := e.createEndpoint(e.org, r.srv.URL, "*")
	r.setSecret(secret)
	e.publish(e.org, EventApprovalExpired)

	id := e.deliveries(ep.ID)[0].ID
	d := e.waitStatus(e.org, id, StatusFailed)
	if d.Attempts != 3 || len(d.History) != 3 || d.DeliveredAt != nil || d.LastError != "status 503 Service Unavailable" {
		t.Errorf("failed delivery = %+v; want 3 attempts, the last answered 503", d)
	}
	// The job ended in the transaction that marked the delivery failed,
	// rather than being retried or discarded.
	var state string
	if err := e.pool.QueryRow(t.Context(), `SELECT state::text FROM river_job WHERE kind = 'webhook_delivery'`).Scan(&state); err != nil || state != "completed" {
		t.Errorf("job state once the delivery failed = %q, %v; want completed", state, err)
	}

	// The receiver is fixed: a manual redelivery sends the same message.
	re, err := e.svc.Redeliver(t.Context(), member(e.org), id)
	if err != nil || re.Status != StatusPending {
		t.Fatalf("Redeliver() = %+v, %v; want it pending", re, err)
	}
	d = e.waitStatus(e.org, id, StatusSucceeded)
	if d.Attempts != 4 || d.DeliveredAt == nil {
		t.Errorf("redelivered = %+v; want succeeded on the fourth attempt overall", d)
	}
	got := r.received()
	if len(got) != 4 || got[3].ID != got[0].ID || got[0].ID != d.MessageID {
		t.Errorf("receiver got %d requests with ids %v; want 4 with message id %s", len(got), got, d.MessageID)
	}

	// The redelivery had a job of its own.
	testenv.Deadline(t, 10*time.Second, func() error {
		rows, _ := e.pool.Query(t.Context(), `SELECT state::text FROM river_job WHERE kind = 'webhook_delivery' ORDER BY id`)
		states, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if !slices.Equal(states, []string{"completed", "completed"}) {
			return fmt.Errorf("job states %v; want both completed", states)
		}
		return nil
	})

	ds, next, err := e.svc.ListDeliveries(t.Context(), e.org, ep.ID, "", 10)
	if err != nil || len(ds) != 1 || ds[0].ID != id || next != "" || ds[0].History != nil {
		t.Errorf("ListDeliveries() = %+v, %q, %v; want the one delivery without history", ds, next, err)
	}
}

func TestWorkerEndsOnDisabledOrDeletedEndpoint(t *testing.T) {
	e := setup(t, nil)
	r := newReceiver(t)
	keep, _ := e.createEndpoint(e.org, r.srv.URL, "*")
	gone, _ := e.createEndpoint(e.org, r.srv.URL, "*")
	e.publish(e.org, EventAPIFailed)
	kept, deleted := e.deliveries(keep.ID)[0], e.deliveries(gone.ID)[0]

	off := false
	if _, err := e.svc.UpdateEndpoint(t.Context(), member(e.org), keep.ID, EndpointPatch{Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteEndpoint(t.Context(), member(e.org), gone.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.work(kept.ID, 1, 5); err != nil {
		t.Errorf("Work(disabled endpoint) = %v; want nil", err)
	}
	if err := e.work(deleted.ID, 1, 5); err != nil {
		t.Errorf("Work(deleted endpoint) = %v; want nil", err)
	}
	d, err := e.svc.GetDelivery(t.Context(), e.org, kept.ID)
	if err != nil || d.Status != StatusFailed || d.LastError != "endpoint disabled" || d.Attempts != 0 {
		t.Errorf("delivery to disabled endpoint = %+v, %v; want failed, endpoint disabled, no attempt", d, err)
	}
	if n := len(r.received()) + len(r.rejected()); n != 0 {
		t.Errorf("receiver got %d requests; want 0", n)
	}
}

func TestWorkerAnswers(t *testing.T) {
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("redirect followed")
	}))
	t.Cleanup(moved.Close)
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		now      func() time.Time
		attempt  int
		wantErr  bool
		status   DeliveryStatus
		lastErr  string
		disabled bool
	}{
		{
			name:    "redirect is a failure",
			handler: func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, moved.URL, http.StatusFound) },
			attempt: 1, wantErr: true, status: StatusPending, lastErr: "status 302: redirect to",
		},
		{
			name: "redirect on the last attempt fails the delivery",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, moved.URL, http.StatusMovedPermanently)
			},
			attempt: 5, status: StatusFailed, lastErr: "status 301: redirect to",
		},
		{
			name:    "410 disables the endpoint",
			handler: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) },
			attempt: 1, status: StatusFailed, lastErr: "status 410 Gone; endpoint disabled", disabled: true,
		},
		{
			name: "large answer read in part",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
			},
			attempt: 1, status: StatusSucceeded,
		},
		{
			// The receiver's verifier holds webhook-timestamp to five
			// minutes of its clock: an attempt stamped ten minutes ago is
			// refused.
			name:    "stale timestamp refused by the receiver",
			now:     func() time.Time { return time.Now().Add(-10 * time.Minute) },
			attempt: 1, wantErr: true, status: StatusPending, lastErr: "status 401 Unauthorized",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, func(c *Config) { c.Now = tt.now })
			r := newReceiver(t)
			ep, secret := e.createEndpoint(e.org, r.srv.URL, "*")
			r.setSecret(secret)
			if tt.handler != nil {
				// The receiver still checks the request; the handler answers.
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					r.serve(httptest.NewRecorder(), req.Clone(req.Context()))
					tt.handler(w, req)
				}))
				t.Cleanup(srv.Close)
				u := srv.URL
				if _, err := e.svc.UpdateEndpoint(t.Context(), member(e.org), ep.ID, EndpointPatch{URL: &u}); err != nil {
					t.Fatal(err)
				}
			}
			e.publish(e.org, EventAPIStateChanged)
			id := e.deliveries(ep.ID)[0].ID

			err := e.work(id, tt.attempt, 5)
			if (err != nil) != tt.wantErr {
				t.Errorf("Work() = %v; want error %v", err, tt.wantErr)
			}
			d, err := e.svc.GetDelivery(t.Context(), e.org, id)
			if err != nil {
				t.Fatal(err)
			}
			if d.Status != tt.status || !strings.HasPrefix(d.LastError, tt.lastErr) || len(d.History) != 1 {
				t.Errorf("delivery = status %s, last error %q, %d attempts; want %s, %q…, 1", d.Status, d.LastError, len(d.History), tt.status, tt.lastErr)
			}
			if rej := r.rejected(); tt.now == nil && len(rej) != 0 {
				t.Errorf("receiver rejected %v", rej)
			}
			got, err := e.svc.GetEndpoint(t.Context(), e.org, ep.ID)
			if err != nil || got.Enabled == tt.disabled {
				t.Errorf("endpoint enabled = %v, %v; want %v", got.Enabled, err, !tt.disabled)
			}
		})
	}
}

func TestRedeliverPendingKeepsItsJob(t *testing.T) {
	e := setup(t, nil)
	ep, _ := e.createEndpoint(e.org, "https://hooks.example.com/", "*")
	e.publish(e.org, EventApprovalSubmitted)
	d := e.deliveries(ep.ID)[0]
	for range 2 {
		if got, err := e.svc.Redeliver(t.Context(), member(e.org), d.ID); err != nil || got.Status != StatusPending || got.MessageID != d.MessageID {
			t.Fatalf("Redeliver(pending) = %+v, %v; want it pending with message id %s", got, err, d.MessageID)
		}
	}
	var jobs int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM river_job WHERE kind = 'webhook_delivery'`).Scan(&jobs); err != nil || jobs != 1 {
		t.Errorf("jobs after redelivering a pending delivery = %d, %v; want 1", jobs, err)
	}
}
