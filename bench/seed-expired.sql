-- Adds :expired refresh-token rows that expired an hour ago, for the scale benchmark's sweep
-- (bench/run.sh, target "scale"); psql variables: expired, client.
\set ON_ERROR_STOP on
SELECT extract(epoch FROM now())::bigint AS now_s \gset
SET session_replication_role = replica;
INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scopes, auth_time, amr,
                            sid, created_at, expires_at, family_expires_at, used_at,
                            access_jti, access_exp)
SELECT md5('x' || g) || md5('y' || g), 'expired-family-' || (g / 4), :'client',
       'seed-' || (1 + (g / 4) % 1000000), 'openid offline_access', :now_s - 7200, 'pwd', '',
       :now_s - 7200, :now_s - 3600, :now_s - 3600, :now_s - 7000, md5('k' || g), :now_s - 6300
FROM generate_series(1, :expired) AS g;
SET session_replication_role = origin;
ANALYZE refresh_tokens;
CHECKPOINT;
