-- What was last reported on the job's issue (its state and attempt count), so that a report lost to
-- a crash is sent after the restart and a report already made is not sent again. Jobs that exist
-- already count as reported as they are.
ALTER TABLE jobs ADD COLUMN reported TEXT;
UPDATE jobs SET reported = state || ':' || attempts WHERE source = 'github';
