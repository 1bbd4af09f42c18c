-- Each replica mirrors the clients and the revoked access-token ids in memory
-- (src/store/mirror.rs). Every change to either table is announced on the channel the replicas
-- listen to, whichever process makes it; PostgreSQL delivers it when the transaction commits.

CREATE FUNCTION tessera_announce_client() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('tessera_mirror', 'client ' || OLD.id);
    ELSE
        PERFORM pg_notify('tessera_mirror', 'client ' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER clients_announce AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH ROW EXECUTE FUNCTION tessera_announce_client();

CREATE FUNCTION tessera_announce_clients() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tessera_mirror', 'clients');
    RETURN NULL;
END
$$;

CREATE TRIGGER clients_announce_truncate AFTER TRUNCATE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION tessera_announce_clients();

CREATE FUNCTION tessera_announce_revoked_jti() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tessera_mirror', 'jti ' || NEW.expires_at || ' ' || NEW.jti);
    RETURN NULL;
END
$$;

CREATE TRIGGER revoked_jti_announce AFTER INSERT ON revoked_jti
    FOR EACH ROW EXECUTE FUNCTION tessera_announce_revoked_jti();
