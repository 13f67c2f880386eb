-- A ledger keeps every job it ever ran; the reads made on every tick must cost what changed, not
-- the history (issue #18, BENCHMARKS.md "History").
--
-- The reporter asks on every tick for the jobs whose state or attempt count changed since it last
-- reported them (Ledger::jobs_to_report). Without this index that read scans every job ever
-- recorded; the index holds only the jobs still to report (a handful, plus jobs of sources no
-- reporter marks), so the read walks those alone. Its condition is the read's, word for word:
-- both backends use a partial index only when the query states its condition.
CREATE INDEX jobs_unreported ON jobs (source, id)
    WHERE reported IS NULL OR reported <> state || ':' || attempts;
-- A later step that replaces `state`, `reported` or `attempts` (as 0013 and 0014 replace `state`)
-- must DROP INDEX jobs_unreported first: SQLite refuses to drop a column an index uses.
