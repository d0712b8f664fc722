-- The subscription dispatcher's state. Kept to SQL that PostgreSQL also accepts, so that
-- its backend's schema reads the same (column names avoid the keywords `partition` and
-- `offset`).

CREATE TABLE subscriptions (
    name              TEXT    NOT NULL PRIMARY KEY,
    -- The SubscriptionSpec as JSON (kebab-case keys).
    spec              TEXT    NOT NULL,
    created_at_ms     BIGINT  NOT NULL,
    updated_at_ms     BIGINT  NOT NULL,
    generation        BIGINT  NOT NULL,
    last_error        TEXT,
    last_error_at_ms  BIGINT
);

CREATE TABLE cursors (
    subscription   TEXT    NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    topic          TEXT    NOT NULL,
    partition_no   BIGINT  NOT NULL,
    -- The next offset to read.
    next_offset    BIGINT  NOT NULL,
    PRIMARY KEY (subscription, topic, partition_no)
);

CREATE TABLE deliveries (
    subscription         TEXT    NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    topic                TEXT    NOT NULL,
    partition_no         BIGINT  NOT NULL,
    record_offset        BIGINT  NOT NULL,
    partition_key        TEXT,
    attempts             BIGINT  NOT NULL,
    first_attempt_at_ms  BIGINT,
    next_attempt_at_ms   BIGINT  NOT NULL,
    last_error           TEXT,
    PRIMARY KEY (subscription, topic, partition_no, record_offset)
);

CREATE INDEX deliveries_due
    ON deliveries (subscription, next_attempt_at_ms, topic, partition_no, record_offset);

CREATE TABLE parked (
    subscription         TEXT    NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    topic                TEXT    NOT NULL,
    partition_no         BIGINT  NOT NULL,
    record_offset        BIGINT  NOT NULL,
    partition_key        TEXT,
    attempts             BIGINT  NOT NULL,
    first_attempt_at_ms  BIGINT,
    next_attempt_at_ms   BIGINT  NOT NULL,
    last_error           TEXT,
    reason               TEXT    NOT NULL,
    parked_at_ms         BIGINT  NOT NULL,
    PRIMARY KEY (subscription, topic, partition_no, record_offset)
);
