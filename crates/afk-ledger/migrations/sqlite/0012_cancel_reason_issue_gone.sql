-- A job may be cancelled because GitHub no longer has its issue (afk_core::CancelReason::IssueGone:
-- deleted, transferred, or 404 while the repository is readable). SQLite cannot change a CHECK
-- constraint in place: the column is replaced by one whose CHECK allows the new reason, keeping
-- every value (and every other column, whatever later steps added).
ALTER TABLE jobs ADD COLUMN cancel_reason_0012 TEXT
    CHECK (cancel_reason_0012 IN ('file_removed', 'withdrawn', 'interrupted_in_t3', 'by_hand', 'issue_gone'));
UPDATE jobs SET cancel_reason_0012 = cancel_reason;
ALTER TABLE jobs DROP COLUMN cancel_reason;
ALTER TABLE jobs RENAME COLUMN cancel_reason_0012 TO cancel_reason;
