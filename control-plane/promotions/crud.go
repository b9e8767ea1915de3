package promotions

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/promotions/internal/db"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/validation"
)

// canSee: the promotion's organization and admins. Its customers see
// their redemptions, not the promotion.
func (p Promotion) canSee(a identity.Actor) bool {
	return a.IsAdmin() || (a.OrgID != uuid.Nil && a.OrgID == p.OrganizationID)
}

// MayCreate refuses an actor who may not create promotions: only a
// provider organization's members do, for it. It needs no state, so a
// caller may ask before it reads the request.
func MayCreate(actor identity.Actor) error {
	if actor.Role == identity.RoleSystem || actor.OrgID == uuid.Nil || !actor.CanProvide(actor.OrgID) {
		return identity.ErrForbidden
	}
	return nil
}

// Create adds a promotion of the actor's organization, which must provide.
func (s *Service) Create(ctx context.Context, actor identity.Actor, in PromotionInput) (Promotion, error) {
	if err := MayCreate(actor); err != nil {
		return Promotion{}, err
	}
	if err := in.Validate(s.now().UTC()); err != nil {
		return Promotion{}, err
	}
	var out Promotion
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := s.checkPlans(ctx, tx, actor.OrgID, in.PlanIDs); err != nil {
			return err
		}
		id, err := q.PromotionInsert(ctx, db.PromotionInsertParams{
			OrganizationID: actor.OrgID, Code: in.Code, Description: in.Description, Kind: db.PromotionKind(in.Kind), Value: in.Value,
			Currency: in.Currency, Meter: in.Meter, Duration: db.PromotionDuration(in.Duration), DurationPeriods: in.DurationPeriods,
			ValidFrom: *in.ValidFrom, ValidUntil: in.ValidUntil, MaxRedemptions: in.MaxRedemptions, MaxPerCustomer: in.MaxPerCustomer,
			Priority: in.Priority, Stackable: in.Stackable, Enabled: *in.Enabled, CreatedBy: actor.Subject,
		})
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			return fmt.Errorf("%w: %q", ErrCodeTaken, in.Code)
		}
		if err != nil {
			return fmt.Errorf("insert promotion: %w", err)
		}
		if err := q.PromotionPlansInsert(ctx, db.PromotionPlansInsertParams{PromotionID: id, PlanIds: in.PlanIDs}); err != nil {
			return fmt.Errorf("insert promotion plans: %w", err)
		}
		if out, err = toPromotion(q.PromotionGetByID(ctx, id)); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, out.OrganizationID, "promotion.create", "promotion", id, nil, out,
			EventCreated, map[string]any{"promotion": out}, out.OrganizationID)
	})
	return out, err
}

// checkPlans refuses plan ids that are not plans of org's APIs, without
// saying whether they exist elsewhere.
func (s *Service) checkPlans(ctx context.Context, tx pgx.Tx, org uuid.UUID, ids []uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	own, err := db.New(tx).PlanIDsOfOrganization(ctx, db.PlanIDsOfOrganizationParams{Ids: ids, OrganizationID: org})
	if err != nil {
		return fmt.Errorf("read promotion plans: %w", err)
	}
	mine := make(map[uuid.UUID]bool, len(own))
	for _, id := range own {
		mine[id] = true
	}
	var v validation.Error
	for i, id := range ids {
		if !mine[id] {
			v.Add("plan_ids["+strconv.Itoa(i)+"]", "is not a plan of your organization's APIs")
		}
	}
	return v.Err()
}

// Get returns a promotion the actor may see.
func (s *Service) Get(ctx context.Context, actor identity.Actor, id uuid.UUID) (Promotion, error) {
	p, err := toPromotion(db.New(s.pool).PromotionGetByID(ctx, id))
	if err != nil {
		return Promotion{}, err
	}
	if !p.canSee(actor) {
		return Promotion{}, ErrNotFound
	}
	return p, nil
}

// List lists the promotions of the actor's organization, oldest first;
// admins see every organization's.
func (s *Service) List(ctx context.Context, actor identity.Actor, after string, limit int) ([]Promotion, string, error) {
	cur, err := pagination.Decode(after)
	if err != nil {
		return nil, "", err
	}
	limit = pagination.Limit(limit)
	rows, err := db.New(s.pool).PromotionList(ctx, db.PromotionListParams{
		Every: actor.IsAdmin(), OrgID: actor.OrgID, AfterAt: cur.Time(), AfterID: cur.ID, RowLimit: int32(limit + 1),
	})
	if err != nil {
		return nil, "", fmt.Errorf("list promotions: %w", err)
	}
	out := make([]Promotion, 0, len(rows))
	for _, r := range rows {
		p, err := toPromotion(r, nil)
		if err != nil {
			return nil, "", err
		}
		out = append(out, p)
	}
	page, next := pagination.Page(out, limit, func(p Promotion) pagination.Cursor { return pagination.Cursor{At: p.CreatedAt, ID: p.ID} })
	return page, next, nil
}

// Update changes what may change of a promotion (see the package doc).
func (s *Service) Update(ctx context.Context, actor identity.Actor, id uuid.UUID, patch PromotionPatch) (Promotion, error) {
	var out Promotion
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		before, err := toPromotion(q.PromotionGetByIDForUpdate(ctx, id))
		if err != nil {
			return err
		}
		if !before.canSee(actor) {
			return ErrNotFound
		}
		if !actor.CanProvide(before.OrganizationID) {
			return identity.ErrForbidden
		}
		after, err := patch.apply(before)
		if err != nil {
			return err
		}
		if err := q.PromotionUpdate(ctx, db.PromotionUpdateParams{
			ID: id, Description: after.Description, Enabled: after.Enabled, ValidUntil: after.ValidUntil,
			MaxRedemptions: after.MaxRedemptions, MaxPerCustomer: after.MaxPerCustomer,
		}); err != nil {
			return fmt.Errorf("update promotion: %w", err)
		}
		if patch.PlanIDs != nil {
			if err := s.checkPlans(ctx, tx, before.OrganizationID, after.PlanIDs); err != nil {
				return err
			}
			if err := q.PromotionPlansDelete(ctx, id); err != nil {
				return fmt.Errorf("replace promotion plans: %w", err)
			}
			if err := q.PromotionPlansInsert(ctx, db.PromotionPlansInsertParams{PromotionID: id, PlanIds: after.PlanIDs}); err != nil {
				return fmt.Errorf("replace promotion plans: %w", err)
			}
		}
		if out, err = toPromotion(q.PromotionGetByID(ctx, id)); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, out.OrganizationID, "promotion.update", "promotion", id, before, out,
			EventUpdated, map[string]any{"promotion": out}, out.OrganizationID)
	})
	return out, err
}
