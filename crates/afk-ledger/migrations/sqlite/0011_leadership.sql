-- The leadership epoch: one row, bumped by every `afk run` that takes the ledger's leader lock.
-- Every write the leader makes checks, in its own transaction, that the epoch is still the one it
-- took: a leader that lost its lock (a terminated session, a deleted lock file, a pause past a
-- standby's takeover) and has not noticed yet can no longer write.
CREATE TABLE leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    taken_ms BIGINT NOT NULL
);
INSERT INTO leadership (id, epoch, taken_ms) VALUES (1, 0, 0);
