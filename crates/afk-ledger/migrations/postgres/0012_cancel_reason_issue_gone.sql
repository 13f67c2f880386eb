-- A job may be cancelled because GitHub no longer has its issue (afk_core::CancelReason::IssueGone:
-- deleted, transferred, or 404 while the repository is readable).
ALTER TABLE jobs DROP CONSTRAINT jobs_cancel_reason_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_cancel_reason_check
    CHECK (cancel_reason IN ('file_removed', 'withdrawn', 'interrupted_in_t3', 'by_hand', 'issue_gone'));
