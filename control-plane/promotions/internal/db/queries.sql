-- Promotions of a provider, their eligible plans and their redemptions.

-- name: PromotionInsert :one
INSERT INTO promotions (organization_id, code, description, kind, value, currency, meter, duration, duration_periods,
    valid_from, valid_until, max_redemptions, max_per_customer, priority, stackable, enabled, created_by)
VALUES (@organization_id, @code, @description, @kind, @value, sqlc.narg(currency), sqlc.narg(meter), @duration,
    sqlc.narg(duration_periods), @valid_from, sqlc.narg(valid_until), sqlc.narg(max_redemptions), sqlc.narg(max_per_customer),
    @priority, @stackable, @enabled, @created_by)
RETURNING id;

-- PlanIDsOfOrganization returns those of the plan ids that are plans of
-- the organization's APIs.
-- name: PlanIDsOfOrganization :many
SELECT p.id FROM plans p JOIN apis a ON a.id = p.api_id
WHERE p.id = ANY(@ids::uuid[]) AND a.organization_id = @organization_id;

-- name: PromotionPlansDelete :exec
DELETE FROM promotion_plans WHERE promotion_id = $1;

-- name: PromotionPlansInsert :exec
INSERT INTO promotion_plans (promotion_id, plan_id) SELECT @promotion_id, unnest(@plan_ids::uuid[]);

-- name: PromotionGetByID :one
SELECT p.id, p.organization_id, p.code, p.description, p.kind, p.value, p.currency, p.meter, p.duration, p.duration_periods,
    p.valid_from, p.valid_until, p.max_redemptions, p.max_per_customer, p.redemptions, p.priority, p.stackable, p.enabled,
    p.created_by, p.created_at, p.updated_at,
    COALESCE((SELECT array_agg(pp.plan_id ORDER BY pp.plan_id) FROM promotion_plans pp WHERE pp.promotion_id = p.id), '{}')::uuid[] AS plan_ids
FROM promotions p WHERE p.id = $1;

-- name: PromotionGetByIDForUpdate :one
SELECT p.id, p.organization_id, p.code, p.description, p.kind, p.value, p.currency, p.meter, p.duration, p.duration_periods,
    p.valid_from, p.valid_until, p.max_redemptions, p.max_per_customer, p.redemptions, p.priority, p.stackable, p.enabled,
    p.created_by, p.created_at, p.updated_at,
    COALESCE((SELECT array_agg(pp.plan_id ORDER BY pp.plan_id) FROM promotion_plans pp WHERE pp.promotion_id = p.id), '{}')::uuid[] AS plan_ids
FROM promotions p WHERE p.id = $1 FOR UPDATE OF p;

-- PromotionGetByCode finds a provider's promotion by its code, compared
-- case-insensitively as the unique index does.
-- name: PromotionGetByCode :one
SELECT p.id, p.organization_id, p.code, p.description, p.kind, p.value, p.currency, p.meter, p.duration, p.duration_periods,
    p.valid_from, p.valid_until, p.max_redemptions, p.max_per_customer, p.redemptions, p.priority, p.stackable, p.enabled,
    p.created_by, p.created_at, p.updated_at,
    COALESCE((SELECT array_agg(pp.plan_id ORDER BY pp.plan_id) FROM promotion_plans pp WHERE pp.promotion_id = p.id), '{}')::uuid[] AS plan_ids
FROM promotions p WHERE p.organization_id = @organization_id AND lower(p.code) = lower(@code);

-- name: PromotionList :many
SELECT p.id, p.organization_id, p.code, p.description, p.kind, p.value, p.currency, p.meter, p.duration, p.duration_periods,
    p.valid_from, p.valid_until, p.max_redemptions, p.max_per_customer, p.redemptions, p.priority, p.stackable, p.enabled,
    p.created_by, p.created_at, p.updated_at,
    COALESCE((SELECT array_agg(pp.plan_id ORDER BY pp.plan_id) FROM promotion_plans pp WHERE pp.promotion_id = p.id), '{}')::uuid[] AS plan_ids
FROM promotions p
WHERE (@every::boolean OR p.organization_id = @org_id)
  AND (sqlc.narg(after_at)::timestamptz IS NULL OR (p.created_at, p.id) > (sqlc.narg(after_at), @after_id::uuid))
ORDER BY p.created_at, p.id LIMIT @row_limit;

-- name: PromotionUpdate :exec
UPDATE promotions SET description = @description, enabled = @enabled, valid_until = sqlc.narg(valid_until),
    max_redemptions = sqlc.narg(max_redemptions), max_per_customer = sqlc.narg(max_per_customer), updated_at = now()
WHERE id = @id;

-- PromotionClaim takes one redemption of a promotion, in one statement:
-- no row when it is disabled, outside its window or used up. The row lock
-- it takes is held to the end of the transaction, so concurrent redeemers
-- of one promotion run the rest of their redemption one at a time.
-- name: PromotionClaim :one
UPDATE promotions SET redemptions = redemptions + 1, updated_at = now()
WHERE id = @id AND enabled AND valid_from <= @now::timestamptz AND (valid_until IS NULL OR valid_until > @now::timestamptz)
  AND (max_redemptions IS NULL OR redemptions < max_redemptions)
RETURNING redemptions;

-- name: RedemptionCountByCustomer :one
SELECT count(*) FROM promotion_redemptions WHERE promotion_id = @promotion_id AND organization_id = @organization_id;

-- name: RedemptionInsert :one
INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at)
VALUES (@promotion_id, @subscription_id, @organization_id, @redeemed_by, @redeemed_at)
RETURNING id;

-- name: RedemptionListBySubscription :many
SELECT r.id, r.promotion_id, r.subscription_id, r.organization_id, r.periods_applied, r.redeemed_by, r.redeemed_at, r.ended_at,
    p.code, p.kind, p.value, p.currency, p.meter, p.duration, p.duration_periods, p.priority, p.stackable
FROM promotion_redemptions r JOIN promotions p ON p.id = r.promotion_id
WHERE r.subscription_id = $1
ORDER BY r.redeemed_at, r.id;

-- RedemptionEnd ends a running redemption: no row when it has ended
-- already.
-- name: RedemptionEnd :one
UPDATE promotion_redemptions SET ended_at = @ended_at::timestamptz
WHERE id = @id AND ended_at IS NULL
RETURNING id;

-- PlanProvider is the organization whose API the plan belongs to.
-- name: PlanProvider :one
SELECT a.organization_id FROM plans p JOIN apis a ON a.id = p.api_id WHERE p.id = $1;
