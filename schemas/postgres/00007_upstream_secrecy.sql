-- +goose Up
-- Upstream secrecy and origin proof, and re-review after a failed
-- registration (issue 13, findings 2 and 3).

-- What an admin approved: the slug, upstream, routes and health path the
-- gateway may serve. Written when a review approves the API, and the only
-- source registration, retry, resume and reconciliation build a route
-- from, so that a change of the live columns after approval (by a provider
-- or by hand) never reaches the gateway without a new review.
ALTER TABLE apis ADD COLUMN approved_snapshot jsonb;

-- APIs approved before this migration: their live columns are what was
-- approved, as long as nothing could change them since (failed APIs could,
-- and must be reviewed again before they are served: they get none and a
-- retry refuses them).
UPDATE apis SET approved_snapshot = jsonb_build_object(
        'slug', slug, 'upstream_url', upstream_url, 'routes', routes, 'health_check_path', health_check_path)
    WHERE state IN ('approved', 'active', 'suspended', 'deprecated');

-- The key the gateway signs each proxied request of an API with
-- (Veil-Signature). Kept in plaintext because the gateway needs it to sign
-- (a hash would not do); it is never returned by a read endpoint, never
-- audited and never logged. An API gets one at creation, never shown
-- (revealed false); the provider sees a secret once, in the answer to a
-- rotation. After rotating a revealed secret the gateway signs with both
-- until previous_until, so the provider can roll its upstream over
-- without refusing calls.
CREATE TABLE api_signing_secrets (
    api_id          uuid PRIMARY KEY REFERENCES apis (id) ON DELETE CASCADE,
    secret          text NOT NULL CHECK (length(secret) >= 32),
    previous_secret text,
    previous_until  timestamptz,
    rotated_at      timestamptz NOT NULL DEFAULT now(),
    revealed        boolean NOT NULL DEFAULT false,
    CHECK ((previous_secret IS NULL) = (previous_until IS NULL))
);

-- Existing APIs get a secret now (gen_random_uuid draws from a strong
-- random source; two of them carry 244 random bits), unrevealed like a
-- new API's.
INSERT INTO api_signing_secrets (api_id, secret)
SELECT id, 'vsk_' || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '')
FROM apis;

-- +goose Down
DROP TABLE api_signing_secrets;
ALTER TABLE apis DROP COLUMN approved_snapshot;
