-- Upstream identities (Google, GitHub, any OpenID Connect provider) linked to local accounts.
-- An identity is keyed by (provider, subject), never by email: once linked it is found by
-- subject even if its email changes upstream, and it can belong to one account only.
CREATE TABLE identities (
    provider       TEXT   NOT NULL,
    subject        TEXT   NOT NULL,
    user_id        TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email          TEXT   NOT NULL DEFAULT '',
    email_verified BIGINT NOT NULL DEFAULT 0,
    linked_at      BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX identities_user ON identities (user_id);

-- Which upstream the person signed in with, carried into ID tokens as `idp`.
ALTER TABLE auth_codes ADD COLUMN idp TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN idp TEXT NOT NULL DEFAULT '';
