-- One payment per order: captured, or failed with the reason.
CREATE TABLE payments (
    order_id     TEXT PRIMARY KEY,
    payment_id   TEXT,                -- the processor's reference, when captured
    customer     TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('captured', 'failed')),
    reason       TEXT,
    at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ'))
);

-- The events already handled (unique by CloudEvents source and id).
CREATE TABLE processed (
    source       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    processed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')),
    PRIMARY KEY (source, event_id)
);

-- Events written with the state they describe, deleted once the journal has them.
CREATE TABLE outbox (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    event TEXT NOT NULL
);
