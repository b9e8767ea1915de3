-- OrganizationUpsert returns the id of the organization with the slug,
-- creating it (named after its slug) on first sight.
-- name: OrganizationUpsert :one
INSERT INTO organizations (slug, name) VALUES (@slug, @slug)
ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug
RETURNING id;

-- UserUpsert creates or updates the user with the subject. adopt says
-- whether the user may take the email; an email another user holds is
-- never taken, and a new user without one of their own gets a placeholder
-- (subject@users.invalid). An empty name keeps the stored one.
-- name: UserUpsert :one
WITH free AS (
    SELECT @adopt::boolean AND NOT EXISTS (SELECT 1 FROM users o
        WHERE lower(o.email) = lower(@email::text) AND o.subject <> @subject::text) AS ok)
INSERT INTO users (subject, email, name)
    SELECT @subject::text, CASE WHEN free.ok THEN @email::text ELSE @subject::text || '@users.invalid' END, @name::text FROM free
ON CONFLICT (subject) DO UPDATE SET
    name = CASE WHEN EXCLUDED.name = '' THEN users.name ELSE EXCLUDED.name END,
    email = CASE WHEN (SELECT ok FROM free) THEN @email::text ELSE users.email END
RETURNING id;

-- name: MembershipInsert :exec
INSERT INTO memberships (organization_id, user_id, role) VALUES (@organization_id, @user_id, @role::member_role)
ON CONFLICT DO NOTHING;

-- name: OrganizationIDBySlug :one
SELECT id FROM organizations WHERE slug = $1;
