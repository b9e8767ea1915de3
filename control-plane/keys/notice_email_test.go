package keys_test

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/subscriptions/subscriptionstest"
)

// fakeMailer answers every Send with err, or, when block is set, waits
// until the send's context ends or the test does, as a black-holed mail
// server would.
type fakeMailer struct {
	block   chan struct{}
	mu      sync.Mutex
	err     error
	sent    []notify.Message
	attempt int
}

func blockingMailer(t *testing.T) *fakeMailer {
	m := &fakeMailer{block: make(chan struct{})}
	t.Cleanup(func() { close(m.block) })
	return m
}

func (m *fakeMailer) Send(ctx context.Context, msg notify.Message) error {
	m.mu.Lock()
	m.attempt++
	err, block := m.err, m.block
	if err == nil && block == nil {
		m.sent = append(m.sent, msg)
	}
	m.mu.Unlock()
	if block != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-block:
			return errors.New("mail server went away")
		}
	}
	return err
}

func (m *fakeMailer) set(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

func (m *fakeMailer) attempts() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attempt
}

// TestBlackHoledMailerDoesNotHoldUpMaintenance: with a mail server that
// never answers, maintenance only queues the emails, so it still reaches
// automatic rotation; the email job's attempt ends with its context and is
// left for River to retry.
func TestBlackHoledMailerDoesNotHoldUpMaintenance(t *testing.T) {
	mailer := blockingMailer(t)
	f := subscriptionstest.Setup(t, func(c *subscriptions.Config) { c.Mailer = mailer })
	k := f.Key(keys.Settings{AutoRotate: true, RotateEveryDays: 30}, true)
	due := f.Get(k.ID).CreatedAt.AddDate(0, 0, 30)

	// A maintenance run that waited on the mailer would fail with its
	// context rather than hang the test.
	maintain := func() subscriptions.MaintenanceReport {
		t.Helper()
		ctx, cancel := context.WithTimeout(f.Ctx, 20*time.Second)
		defer cancel()
		rep, err := f.Svc.RunMaintenance(ctx)
		if err != nil || len(rep.Errors) > 0 {
			t.Fatalf("RunMaintenance = %+v, %v; want no errors", rep, err)
		}
		return rep
	}
	f.Clock.Set(due.Add(-6 * 24 * time.Hour))
	if rep := maintain(); rep.Notices != 2 || rep.Rotated != 0 {
		t.Fatalf("maintenance 6 days before = %+v; want 2 notices (webhook and email queued), none rotated", rep)
	}
	f.Clock.Set(due.Add(time.Minute))
	if rep := maintain(); rep.Rotated != 1 || rep.Notices != 1 {
		t.Fatalf("maintenance when due = %+v; want 1 rotated, 1 notice (the email queued)", rep)
	}
	if got := mailer.attempts(); got != 0 {
		t.Fatalf("mailer sends during maintenance = %d; want 0", got)
	}

	jobs := f.EmailJobs(rivertype.JobStateAvailable)
	if len(jobs) != 2 || jobs[0].Args.Notice != "rotation_before" || jobs[1].Args.Notice != "rotation_after" {
		t.Fatalf("queued emails = %+v; want rotation_before then rotation_after", jobs)
	}
	for _, j := range jobs {
		if j.Row.MaxAttempts != 10 || j.Args.KeyID != k.ID {
			t.Errorf("email job %s = %d max attempts for key %s; want 10 for %s", j.Args.Notice, j.Row.MaxAttempts, j.Args.KeyID, k.ID)
		}
		if strings.Contains(string(j.Row.EncodedArgs), k.Plaintext) {
			t.Errorf("email job %s args hold the plaintext key", j.Args.Notice)
		}
	}

	errorsBefore := f.NoticeCount("error")
	ctx, cancel := context.WithTimeout(f.Ctx, 50*time.Millisecond)
	defer cancel()
	err := f.Work(ctx, jobs[0])
	var jobCancel *river.JobCancelError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &jobCancel) {
		t.Fatalf("KeyNoticeEmailWorker.Work() with a black-holed mailer = %v; want the deadline, for River to retry", err)
	}
	if got := f.NoticeCount("error") - errorsBefore; got != 1 {
		t.Errorf("key notice errors = %d more; want 1 more", got)
	}
	if got := len(f.EmailJobs(rivertype.JobStateRetryable)); got != 1 {
		t.Errorf("retryable email jobs = %d; want 1", got)
	}
}

// TestKeyNoticeEmailWorkerOutcomes: a send that succeeds counts as sent;
// a refusal for good cancels the job; any other failure is returned for
// River to retry; a key that is gone or a subscriber without an address
// gets nothing.
func TestKeyNoticeEmailWorkerOutcomes(t *testing.T) {
	mailer := &fakeMailer{}
	f := subscriptionstest.Setup(t, func(c *subscriptions.Config) { c.Mailer = mailer })
	k := f.Key(keys.Settings{Name: "billing"}, true)
	invalidAddress := func() {
		if _, err := f.Pool.Exec(f.Ctx, `UPDATE users SET email = 'nobody@consumer-user.invalid' WHERE subject = $1`,
			f.Consumer.Subject); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name string
		// prepare, when set, runs before the job.
		prepare func()
		keyID   uuid.UUID
		err     error
		// wantState is the job's state after the attempt, wantResult
		// the veil_controlplane_key_notices_total result counted ("" for
		// none) and wantSent whether the message reached the mailer.
		wantState  rivertype.JobState
		wantResult string
		wantSent   bool
	}{
		{name: "sent", keyID: k.ID, wantState: rivertype.JobStateCompleted, wantResult: "sent", wantSent: true},
		{name: "mailbox unavailable", keyID: k.ID, err: &textproto.Error{Code: 550, Msg: "5.1.1 mailbox unavailable"},
			wantState: rivertype.JobStateCancelled, wantResult: "refused"},
		{name: "refused wrapped by the mailer", keyID: k.ID, err: fmt.Errorf("send email via smtp:25: %w", &textproto.Error{Code: 554, Msg: "rejected"}),
			wantState: rivertype.JobStateCancelled, wantResult: "refused"},
		{name: "invalid address", keyID: k.ID, err: fmt.Errorf("send email: %w", notify.ErrInvalidAddress),
			wantState: rivertype.JobStateCancelled, wantResult: "refused"},
		{name: "greylisted", keyID: k.ID, err: &textproto.Error{Code: 451, Msg: "4.7.1 try again later"},
			wantState: rivertype.JobStateRetryable, wantResult: "error"},
		{name: "server down", keyID: k.ID, err: errors.New("send email via smtp:25: dial tcp: connection refused"),
			wantState: rivertype.JobStateRetryable, wantResult: "error"},
		{name: "key deleted", keyID: uuid.New(), wantState: rivertype.JobStateCompleted},
		{name: "no address", prepare: invalidAddress, keyID: k.ID, wantState: rivertype.JobStateCompleted},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.prepare != nil {
				tt.prepare()
			}
			mailer.set(tt.err)
			eventAt := f.Clock.Now().Add(time.Duration(i) * time.Hour).UTC()
			args := keys.KeyNoticeEmailArgs{KeyID: tt.keyID, Notice: "expiry_7d", EventAt: eventAt,
				Subject: "Your API key " + k.Masked + " expires in 7 day(s)", Text: "The API key " + k.Masked + " expires.\n"}
			res, err := f.Jobs.Insert(f.Ctx, args, &river.InsertOpts{MaxAttempts: 10})
			if err != nil {
				t.Fatal(err)
			}
			before := map[string]uint64{}
			for _, r := range []string{"sent", "refused", "error"} {
				before[r] = f.NoticeCount(r)
			}
			attempts, sent := mailer.attempts(), len(mailer.sent)

			err = f.Work(f.Ctx, f.Job(res.Job.ID))
			var jobCancel *river.JobCancelError
			if tt.err != nil && !errors.Is(err, tt.err) || tt.err == nil && err != nil ||
				errors.As(err, &jobCancel) != (tt.wantState == rivertype.JobStateCancelled) {
				t.Errorf("KeyNoticeEmailWorker.Work() = %v; want %v, cancelling the job %t", err, tt.err, tt.wantState == rivertype.JobStateCancelled)
			}
			if got := f.Job(res.Job.ID).Row.State; got != tt.wantState {
				t.Errorf("job state = %s; want %s", got, tt.wantState)
			}
			for _, r := range []string{"sent", "refused", "error"} {
				want := uint64(0)
				if r == tt.wantResult {
					want = 1
				}
				if got := f.NoticeCount(r) - before[r]; got != want {
					t.Errorf("key notices %s = %d more; want %d more", r, got, want)
				}
			}
			wantAttempts := 1
			if tt.wantResult == "" {
				wantAttempts = 0
			}
			if got := mailer.attempts() - attempts; got != wantAttempts {
				t.Errorf("mailer sends = %d; want %d", got, wantAttempts)
			}
			if !tt.wantSent {
				return
			}
			if len(mailer.sent) != sent+1 {
				t.Fatalf("messages sent = %d; want 1", len(mailer.sent)-sent)
			}
			m := mailer.sent[sent]
			wantHeaders := map[string]string{
				"X-Veil-Notice": "expiry_7d", "X-Veil-Key-Id": k.ID.String(),
				"Message-ID": fmt.Sprintf("<key-%s-expiry_7d-%d@notice.veil>", k.ID, eventAt.Unix()),
			}
			if len(m.To) != 1 || m.To[0] != f.Email || m.Subject != args.Subject || m.Text != args.Text {
				t.Errorf("message = to %v, %q / %q; want to %s, the job's subject and text", m.To, m.Subject, m.Text, f.Email)
			}
			for h, want := range wantHeaders {
				if got := m.Headers[h]; got != want {
					t.Errorf("message header %s = %q; want %q", h, got, want)
				}
			}
		})
	}
}

// TestNoticeWithoutAddressQueuesNothing: a subscriber without an address
// has no email claimed or queued; the webhook still goes.
func TestNoticeWithoutAddressQueuesNothing(t *testing.T) {
	f := subscriptionstest.Setup(t)
	if _, err := f.Pool.Exec(f.Ctx, `UPDATE users SET email = 'nobody@consumer-user.invalid' WHERE subject = $1`,
		f.Consumer.Subject); err != nil {
		t.Fatal(err)
	}
	expires := f.Clock.Now().Add(5 * 24 * time.Hour)
	k := f.Key(keys.Settings{ExpiresAt: &expires}, true)
	if rep := f.Maintain(); rep.Notices != 1 {
		t.Fatalf("maintenance = %+v; want 1 notice (the webhook)", rep)
	}
	if got := len(f.EmailJobs(rivertype.JobStateAvailable)); got != 0 {
		t.Errorf("email jobs = %d; want 0", got)
	}
	var claimed int
	if err := f.Pool.QueryRow(f.Ctx, `SELECT count(*) FROM key_notices WHERE key_id = $1 AND channel = 'email'`, k.ID).Scan(&claimed); err != nil {
		t.Fatal(err)
	}
	if claimed != 0 {
		t.Errorf("email notices claimed = %d; want 0", claimed)
	}
}
