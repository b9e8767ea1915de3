-- name: AuditInsert :exec
INSERT INTO audit_log
    (actor, actor_role, organization_id, action, target_type, target_id, before, after, source_ip, user_agent, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- AuditList returns entries newest first. A nil organization_id means every
-- organization; an empty target_type, target_id, action or actor, a nil
-- since or until and a zero before_id leave that filter out. since is
-- inclusive, until exclusive.
-- name: AuditList :many
SELECT id, created_at, actor, actor_role, organization_id, action, target_type, target_id,
       before, after, source_ip, user_agent, request_id
FROM audit_log
WHERE (sqlc.narg(organization_id)::uuid IS NULL OR organization_id = sqlc.narg(organization_id))
  AND (@target_type::text = '' OR target_type = @target_type)
  AND (@target_id::text = '' OR target_id = @target_id)
  AND (@action::text = '' OR action = @action)
  AND (@actor::text = '' OR actor = @actor)
  AND (sqlc.narg(since)::timestamptz IS NULL OR created_at >= sqlc.narg(since))
  AND (sqlc.narg(until)::timestamptz IS NULL OR created_at < sqlc.narg(until))
  AND (@before_id::bigint = 0 OR id < @before_id::bigint)
ORDER BY id DESC
LIMIT @max_rows::integer;

-- AuditInsertMany writes many entries in one round trip.
-- name: AuditInsertMany :copyfrom
INSERT INTO audit_log
    (actor, actor_role, organization_id, action, target_type, target_id, before, after, source_ip, user_agent, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);
