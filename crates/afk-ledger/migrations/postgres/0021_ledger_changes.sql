-- A second count beside 0018's, in the same row: every change to a job or an attempt, whatever
-- the column, whoever writes (`afk run`'s recorder, another afk, `afk enqueue`, `afk jobs
-- cancel|requeue`, a person with a SQL shell). `Ledger::changes` reads both counts in one row, so
-- that a quiet tick of `afk run` reuses what it last read of the attempts to stop, the jobs to
-- settle and the ready jobs while this count stands, instead of reading them again (issue 18).
-- 0018's count leaves out the columns the live attempts' read does not return (an attempt's
-- `stop_pending`, a job's report mark, title, body, priority...): those reads return them.
-- Follow-ups are not counted here: none of those reads looks at them.
-- Row triggers, so that a statement that changes no row (the intake's conditional upsert) bumps
-- nothing; and statement triggers for TRUNCATE, which fires no row trigger. As with 0018, each
-- transaction that writes a job or an attempt now holds the counter row until it ends (for any
-- column, not only the watched ones). What keeps two writers from deadlocking over the counter
-- and a job's or attempt's row: a leader's write takes the leadership row (its fence) before any
-- other, so leader writes take turns there before they lock anything else (the dashboard's and
-- `afk jobs`' actions are carried out by the leader); a write that does not lead (`afk dispatch`
-- from the CLI) touches one job: its `jobs` row first, then that job's live attempt. Keep it so,
-- or PostgreSQL may abort one of two such writers as deadlocked.
ALTER TABLE watched_changes ADD COLUMN ledger_counter BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION ledger_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE watched_changes SET ledger_counter = ledger_counter + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_jobs_changed
AFTER INSERT OR DELETE OR UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION ledger_changed();

CREATE TRIGGER ledger_attempts_changed
AFTER INSERT OR DELETE OR UPDATE ON attempts FOR EACH ROW EXECUTE FUNCTION ledger_changed();

CREATE TRIGGER ledger_jobs_truncated
AFTER TRUNCATE ON jobs FOR EACH STATEMENT EXECUTE FUNCTION ledger_changed();

CREATE TRIGGER ledger_attempts_truncated
AFTER TRUNCATE ON attempts FOR EACH STATEMENT EXECUTE FUNCTION ledger_changed();
