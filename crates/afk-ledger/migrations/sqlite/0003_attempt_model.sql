-- The model an attempt's thread was created with, when a repository's AFK.md chose one, so that a
-- dispatch resumed after a crash creates the thread exactly as first planned.
ALTER TABLE attempts ADD COLUMN model TEXT;
