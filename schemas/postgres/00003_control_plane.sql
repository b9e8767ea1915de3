-- +goose Up
-- Control plane: APIs and their versions, the approval workflow, webhooks and
-- the audit log. Users are identified by the subject of their identity
-- provider's tokens.
ALTER TABLE users ADD COLUMN subject text;
CREATE UNIQUE INDEX users_subject_key ON users (subject);

CREATE TYPE api_state AS ENUM (
    'draft', 'submitted', 'pending_approval', 'approved', 'active',
    'rejected', 'failed', 'suspended', 'deprecated', 'retired'
);
CREATE TYPE api_visibility AS ENUM ('public', 'private');

CREATE TABLE apis (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name              text NOT NULL,
    slug              text NOT NULL UNIQUE,
    description       text NOT NULL DEFAULT '',
    upstream_url      text NOT NULL,
    version           text NOT NULL,
    routes            jsonb NOT NULL DEFAULT '[]',
    health_check_path text NOT NULL DEFAULT '',
    docs_url          text NOT NULL DEFAULT '',
    visibility        api_visibility NOT NULL DEFAULT 'public',
    state             api_state NOT NULL DEFAULT 'draft',
    state_reason      text NOT NULL DEFAULT '',
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX apis_org_idx ON apis (organization_id, created_at, id);
CREATE INDEX apis_state_idx ON apis (state);

CREATE TABLE api_versions (
    api_id       uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    version      text NOT NULL,
    upstream_url text NOT NULL,
    routes       jsonb NOT NULL DEFAULT '[]',
    changelog    text NOT NULL DEFAULT '',
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_id, version)
);

-- Every state change of an API, written in the transaction that makes it.
CREATE TABLE api_transitions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    api_id     uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    from_state api_state NOT NULL,
    to_state   api_state NOT NULL,
    actor      text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_transitions_api_idx ON api_transitions (api_id, id);

CREATE TYPE approval_status AS ENUM ('pending', 'escalated', 'approved', 'rejected', 'changes_requested', 'expired');
CREATE TYPE approval_priority AS ENUM ('low', 'normal', 'high', 'urgent');

CREATE TABLE approval_requests (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    api_id           uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    status           approval_status NOT NULL DEFAULT 'pending',
    priority         approval_priority NOT NULL DEFAULT 'normal',
    escalation_level integer NOT NULL DEFAULT 0,
    submitted_by     text NOT NULL,
    due_at           timestamptz NOT NULL,
    decided_by       text,
    decided_at       timestamptz,
    decision_reason  text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX approval_requests_list_idx ON approval_requests (created_at, id);
CREATE INDEX approval_requests_open_idx ON approval_requests (due_at) WHERE status IN ('pending', 'escalated');
-- At most one open request per API.
CREATE UNIQUE INDEX approval_requests_one_open ON approval_requests (api_id) WHERE status IN ('pending', 'escalated');

-- The history of a request: submission, decisions, escalations and comments.
CREATE TABLE approval_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    approval_id uuid NOT NULL REFERENCES approval_requests (id) ON DELETE CASCADE,
    action      text NOT NULL,
    actor       text NOT NULL,
    comment     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX approval_events_approval_idx ON approval_events (approval_id, id);

CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url             text NOT NULL,
    description     text NOT NULL DEFAULT '',
    event_types     text[] NOT NULL,
    secret          text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_org_idx ON webhook_endpoints (organization_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id       text NOT NULL,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at, id);

-- One row per HTTP attempt of a delivery.
CREATE TABLE webhook_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    status_code integer,
    error       text NOT NULL DEFAULT '',
    duration_ms integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

CREATE TABLE audit_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    actor           text NOT NULL,
    actor_role      text NOT NULL DEFAULT '',
    organization_id uuid REFERENCES organizations (id) ON DELETE SET NULL,
    action          text NOT NULL,
    target_type     text NOT NULL,
    target_id       text NOT NULL,
    before          jsonb,
    after           jsonb,
    source_ip       text NOT NULL DEFAULT '',
    user_agent      text NOT NULL DEFAULT '',
    request_id      text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_org_idx ON audit_log (organization_id, id);
CREATE INDEX audit_log_target_idx ON audit_log (target_type, target_id, id);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
DROP TABLE approval_events;
DROP TABLE approval_requests;
DROP TYPE approval_priority;
DROP TYPE approval_status;
DROP TABLE api_transitions;
DROP TABLE api_versions;
DROP TABLE apis;
DROP TYPE api_visibility;
DROP TYPE api_state;
DROP INDEX users_subject_key;
ALTER TABLE users DROP COLUMN subject;
