-- A second count beside 0018's, in the same row: every change to a job or an attempt, whatever
-- the column, whoever writes (`afk run`'s recorder, another afk, `afk enqueue`, `afk jobs
-- cancel|requeue`, a person with a SQL shell). `Ledger::changes` reads both counts in one row, so
-- that a quiet tick of `afk run` reuses what it last read of the attempts to stop, the jobs to
-- settle and the ready jobs while this count stands, instead of reading them again (issue 18).
-- 0018's count leaves out the columns the live attempts' read does not return (an attempt's
-- `stop_pending`, a job's report mark, title, body, priority...): those reads return them.
-- Follow-ups are not counted here: none of those reads looks at them.
-- NB: as for 0018, SQLite refuses to drop a column a trigger names; these triggers name none, but
-- a later step that rebuilds `jobs` or `attempts` (the CHECK-change pattern of 0014 and 0019)
-- drops every trigger on the table with it and must make these again.
ALTER TABLE watched_changes ADD COLUMN ledger_counter BIGINT NOT NULL DEFAULT 0;

CREATE TRIGGER ledger_jobs_inserted AFTER INSERT ON jobs
BEGIN UPDATE watched_changes SET ledger_counter = ledger_counter + 1 WHERE id = 1; END;
CREATE TRIGGER ledger_jobs_updated AFTER UPDATE ON jobs
BEGIN UPDATE watched_changes SET ledger_counter = ledger_counter + 1 WHERE id = 1; END;
CREATE TRIGGER ledger_jobs_deleted AFTER DELETE ON jobs
BEGIN UPDATE watched_changes SET ledger_counter = ledger_counter + 1 WHERE id = 1; END;

CREATE TRIGGER ledger_attempts_inserted AFTER INSERT ON attempts
BEGIN UPDATE watched_changes SET ledger_counter = ledger_counter + 1 WHERE id = 1; END;
CREATE TRIGGER ledger_attempts_updated AFTER UPDATE ON attempts
BEGIN UPDATE watched_changes SET ledger_counter = ledger_counter + 1 WHERE id = 1; END;
CREATE TRIGGER ledger_attempts_deleted AFTER DELETE ON attempts
BEGIN UPDATE watched_changes SET ledger_counter = ledger_counter + 1 WHERE id = 1; END;
