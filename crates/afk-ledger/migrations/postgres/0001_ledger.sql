-- afk's ledger, PostgreSQL flavour (every integer BIGINT so that both backends decode as i64).
-- Timestamps are unix milliseconds; states are the names afk-core prints (JobState::as_str,
-- AttemptState::as_str).

CREATE TABLE jobs (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo           TEXT    NOT NULL,
    number         BIGINT  NOT NULL CHECK (number >= 0),
    title          TEXT    NOT NULL,
    body           TEXT    NOT NULL,
    labels         TEXT    NOT NULL DEFAULT '[]',
    priority       BIGINT  NOT NULL CHECK (priority BETWEEN 0 AND 3),
    source         TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('queued', 'dispatching', 'running', 'retry_wait',
                       'succeeded', 'failed', 'timed_out', 'cancelled', 'lost', 'given_up')),
    attempts       BIGINT  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    dispatch_tries BIGINT  NOT NULL DEFAULT 0 CHECK (dispatch_tries >= 0),
    not_before_ms  BIGINT,
    last_error     TEXT,
    created_ms     BIGINT  NOT NULL,
    updated_ms     BIGINT  NOT NULL,
    UNIQUE (repo, number)
);

CREATE INDEX jobs_state ON jobs (state);

CREATE TABLE attempts (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id            BIGINT  NOT NULL REFERENCES jobs (id),
    number            BIGINT  NOT NULL CHECK (number >= 1),
    state             TEXT    NOT NULL CHECK (state IN ('dispatching', 'running', 'succeeded', 'failed',
                          'timed_out', 'cancelled', 'lost')),
    thread_id         TEXT    NOT NULL UNIQUE,
    project_id        TEXT    NOT NULL,
    create_command_id TEXT    NOT NULL,
    turn_command_id   TEXT    NOT NULL,
    message_id        TEXT    NOT NULL,
    title             TEXT    NOT NULL,
    branch            TEXT    NOT NULL,
    prompt            TEXT    NOT NULL,
    dispatch_tries    BIGINT  NOT NULL DEFAULT 0 CHECK (dispatch_tries >= 0),
    last_error        TEXT,
    stop_pending      BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms        BIGINT  NOT NULL,
    updated_ms        BIGINT  NOT NULL,
    ended_ms          BIGINT,
    UNIQUE (job_id, number)
);

-- The invariant the whole control plane leans on: at most one live attempt (one thread that may
-- be working) per job, whatever a buggy or concurrent writer tries.
CREATE UNIQUE INDEX attempts_one_live_per_job ON attempts (job_id)
    WHERE state IN ('dispatching', 'running');

CREATE INDEX attempts_stop_pending ON attempts (job_id) WHERE stop_pending;

-- Append-only: the ledger never updates or deletes a row here.
CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     BIGINT  NOT NULL REFERENCES jobs (id),
    attempt    BIGINT ,
    from_state TEXT    NOT NULL,
    to_state   TEXT    NOT NULL,
    note       TEXT    NOT NULL,
    at_ms      BIGINT  NOT NULL
);

CREATE INDEX events_job ON events (job_id, id);
