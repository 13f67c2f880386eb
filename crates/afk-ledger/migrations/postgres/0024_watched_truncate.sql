-- 0018's count (`counter`: what `Ledger::watched_attempts` reads) moves on a TRUNCATE too. 0018
-- made row triggers only, and TRUNCATE fires none: a TRUNCATE of jobs, attempts or follow-ups
-- (by a person with a SQL shell: `TRUNCATE jobs CASCADE` to start afresh) left the count where
-- it was, and an `afk run` that read the live attempts at that count kept what it had read (the
-- watcher's cache, issue 18) as if nothing had changed. 0021's `ledger_counter` has had its
-- TRUNCATE triggers from the start; 0023 replaced the row triggers by statement triggers and
-- left TRUNCATE as it was.
-- Locks: the trigger takes the counter row after the TRUNCATE has locked its tables, as 0021's
-- and 0022's TRUNCATE triggers do (see 0022 for what that order means beside a writer).
CREATE FUNCTION watched_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE watched_changes SET counter = counter + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

-- Pinned to this schema as 0022 pins its functions (a session on another `search_path` writing
-- this ledger's tables must count into this ledger's row).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION %I.watched_truncated() SET search_path = %I, pg_temp',
                   current_schema(), current_schema());
END;
$$;

CREATE TRIGGER watched_jobs_truncated
AFTER TRUNCATE ON jobs FOR EACH STATEMENT EXECUTE FUNCTION watched_truncated();
CREATE TRIGGER watched_attempts_truncated
AFTER TRUNCATE ON attempts FOR EACH STATEMENT EXECUTE FUNCTION watched_truncated();
CREATE TRIGGER watched_follow_ups_truncated
AFTER TRUNCATE ON follow_ups FOR EACH STATEMENT EXECUTE FUNCTION watched_truncated();
