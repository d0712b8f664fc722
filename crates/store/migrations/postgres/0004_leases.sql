-- Leases: one owner at a time for a subscription partition or an adapter lane, when several
-- instances share the store (migrations/sqlite/0004_leases.sql, column for column). A
-- released lease keeps its row (expires_at_ms is the smallest 64-bit integer) so that its
-- epoch never goes back.

CREATE TABLE leases (
    name            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner           TEXT COLLATE "C" NOT NULL,
    -- grows by one each time the lease changes owner
    epoch           BIGINT  NOT NULL,
    acquired_at_ms  BIGINT  NOT NULL,
    expires_at_ms   BIGINT  NOT NULL
);
