package subscriptions

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/keys"
)

// MaintenanceReport counts what one maintenance run did.
type MaintenanceReport struct {
	PeriodsRolled int `json:"periods_rolled"`
	TrialsEnded   int `json:"trials_ended"`
	Canceled      int `json:"canceled"`
	// The key steps' counts, after the subscriptions' in JSON.
	keys.MaintenanceReport
	// Errors lists the steps that failed; the next run tries them again.
	Errors []string `json:"errors"`
}

// RunMaintenance does the scheduled work, each item in its own
// transaction so one failure does not hold back the rest:
//
//   - subscriptions: trials end, periods roll over (or the subscription
//     cancels, if asked to at period end);
//
// and then the key steps, keys.Service's:
//
//   - rotated-out keys whose grace has passed are revoked (EndGrace);
//   - keys past their expiry expire, or are renewed if they auto-renew
//     (ExpireKeys);
//   - expiry notices go out 7, 3 and 1 days before (the nearest window
//     only, each once per expiry, by webhook and by email, the email
//     queued as a job: ExpiryNotices);
//   - keys with automatic rotation are announced RotationNotice before
//     they are due and rotated when due (AutoRotate).
//
// It is idempotent: running it twice at the same instant does nothing more.
func (s *Service) RunMaintenance(ctx context.Context) (MaintenanceReport, error) {
	rep := MaintenanceReport{Errors: []string{}}
	steps := []struct {
		name string
		fn   func(context.Context, *MaintenanceReport) error
	}{
		{"subscription periods", s.rollPeriods},
		{"rotation grace", s.keyStep(s.keys.EndGrace)},
		{"key expiry", s.keyStep(s.keys.ExpireKeys)},
		{"expiry notices", s.keyStep(s.keys.ExpiryNotices)},
		{"automatic rotation", s.keyStep(s.keys.AutoRotate)},
	}
	for _, st := range steps {
		if err := st.fn(ctx, &rep); err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			rep.Errors = append(rep.Errors, st.name+": "+err.Error())
			s.log.ErrorContext(ctx, "maintenance step failed", "step", st.name, "error", err)
		}
	}
	return rep, nil
}

// keyStep is a key step of maintenance (a keys.Service method) as a step
// of the whole run.
func (s *Service) keyStep(fn func(context.Context, *keys.MaintenanceReport) error) func(context.Context, *MaintenanceReport) error {
	return func(ctx context.Context, rep *MaintenanceReport) error { return fn(ctx, &rep.MaintenanceReport) }
}

// each runs fn for every id in its own transaction, collecting errors.
func (s *Service) each(ctx context.Context, ids []uuid.UUID, fn func(tx pgx.Tx, id uuid.UUID) error) error {
	var errs []error
	for _, id := range ids {
		if err := s.inTx(ctx, func(tx pgx.Tx) error { return fn(tx, id) }); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
