-- Quota counters: units of a quota used per key and window (the API gateway's daily and
-- monthly quotas; migrations/sqlite/0005_quotas.sql, column for column).

CREATE TABLE quotas (
    key              TEXT COLLATE "C" NOT NULL,
    window_start_ms  BIGINT  NOT NULL,
    window_end_ms    BIGINT  NOT NULL,
    used             BIGINT  NOT NULL,
    PRIMARY KEY (key, window_start_ms)
);

CREATE INDEX quotas_by_end ON quotas (window_end_ms);
