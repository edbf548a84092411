-- 001_init.sql: the registry's first schema. Applied once, inside one
-- transaction, by registry/db.c (recorded in schema_migrations). Runs with
-- search_path set to the registry's schema.

CREATE TABLE models (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' AND name !~ '\.\.'),
    task         text NOT NULL DEFAULT '',
    description  text NOT NULL DEFAULT '',
    next_version integer NOT NULL DEFAULT 1,   -- the number the next version gets; bumped under the row lock
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL DEFAULT ''
);

-- Content-addressed: one row per distinct SHA-256, shared by every version
-- that uploaded the same bytes.
CREATE TABLE artifacts (
    sha256     text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size       bigint NOT NULL CHECK (size >= 0),
    lo         oid NOT NULL,                   -- PostgreSQL large object holding the bytes
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE versions (
    model_id        bigint NOT NULL REFERENCES models (id),
    version         integer NOT NULL CHECK (version > 0),
    status          text NOT NULL DEFAULT 'registered'
                    CHECK (status IN ('registered', 'evaluated', 'promoted', 'rejected', 'archived')),
    status_reason   text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    idempotency_key text,
    lineage         jsonb NOT NULL DEFAULT '{}',
    artifact_sha256 text REFERENCES artifacts (sha256),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL DEFAULT '',
    PRIMARY KEY (model_id, version),
    UNIQUE (model_id, idempotency_key)
);
CREATE INDEX versions_status ON versions (model_id, status, version);

CREATE TABLE metrics (
    id          bigserial PRIMARY KEY,
    model_id    bigint NOT NULL,
    version     integer NOT NULL,
    name        text NOT NULL,
    value       double precision NOT NULL,
    dataset     text NOT NULL DEFAULT '',
    step        bigint,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (model_id, version) REFERENCES versions (model_id, version)
);
CREATE INDEX metrics_by_version ON metrics (model_id, version, name, id);
CREATE INDEX metrics_by_name ON metrics (model_id, name, value);

CREATE TABLE tags (
    model_id bigint NOT NULL,
    version  integer NOT NULL,
    key      text NOT NULL,
    value    text NOT NULL DEFAULT '',
    PRIMARY KEY (model_id, version, key),
    FOREIGN KEY (model_id, version) REFERENCES versions (model_id, version)
);

CREATE TABLE aliases (
    model_id   bigint NOT NULL,
    alias      text NOT NULL,
    version    integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT '',
    PRIMARY KEY (model_id, alias),
    FOREIGN KEY (model_id, version) REFERENCES versions (model_id, version)
);

-- Append-only: the trigger below refuses UPDATE and DELETE.
CREATE TABLE events (
    id       bigserial PRIMARY KEY,
    model_id bigint REFERENCES models (id),
    version  integer,
    kind     text NOT NULL,
    actor    text NOT NULL DEFAULT '',
    reason   text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL DEFAULT now(),
    data     jsonb NOT NULL DEFAULT '{}'        -- alias moves: {alias, from, to}; metrics snapshot: {metrics}
);
CREATE INDEX events_by_model ON events (model_id, id);

CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END $$;
CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

CREATE TABLE tokens (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    hash       text NOT NULL UNIQUE,            -- hex SHA-256 of the secret; the secret itself is never stored
    roles      text[] NOT NULL CHECK (roles <@ ARRAY['read', 'write', 'promote', 'admin']),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL DEFAULT '',
    revoked_at timestamptz
);

-- JSON documents the API answers with, built where the data is.
CREATE FUNCTION latest_metrics(p_model bigint, p_version integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(name, value), '{}')
      FROM (SELECT DISTINCT ON (name) name, value FROM metrics
             WHERE model_id = p_model AND version = p_version
             ORDER BY name, id DESC) latest
$$;

CREATE FUNCTION version_doc(v versions, p_model_name text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'model', p_model_name,
        'version', v.version,
        'status', v.status,
        'status_reason', v.status_reason,
        'description', v.description,
        'created_at', v.created_at,
        'created_by', v.created_by,
        'lineage', v.lineage,
        'artifact', (SELECT jsonb_build_object('sha256', a.sha256, 'size', a.size)
                       FROM artifacts a WHERE a.sha256 = v.artifact_sha256),
        'metrics', latest_metrics(v.model_id, v.version),
        'tags', (SELECT coalesce(jsonb_object_agg(t.key, t.value), '{}')
                   FROM tags t WHERE t.model_id = v.model_id AND t.version = v.version),
        'aliases', (SELECT coalesce(jsonb_agg(al.alias ORDER BY al.alias), '[]')
                      FROM aliases al WHERE al.model_id = v.model_id AND al.version = v.version))
$$;

CREATE FUNCTION model_doc(m models) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'name', m.name,
        'task', m.task,
        'description', m.description,
        'created_at', m.created_at,
        'created_by', m.created_by,
        'latest_version', (SELECT max(version) FROM versions v WHERE v.model_id = m.id),
        'aliases', (SELECT coalesce(jsonb_object_agg(al.alias, al.version), '{}')
                      FROM aliases al WHERE al.model_id = m.id))
$$;

CREATE FUNCTION event_doc(e events, p_model_name text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', e.id, 'model', p_model_name, 'version', e.version, 'kind', e.kind,
        'actor', e.actor, 'reason', e.reason, 'at', e.at, 'data', e.data)
$$;
