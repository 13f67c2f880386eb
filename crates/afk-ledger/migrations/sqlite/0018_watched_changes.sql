-- A count of the changes to what watching reads (`Ledger::watched_attempts`), bumped by triggers in
-- the very transaction of each change, whoever writes: `afk run`'s recorder, another afk, the CLI
-- (`afk enqueue`), a person with a SQL shell. `Ledger::watched_changes` reads it, so that `afk run`
-- re-reads the live attempts only when it moved instead of every 30 s (issue 18).
-- Only the columns `watched_attempts` reads fire the triggers: a job's report mark, title or body,
-- an attempt's `stop_pending`, a follow-up's `sent` leave the count alone.
-- NB: SQLite refuses to drop a column a trigger names. A later step that replaces one of these
-- columns (the CHECK-change pattern of 0014 and 0019) drops the trigger first and makes it again.
CREATE TABLE watched_changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    counter BIGINT  NOT NULL
);
INSERT INTO watched_changes (id, counter) VALUES (1, 0);

CREATE TRIGGER watched_jobs_inserted AFTER INSERT ON jobs
BEGIN UPDATE watched_changes SET counter = counter + 1 WHERE id = 1; END;
CREATE TRIGGER watched_jobs_updated
AFTER UPDATE OF repo, number, state, not_before_ms, input_wait_since_ms, input_waited_ms ON jobs
BEGIN UPDATE watched_changes SET counter = counter + 1 WHERE id = 1; END;
CREATE TRIGGER watched_jobs_deleted AFTER DELETE ON jobs
BEGIN UPDATE watched_changes SET counter = counter + 1 WHERE id = 1; END;

CREATE TRIGGER watched_attempts_inserted AFTER INSERT ON attempts
BEGIN UPDATE watched_changes SET counter = counter + 1 WHERE id = 1; END;
CREATE TRIGGER watched_attempts_updated
AFTER UPDATE OF job_id, number, state, thread_id, updated_ms ON attempts
BEGIN UPDATE watched_changes SET counter = counter + 1 WHERE id = 1; END;
CREATE TRIGGER watched_attempts_deleted AFTER DELETE ON attempts
BEGIN UPDATE watched_changes SET counter = counter + 1 WHERE id = 1; END;

CREATE TRIGGER watched_follow_ups_inserted AFTER INSERT ON follow_ups
BEGIN UPDATE watched_changes SET counter = counter + 1 WHERE id = 1; END;
CREATE TRIGGER watched_follow_ups_updated
AFTER UPDATE OF job_id, attempt, number, created_ms ON follow_ups
BEGIN UPDATE watched_changes SET counter = counter + 1 WHERE id = 1; END;
CREATE TRIGGER watched_follow_ups_deleted AFTER DELETE ON follow_ups
BEGIN UPDATE watched_changes SET counter = counter + 1 WHERE id = 1; END;
