-- The subscription dispatcher's state: the same tables as the SQLite backend's
-- (migrations/sqlite/0001_dispatcher_state.sql), column for column. JSON is kept as TEXT,
-- as there, so both backends parse (and report) it the same way.
-- Every text column is COLLATE "C": keys compare and sort byte by byte, as in SQLite,
-- whatever the database's default collation.

CREATE TABLE subscriptions (
    name              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- The SubscriptionSpec as JSON (kebab-case keys).
    spec              TEXT COLLATE "C" NOT NULL,
    created_at_ms     BIGINT  NOT NULL,
    updated_at_ms     BIGINT  NOT NULL,
    generation        BIGINT  NOT NULL,
    last_error        TEXT COLLATE "C",
    last_error_at_ms  BIGINT
);

CREATE TABLE cursors (
    subscription   TEXT COLLATE "C" NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    topic          TEXT COLLATE "C" NOT NULL,
    partition_no   BIGINT  NOT NULL,
    -- The next offset to read.
    next_offset    BIGINT  NOT NULL,
    PRIMARY KEY (subscription, topic, partition_no)
);

CREATE TABLE deliveries (
    subscription         TEXT COLLATE "C" NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    topic                TEXT COLLATE "C" NOT NULL,
    partition_no         BIGINT  NOT NULL,
    record_offset        BIGINT  NOT NULL,
    partition_key        TEXT COLLATE "C",
    attempts             BIGINT  NOT NULL,
    first_attempt_at_ms  BIGINT,
    next_attempt_at_ms   BIGINT  NOT NULL,
    last_error           TEXT COLLATE "C",
    PRIMARY KEY (subscription, topic, partition_no, record_offset)
);

CREATE INDEX deliveries_due
    ON deliveries (subscription, next_attempt_at_ms, topic, partition_no, record_offset);

CREATE TABLE parked (
    subscription         TEXT COLLATE "C" NOT NULL REFERENCES subscriptions (name) ON DELETE CASCADE,
    topic                TEXT COLLATE "C" NOT NULL,
    partition_no         BIGINT  NOT NULL,
    record_offset        BIGINT  NOT NULL,
    partition_key        TEXT COLLATE "C",
    attempts             BIGINT  NOT NULL,
    first_attempt_at_ms  BIGINT,
    next_attempt_at_ms   BIGINT  NOT NULL,
    last_error           TEXT COLLATE "C",
    reason               TEXT COLLATE "C" NOT NULL,
    parked_at_ms         BIGINT  NOT NULL,
    PRIMARY KEY (subscription, topic, partition_no, record_offset)
);
