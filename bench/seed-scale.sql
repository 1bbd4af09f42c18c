-- Bulk seed for the scale benchmark (bench/run.sh, target "scale"), PostgreSQL only.
-- psql variables: users, tokens, client (the bench client's id).
-- :users accounts without passwords, and :tokens refresh-token rows spread over them in
-- families of four: three used (rotated) and one live each, as real rotation leaves them.
-- None has expired; bench/seed-expired.sql adds expired rows for the sweeper afterwards.
-- Foreign-key triggers are skipped for the bulk load (every row points at a seeded user and
-- the bench client by construction), and the tables are vacuumed, analysed and checkpointed
-- so the measurement that follows does not share the machine with the aftermath of the load.
\set ON_ERROR_STOP on
SELECT extract(epoch FROM now())::bigint AS now_s \gset
SET session_replication_role = replica;

INSERT INTO users (id, username, username_key, email, email_key, email_verified, display_name,
                   password_hash, created_at, updated_at)
SELECT 'seed-' || g, 'seed' || g, 'seed' || g, 'seed' || g || '@example.test',
       'seed' || g || '@example.test', 1, '', NULL, :now_s, :now_s
FROM generate_series(1, :users) AS g;

INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scopes, auth_time, amr,
                            sid, created_at, expires_at, family_expires_at, used_at,
                            access_jti, access_exp)
SELECT md5('t' || g) || md5('u' || g), 'seed-family-' || (g / 4), :'client',
       'seed-' || (1 + (g / 4) % :users), 'openid offline_access', :now_s, 'pwd', '', :now_s,
       :now_s + 2592000, :now_s + 2592000,
       CASE WHEN g % 4 < 3 THEN :now_s END,
       md5('j' || g), :now_s + 900
FROM generate_series(1, :tokens) AS g;

SET session_replication_role = origin;
VACUUM ANALYZE users;
VACUUM ANALYZE refresh_tokens;
CHECKPOINT;
