-- Budgets (afk_core::AgentTimeOverrun; docs/config.md, [budget]).
--
-- One row per finished turn of an agent (an attempt's first turn or a follow-up turn, from when
-- T3 accepted it to when afk recorded its end, the time its thread waited for a person left out),
-- written in the same transaction as the transition that ended it. A job's agent time is the sum
-- of its rows since its budget began (attempt > jobs.attempts_base); a repository's agent time
-- of a day (UTC) is the sum of its rows that ended that day.
CREATE TABLE agent_turns (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   BIGINT  NOT NULL REFERENCES jobs (id),
    repo     TEXT    NOT NULL,
    attempt  INTEGER NOT NULL CHECK (attempt >= 1),
    agent_ms BIGINT  NOT NULL CHECK (agent_ms >= 0),
    ended_ms BIGINT  NOT NULL
);

-- Ledger::job_agent_time: one job's turns, read from the index alone.
CREATE INDEX agent_turns_job ON agent_turns (job_id, attempt, agent_ms);
-- Ledger::repo_day_usage: one repository's turns of one day, read from the index alone; the
-- history before the day is never walked.
CREATE INDEX agent_turns_repo_day ON agent_turns (repo, ended_ms, agent_ms);
-- Ledger::repo_day_usage: the jobs whose first attempt started since a day began (a repository's
-- new jobs of the day). Only first attempts are indexed, by when they were made.
CREATE INDEX attempts_first ON attempts (created_ms) WHERE number = 1;
