-- OAuth clients. URI lists, grant types and scopes are JSON arrays of exact strings.
CREATE TABLE clients (
    id                        TEXT    NOT NULL PRIMARY KEY,
    name                      TEXT    NOT NULL,
    secret_hash               TEXT,
    public                    BIGINT  NOT NULL DEFAULT 0,
    redirect_uris             TEXT    NOT NULL,
    post_logout_redirect_uris TEXT    NOT NULL DEFAULT '[]',
    grant_types               TEXT    NOT NULL,
    scopes                    TEXT    NOT NULL,
    auth_method               TEXT    NOT NULL,
    skip_consent              BIGINT  NOT NULL DEFAULT 0,
    created_at                BIGINT  NOT NULL,
    updated_at                BIGINT  NOT NULL
);

-- What a person approved for a client: the union of the scopes granted so far.
CREATE TABLE consents (
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT   NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scopes     TEXT   NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- Authorization codes (SHA-256 of the code). grant_id ties together everything issued from
-- one code, so a replayed code can revoke it all.
CREATE TABLE auth_codes (
    code_hash      TEXT   NOT NULL PRIMARY KEY,
    grant_id       TEXT   NOT NULL,
    client_id      TEXT   NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id        TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri   TEXT   NOT NULL,
    code_challenge TEXT,
    nonce          TEXT,
    scopes         TEXT   NOT NULL,
    auth_time      BIGINT NOT NULL,
    amr            TEXT   NOT NULL DEFAULT '',
    sid            TEXT   NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    access_jti     TEXT   NOT NULL DEFAULT '',
    access_exp     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX auth_codes_expires ON auth_codes (expires_at);

-- Refresh tokens (SHA-256), one family per grant. Using a token marks it used and adds its
-- successor; using a used token revokes the family. access_jti/access_exp name the access
-- token issued beside it, so revoking the family can revoke those too.
CREATE TABLE refresh_tokens (
    token_hash        TEXT   NOT NULL PRIMARY KEY,
    family_id         TEXT   NOT NULL,
    client_id         TEXT   NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id           TEXT   REFERENCES users (id) ON DELETE CASCADE,
    scopes            TEXT   NOT NULL,
    auth_time         BIGINT NOT NULL,
    amr               TEXT   NOT NULL DEFAULT '',
    sid               TEXT   NOT NULL DEFAULT '',
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    family_expires_at BIGINT NOT NULL,
    used_at           BIGINT,
    revoked_at        BIGINT,
    access_jti        TEXT   NOT NULL DEFAULT '',
    access_exp        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id, client_id);

-- Access tokens (JWT ids) revoked before they expire; kept until they would have expired.
CREATE TABLE revoked_jti (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_jti_expires ON revoked_jti (expires_at);

