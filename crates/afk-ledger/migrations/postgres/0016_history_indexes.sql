-- A ledger keeps every job it ever ran; the reads made on every tick must cost what changed, not
-- the history (issue #18, BENCHMARKS.md "History").
--
-- The reporter asks on every tick for the jobs whose state or attempt count changed since it last
-- reported them (Ledger::jobs_to_report). Without an index that read scans every job ever
-- recorded. SQLite takes a partial index holding only those jobs; PostgreSQL would not use one
-- (it guesses that nearly every row passes `reported <> ...` and walks the primary key instead),
-- so here the condition itself leads the index: ANALYZE then knows how few jobs it holds and the
-- read is an index scan over the jobs still to report. Its expression is the read's, word for
-- word.
CREATE INDEX jobs_unreported ON jobs ((reported IS NULL OR reported <> state || ':' || attempts), source, id);

-- The watcher reads every live attempt with four columns of its job on every tick
-- (Ledger::watched_attempts). PostgreSQL joins that by hashing a scan of every job, whose rows
-- carry issue bodies; this index holds the columns the read needs, so the join walks a narrow
-- index (index-only once vacuumed) instead of the table.
CREATE INDEX jobs_watched ON jobs (id) INCLUDE (repo, number, state, not_before_ms, input_wait_since_ms, input_waited_ms);
