-- The status surface's overviews (Ledger::recent_outcomes, Ledger::attempt_totals) read every
-- attempt's times: this index holds them, so those reads never touch the attempts' rows (whose
-- prompts spill onto overflow pages in SQLite) and the latest outcomes are read from its end.
CREATE INDEX attempts_ended ON attempts (ended_ms, created_ms);
