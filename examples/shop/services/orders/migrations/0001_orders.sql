-- Orders and how each one got to its state.
CREATE TABLE orders (
    id          TEXT PRIMARY KEY,
    customer    TEXT NOT NULL,
    items       TEXT NOT NULL,                 -- JSON: [{"sku": "widget", "qty": 2}]
    state       TEXT NOT NULL CHECK (state IN ('placed', 'reserved', 'confirmed', 'cancelled')),
    total_cents INTEGER,                       -- known once inventory reserved the stock
    reason      TEXT,                          -- why it was cancelled
    placed_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ'))
);

-- Every event that touched an order, published or received, in the order it happened.
CREATE TABLE history (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id   TEXT NOT NULL REFERENCES orders (id),
    event_type TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    how        TEXT NOT NULL CHECK (how IN ('published', 'received')),
    at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ'))
);
CREATE INDEX history_by_order ON history (order_id, seq);

-- The events already handled (CloudEvents are unique by source and id): a redelivery
-- finds its row and changes nothing.
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
