-- 004_serving_instances.sql: what each kiln-serve instance serves, as it
-- last reported (PUT /v1/serving/{instance}, every few seconds); the web page
-- shows it beside the aliases. A report, not a source of truth: rows not
-- refreshed for a day are dropped by the next report.
CREATE TABLE serving_instances (
    instance   text PRIMARY KEY CHECK (length(instance) BETWEEN 1 AND 200),
    url        text NOT NULL DEFAULT '' CHECK (length(url) <= 512),
    models     jsonb NOT NULL DEFAULT '[]',
    reported_by text NOT NULL DEFAULT '',
    first_seen timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
