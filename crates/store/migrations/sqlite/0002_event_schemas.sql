-- The JSON Schema of each (topic, event type) that has one: published events of that type
-- must have `data` that validates against it.

CREATE TABLE event_schemas (
    topic        TEXT  NOT NULL,
    event_type   TEXT  NOT NULL,
    -- The schema as JSON text.
    schema_json  TEXT  NOT NULL,
    PRIMARY KEY (topic, event_type)
);
