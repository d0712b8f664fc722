-- The integration gateway's state (switchyard-connect): each lane's cursors and state, the
-- message store (every event an adapter took, the request it was mapped to, every attempt),
-- replies from vendors, and the cases unknown failures are grouped into. Kept to SQL that
-- PostgreSQL also accepts, except `id INTEGER PRIMARY KEY` (a BIGSERIAL there).

CREATE TABLE lane_cursors (
    lane          TEXT    NOT NULL,
    topic         TEXT    NOT NULL,
    partition_no  BIGINT  NOT NULL,
    next_offset   BIGINT  NOT NULL,
    PRIMARY KEY (lane, topic, partition_no)
);

CREATE TABLE lanes (
    lane           TEXT    NOT NULL PRIMARY KEY,
    -- running | paused | draining
    state          TEXT    NOT NULL,
    updated_at_ms  BIGINT  NOT NULL
);

CREATE TABLE messages (
    id                  INTEGER NOT NULL PRIMARY KEY,
    adapter             TEXT    NOT NULL,
    adapter_hash        TEXT    NOT NULL,
    topic               TEXT    NOT NULL,
    partition_no        BIGINT  NOT NULL,
    record_offset       BIGINT  NOT NULL,
    event_id            TEXT    NOT NULL,
    event_type          TEXT    NOT NULL,
    partition_key       TEXT,
    -- The original CloudEvent (JSON).
    event               TEXT    NOT NULL,
    -- The mapped request (JSON: target, method, headers, content type, body); NULL when
    -- the mapping failed.
    request             TEXT,
    -- pending | awaiting-reply | delivered | rejected | failed | discarded | unmatched
    state               TEXT    NOT NULL,
    attempts            BIGINT  NOT NULL,
    next_attempt_at_ms  BIGINT,
    reply_deadline_ms   BIGINT,
    correlation_id      TEXT,
    case_id             TEXT,
    last_error          TEXT,
    created_at_ms       BIGINT  NOT NULL,
    updated_at_ms       BIGINT  NOT NULL,
    UNIQUE (adapter, topic, partition_no, record_offset)
);

CREATE INDEX messages_due ON messages (adapter, state, next_attempt_at_ms, id);
CREATE INDEX messages_key ON messages (adapter, state, partition_key, id);
CREATE INDEX messages_created ON messages (adapter, created_at_ms, id);
CREATE INDEX messages_case ON messages (case_id, state, id);
CREATE UNIQUE INDEX messages_correlation ON messages (adapter, correlation_id);

CREATE TABLE attempts (
    message_id      BIGINT  NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    n               BIGINT  NOT NULL,
    at_ms           BIGINT  NOT NULL,
    -- The request as sent (JSON).
    request         TEXT    NOT NULL,
    status          BIGINT,
    response_body   TEXT,
    latency_us      BIGINT  NOT NULL,
    delay_ms        BIGINT,
    error           TEXT,
    -- What the attempt led to: delivered | awaiting-reply | retry | rejected | failed
    outcome         TEXT    NOT NULL,
    PRIMARY KEY (message_id, n)
);

CREATE TABLE replies (
    id              INTEGER NOT NULL PRIMARY KEY,
    adapter         TEXT    NOT NULL,
    correlation_id  TEXT,
    received_at_ms  BIGINT  NOT NULL,
    -- JSON object of header name -> value.
    headers         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    message_id      BIGINT,
    -- matched | unmatched | late
    disposition     TEXT    NOT NULL
);

CREATE INDEX replies_adapter ON replies (adapter, disposition, id);

CREATE TABLE cases (
    id             TEXT    NOT NULL PRIMARY KEY,
    adapter        TEXT    NOT NULL,
    stage          TEXT    NOT NULL,
    error_class    TEXT    NOT NULL,
    status         BIGINT,
    message        TEXT    NOT NULL,
    vendor         TEXT    NOT NULL,
    -- Failures grouped here, ever.
    failures       BIGINT  NOT NULL,
    first_seen_ms  BIGINT  NOT NULL,
    last_seen_ms   BIGINT  NOT NULL,
    -- open | resolved
    state          TEXT    NOT NULL,
    resolved_at_ms BIGINT
);

CREATE INDEX cases_adapter ON cases (adapter, state, last_seen_ms);
