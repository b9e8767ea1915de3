-- +goose Up
-- Ingest tokens: the bearer tokens producers other than the gateway post
-- usage events with. Only the SHA-256 of a token is stored (a token is 256
-- random bits, so a plain hash is enough); its plaintext is shown once, when
-- an admin issues it. Each token names the event sources it may write (an
-- entry ending in * is a prefix) and, optionally, the API ids; an empty
-- api_ids means any API. Revoked tokens stay, for the audit trail.
CREATE TABLE ingest_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix     text NOT NULL,
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    sources    text[] NOT NULL CHECK (cardinality(sources) BETWEEN 1 AND 100),
    api_ids    text[] NOT NULL DEFAULT '{}' CHECK (cardinality(api_ids) <= 100),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    revoked_by text
);
CREATE INDEX ingest_tokens_created_idx ON ingest_tokens (created_at, id);

-- +goose Down
DROP TABLE ingest_tokens;
