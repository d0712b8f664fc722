-- Quota counters: units of a quota used per key and window (the API gateway's daily and
-- monthly quotas). Kept to SQL that PostgreSQL also accepts.

CREATE TABLE quotas (
    key              TEXT    NOT NULL,
    window_start_ms  BIGINT  NOT NULL,
    window_end_ms    BIGINT  NOT NULL,
    used             BIGINT  NOT NULL,
    PRIMARY KEY (key, window_start_ms)
);

CREATE INDEX quotas_by_end ON quotas (window_end_ms);
