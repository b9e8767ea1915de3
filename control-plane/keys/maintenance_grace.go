package keys

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys/internal/db"
)

// EndGrace revokes the rotated-out keys whose grace period has passed.
func (s *Service) EndGrace(ctx context.Context, rep *MaintenanceReport) error {
	now := s.now().UTC()
	ids, err := db.New(s.pool).KeyListGraceEndedIDs(ctx, &now)
	if err != nil {
		return err
	}
	return s.each(ctx, ids, func(tx pgx.Tx, id uuid.UUID) error {
		k, err := s.lockKey(ctx, tx, id)
		if err != nil || k.State.Terminal() {
			return err
		}
		if _, err := s.transition(ctx, tx, identity.System, k, StateRevoked, "rotation grace ended"); err != nil {
			return err
		}
		rep.GraceEnded++
		s.metrics.graced.Inc()
		return nil
	})
}
