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
-- Filled from the rows already there, so that an upgraded ledger is right at once.
-- What the totals do not see: a row that the REPLACE conflict resolution deletes (`INSERT OR
-- REPLACE`, `REPLACE INTO`, by hand; afk never writes one) fires no delete trigger unless
-- `PRAGMA recursive_triggers` is on, so it stays counted beside its replacement. After such a
-- write, empty both tables and fill them again with the two INSERTs below (a person, with no
-- writer running).
-- NB: as for 0018 and 0021, SQLite refuses to drop a column a trigger names (these name `state`
-- of jobs, `created_ms` and `ended_ms` of attempts), and a later step that rebuilds `jobs`,
-- `attempts` or `events` (the CHECK-change pattern of 0014 and 0019) drops every trigger on the
-- table with it and must make these again (and fill the totals again).
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

INSERT INTO job_counts (state, jobs) SELECT state, COUNT(*) FROM jobs GROUP BY state;

INSERT INTO ledger_totals (id, attempts, events, ended_agent_ms, open_attempts, open_created_ms)
SELECT 1,
       (SELECT COUNT(*) FROM attempts),
       (SELECT COUNT(*) FROM events),
       (SELECT COALESCE(SUM(ended_ms - created_ms), 0) FROM attempts WHERE ended_ms IS NOT NULL),
       (SELECT COUNT(*) FROM attempts WHERE ended_ms IS NULL),
       (SELECT COALESCE(SUM(created_ms), 0) FROM attempts WHERE ended_ms IS NULL);

CREATE TRIGGER totals_jobs_inserted AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_counts (state, jobs) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET jobs = jobs + 1;
END;
CREATE TRIGGER totals_jobs_moved AFTER UPDATE OF state ON jobs WHEN OLD.state IS NOT NEW.state
BEGIN
    UPDATE job_counts SET jobs = jobs - 1 WHERE state = OLD.state;
    INSERT INTO job_counts (state, jobs) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET jobs = jobs + 1;
END;
CREATE TRIGGER totals_jobs_deleted AFTER DELETE ON jobs
BEGIN
    UPDATE job_counts SET jobs = jobs - 1 WHERE state = OLD.state;
END;

CREATE TRIGGER totals_attempts_inserted AFTER INSERT ON attempts
BEGIN
    UPDATE ledger_totals SET
        attempts = attempts + 1,
        ended_agent_ms = ended_agent_ms + COALESCE(NEW.ended_ms - NEW.created_ms, 0),
        open_attempts = open_attempts + (NEW.ended_ms IS NULL),
        open_created_ms = open_created_ms + CASE WHEN NEW.ended_ms IS NULL THEN NEW.created_ms ELSE 0 END
    WHERE id = 1;
END;
CREATE TRIGGER totals_attempts_changed AFTER UPDATE OF created_ms, ended_ms ON attempts
WHEN OLD.created_ms IS NOT NEW.created_ms OR OLD.ended_ms IS NOT NEW.ended_ms
BEGIN
    UPDATE ledger_totals SET
        ended_agent_ms = ended_agent_ms + COALESCE(NEW.ended_ms - NEW.created_ms, 0)
            - COALESCE(OLD.ended_ms - OLD.created_ms, 0),
        open_attempts = open_attempts + (NEW.ended_ms IS NULL) - (OLD.ended_ms IS NULL),
        open_created_ms = open_created_ms
            + CASE WHEN NEW.ended_ms IS NULL THEN NEW.created_ms ELSE 0 END
            - CASE WHEN OLD.ended_ms IS NULL THEN OLD.created_ms ELSE 0 END
    WHERE id = 1;
END;
CREATE TRIGGER totals_attempts_deleted AFTER DELETE ON attempts
BEGIN
    UPDATE ledger_totals SET
        attempts = attempts - 1,
        ended_agent_ms = ended_agent_ms - COALESCE(OLD.ended_ms - OLD.created_ms, 0),
        open_attempts = open_attempts - (OLD.ended_ms IS NULL),
        open_created_ms = open_created_ms - CASE WHEN OLD.ended_ms IS NULL THEN OLD.created_ms ELSE 0 END
    WHERE id = 1;
END;

CREATE TRIGGER totals_events_inserted AFTER INSERT ON events
BEGIN UPDATE ledger_totals SET events = events + 1 WHERE id = 1; END;
CREATE TRIGGER totals_events_deleted AFTER DELETE ON events
BEGIN UPDATE ledger_totals SET events = events - 1 WHERE id = 1; END;
