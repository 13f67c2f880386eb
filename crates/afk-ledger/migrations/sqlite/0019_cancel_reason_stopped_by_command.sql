-- A job may be cancelled by a `/afk stop` comment of a person with write access
-- (afk_core::CancelReason::StoppedByCommand). SQLite cannot change a CHECK constraint in place: the
-- column is replaced by one whose CHECK allows the new reason, keeping every value.
ALTER TABLE jobs ADD COLUMN cancel_reason_0019 TEXT
    CHECK (cancel_reason_0019 IN ('file_removed', 'withdrawn', 'interrupted_in_t3', 'by_hand', 'issue_gone',
        'stopped_by_command'));
UPDATE jobs SET cancel_reason_0019 = cancel_reason;
ALTER TABLE jobs DROP COLUMN cancel_reason;
ALTER TABLE jobs RENAME COLUMN cancel_reason_0019 TO cancel_reason;
