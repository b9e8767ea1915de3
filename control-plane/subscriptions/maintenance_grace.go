package subscriptions

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
)

// endGrace revokes the rotated-out keys whose grace period has passed.
func (s *Service) endGrace(ctx context.Context, rep *MaintenanceReport) error {
	ids, err := s.ids(ctx, `SELECT id FROM api_keys WHERE grace_until IS NOT NULL AND grace_until <= $1
		AND state IN ('active', 'suspended') ORDER BY id`, s.now().UTC())
	if err != nil {
		return err
	}
	return s.each(ctx, ids, func(tx pgx.Tx, id uuid.UUID) error {
		k, err := s.lockKey(ctx, tx, id)
		if err != nil || k.State.Terminal() {
			return err
		}
		if _, err := s.transition(ctx, tx, identity.System, k, keys.StateRevoked, "rotation grace ended"); err != nil {
			return err
		}
		rep.GraceEnded++
		s.metrics.graced.Inc()
		return nil
	})
}
