-- A job may be cancelled by a `/afk stop` comment of a person with write access
-- (afk_core::CancelReason::StoppedByCommand).
ALTER TABLE jobs DROP CONSTRAINT jobs_cancel_reason_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_cancel_reason_check
    CHECK (cancel_reason IN ('file_removed', 'withdrawn', 'interrupted_in_t3', 'by_hand', 'issue_gone',
        'stopped_by_command'));
