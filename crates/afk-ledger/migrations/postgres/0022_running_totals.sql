-- Running totals of the whole history, kept by triggers in the very transaction of each write,
-- whoever writes (`afk run`'s recorder, another afk, `afk enqueue`, `afk jobs cancel|requeue`, a
-- person with a SQL shell), so that `afk status`, `GET /api/v1/state` and `/metrics` read a few
-- rows instead of counting every job, attempt and event ever recorded (issue 18).
--   job_counts: jobs per state (a row per state ever seen; `jobs` may be 0).
--   ledger_totals: attempts and events ever recorded, and what agent time needs: the summed
--     length of the attempts that ended (`ended_ms - created_ms`), and the number and summed
--     start of those still open (`ended_ms` NULL), so that agent time "until now" is
--     `ended_agent_ms + open_attempts * now - open_created_ms`, exactly the former
--     `SUM(COALESCE(ended_ms, now) - created_ms)`.
-- Row triggers for rows, statement triggers for TRUNCATE (which fires no row trigger).
-- Filled from the rows already there, after the triggers exist: CREATE TRIGGER locks each table
-- against writes until this migration commits, so no write falls between the fill and the
-- triggers.
-- Locks: a transaction that changes a job or an attempt already holds 0021's counter row
-- (`ledger_jobs_changed` and `ledger_attempts_changed` fire first: PostgreSQL fires a row's
-- triggers in name order, and `ledger_` sorts before `totals_`), so these rows are only locked by
-- the holder of that one row, and row writers cannot deadlock over them. An event insert takes
-- that row too before it counts (a transaction that writes events alone, e.g. by hand, would
-- otherwise take the totals before a job).
-- TRUNCATE does not follow that order: it locks its whole table first and only then runs its
-- statement triggers, which take the counter row (jobs, attempts) or the totals row (events).
-- A person's TRUNCATE while a recorder's transaction holds those rows and next writes to the
-- truncated table can therefore deadlock; PostgreSQL detects it and aborts one of the two (the
-- recorder's write then fails as any failed database write does, or the TRUNCATE must be run
-- again). Nothing is counted wrong either way: the aborted transaction leaves no trace.
-- What the totals do not see: writes that run no trigger. `ALTER TABLE ... DISABLE TRIGGER` and
-- `SET session_replication_role = replica` (a logical-replication apply, `pg_restore
-- --disable-triggers`) write rows these totals never count; after such a write, empty both tables
-- and fill them again with the two INSERTs at the end of this file (a person, with no writer
-- running).
CREATE TABLE job_counts (
    state TEXT   PRIMARY KEY,
    jobs  BIGINT NOT NULL
);

CREATE TABLE ledger_totals (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    attempts        BIGINT NOT NULL,
    events          BIGINT NOT NULL,
    ended_agent_ms  BIGINT NOT NULL,
    open_attempts   BIGINT NOT NULL,
    open_created_ms BIGINT NOT NULL
);

CREATE FUNCTION totals_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state IS NOT DISTINCT FROM NEW.state THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE job_counts SET jobs = jobs - 1 WHERE state = OLD.state;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO job_counts (state, jobs) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET jobs = job_counts.jobs + 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION totals_attempts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    attempts_delta   BIGINT := 0;
    ended_delta      BIGINT := 0;
    open_delta       BIGINT := 0;
    open_start_delta BIGINT := 0;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.created_ms IS NOT DISTINCT FROM NEW.created_ms
        AND OLD.ended_ms IS NOT DISTINCT FROM NEW.ended_ms THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        attempts_delta := attempts_delta - 1;
        IF OLD.ended_ms IS NULL THEN
            open_delta := open_delta - 1;
            open_start_delta := open_start_delta - OLD.created_ms;
        ELSE
            ended_delta := ended_delta - (OLD.ended_ms - OLD.created_ms);
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        attempts_delta := attempts_delta + 1;
        IF NEW.ended_ms IS NULL THEN
            open_delta := open_delta + 1;
            open_start_delta := open_start_delta + NEW.created_ms;
        ELSE
            ended_delta := ended_delta + (NEW.ended_ms - NEW.created_ms);
        END IF;
    END IF;
    UPDATE ledger_totals SET
        attempts = attempts + attempts_delta,
        ended_agent_ms = ended_agent_ms + ended_delta,
        open_attempts = open_attempts + open_delta,
        open_created_ms = open_created_ms + open_start_delta
    WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE FUNCTION totals_events_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM watched_changes WHERE id = 1 FOR NO KEY UPDATE;
    UPDATE ledger_totals
    SET events = events + CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END
    WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE FUNCTION totals_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'jobs' THEN
        UPDATE job_counts SET jobs = 0;
    ELSIF TG_TABLE_NAME = 'attempts' THEN
        UPDATE ledger_totals
        SET attempts = 0, ended_agent_ms = 0, open_attempts = 0, open_created_ms = 0
        WHERE id = 1;
    ELSE
        UPDATE ledger_totals SET events = 0 WHERE id = 1;
    END IF;
    RETURN NULL;
END;
$$;

-- The functions name their tables unqualified; afk keeps one ledger per schema (the URL's
-- `search_path`), and a trigger runs with the search_path of whichever session writes: a person's
-- `psql` on `public` writing `ledger_x.jobs` would otherwise count into another schema's
-- `job_counts` or fail. Each function is pinned to the schema this migration runs in, the one
-- its tables were just created in (`current_schema()`, not the `search_path` text, which may say
-- `"$user"` and resolve differently for another user). The functions of 0018 and 0021 (already
-- applied, so not edited) had the same fault, and a write from such a session failed on
-- `watched_changes`: they are pinned here too.
DO $$
DECLARE
    f TEXT;
BEGIN
    FOREACH f IN ARRAY ARRAY['totals_jobs_changed', 'totals_attempts_changed',
                             'totals_events_changed', 'totals_truncated',
                             'watched_changed', 'ledger_changed'] LOOP
        EXECUTE format('ALTER FUNCTION %I.%I() SET search_path = %I, pg_temp',
                       current_schema(), f, current_schema());
    END LOOP;
END;
$$;

CREATE TRIGGER totals_jobs_changed
AFTER INSERT OR DELETE OR UPDATE OF state ON jobs
FOR EACH ROW EXECUTE FUNCTION totals_jobs_changed();

CREATE TRIGGER totals_attempts_changed
AFTER INSERT OR DELETE OR UPDATE OF created_ms, ended_ms ON attempts
FOR EACH ROW EXECUTE FUNCTION totals_attempts_changed();

CREATE TRIGGER totals_events_changed
AFTER INSERT OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION totals_events_changed();

CREATE TRIGGER totals_jobs_truncated
AFTER TRUNCATE ON jobs FOR EACH STATEMENT EXECUTE FUNCTION totals_truncated();
CREATE TRIGGER totals_attempts_truncated
AFTER TRUNCATE ON attempts FOR EACH STATEMENT EXECUTE FUNCTION totals_truncated();
CREATE TRIGGER totals_events_truncated
AFTER TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION totals_truncated();

INSERT INTO job_counts (state, jobs) SELECT state, COUNT(*) FROM jobs GROUP BY state;

INSERT INTO ledger_totals (id, attempts, events, ended_agent_ms, open_attempts, open_created_ms)
SELECT 1,
       (SELECT COUNT(*) FROM attempts),
       (SELECT COUNT(*) FROM events),
       (SELECT COALESCE(SUM(ended_ms - created_ms), 0) FROM attempts WHERE ended_ms IS NOT NULL),
       (SELECT COUNT(*) FROM attempts WHERE ended_ms IS NULL),
       (SELECT COALESCE(SUM(created_ms), 0) FROM attempts WHERE ended_ms IS NULL);
