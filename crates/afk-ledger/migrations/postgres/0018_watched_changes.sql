-- A count of the changes to what watching reads (`Ledger::watched_attempts`), bumped by triggers in
-- the very transaction of each change, whoever writes: `afk run`'s recorder, another afk, the CLI
-- (`afk enqueue`), a person with a SQL shell. `Ledger::watched_changes` reads it, so that `afk run`
-- re-reads the live attempts only when it moved instead of every 30 s (issue 18).
-- Only the columns `watched_attempts` reads fire the triggers: a job's report mark, title or body,
-- an attempt's `stop_pending`, a follow-up's `sent` leave the count alone. Row triggers, so that a
-- statement that changes no row (the intake's conditional upsert) bumps nothing.
-- The one counter row is locked by each transaction that bumps it until that transaction ends:
-- such writers take turns (one leader writes nearly all of them), and a transaction left open in
-- a SQL shell holds them all up. Every ledger transaction writes its `jobs` row first, then the
-- attempts and follow-ups, and touches one job: keep it so, or two writers can deadlock over the
-- counter and a job row (PostgreSQL would then abort one of them).
CREATE TABLE watched_changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    counter BIGINT  NOT NULL
);
INSERT INTO watched_changes (id, counter) VALUES (1, 0);

CREATE FUNCTION watched_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE watched_changes SET counter = counter + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER watched_jobs_changed
AFTER INSERT OR DELETE OR UPDATE OF repo, number, state, not_before_ms, input_wait_since_ms, input_waited_ms
ON jobs FOR EACH ROW EXECUTE FUNCTION watched_changed();

CREATE TRIGGER watched_attempts_changed
AFTER INSERT OR DELETE OR UPDATE OF job_id, number, state, thread_id, updated_ms
ON attempts FOR EACH ROW EXECUTE FUNCTION watched_changed();

CREATE TRIGGER watched_follow_ups_changed
AFTER INSERT OR DELETE OR UPDATE OF job_id, attempt, number, created_ms
ON follow_ups FOR EACH ROW EXECUTE FUNCTION watched_changed();
