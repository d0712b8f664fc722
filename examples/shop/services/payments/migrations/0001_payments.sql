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

-- The inbox, the outbox and the cursors are switchyard-sdk's (switchyard_* tables).
