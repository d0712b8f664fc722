-- The JSON Schema of each (topic, event type) that has one: published events of that type
-- must have `data` that validates against it.
-- Every text column is COLLATE "C": keys compare and sort byte by byte, as in SQLite,
-- whatever the database's default collation.

CREATE TABLE event_schemas (
    topic        TEXT COLLATE "C" NOT NULL,
    event_type   TEXT COLLATE "C" NOT NULL,
    -- The schema as JSON text.
    schema_json  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (topic, event_type)
);
