-- name: APIAccessGet :one
SELECT organization_id, state, visibility FROM apis WHERE id = $1;

-- name: PlanInsert :one
INSERT INTO plans (api_id, name, slug, description, status) VALUES ($1, $2, $3, $4, $5) RETURNING id;

-- PlanGetByID reads a plan with its latest version.
-- name: PlanGetByID :one
SELECT p.id, p.api_id, p.name, p.slug, p.description, p.status, p.created_at, p.updated_at,
    v.id, v.version, v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard,
    v.rate_per_second, v.rate_per_minute, v.included_units, v.created_by, v.created_at,
    p.source_file, v.source, v.source_file
FROM plans p JOIN LATERAL (SELECT * FROM plan_versions WHERE plan_id = p.id ORDER BY version DESC LIMIT 1) v ON true
WHERE p.id = $1;

-- name: PlanGetByIDForUpdate :one
SELECT p.id, p.api_id, p.name, p.slug, p.description, p.status, p.created_at, p.updated_at,
    v.id, v.version, v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard,
    v.rate_per_second, v.rate_per_minute, v.included_units, v.created_by, v.created_at,
    p.source_file, v.source, v.source_file
FROM plans p JOIN LATERAL (SELECT * FROM plan_versions WHERE plan_id = p.id ORDER BY version DESC LIMIT 1) v ON true
WHERE p.id = $1 FOR UPDATE OF p;

-- PlanListByAPI lists an API's plans with their latest versions; only the
-- active ones unless every.
-- name: PlanListByAPI :many
SELECT p.id, p.api_id, p.name, p.slug, p.description, p.status, p.created_at, p.updated_at,
    v.id, v.version, v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard,
    v.rate_per_second, v.rate_per_minute, v.included_units, v.created_by, v.created_at,
    p.source_file, v.source, v.source_file
FROM plans p JOIN LATERAL (SELECT * FROM plan_versions WHERE plan_id = p.id ORDER BY version DESC LIMIT 1) v ON true
WHERE p.api_id = @api_id AND (@every::boolean OR p.status = 'active')
ORDER BY p.created_at, p.id;

-- name: PlanUpdate :exec
UPDATE plans SET name = $2, description = $3, status = $4, updated_at = now() WHERE id = $1;

-- name: PlanVersionInsert :one
INSERT INTO plan_versions (plan_id, version, type, currency, interval, base_fee, trial_days,
        quota_requests, quota_hard, rate_per_second, rate_per_minute, included_units, created_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    RETURNING id;

-- PlanVersionListByPlan lists a plan's versions, newest first.
-- name: PlanVersionListByPlan :many
SELECT v.id, v.plan_id, v.version, v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard,
    v.rate_per_second, v.rate_per_minute, v.included_units, v.created_by, v.created_at, v.source, v.source_file
FROM plan_versions v WHERE v.plan_id = $1
ORDER BY v.version DESC;

-- name: PlanVersionGetByID :one
SELECT v.id, v.plan_id, v.version, v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard,
    v.rate_per_second, v.rate_per_minute, v.included_units, v.created_by, v.created_at, v.source, v.source_file
FROM plan_versions v WHERE v.id = $1;

-- name: PlanVersionGetByNumber :one
SELECT v.id, v.plan_id, v.version, v.type, v.currency, v.interval, v.base_fee, v.trial_days, v.quota_requests, v.quota_hard,
    v.rate_per_second, v.rate_per_minute, v.included_units, v.created_by, v.created_at, v.source, v.source_file
FROM plan_versions v WHERE v.plan_id = $1 AND v.version = $2;
