-- +goose Up
-- Rules the subscription and key services rely on.

-- One live subscription per organization and API: a second subscribe while
-- one is live is a conflict, not a second bill.
CREATE UNIQUE INDEX subscriptions_one_live_key ON subscriptions (organization_id, api_id) WHERE status <> 'canceled';

-- A successor key issued by automatic rotation waits here, sealed
-- (AES-256-GCM under the control plane's key-seal secret, the key id as
-- associated data), until the consumer reveals it once; revealing erases
-- it. Manually issued keys are shown in the response and never stored.
ALTER TABLE api_keys ADD COLUMN sealed_key bytea;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN sealed_key;
DROP INDEX subscriptions_one_live_key;
