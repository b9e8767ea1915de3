-- +goose Up
-- Plans, pricing, promotions, subscriptions and API keys.
--
-- Money and units are numeric, never float: amounts and units carry six
-- decimals (the scale of units in ClickHouse), unit prices twelve, so a price
-- per byte stays exact. A plan version is immutable once a subscription has
-- used it, because invoices must be reproducible from the versions they cite.
-- Billing rows refuse deletion of what they point at (ON DELETE RESTRICT): an
-- API, organization or plan version with subscriptions is retired or archived,
-- not deleted.

CREATE TYPE plan_status AS ENUM ('draft', 'active', 'archived');
CREATE TYPE plan_type AS ENUM ('usage_based', 'subscription', 'freemium', 'hybrid');
CREATE TYPE billing_interval AS ENUM ('month', 'year');

CREATE TABLE plans (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    api_id      uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug        text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    description text NOT NULL DEFAULT '',
    status      plan_status NOT NULL DEFAULT 'draft',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (api_id, slug)
);

-- A plan's priced terms. New terms are a new version; subscriptions pin one.
-- quota_requests NULL is unlimited; rate limits NULL are none.
CREATE TABLE plan_versions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    plan_id         uuid NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    version         integer NOT NULL CHECK (version >= 1),
    type            plan_type NOT NULL,
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    interval        billing_interval NOT NULL DEFAULT 'month',
    base_fee        numeric(20, 6) NOT NULL DEFAULT 0 CHECK (base_fee >= 0),
    trial_days      integer NOT NULL DEFAULT 0 CHECK (trial_days >= 0),
    quota_requests  bigint CHECK (quota_requests >= 0),
    quota_hard      boolean NOT NULL DEFAULT true,
    rate_per_second integer CHECK (rate_per_second > 0),
    rate_per_minute integer CHECK (rate_per_minute > 0),
    included_units  numeric(20, 6) NOT NULL DEFAULT 0 CHECK (included_units >= 0),
    -- Where the version came from: the REST API or a plan file (YAML).
    source          text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'file')),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (plan_id, version)
);

CREATE TYPE meter_aggregation AS ENUM ('count', 'sum', 'max', 'unique_count');

-- What is counted: an aggregation over a usage event field, optionally
-- restricted to a route pattern and a method ('' matches all).
CREATE TABLE meters (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    api_id        uuid NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    description   text NOT NULL DEFAULT '',
    aggregation   meter_aggregation NOT NULL,
    field         text NOT NULL DEFAULT '' CHECK (field ~ '^([a-z][a-z0-9_]{0,62})?$'),
    filter_route  text NOT NULL DEFAULT '',
    filter_method text NOT NULL DEFAULT '' CHECK (filter_method IN ('', 'GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (api_id, name),
    -- Only count needs no field to aggregate.
    CHECK (aggregation = 'count' OR field <> '')
);

CREATE TYPE charge_model AS ENUM ('per_unit', 'graduated', 'volume', 'package');

-- How a plan version prices one meter. per_unit and package carry their
-- price here (package: the price of each started package of package_size
-- units); graduated and volume take theirs from charge_tiers. quota NULL is
-- unlimited. The meter must belong to the plan's API: the service checks it.
CREATE TABLE plan_version_charges (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    plan_version_id uuid NOT NULL REFERENCES plan_versions (id) ON DELETE CASCADE,
    meter_id        uuid NOT NULL REFERENCES meters (id) ON DELETE RESTRICT,
    included_units  numeric(20, 6) NOT NULL DEFAULT 0 CHECK (included_units >= 0),
    model           charge_model NOT NULL,
    package_size    numeric(20, 6) CHECK (package_size > 0),
    unit_price      numeric(24, 12) CHECK (unit_price >= 0),
    quota           numeric(20, 6) CHECK (quota >= 0),
    quota_hard      boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (plan_version_id, meter_id),
    CHECK ((model = 'package') = (package_size IS NOT NULL)),
    CHECK ((model IN ('per_unit', 'package')) = (unit_price IS NOT NULL))
);
CREATE INDEX plan_version_charges_meter_idx ON plan_version_charges (meter_id);

-- The tiers of a graduated or volume charge, in position order. up_to is the
-- tier's inclusive upper bound; NULL (unlimited) is allowed on the last tier
-- only, and bounds rise strictly: charge_tiers_check_order enforces both at
-- commit, so a transaction may write tiers in any order.
CREATE TABLE charge_tiers (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    charge_id  uuid NOT NULL REFERENCES plan_version_charges (id) ON DELETE CASCADE,
    position   integer NOT NULL CHECK (position >= 1),
    up_to      numeric(20, 6) CHECK (up_to > 0),
    unit_price numeric(24, 12) NOT NULL DEFAULT 0 CHECK (unit_price >= 0),
    flat_fee   numeric(20, 6) NOT NULL DEFAULT 0 CHECK (flat_fee >= 0),
    UNIQUE (charge_id, position)
);

-- +goose StatementBegin
CREATE FUNCTION charge_tiers_check_order() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    charge uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.charge_id ELSE NEW.charge_id END;
    bad    integer;
BEGIN
    SELECT t.position INTO bad
    FROM (
        SELECT position, up_to,
               lead(position) OVER w AS next_position,
               lag(up_to) OVER w AS prev_up_to,
               lag(position) OVER w AS prev_position
        FROM charge_tiers
        WHERE charge_id = charge
        WINDOW w AS (ORDER BY position)
    ) t
    WHERE (t.up_to IS NULL AND t.next_position IS NOT NULL)
       OR (t.prev_position IS NOT NULL AND t.up_to IS NOT NULL AND t.up_to <= t.prev_up_to)
    ORDER BY t.position
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'charge % tier %: only the last tier may be unbounded and bounds must rise', charge, bad
            USING ERRCODE = 'check_violation', CONSTRAINT = 'charge_tiers_order', TABLE = 'charge_tiers';
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE CONSTRAINT TRIGGER charge_tiers_order
    AFTER INSERT OR UPDATE OR DELETE ON charge_tiers
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION charge_tiers_check_order();

CREATE TYPE promotion_kind AS ENUM ('percent_off', 'amount_off', 'free_units', 'trial_extension');
CREATE TYPE promotion_duration AS ENUM ('once', 'repeating', 'forever');

-- A provider's promotion. value is a percentage (percent_off), an amount in
-- currency (amount_off), a number of units (free_units) or of days
-- (trial_extension). redemptions counts uses so a single UPDATE can claim one
-- without exceeding max_redemptions. A promotion with no promotion_plans rows
-- is eligible for every plan of the issuing organization's APIs.
CREATE TABLE promotions (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    code             text NOT NULL CHECK (code ~ '^[A-Za-z0-9_-]{3,64}$'),
    description      text NOT NULL DEFAULT '',
    kind             promotion_kind NOT NULL,
    value            numeric(20, 6) NOT NULL CHECK (value > 0),
    currency         text CHECK (currency ~ '^[A-Z]{3}$'),
    duration         promotion_duration NOT NULL DEFAULT 'once',
    duration_periods integer CHECK (duration_periods > 0),
    valid_from       timestamptz NOT NULL DEFAULT now(),
    valid_until      timestamptz,
    max_redemptions  integer CHECK (max_redemptions > 0),
    max_per_customer integer CHECK (max_per_customer > 0),
    redemptions      integer NOT NULL DEFAULT 0 CHECK (redemptions >= 0),
    priority         integer NOT NULL DEFAULT 0,
    stackable        boolean NOT NULL DEFAULT false,
    enabled          boolean NOT NULL DEFAULT true,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'percent_off' OR value <= 100),
    CHECK (kind <> 'trial_extension' OR value = trunc(value)),
    CHECK ((kind = 'amount_off') = (currency IS NOT NULL)),
    CHECK ((duration = 'repeating') = (duration_periods IS NOT NULL)),
    CHECK (valid_until IS NULL OR valid_until > valid_from),
    CHECK (max_redemptions IS NULL OR redemptions <= max_redemptions)
);
CREATE UNIQUE INDEX promotions_code_key ON promotions (lower(code));
CREATE INDEX promotions_org_idx ON promotions (organization_id, created_at, id);

CREATE TABLE promotion_plans (
    promotion_id uuid NOT NULL REFERENCES promotions (id) ON DELETE CASCADE,
    plan_id      uuid NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    PRIMARY KEY (promotion_id, plan_id)
);
CREATE INDEX promotion_plans_plan_idx ON promotion_plans (plan_id);

CREATE TYPE subscription_status AS ENUM ('trialing', 'active', 'past_due', 'suspended', 'canceled');

-- A consumer organization's subscription to an API, pinned to a plan
-- version. The service bumps sync_version on every change the gateway must
-- see; the sync worker sets synced_version once Redis holds that version.
CREATE TABLE subscriptions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    subscriber           text NOT NULL,
    api_id               uuid NOT NULL REFERENCES apis (id) ON DELETE RESTRICT,
    plan_version_id      uuid NOT NULL REFERENCES plan_versions (id) ON DELETE RESTRICT,
    status               subscription_status NOT NULL DEFAULT 'active',
    trial_ends_at        timestamptz,
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    canceled_at          timestamptz,
    max_active_keys      integer NOT NULL DEFAULT 5 CHECK (max_active_keys >= 0),
    sync_version         bigint NOT NULL DEFAULT 1,
    synced_version       bigint NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (current_period_end > current_period_start),
    CHECK (status <> 'trialing' OR trial_ends_at IS NOT NULL),
    CHECK ((status = 'canceled') = (canceled_at IS NOT NULL)),
    CHECK (synced_version BETWEEN 0 AND sync_version)
);
CREATE INDEX subscriptions_org_idx ON subscriptions (organization_id, created_at, id);
CREATE INDEX subscriptions_api_idx ON subscriptions (api_id, created_at, id);
CREATE INDEX subscriptions_plan_version_idx ON subscriptions (plan_version_id);
CREATE INDEX subscriptions_period_end_idx ON subscriptions (current_period_end) WHERE status IN ('trialing', 'active', 'past_due');
CREATE INDEX subscriptions_unsynced_idx ON subscriptions (updated_at) WHERE synced_version < sync_version;

-- The pricing history: one dated row per plan version or status change, so
-- an event is priced by the version in force at its time.
CREATE TABLE subscription_history (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    plan_version_id uuid NOT NULL REFERENCES plan_versions (id) ON DELETE RESTRICT,
    status          subscription_status NOT NULL,
    effective_at    timestamptz NOT NULL,
    actor           text NOT NULL,
    reason          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscription_history_sub_idx ON subscription_history (subscription_id, effective_at, id);
CREATE INDEX subscription_history_plan_version_idx ON subscription_history (plan_version_id);

-- A plan version may be used only by subscriptions to the plan's own API.
-- +goose StatementBegin
CREATE FUNCTION subscriptions_check_api() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM plan_versions v JOIN plans p ON p.id = v.plan_id
        WHERE v.id = NEW.plan_version_id AND p.api_id = NEW.api_id
    ) THEN
        RAISE EXCEPTION 'plan version % is not a plan of api %', NEW.plan_version_id, NEW.api_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'subscriptions_plan_api', TABLE = 'subscriptions';
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER subscriptions_plan_api
    BEFORE INSERT OR UPDATE OF api_id, plan_version_id ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION subscriptions_check_api();

-- plan_version_lock_used takes the version's row lock and reports whether any
-- subscription, now or in its history, has used it. The FOR UPDATE conflicts
-- with the KEY SHARE lock that inserting a referencing subscription takes, so
-- a change and a first subscription cannot pass each other unseen.
-- +goose StatementBegin
CREATE FUNCTION plan_version_lock_used(version_id uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM plan_versions WHERE id = version_id FOR UPDATE;
    RETURN EXISTS (SELECT 1 FROM subscriptions WHERE plan_version_id = version_id)
        OR EXISTS (SELECT 1 FROM subscription_history WHERE plan_version_id = version_id);
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION plan_versions_refuse_used() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    version_id uuid;
BEGIN
    IF TG_TABLE_NAME = 'plan_versions' THEN
        version_id := OLD.id;
    ELSIF TG_TABLE_NAME = 'plan_version_charges' THEN
        version_id := CASE WHEN TG_OP = 'INSERT' THEN NEW.plan_version_id ELSE OLD.plan_version_id END;
    ELSE
        SELECT c.plan_version_id INTO version_id FROM plan_version_charges c
        WHERE c.id = CASE WHEN TG_OP = 'INSERT' THEN NEW.charge_id ELSE OLD.charge_id END;
    END IF;
    IF version_id IS NOT NULL AND plan_version_lock_used(version_id) THEN
        RAISE EXCEPTION 'plan version % is used by a subscription and cannot change', version_id
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'plan_versions_immutable', TABLE = TG_TABLE_NAME;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER plan_versions_immutable
    BEFORE UPDATE OR DELETE ON plan_versions
    FOR EACH ROW EXECUTE FUNCTION plan_versions_refuse_used();
CREATE TRIGGER plan_version_charges_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON plan_version_charges
    FOR EACH ROW EXECUTE FUNCTION plan_versions_refuse_used();
CREATE TRIGGER charge_tiers_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON charge_tiers
    FOR EACH ROW EXECUTE FUNCTION plan_versions_refuse_used();

-- A promotion applied to a subscription; organization_id is the customer,
-- for max_per_customer.
CREATE TABLE promotion_redemptions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    promotion_id    uuid NOT NULL REFERENCES promotions (id) ON DELETE RESTRICT,
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    periods_applied integer NOT NULL DEFAULT 0 CHECK (periods_applied >= 0),
    redeemed_by     text NOT NULL,
    redeemed_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscription_id, promotion_id)
);
CREATE INDEX promotion_redemptions_customer_idx ON promotion_redemptions (promotion_id, organization_id);

CREATE TYPE key_state AS ENUM ('pending', 'active', 'suspended', 'expired', 'revoked', 'failed_sync');

-- API keys are stored only as the SHA-256 of the key (lower-case hex) and a
-- display prefix and last four characters, both too short to hold a key.
-- Empty methods or routes allow all. grace_until is set on a rotated key: it
-- stays valid until then.
CREATE TABLE api_keys (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id   uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    name              text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    env               text NOT NULL CHECK (env IN ('live', 'test')),
    hash              text NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$'),
    prefix            text NOT NULL CHECK (prefix ~ ('^veil_' || env || '_[A-Za-z0-9]{1,8}$')),
    last4             text NOT NULL CHECK (last4 ~ '^[A-Za-z0-9]{4}$'),
    state             key_state NOT NULL DEFAULT 'pending',
    expires_at        timestamptz,
    methods           text[] NOT NULL DEFAULT '{}' CHECK (methods <@ ARRAY['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']),
    routes            text[] NOT NULL DEFAULT '{}',
    rate_per_second   integer CHECK (rate_per_second > 0),
    rate_per_minute   integer CHECK (rate_per_minute > 0),
    metadata          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    rotated_from      uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    grace_until       timestamptz,
    auto_rotate       boolean NOT NULL DEFAULT false,
    rotate_every_days integer NOT NULL DEFAULT 90 CHECK (rotate_every_days > 0),
    last_rotated_at   timestamptz,
    auto_renew        boolean NOT NULL DEFAULT false,
    renew_days        integer CHECK (renew_days > 0),
    sync_version      bigint NOT NULL DEFAULT 1,
    synced_version    bigint NOT NULL DEFAULT 0,
    sync_attempts     integer NOT NULL DEFAULT 0 CHECK (sync_attempts >= 0),
    sync_error        text NOT NULL DEFAULT '',
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    CHECK (NOT auto_renew OR renew_days IS NOT NULL),
    CHECK ((state = 'revoked') = (revoked_at IS NOT NULL)),
    CHECK (synced_version BETWEEN 0 AND sync_version),
    CHECK (rotated_from <> id)
);
CREATE INDEX api_keys_subscription_idx ON api_keys (subscription_id, created_at, id);
-- Counting the keys that hold one of a subscription's max_active_keys slots.
CREATE INDEX api_keys_live_idx ON api_keys (subscription_id) WHERE state IN ('pending', 'active', 'suspended', 'failed_sync');
-- The daily expiry job and its notices.
CREATE INDEX api_keys_expiry_idx ON api_keys (expires_at) WHERE state IN ('active', 'suspended');
-- Old keys whose rotation grace runs out.
CREATE INDEX api_keys_grace_idx ON api_keys (grace_until) WHERE grace_until IS NOT NULL AND state IN ('active', 'suspended');
-- The automatic rotation job.
CREATE INDEX api_keys_auto_rotate_idx ON api_keys (last_rotated_at) WHERE auto_rotate AND state = 'active';
-- Keys whose latest change has not reached the gateway yet.
CREATE INDEX api_keys_unsynced_idx ON api_keys (updated_at) WHERE synced_version < sync_version;
CREATE INDEX api_keys_rotated_from_idx ON api_keys (rotated_from) WHERE rotated_from IS NOT NULL;

CREATE TYPE key_notice_kind AS ENUM ('expiry_7d', 'expiry_3d', 'expiry_1d', 'rotation_before', 'rotation_after', 'expired');

-- Notices sent about a key. event_at is the expiry or rotation the notice
-- announces, so a renewed expiry gets its own notices while each one is
-- still sent only once.
CREATE TABLE key_notices (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id   uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    kind     key_notice_kind NOT NULL,
    channel  text NOT NULL CHECK (channel IN ('email', 'webhook')),
    event_at timestamptz NOT NULL,
    sent_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (key_id, kind, channel, event_at)
);

-- +goose Down
DROP TABLE key_notices;
DROP TYPE key_notice_kind;
DROP TABLE api_keys;
DROP TYPE key_state;
DROP TABLE promotion_redemptions;
DROP TRIGGER charge_tiers_immutable ON charge_tiers;
DROP TRIGGER plan_version_charges_immutable ON plan_version_charges;
DROP TRIGGER plan_versions_immutable ON plan_versions;
DROP FUNCTION plan_versions_refuse_used();
DROP FUNCTION plan_version_lock_used(uuid);
DROP TABLE subscription_history;
DROP TABLE subscriptions;
DROP FUNCTION subscriptions_check_api();
DROP TYPE subscription_status;
DROP TABLE promotion_plans;
DROP TABLE promotions;
DROP TYPE promotion_duration;
DROP TYPE promotion_kind;
DROP TABLE charge_tiers;
DROP FUNCTION charge_tiers_check_order();
DROP TABLE plan_version_charges;
DROP TYPE charge_model;
DROP TABLE meters;
DROP TYPE meter_aggregation;
DROP TABLE plan_versions;
DROP TABLE plans;
DROP TYPE billing_interval;
DROP TYPE plan_type;
DROP TYPE plan_status;
