-- ReloadLock serializes reloads across control-plane replicas until the
-- transaction ends; the key is an arbitrary constant of Veil's.
-- name: ReloadLock :exec
SELECT pg_advisory_xact_lock(7365012);

-- name: APIGetBySlug :one
SELECT id, organization_id FROM apis WHERE slug = $1;

-- PlanGetBySlug reads a plan with its latest version's number and hash,
-- locked for the reload.
-- name: PlanGetBySlug :one
SELECT p.id, p.name, p.description, p.status, p.source_file, v.version, v.content_hash
FROM plans p JOIN LATERAL (SELECT version, content_hash FROM plan_versions WHERE plan_id = p.id ORDER BY version DESC LIMIT 1) v ON true
WHERE p.api_id = $1 AND p.slug = $2
FOR UPDATE OF p;

-- name: PlanInsert :one
INSERT INTO plans (api_id, name, slug, description, status, source_file)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id;

-- name: PlanUpdate :exec
UPDATE plans SET name = $2, description = $3, status = $4, source_file = $5, updated_at = now() WHERE id = $1;

-- name: PlanVersionInsert :one
INSERT INTO plan_versions (plan_id, version, type, currency, interval, base_fee, trial_days,
        quota_requests, quota_hard, rate_per_second, rate_per_minute, source, source_file, content_hash, created_by)
VALUES (@plan_id, @version, @type, @currency, @interval, @base_fee, @trial_days,
        @quota_requests, @quota_hard, @rate_per_second, @rate_per_minute, 'file', @source_file, @content_hash, @created_by)
RETURNING id;
