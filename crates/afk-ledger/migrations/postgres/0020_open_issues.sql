-- The local intake asks on every tick which of its source's jobs are still open
-- (Ledger::open_issues), to cancel those whose issue file went. Through `jobs_state` alone each
-- open job's row is fetched for its source and issue, and the rows carry issue bodies; this index
-- holds every column of that read, so it is answered from the index alone (issue #18).
-- (A migration that rebuilds `jobs` on SQLite must create it again.)
CREATE INDEX jobs_open_issues ON jobs (source, state, repo, number);
