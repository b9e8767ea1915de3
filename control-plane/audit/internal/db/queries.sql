-- name: AuditInsert :exec
INSERT INTO audit_log
    (actor, actor_role, organization_id, action, target_type, target_id, before, after, source_ip, user_agent, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- AuditList returns entries newest first. A nil organization_id means every
-- organization; an empty target_type, target_id or action and a zero
-- before_id leave that filter out.
-- name: AuditList :many
SELECT id, created_at, actor, actor_role, organization_id, action, target_type, target_id,
       before, after, source_ip, user_agent, request_id
FROM audit_log
WHERE (sqlc.narg(organization_id)::uuid IS NULL OR organization_id = sqlc.narg(organization_id))
  AND (@target_type::text = '' OR target_type = @target_type)
  AND (@target_id::text = '' OR target_id = @target_id)
  AND (@action::text = '' OR action = @action)
  AND (@before_id::bigint = 0 OR id < @before_id::bigint)
ORDER BY id DESC
LIMIT @max_rows::integer;

-- AuditInsertMany writes many entries in one round trip.
-- name: AuditInsertMany :copyfrom
INSERT INTO audit_log
    (actor, actor_role, organization_id, action, target_type, target_id, before, after, source_ip, user_agent, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);
