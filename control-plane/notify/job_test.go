package notify_test

import (
	"context"
	"errors"
	"testing"

	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/notify"
)

type stubMailer struct{ err error }

func (m stubMailer) Send(context.Context, notify.Message) error { return m.err }

// TestSendJob: a sent email completes the job, a refusal for good cancels
// it, any other failure is returned for a retry.
func TestSendJob(t *testing.T) {
	down := errors.New("dial tcp: connection refused")
	for _, tc := range []struct {
		name       string
		err        error
		result     string
		cancel, ok bool
	}{
		{"sent", nil, notify.ResultSent, false, true},
		{"refused", notify.ErrNoRecipients, notify.ResultRefused, true, false},
		{"down", down, notify.ResultFailed, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			result, err := notify.SendJob(t.Context(), stubMailer{tc.err}, notify.Message{})
			if result != tc.result || (err == nil) != tc.ok {
				t.Fatalf("notify.SendJob = %s, %v; want %s, error %t", result, err, tc.result, !tc.ok)
			}
			var cancel *river.JobCancelError
			if errors.As(err, &cancel) != tc.cancel {
				t.Errorf("notify.SendJob error %v cancels the job: %t; want %t", err, !tc.cancel, tc.cancel)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("notify.SendJob error %v does not wrap %v", err, tc.err)
			}
		})
	}
}

// TestMailable: addresses provisioned under .invalid, in any case, and
// empty ones are not written to.
func TestMailable(t *testing.T) {
	for addr, want := range map[string]bool{
		"ann@example.com": true, "": false, "sub-1@users.invalid": false, "SUB@USERS.INVALID": false,
	} {
		if got := notify.Mailable(addr); got != want {
			t.Errorf("notify.Mailable(%q) = %t; want %t", addr, got, want)
		}
	}
}
