-- Pull request follow-through (afk_core::JobState::InReview, Merged, Closed) and follow-up turns
-- (every state before them is kept, `needs_input` of 0013 included).
-- SQLite cannot change a CHECK constraint in place: the state column is replaced by one whose
-- CHECK allows the new states, keeping every value (its index is dropped and made again).
DROP INDEX jobs_state;
ALTER TABLE jobs ADD COLUMN state_0014 TEXT NOT NULL DEFAULT 'queued'
    CHECK (state_0014 IN ('queued', 'dispatching', 'running', 'needs_input', 'retry_wait', 'succeeded', 'failed',
        'timed_out', 'cancelled', 'lost', 'given_up', 'in_review', 'merged', 'closed'));
UPDATE jobs SET state_0014 = state;
ALTER TABLE jobs DROP COLUMN state;
ALTER TABLE jobs RENAME COLUMN state_0014 TO state;
CREATE INDEX jobs_state ON jobs (state);

-- One row per pull-request event afk answered (a failed check, a review requesting changes) or a
-- person's instruction, keyed so that one is never followed up twice. `number` is set when a
-- follow-up turn was started for it (NULL: the limit was reached, it waits for a person); the
-- turn's command and message ids are chosen and stored here before it is sent, so a crash
-- anywhere neither loses it nor sends it twice (T3 deduplicates by command id).
CREATE TABLE follow_ups (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          BIGINT  NOT NULL REFERENCES jobs (id),
    attempt         INTEGER NOT NULL CHECK (attempt >= 1),
    number          INTEGER CHECK (number >= 1),
    cause_key       TEXT    NOT NULL,
    cause           TEXT    NOT NULL,
    prompt          TEXT    NOT NULL,
    turn_command_id TEXT    UNIQUE,
    message_id      TEXT,
    sent            BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms      BIGINT  NOT NULL,
    UNIQUE (job_id, cause_key),
    UNIQUE (job_id, number)
);

CREATE INDEX follow_ups_unsent ON follow_ups (job_id) WHERE number IS NOT NULL AND NOT sent;
