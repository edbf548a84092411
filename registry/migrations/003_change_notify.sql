-- 003_change_notify.sql: every committed change to what the registry's read
-- answers are made of sends NOTIFY kiln_registry_change with the schema's
-- name as payload (one per transaction: PostgreSQL folds identical
-- notifications). kiln-registry LISTENs and drops its in-memory answers
-- (cache.c), so an alias read from memory is never older than the last
-- change it was told about.
CREATE FUNCTION notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kiln_registry_change', TG_TABLE_SCHEMA);
    RETURN NULL;
END $$;

CREATE TRIGGER models_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON models
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change();
CREATE TRIGGER versions_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON versions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change();
CREATE TRIGGER aliases_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aliases
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change();
CREATE TRIGGER metrics_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON metrics
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change();
CREATE TRIGGER tags_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tags
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change();
CREATE TRIGGER artifacts_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON artifacts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_change();
