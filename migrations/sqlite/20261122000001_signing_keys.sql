-- Signing keys. A key is published in the JWKS from creation until published_until; it signs
-- from active_from until retired_at. generation is unique so that two replicas (or the CLI)
-- rotating at once cannot both add a key: the second insert fails and that side reloads.
CREATE TABLE signing_keys (
    kid             TEXT    NOT NULL PRIMARY KEY,
    generation      BIGINT  NOT NULL,
    algorithm       TEXT    NOT NULL,
    private_key     BLOB    NOT NULL,
    public_jwk      TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    active_from     BIGINT  NOT NULL,
    retired_at      BIGINT,
    published_until BIGINT,
    CONSTRAINT signing_keys_generation_key UNIQUE (generation)
);
