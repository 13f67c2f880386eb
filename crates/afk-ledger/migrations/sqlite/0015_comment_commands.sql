-- Comment commands (`/afk retry`, `/afk stop`, `/afk <instruction>`) on a GitHub issue or its pull
-- request. A command is taken once: its row is written (`taken`) before afk acts on it, the action
-- and `answered` are one transaction, and the reaction (and reply) afk owes is sent after and then
-- marked `acknowledged`; so kill -9 at any point neither loses a command nor carries one out twice,
-- and an edited comment is never taken again. Comments of people without write access are kept as
-- `ignored` (said once in the log, never answered).
CREATE TABLE comment_commands (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    repo        TEXT    NOT NULL,
    comment_id  BIGINT  NOT NULL CHECK (comment_id >= 0),
    -- Where the comment is (the issue, or the pull request): the reply goes there.
    number      BIGINT  NOT NULL CHECK (number >= 0),
    job_id      BIGINT  NOT NULL REFERENCES jobs (id),
    author      TEXT    NOT NULL,
    command     TEXT    NOT NULL CHECK (command IN ('retry', 'stop', 'instruct', 'malformed')),
    -- The instruction, or why a malformed command cannot be read.
    argument    TEXT,
    state       TEXT    NOT NULL CHECK (state IN ('ignored', 'taken', 'answered', 'acknowledged')),
    reaction    TEXT    CHECK (reaction IN ('eyes', '-1')),
    reply       TEXT,
    taken_ms    BIGINT  NOT NULL,
    answered_ms BIGINT,
    UNIQUE (repo, comment_id)
);

CREATE INDEX comment_commands_open ON comment_commands (id) WHERE state IN ('taken', 'answered');

-- The instruction a person gave a job in a comment (`/afk <instruction>`), added to the prompt of
-- its next attempts until another command replaces or clears it.
CREATE TABLE job_instructions (
    job_id      BIGINT  PRIMARY KEY REFERENCES jobs (id),
    instruction TEXT    NOT NULL,
    author      TEXT    NOT NULL,
    set_ms      BIGINT  NOT NULL
);
