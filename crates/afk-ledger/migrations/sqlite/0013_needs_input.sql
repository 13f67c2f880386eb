-- A job may wait for a person (afk_core::JobState::NeedsInput: its thread's agent asked a question
-- or for an approval in T3). SQLite cannot change a CHECK constraint in place: the state column is
-- replaced by one whose CHECK allows the new state, keeping every value (its index is made again).
DROP INDEX jobs_state;
ALTER TABLE jobs ADD COLUMN state_0013 TEXT NOT NULL DEFAULT 'queued'
    CHECK (state_0013 IN ('queued', 'dispatching', 'running', 'needs_input', 'retry_wait',
        'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'given_up'));
UPDATE jobs SET state_0013 = state;
ALTER TABLE jobs DROP COLUMN state;
ALTER TABLE jobs RENAME COLUMN state_0013 TO state;
CREATE INDEX jobs_state ON jobs (state);

-- The wait, kept so that a restart neither forgets it nor counts it as the agent's time: when the
-- current one began (NULL unless the job is needs_input), what the agent asks, and how long the
-- live attempt has waited for people in all (its turn timeout does not count that time).
ALTER TABLE jobs ADD COLUMN input_wait_since_ms BIGINT;
ALTER TABLE jobs ADD COLUMN input_question TEXT;
ALTER TABLE jobs ADD COLUMN input_waited_ms BIGINT NOT NULL DEFAULT 0 CHECK (input_waited_ms >= 0);
