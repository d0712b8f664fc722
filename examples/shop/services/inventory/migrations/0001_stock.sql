-- What the shop has, and what each order holds.
CREATE TABLE stock (
    sku           TEXT PRIMARY KEY,
    available     INTEGER NOT NULL CHECK (available >= 0),
    price_cents   INTEGER NOT NULL CHECK (price_cents >= 0),
    low_threshold INTEGER NOT NULL,   -- below this, ask for a restock (stock.low)
    restock_qty   INTEGER NOT NULL    -- how many to ask for
);

CREATE TABLE reservations (
    order_id    TEXT PRIMARY KEY,
    items       TEXT NOT NULL,        -- JSON, as the order listed them
    state       TEXT NOT NULL CHECK (state IN ('held', 'released', 'rejected')),
    total_cents INTEGER,
    reason      TEXT,                 -- why it was rejected
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')),
    updated_at  TEXT
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
