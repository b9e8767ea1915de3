-- name: AuditInsert :exec
INSERT INTO audit_log
    (actor, actor_role, organization_id, action, target_type, target_id, before, after, source_ip, user_agent, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);
