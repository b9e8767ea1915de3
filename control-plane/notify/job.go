package notify

import (
	"context"
	"fmt"
	"strings"

	"github.com/riverqueue/river"
)

// Results of one email, the result label of the notice counters: queued
// by the transaction that claims the notice, then sent, failed (an
// attempt the job retries), refused (for good: no retry) or skipped
// (nobody to write to) by its job; duplicate when the notice was claimed
// before.
const (
	ResultQueued    = "queued"
	ResultSent      = "sent"
	ResultFailed    = "failed"
	ResultRefused   = "refused"
	ResultSkipped   = "skipped"
	ResultDuplicate = "duplicate"
)

// Mailable reports whether addr is worth writing to: users whose token
// carried no email are provisioned with an address under .invalid
// (RFC 2606), which nobody reads.
func Mailable(addr string) bool {
	return addr != "" && !strings.HasSuffix(strings.ToLower(addr), ".invalid")
}

// SendJob makes one attempt of an email job: it sends m through mailer
// and returns the result label and the error the job returns. A refusal
// for good (an SMTP 5xx reply, an invalid message) cancels the job, as
// retrying would only be refused again; any other failure is returned
// for River to retry with its backoff.
func SendJob(ctx context.Context, mailer Mailer, m Message) (result string, err error) {
	err = mailer.Send(ctx, m)
	switch {
	case err == nil:
		return ResultSent, nil
	case Refused(err):
		return ResultRefused, river.JobCancel(fmt.Errorf("send email: %w", err))
	default:
		return ResultFailed, fmt.Errorf("send email: %w", err)
	}
}
