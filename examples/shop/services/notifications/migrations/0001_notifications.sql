-- Every notification "sent" (recorded, and printed by the service).
CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL,         -- the event that caused it
    event_type TEXT NOT NULL,
    recipient  TEXT NOT NULL,         -- a customer, or "purchasing" for restocks
    message    TEXT NOT NULL,
    sent_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ'))
);

-- The inbox and the cursors are switchyard-sdk's (switchyard_* tables).
