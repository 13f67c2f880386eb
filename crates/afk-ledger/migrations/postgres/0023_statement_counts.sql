-- The counts of 0018 and 0021 and the running totals of 0022, moved once per statement by what
-- the statement wrote instead of once per row (issue 18).
-- Why: a row trigger that updates one row (the counter row, the totals row, a state's count)
-- updates it again for every row a statement writes, inside one transaction; PostgreSQL keeps
-- every version of that row until the commit, and each update walks the chain of the versions
-- before it, so one statement writing n rows cost O(n^2): 8,000 jobs in one INSERT took 6.7 s,
-- 100,000 more than 20 minutes (`bench/history`'s fill). afk writes many rows in one statement
-- or transaction too: a first GitHub sync queues every new labelled issue in one transaction.
-- Statement triggers with transition tables (`REFERENCING ... TABLE AS`) see every row the
-- statement wrote at once and move each row of counts once, by the statement's aggregate.
-- PostgreSQL allows transition tables only on a trigger of one event and without a column list,
-- so each table gets an INSERT, an UPDATE and a DELETE trigger, and the UPDATE trigger fires
-- for every UPDATE statement and compares what it needs itself.
-- Meaning kept from 0018, 0021 and 0022, whoever writes:
--   `ledger_counter` (0021): moves when a statement inserted, deleted or updated (whatever the
--     column, even to the same value) at least one job or attempt; by 1 per statement, not per
--     row (`Ledger::changes` only compares readings for equality).
--   `counter` (0018): moves when a statement inserted or deleted a job, an attempt or a
--     follow-up, or changed the value of a column `Ledger::watched_attempts` reads (jobs: repo,
--     number, state, not_before_ms, input_wait_since_ms, input_waited_ms; attempts: job_id,
--     number, state, thread_id, updated_ms; follow-ups: job_id, attempt, number, created_ms),
--     or a row's id. By 1 per statement. Stricter than 0018's `UPDATE OF` row triggers, which
--     also fired when such a column was set to the value it had: now only a changed value
--     moves it, which is all a reader of the live attempts can tell.
--   A statement that writes no row (the intake's conditional upsert that changes nothing)
--   moves neither; TRUNCATE keeps 0021's and 0022's statement triggers as they were.
--   `job_counts`, `ledger_totals` (0022): moved by the statement's net change per state and in
--     attempts, events, ended agent time, open attempts and their summed start; an UPDATE that
--     nets to zero (no state, `created_ms` or `ended_ms` changed) writes neither row. Exact as
--     before: the same sums, taken over the statement's rows at once.
-- Locks, as 0021 and 0022 say: a statement that writes a job or an attempt takes the counter
-- row first (one function per table, the counter before the totals), an event insert or delete
-- locks it before it counts, so writers of the totals take turns at that one row and cannot
-- deadlock over the totals rows. Statement triggers fire after the statement's rows are
-- written, as the row triggers' AFTER events did, so the order against the tables' own rows is
-- unchanged.
-- SQLite has no such chain (it updates a row in place), and keeps its row triggers: its 0023
-- changes nothing.

DROP TRIGGER watched_jobs_changed ON jobs;
DROP TRIGGER watched_attempts_changed ON attempts;
DROP TRIGGER watched_follow_ups_changed ON follow_ups;
DROP TRIGGER ledger_jobs_changed ON jobs;
DROP TRIGGER ledger_attempts_changed ON attempts;
DROP TRIGGER totals_jobs_changed ON jobs;
DROP TRIGGER totals_attempts_changed ON attempts;
DROP TRIGGER totals_events_changed ON events;
DROP FUNCTION watched_changed();
DROP FUNCTION totals_jobs_changed();
DROP FUNCTION totals_attempts_changed();
DROP FUNCTION totals_events_changed();
-- `ledger_changed` and `totals_truncated` stay: the TRUNCATE triggers of 0021 and 0022 run them.

-- Each function reads `new_rows` (INSERT, UPDATE) and `old_rows` (UPDATE, DELETE), the names
-- its triggers give the transition tables; a branch names only the tables its event has.
CREATE FUNCTION jobs_written() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    watched BOOLEAN;
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM FROM old_rows LIMIT 1;
    ELSE
        PERFORM FROM new_rows LIMIT 1;
    END IF;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        watched := EXISTS (
            SELECT id, repo, number, state, not_before_ms, input_wait_since_ms, input_waited_ms
            FROM new_rows
            EXCEPT ALL
            SELECT id, repo, number, state, not_before_ms, input_wait_since_ms, input_waited_ms
            FROM old_rows);
    ELSE
        watched := TRUE;
    END IF;
    UPDATE watched_changes
    SET ledger_counter = ledger_counter + 1,
        counter = counter + CASE WHEN watched THEN 1 ELSE 0 END
    WHERE id = 1;

    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_counts (state, jobs)
        SELECT state, COUNT(*) FROM new_rows GROUP BY state
        ON CONFLICT (state) DO UPDATE SET jobs = job_counts.jobs + EXCLUDED.jobs;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE job_counts SET jobs = job_counts.jobs - gone.jobs
        FROM (SELECT state, COUNT(*) AS jobs FROM old_rows GROUP BY state) AS gone
        WHERE job_counts.state = gone.state;
    ELSE
        INSERT INTO job_counts (state, jobs)
        SELECT state, SUM(moved)
        FROM (SELECT state, 1 AS moved FROM new_rows
              UNION ALL
              SELECT state, -1 FROM old_rows) AS m
        GROUP BY state
        HAVING SUM(moved) <> 0
        ON CONFLICT (state) DO UPDATE SET jobs = job_counts.jobs + EXCLUDED.jobs;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION attempts_written() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    watched          BOOLEAN;
    attempts_delta   BIGINT := 0;
    ended_delta      BIGINT := 0;
    open_delta       BIGINT := 0;
    open_start_delta BIGINT := 0;
    rows_n           BIGINT;
    ended_sum        BIGINT;
    open_n           BIGINT;
    open_start_sum   BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM FROM old_rows LIMIT 1;
    ELSE
        PERFORM FROM new_rows LIMIT 1;
    END IF;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        watched := EXISTS (
            SELECT id, job_id, number, state, thread_id, updated_ms FROM new_rows
            EXCEPT ALL
            SELECT id, job_id, number, state, thread_id, updated_ms FROM old_rows);
    ELSE
        watched := TRUE;
    END IF;
    UPDATE watched_changes
    SET ledger_counter = ledger_counter + 1,
        counter = counter + CASE WHEN watched THEN 1 ELSE 0 END
    WHERE id = 1;

    -- The same sums as 0022's, over the rows written (added) and the rows they replaced or
    -- removed (taken away).
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT COUNT(*), COALESCE(SUM(ended_ms - created_ms), 0),
               COUNT(*) FILTER (WHERE ended_ms IS NULL),
               COALESCE(SUM(created_ms) FILTER (WHERE ended_ms IS NULL), 0)
        INTO rows_n, ended_sum, open_n, open_start_sum
        FROM new_rows;
        attempts_delta := attempts_delta + rows_n;
        ended_delta := ended_delta + ended_sum;
        open_delta := open_delta + open_n;
        open_start_delta := open_start_delta + open_start_sum;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        SELECT COUNT(*), COALESCE(SUM(ended_ms - created_ms), 0),
               COUNT(*) FILTER (WHERE ended_ms IS NULL),
               COALESCE(SUM(created_ms) FILTER (WHERE ended_ms IS NULL), 0)
        INTO rows_n, ended_sum, open_n, open_start_sum
        FROM old_rows;
        attempts_delta := attempts_delta - rows_n;
        ended_delta := ended_delta - ended_sum;
        open_delta := open_delta - open_n;
        open_start_delta := open_start_delta - open_start_sum;
    END IF;
    IF attempts_delta <> 0 OR ended_delta <> 0 OR open_delta <> 0 OR open_start_delta <> 0 THEN
        UPDATE ledger_totals SET
            attempts = attempts + attempts_delta,
            ended_agent_ms = ended_agent_ms + ended_delta,
            open_attempts = open_attempts + open_delta,
            open_created_ms = open_created_ms + open_start_delta
        WHERE id = 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION follow_ups_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM FROM new_rows LIMIT 1;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM FROM old_rows LIMIT 1;
    ELSE
        PERFORM FROM (
            SELECT id, job_id, attempt, number, created_ms FROM new_rows
            EXCEPT ALL
            SELECT id, job_id, attempt, number, created_ms FROM old_rows) AS changed
        LIMIT 1;
    END IF;
    IF FOUND THEN
        UPDATE watched_changes SET counter = counter + 1 WHERE id = 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION events_written() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT COUNT(*) INTO moved FROM new_rows;
    ELSE
        SELECT -COUNT(*) INTO moved FROM old_rows;
    END IF;
    IF moved = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM watched_changes WHERE id = 1 FOR NO KEY UPDATE;
    UPDATE ledger_totals SET events = events + moved WHERE id = 1;
    RETURN NULL;
END;
$$;

-- Pinned to this schema as 0022 pins its functions (a session on another `search_path` writing
-- this ledger's tables must count into this ledger's rows).
DO $$
DECLARE
    f TEXT;
BEGIN
    FOREACH f IN ARRAY ARRAY['jobs_written', 'attempts_written', 'follow_ups_written',
                             'events_written'] LOOP
        EXECUTE format('ALTER FUNCTION %I.%I() SET search_path = %I, pg_temp',
                       current_schema(), f, current_schema());
    END LOOP;
END;
$$;

CREATE TRIGGER counts_jobs_inserted AFTER INSERT ON jobs
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_written();
CREATE TRIGGER counts_jobs_updated AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION jobs_written();
CREATE TRIGGER counts_jobs_deleted AFTER DELETE ON jobs
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_written();

CREATE TRIGGER counts_attempts_inserted AFTER INSERT ON attempts
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION attempts_written();
CREATE TRIGGER counts_attempts_updated AFTER UPDATE ON attempts
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION attempts_written();
CREATE TRIGGER counts_attempts_deleted AFTER DELETE ON attempts
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION attempts_written();

CREATE TRIGGER counts_follow_ups_inserted AFTER INSERT ON follow_ups
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION follow_ups_written();
CREATE TRIGGER counts_follow_ups_updated AFTER UPDATE ON follow_ups
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION follow_ups_written();
CREATE TRIGGER counts_follow_ups_deleted AFTER DELETE ON follow_ups
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION follow_ups_written();

CREATE TRIGGER counts_events_inserted AFTER INSERT ON events
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events_written();
CREATE TRIGGER counts_events_deleted AFTER DELETE ON events
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION events_written();
