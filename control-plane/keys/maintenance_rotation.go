package keys

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys/internal/db"
)

// AutoRotate announces the automatic rotations due within RotationNotice,
// and rotates the keys that are due, sealing each successor for a later
// reveal.
func (s *Service) AutoRotate(ctx context.Context, rep *MaintenanceReport) error {
	now := s.now().UTC()
	dueBy := now.Add(s.cfg.RotationNotice)
	rows, err := db.New(s.pool).KeyListRotationDue(ctx, &dueBy)
	if err != nil {
		return err
	}
	candidates, err := toKeys(rows)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range candidates {
		since := k.CreatedAt
		if k.LastRotatedAt != nil {
			since = *k.LastRotatedAt
		}
		due := since.AddDate(0, 0, k.RotateEvery).UTC()
		if due.After(now) {
			n, err := s.notice(ctx, k, noticeRotationBefore, due, "key.rotation_due",
				fmt.Sprintf("Your API key %s will be rotated on %s", k.Masked, due.Format("2 Jan 2006")),
				fmt.Sprintf("The API key %s (%s) is set to rotate automatically every %d days; the next rotation is at %s.\n\n"+
					"Then a successor key is issued: reveal it once with POST /v1/keys/{successor id}/reveal and deploy it. "+
					"This key keeps working for %s after the rotation. Rotate it yourself before then with POST /v1/keys/%s/rotate "+
					"to choose the moment.\n",
					k.Masked, displayName(k), k.RotateEvery, due.Format(time.RFC1123), s.cfg.AutoRotateGrace, k.ID))
			rep.Notices += n
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if s.seal == nil {
			s.log.WarnContext(ctx, "automatic key rotation is due but no key-seal secret is configured", "key_id", k.ID)
			continue
		}
		var next Key
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			old, err := s.lockKey(ctx, tx, k.ID)
			if err != nil {
				return err
			}
			if old.State != StateActive || old.GraceUntil != nil || !old.AutoRotate {
				return nil
			}
			next, err = s.rotate(ctx, tx, identity.System, old, s.cfg.AutoRotateGrace, s.seal)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("rotate %s: %w", k.ID, err))
			continue
		}
		if next.ID == uuid.Nil {
			continue
		}
		rep.Rotated++
		s.metrics.rotated.Inc()
		old, err := s.GetKey(ctx, identity.System, k.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := s.notice(ctx, old, noticeRotationAfter, due, "",
			fmt.Sprintf("Your API key %s was rotated", k.Masked),
			fmt.Sprintf("The API key %s (%s) was rotated automatically. Its successor is %s (id %s).\n\n"+
				"Reveal the successor once with POST /v1/keys/%s/reveal and deploy it: the old key stops working at %s.\n",
				k.Masked, displayName(k), next.Masked, next.ID, next.ID, old.GraceUntil.UTC().Format(time.RFC1123)))
		rep.Notices += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
