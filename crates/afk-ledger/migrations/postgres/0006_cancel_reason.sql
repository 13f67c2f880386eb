-- Why a cancelled job was cancelled, typed (afk_core::CancelReason::as_str), so that whether it may
-- come back is decided from this column instead of from the text of its last event. NULL unless
-- the job is cancelled.
ALTER TABLE jobs ADD COLUMN cancel_reason TEXT
    CHECK (cancel_reason IN ('file_removed', 'withdrawn', 'interrupted_in_t3', 'by_hand'));

-- Jobs cancelled before this step: the reason is read once from the note of their last event, as
-- afk used to read it on every tick; a note naming none of the known reasons reads as by hand
-- (only a person brings such a job back, as before).
UPDATE jobs SET cancel_reason = COALESCE((
    SELECT CASE
        WHEN e.note LIKE '%its issue file was removed%' THEN 'file_removed'
        WHEN e.note LIKE '%the issue was closed or lost its trigger label%' THEN 'withdrawn'
        WHEN e.note LIKE '%interrupted in T3%' THEN 'interrupted_in_t3'
        ELSE 'by_hand'
    END
    FROM events e WHERE e.job_id = jobs.id
    ORDER BY e.id DESC LIMIT 1
), 'by_hand')
WHERE state = 'cancelled';
