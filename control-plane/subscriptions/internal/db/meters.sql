-- PlanVersionMeters reads the metered charges of plan versions: each
-- charge's meter, its definition and the charge's quota, for the
-- subscription records the processors count meters from. Ordered by
-- version and slug, so a record's meters are always written in one order.
-- name: PlanVersionMeters :many
SELECT c.plan_version_id, m.slug, m.aggregation::text AS aggregation, m.field,
    m.filter_methods, m.filter_routes, m.filter_status_classes, c.quota, c.quota_hard
FROM plan_version_charges c JOIN meters m ON m.id = c.meter_id
WHERE c.plan_version_id = ANY(@version_ids::uuid[])
ORDER BY c.plan_version_id, m.slug;
