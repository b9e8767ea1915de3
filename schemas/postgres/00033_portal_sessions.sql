-- +goose Up
-- The portal's signed-in browsers. The cookie carries a random 32-byte
-- value; only its SHA-256 is stored, so that a read of this table signs no
-- one in. The principal is copied from the ID token (or the development
-- persona) at sign-in and stays for the session's life: a role changed at
-- the identity provider takes effect at the next sign-in.
CREATE TABLE portal_sessions (
    id_hash        bytea PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    subject        text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 255),
    org            text NOT NULL CHECK (org ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    role           text NOT NULL CHECK (role IN ('admin', 'provider', 'consumer')),
    name           text NOT NULL DEFAULT '',
    email          text NOT NULL DEFAULT '',
    email_verified boolean NOT NULL DEFAULT false,
    -- How the browser signed in: oidc or dev (veil dev's personas).
    method         text NOT NULL CHECK (method IN ('oidc', 'dev')),
    -- The token the session's forms echo; not a secret from the browser.
    csrf           text NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL CHECK (expires_at > created_at),
    last_seen_at   timestamptz NOT NULL
);
CREATE INDEX portal_sessions_expires_idx ON portal_sessions (expires_at);
CREATE INDEX portal_sessions_last_seen_idx ON portal_sessions (last_seen_at);

-- Sign-ins under way: an OIDC authorization request (its state, PKCE
-- verifier and nonce) or a development sign-in form. A row is deleted when
-- it is used, so a state or form token works once. binding_hash is the
-- SHA-256 of the browser's pre-session cookie: a callback or form from
-- another browser is refused.
CREATE TABLE portal_logins (
    state_hash   bytea PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    binding_hash bytea NOT NULL CHECK (octet_length(binding_hash) = 32),
    method       text NOT NULL CHECK (method IN ('oidc', 'dev')),
    verifier     text NOT NULL DEFAULT '',
    nonce        text NOT NULL DEFAULT '',
    return_to    text NOT NULL DEFAULT '/' CHECK (char_length(return_to) <= 2048),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX portal_logins_expires_idx ON portal_logins (expires_at);

-- +goose Down
DROP TABLE portal_logins;
DROP TABLE portal_sessions;
