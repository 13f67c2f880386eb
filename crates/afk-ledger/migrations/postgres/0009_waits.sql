-- Why the running afk waits, one row per part of its work that is held up (reading T3, dispatching,
-- GitHub), so that `afk status` can say it: written by the `afk run` that leads the ledger when a
-- reason appears or changes (and again every few minutes while it lasts), deleted when it is over.
-- The texts were scrubbed of every secret value before they were written.
CREATE TABLE waits (
    topic TEXT PRIMARY KEY,
    part TEXT NOT NULL,
    message TEXT NOT NULL,
    kind TEXT NOT NULL,
    needs_person BOOLEAN NOT NULL,
    since BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
