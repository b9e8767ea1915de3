package periodic

import (
	"context"
	"testing"
	"time"

	"github.com/riverqueue/river"
)

type testArgs struct{}

func (testArgs) Kind() string { return "periodic_test" }

func TestWorkerTimeout(t *testing.T) {
	run := func(context.Context) error { return nil }
	if got := NewWorker[testArgs](run).Timeout(nil); got != 0 {
		t.Errorf("NewWorker().Timeout() = %v; want 0 (the job client's)", got)
	}
	if got := NewWorker[testArgs](run).WithTimeout(50 * time.Second).Timeout(nil); got != 50*time.Second {
		t.Errorf("WithTimeout(50s).Timeout() = %v; want 50s", got)
	}
}

func TestWorkerWorkCallsRun(t *testing.T) {
	calls := 0
	w := NewWorker[testArgs](func(context.Context) error { calls++; return nil })
	if err := w.Work(t.Context(), &river.Job[testArgs]{}); err != nil || calls != 1 {
		t.Errorf("Work() = %v after %d calls; want nil after 1", err, calls)
	}
}
