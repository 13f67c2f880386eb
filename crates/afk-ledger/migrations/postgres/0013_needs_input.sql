-- A job may wait for a person (afk_core::JobState::NeedsInput: its thread's agent asked a question
-- or for an approval in T3).
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('queued', 'dispatching', 'running', 'needs_input', 'retry_wait',
        'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'given_up'));

-- The wait, kept so that a restart neither forgets it nor counts it as the agent's time: when the
-- current one began (NULL unless the job is needs_input), what the agent asks, and how long the
-- live attempt has waited for people in all (its turn timeout does not count that time).
ALTER TABLE jobs ADD COLUMN input_wait_since_ms BIGINT;
ALTER TABLE jobs ADD COLUMN input_question TEXT;
ALTER TABLE jobs ADD COLUMN input_waited_ms BIGINT NOT NULL DEFAULT 0 CHECK (input_waited_ms >= 0);
