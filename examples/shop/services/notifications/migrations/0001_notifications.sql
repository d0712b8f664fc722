-- Every notification "sent" (recorded, and printed by the service).
CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL,         -- the event that caused it
    event_type TEXT NOT NULL,
    recipient  TEXT NOT NULL,         -- a customer, or "purchasing" for restocks
    message    TEXT NOT NULL,
    sent_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ'))
);

-- The events already handled (unique by CloudEvents source and id).
CREATE TABLE processed (
    source       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    processed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')),
    PRIMARY KEY (source, event_id)
);
