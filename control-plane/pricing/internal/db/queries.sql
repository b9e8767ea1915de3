-- name: APIAccessGet :one
SELECT organization_id, state, visibility FROM apis WHERE id = $1;

-- name: MeterInsert :one
INSERT INTO meters (api_id, slug, name, aggregation, field, filter_methods, filter_routes, filter_status_classes)
    VALUES ($1, $2, $3, $4, $5, @filter_methods::text[], @filter_routes::text[], @filter_status_classes::text[])
    RETURNING *;

-- name: MeterGetByID :one
SELECT * FROM meters WHERE id = $1;

-- name: MeterGetByIDForUpdate :one
SELECT * FROM meters WHERE id = $1 FOR UPDATE;

-- MeterListByAPI lists an API's meters by slug.
-- name: MeterListByAPI :many
SELECT * FROM meters WHERE api_id = $1 ORDER BY slug;

-- name: MeterCountByAPI :one
SELECT count(*) FROM meters WHERE api_id = $1;

-- name: MeterUpdate :one
UPDATE meters SET name = $2, aggregation = $3, field = $4, filter_methods = @filter_methods::text[],
        filter_routes = @filter_routes::text[], filter_status_classes = @filter_status_classes::text[], updated_at = now()
    WHERE id = $1
    RETURNING *;

-- name: MeterDelete :exec
DELETE FROM meters WHERE id = $1;

-- MeterLockUsed locks every plan version that charges the meter and
-- reports whether a subscription has used any of them: bool_or reads every
-- row, so each version's lock is taken (plan_version_lock_used), and a
-- first subscription cannot slip in between the check and the change.
-- name: MeterLockUsed :one
SELECT coalesce(bool_or(plan_version_lock_used(plan_version_id)), false)::boolean AS used
FROM plan_version_charges WHERE meter_id = $1;

-- name: MeterCharged :one
SELECT EXISTS (SELECT 1 FROM plan_version_charges WHERE meter_id = $1)::boolean AS charged;

-- MeterSourceFile names a plan file whose plan charges the meter: such a
-- meter is managed by that file.
-- name: MeterSourceFile :one
SELECT p.source_file::text AS source_file
FROM plan_version_charges c
    JOIN plan_versions v ON v.id = c.plan_version_id
    JOIN plans p ON p.id = v.plan_id
WHERE c.meter_id = $1 AND p.source_file IS NOT NULL
ORDER BY p.source_file
LIMIT 1;

-- name: MeterIDsBySlug :many
SELECT id, slug FROM meters WHERE api_id = @api_id AND slug = ANY(@slugs::text[]);

-- name: ChargeInsert :one
INSERT INTO plan_version_charges (plan_version_id, meter_id, included_units, model, package_size, unit_price, quota, quota_hard)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING id;

-- name: TierInsert :exec
INSERT INTO charge_tiers (charge_id, position, up_to, unit_price, flat_fee) VALUES ($1, $2, $3, $4, $5);

-- ChargeListByVersions reads the charges of plan versions, each version's
-- in the order of its meters' slugs: the stable order of a plan's lines.
-- name: ChargeListByVersions :many
SELECT c.id, c.plan_version_id, m.slug, c.model, c.included_units, c.unit_price, c.package_size, c.quota, c.quota_hard
FROM plan_version_charges c JOIN meters m ON m.id = c.meter_id
WHERE c.plan_version_id = ANY(@version_ids::uuid[])
ORDER BY c.plan_version_id, m.slug;

-- name: TierListByCharges :many
SELECT charge_id, position, up_to, unit_price, flat_fee FROM charge_tiers
WHERE charge_id = ANY(@charge_ids::uuid[])
ORDER BY charge_id, position;

-- name: VersionTermsGet :one
SELECT base_fee, currency FROM plan_versions WHERE id = $1;
