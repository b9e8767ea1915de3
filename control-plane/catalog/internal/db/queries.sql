-- name: APIInsert :one
INSERT INTO apis (organization_id, name, slug, description, upstream_url, version, routes,
        health_check_path, docs_url, visibility, created_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING id, organization_id, name, slug, description, upstream_url, version, routes, health_check_path,
    docs_url, visibility, state, state_reason, created_by, created_at, updated_at;

-- name: APIGetByID :one
SELECT id, organization_id, name, slug, description, upstream_url, version, routes, health_check_path,
    docs_url, visibility, state, state_reason, created_by, created_at, updated_at
FROM apis WHERE id = $1;

-- name: APIGetByIDForUpdate :one
SELECT id, organization_id, name, slug, description, upstream_url, version, routes, health_check_path,
    docs_url, visibility, state, state_reason, created_by, created_at, updated_at
FROM apis WHERE id = $1 FOR UPDATE;

-- name: APIUpdate :one
UPDATE apis SET name = $2, slug = $3, description = $4, upstream_url = $5, routes = $6,
        health_check_path = $7, docs_url = $8, visibility = $9, updated_at = now()
    WHERE id = $1
RETURNING id, organization_id, name, slug, description, upstream_url, version, routes, health_check_path,
    docs_url, visibility, state, state_reason, created_by, created_at, updated_at;

-- name: APIUpdateVersion :one
UPDATE apis SET version = $2, upstream_url = $3, routes = $4, updated_at = now()
    WHERE id = $1
RETURNING id, organization_id, name, slug, description, upstream_url, version, routes, health_check_path,
    docs_url, visibility, state, state_reason, created_by, created_at, updated_at;

-- APIUpdateState moves an API from state from_state to to_state; no row
-- when it is no longer in from_state. A review's approval records what it
-- approved (approved_snapshot): registration, retries, resumptions and
-- reconciliation serve that snapshot, never the live columns.
-- name: APIUpdateState :one
UPDATE apis SET state = @to_state, state_reason = @reason, updated_at = now(),
        approved_snapshot = CASE WHEN @from_state::api_state = 'pending_approval' AND @to_state::api_state = 'approved'
            THEN jsonb_build_object('slug', slug, 'upstream_url', upstream_url, 'routes', routes,
                'health_check_path', health_check_path) ELSE approved_snapshot END
    WHERE id = @id AND state = @from_state
RETURNING id, organization_id, name, slug, description, upstream_url, version, routes, health_check_path,
    docs_url, visibility, state, state_reason, created_by, created_at, updated_at;

-- name: APIHasApprovedSnapshot :one
SELECT (approved_snapshot IS NOT NULL)::boolean AS approved FROM apis WHERE id = $1;

-- name: APIHasSubscriptions :one
SELECT EXISTS (SELECT 1 FROM subscriptions WHERE api_id = $1);

-- name: APIDelete :exec
DELETE FROM apis WHERE id = $1;

-- APIAdvisoryLock serializes the jobs that touch one API's gateway route
-- (registration, deregistration, reconciliation) on a session lock.
-- name: APIAdvisoryLock :exec
SELECT pg_advisory_lock(hashtextextended(@key::text, 0));

-- name: APIAdvisoryUnlock :exec
SELECT pg_advisory_unlock(hashtextextended(@key::text, 0));

-- APIServedGetByID reads an API as the gateway serves it: the slug,
-- upstream, routes and health path an admin approved (approved_snapshot,
-- NULL before the first approval), with its signing secrets.
-- name: APIServedGetByID :one
SELECT a.id, a.organization_id, a.name, a.description, a.version,
    a.docs_url, a.visibility, a.state, a.state_reason, a.created_by, a.created_at, a.updated_at,
    a.approved_snapshot, s.secret, s.previous_secret, s.previous_until
FROM apis a LEFT JOIN api_signing_secrets s ON s.api_id = a.id WHERE a.id = $1;

-- name: APIServedListRouting :many
SELECT a.id, a.organization_id, a.name, a.description, a.version,
    a.docs_url, a.visibility, a.state, a.state_reason, a.created_by, a.created_at, a.updated_at,
    a.approved_snapshot, s.secret, s.previous_secret, s.previous_until
FROM apis a LEFT JOIN api_signing_secrets s ON s.api_id = a.id WHERE a.state IN ('active', 'deprecated', 'approved');

-- name: APIVersionInsertInitial :exec
INSERT INTO api_versions (api_id, version, upstream_url, routes, created_by)
    VALUES ($1, $2, $3, $4, $5);

-- name: APIVersionInsert :one
INSERT INTO api_versions (api_id, version, upstream_url, routes, changelog, created_by)
    VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at;

-- name: APIVersionList :many
SELECT api_id, version, upstream_url, routes, changelog, created_by, created_at
FROM api_versions WHERE api_id = $1 ORDER BY created_at DESC, version DESC;

-- name: APITransitionInsert :exec
INSERT INTO api_transitions (api_id, from_state, to_state, actor, reason)
    VALUES ($1, $2, $3, $4, $5);

-- name: APITransitionList :many
SELECT from_state, to_state, actor, reason, created_at
FROM api_transitions WHERE api_id = $1 ORDER BY id;

-- name: SigningSecretInsert :exec
INSERT INTO api_signing_secrets (api_id, secret) VALUES ($1, $2);

-- name: SigningSecretGetForUpdate :one
SELECT secret, revealed FROM api_signing_secrets WHERE api_id = $1 FOR UPDATE;

-- name: SigningSecretUpsert :exec
INSERT INTO api_signing_secrets (api_id, secret, previous_secret, previous_until, rotated_at, revealed)
    VALUES ($1, $2, $3, $4, $5, true)
    ON CONFLICT (api_id) DO UPDATE SET secret = EXCLUDED.secret, previous_secret = EXCLUDED.previous_secret,
        previous_until = EXCLUDED.previous_until, rotated_at = EXCLUDED.rotated_at, revealed = true;

-- name: ApprovalInsert :one
INSERT INTO approval_requests (api_id, organization_id, priority, submitted_by, due_at, created_at, updated_at)
    VALUES (@api_id, @organization_id, @priority, @submitted_by, @due_at, @now, @now) RETURNING id;

-- name: ApprovalGetByID :one
SELECT r.id, r.api_id, a.name, r.organization_id, r.status, r.priority, r.escalation_level, r.submitted_by,
    r.due_at, r.decided_by, r.decided_at, r.decision_reason, r.created_at, r.updated_at
FROM approval_requests r JOIN apis a ON a.id = r.api_id WHERE r.id = $1;

-- name: ApprovalGetByIDForUpdate :one
SELECT r.id, r.api_id, a.name, r.organization_id, r.status, r.priority, r.escalation_level, r.submitted_by,
    r.due_at, r.decided_by, r.decided_at, r.decision_reason, r.created_at, r.updated_at
FROM approval_requests r JOIN apis a ON a.id = r.api_id WHERE r.id = $1 FOR UPDATE OF r;

-- ApprovalList lists requests oldest first; every filter is optional.
-- name: ApprovalList :many
SELECT r.id, r.api_id, a.name, r.organization_id, r.status, r.priority, r.escalation_level, r.submitted_by,
    r.due_at, r.decided_by, r.decided_at, r.decision_reason, r.created_at, r.updated_at
FROM approval_requests r JOIN apis a ON a.id = r.api_id
WHERE (@status::text = '' OR r.status = @status::approval_status)
  AND (@priority::text = '' OR r.priority = @priority::approval_priority)
  AND (sqlc.narg(organization_id)::uuid IS NULL OR r.organization_id = sqlc.narg(organization_id))
  AND (sqlc.narg(api_id)::uuid IS NULL OR r.api_id = sqlc.narg(api_id))
  AND (NOT @overdue::boolean OR (r.status IN ('pending', 'escalated') AND r.due_at < @now))
  AND (sqlc.narg(after_at)::timestamptz IS NULL OR (r.created_at, r.id) > (sqlc.narg(after_at), @after_id::uuid))
ORDER BY r.created_at, r.id LIMIT @row_limit;

-- name: ApprovalClose :exec
UPDATE approval_requests SET status = $2, decided_by = $3, decided_at = $4, decision_reason = $5, updated_at = now()
    WHERE id = $1;

-- name: ApprovalEscalate :exec
UPDATE approval_requests SET status = 'escalated', priority = $2, escalation_level = escalation_level + 1,
    due_at = $3, updated_at = now() WHERE id = $1;

-- name: ApprovalExpire :exec
UPDATE approval_requests SET status = 'expired', decided_at = $2, decision_reason = $3, updated_at = now() WHERE id = $1;

-- name: ApprovalListOverdueIDs :many
SELECT id FROM approval_requests WHERE status IN ('pending', 'escalated') AND due_at < $1 ORDER BY due_at LIMIT 500;

-- name: ApprovalCountByStatusPriority :many
SELECT status, priority, count(*) FROM approval_requests GROUP BY status, priority;

-- name: ApprovalEventInsert :exec
INSERT INTO approval_events (approval_id, action, actor, comment) VALUES ($1, $2, $3, $4);

-- name: ApprovalCommentInsert :one
INSERT INTO approval_events (approval_id, action, actor, comment) VALUES ($1, 'comment', $2, $3)
RETURNING action, actor, comment, created_at;

-- name: ApprovalEventList :many
SELECT action, actor, comment, created_at FROM approval_events WHERE approval_id = $1 ORDER BY id;
