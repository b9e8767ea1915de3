-- +goose Up
-- Pricing: meters with filters, plans and versions from files, promotions
-- unique per provider.
--
-- A meter is named by its slug in plan files, quotes and the processors'
-- counters; its name is for people. The filter selects among billable
-- events (empty lists select all).

ALTER TABLE meters RENAME COLUMN name TO slug;
ALTER TABLE meters RENAME CONSTRAINT meters_api_id_name_key TO meters_api_id_slug_key;
ALTER TABLE meters ADD COLUMN name text NOT NULL DEFAULT '' CHECK (length(name) <= 200);
ALTER TABLE meters DROP COLUMN filter_route;
ALTER TABLE meters DROP COLUMN filter_method;
ALTER TABLE meters
    ADD COLUMN filter_methods text[] NOT NULL DEFAULT '{}'
        CHECK (filter_methods <@ ARRAY['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']),
    ADD COLUMN filter_routes text[] NOT NULL DEFAULT '{}' CHECK (cardinality(filter_routes) <= 32),
    ADD COLUMN filter_status_classes text[] NOT NULL DEFAULT '{}'
        CHECK (filter_status_classes <@ ARRAY['1xx', '2xx', '3xx', '4xx']),
    ADD CONSTRAINT meters_field_check2 CHECK (
        (aggregation = 'count' AND field = '')
        OR (aggregation IN ('sum', 'max') AND field IN ('units', 'request_bytes', 'response_bytes', 'latency_ms'))
        OR (aggregation = 'unique_count' AND field = 'key_id'));

-- A plan declared in a file is managed by that file: source_file names it
-- (relative to VEIL_PRICING_DIR), and the REST API refuses to change it.
ALTER TABLE plans ADD COLUMN source_file text CHECK (source_file IS NULL OR length(source_file) BETWEEN 1 AND 1024);

-- Each version from a file records the file and the SHA-256 (hex) of the
-- content it came from, so a reload of an unchanged file is a no-op and an
-- invoice can cite exactly what priced it.
ALTER TABLE plan_versions
    ADD COLUMN source_file text,
    ADD COLUMN content_hash text CHECK (content_hash IS NULL OR content_hash ~ '^[0-9a-f]{64}$'),
    ADD CONSTRAINT plan_versions_source_check2 CHECK ((source = 'file') = (source_file IS NOT NULL AND content_hash IS NOT NULL));

-- Codes are unique per provider, compared case-insensitively.
DROP INDEX promotions_code_key;
CREATE UNIQUE INDEX promotions_org_code_key ON promotions (organization_id, lower(code));

-- +goose Down
DROP INDEX promotions_org_code_key;
CREATE UNIQUE INDEX promotions_code_key ON promotions (lower(code));
ALTER TABLE plan_versions DROP CONSTRAINT plan_versions_source_check2, DROP COLUMN content_hash, DROP COLUMN source_file;
ALTER TABLE plans DROP COLUMN source_file;
ALTER TABLE meters DROP CONSTRAINT meters_field_check2,
    DROP COLUMN filter_status_classes, DROP COLUMN filter_routes, DROP COLUMN filter_methods;
ALTER TABLE meters ADD COLUMN filter_route text NOT NULL DEFAULT '',
    ADD COLUMN filter_method text NOT NULL DEFAULT '' CHECK (filter_method IN ('', 'GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'));
ALTER TABLE meters DROP COLUMN name;
ALTER TABLE meters RENAME CONSTRAINT meters_api_id_slug_key TO meters_api_id_name_key;
ALTER TABLE meters RENAME COLUMN slug TO name;
