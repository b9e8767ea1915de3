package keys

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys/internal/db"
)

// ExpireKeys expires the keys past their expiry, or renews those that
// auto-renew by whole RenewDays steps until the expiry is in the future.
func (s *Service) ExpireKeys(ctx context.Context, rep *MaintenanceReport) error {
	now := s.now().UTC()
	ids, err := db.New(s.pool).KeyListExpiredIDs(ctx, &now)
	if err != nil {
		return err
	}
	return s.each(ctx, ids, func(tx pgx.Tx, id uuid.UUID) error {
		k, err := s.lockKey(ctx, tx, id)
		if err != nil || k.State.Terminal() || k.ExpiresAt == nil || k.ExpiresAt.After(now) {
			return err
		}
		if !k.AutoRenew || k.RenewDays == nil || k.GraceUntil != nil {
			if _, err := s.transition(ctx, tx, identity.System, k, StateExpired, "expired"); err != nil {
				return err
			}
			rep.Expired++
			s.metrics.expired.Inc()
			return nil
		}
		next := *k.ExpiresAt
		for !next.After(now) {
			next = next.AddDate(0, 0, *k.RenewDays)
		}
		if err := db.New(tx).KeyRenew(ctx, db.KeyRenewParams{ID: id, ExpiresAt: &next}); err != nil {
			return fmt.Errorf("renew key: %w", err)
		}
		if err := s.enqueueKeySync(ctx, tx, id); err != nil {
			return err
		}
		rep.Renewed++
		s.metrics.renewed.Inc()
		after, err := s.lockKey(ctx, tx, id)
		if err != nil {
			return err
		}
		return s.record(ctx, tx, identity.System, k.org, "key.renew", id,
			map[string]any{"expires_at": k.ExpiresAt}, map[string]any{"expires_at": next},
			"key.renewed", map[string]any{"key": after.audited()})
	})
}
