-- 002_trainer_leases.sql: one training lease per model (issue 18, finding 8).
-- A trainer takes the lease at start (epoch + 1 when it changes hands),
-- renews it while it trains, and presents its epoch when it creates a version
-- (X-Kiln-Lease-Epoch); a version from an older epoch is refused, so two
-- trainers of one model cannot fork the version chain.
CREATE TABLE leases (
    model_id    bigint PRIMARY KEY REFERENCES models (id),
    holder      text NOT NULL CHECK (length(holder) BETWEEN 1 AND 200),
    epoch       bigint NOT NULL CHECK (epoch > 0),
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
