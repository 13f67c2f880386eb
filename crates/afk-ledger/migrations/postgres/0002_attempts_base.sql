-- A requeued job gets a fresh retry budget: its attempts are counted from `attempts_base`.
ALTER TABLE jobs ADD COLUMN attempts_base BIGINT NOT NULL DEFAULT 0 CHECK (attempts_base >= 0);
