-- The watcher reads every live attempt on every tick (Ledger::watched_attempts). This index holds
-- all the columns it needs, so that read never touches the attempts' rows, whose prompts spill
-- onto overflow pages.
CREATE INDEX attempts_live_watch ON attempts (job_id, number, state, thread_id, updated_ms)
    WHERE state IN ('dispatching', 'running');
