//! Comment commands (`/afk retry`, `/afk stop`, `/afk <instruction>`) as the ledger keeps them,
//! and the instruction a job's prompt carries.
//!
//! A command goes through three writes, so that kill -9 at any point neither loses one nor
//! carries one out twice:
//! 1. [`Ledger::take_comment_command`]: the comment is `taken` (or `ignored`, for an author
//!    without write access) before anything is done about it; a comment already known is never
//!    taken again, whatever its later edits say;
//! 2. [`Ledger::answer_comment_command`]: the job's move (if any), its instruction and the answer
//!    (the reaction and reply afk owes) are one transaction, from `taken` to `answered`;
//! 3. [`Ledger::acknowledge_comment_command`]: after the reaction (and reply) went out,
//!    `acknowledged`.

use afk_core::{CancelReason, JobId, Repo, Transition};
use chrono::{DateTime, Utc};

use crate::model::{millis, JobRow};
use crate::record::{AttemptWrite, Counting, Plan, WatchedMoves};
use crate::{Job, Ledger, LedgerError, Pool, RecordRef, LIVE};

/// A comment command's ledger id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommentCommandId(pub i64);

macro_rules! stored_names {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// The name the ledger stores.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

stored_names!(
    /// What a comment commands.
    CommentCommandKind {
        /// `/afk retry`: requeue the job with a fresh budget.
        Retry => "retry",
        /// `/afk stop`: cancel the job and stop its thread.
        Stop => "stop",
        /// `/afk <instruction>`: a new attempt (or a follow-up turn) with that text.
        Instruct => "instruct",
        /// A comment starting with `/afk` that is not a command afk can read (its argument says
        /// why): refused.
        Malformed => "malformed",
    }
);

stored_names!(
    /// Where a comment command is.
    CommandState {
        /// Its author may not command afk: never acted on or answered.
        Ignored => "ignored",
        /// Taken, not yet acted on.
        Taken => "taken",
        /// Acted on (or refused); its reaction (and reply) are owed.
        Answered => "answered",
        /// Its reaction (and reply) went out.
        Acknowledged => "acknowledged",
    }
);

stored_names!(
    /// The reaction afk puts on a command's comment (GitHub's reaction `content`).
    Reaction {
        /// 👀: taken.
        Eyes => "eyes",
        /// 👎: refused (with a one-line reply saying why).
        ThumbsDown => "-1",
    }
);

/// A comment command as first seen, to be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommentCommand {
    /// The repository.
    pub repo: Repo,
    /// GitHub's comment id.
    pub comment_id: u64,
    /// The issue or pull request the comment is on (where a reply goes).
    pub number: u64,
    /// The job it commands.
    pub job: JobId,
    /// Its author's login.
    pub author: String,
    /// What it commands.
    pub kind: CommentCommandKind,
    /// The instruction, or why a malformed command cannot be read.
    pub argument: Option<String>,
}

/// A comment command as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentCommand {
    /// Its ledger id.
    pub id: CommentCommandId,
    /// Everything it was taken with.
    pub command: NewCommentCommand,
    /// Where it is.
    pub state: CommandState,
    /// The reaction owed or sent, once answered.
    pub reaction: Option<Reaction>,
    /// The one-line reply owed or sent, once answered (refusals only).
    pub reply: Option<String>,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// What becomes of a job's instruction when a command is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionChange {
    /// It stays as it is.
    Keep,
    /// It is removed (a plain `/afk retry` starts from the issue alone).
    Clear,
    /// It becomes this text, given by `author`.
    Set {
        /// The instruction.
        text: String,
        /// Who gave it.
        author: String,
    },
}

/// The answer to a taken command, written with the job's move in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandAnswer {
    /// The reaction owed.
    pub reaction: Reaction,
    /// The one-line reply owed, if any.
    pub reply: Option<String>,
    /// What becomes of the job's instruction.
    pub instruction: InstructionChange,
}

/// The instruction a person gave a job, added to its next attempts' prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInstruction {
    /// The text.
    pub text: String,
    /// Who gave it (a login with write access).
    pub author: String,
}

#[derive(sqlx::FromRow)]
struct CommandRow {
    id: i64,
    repo: String,
    comment_id: i64,
    number: i64,
    job_id: i64,
    author: String,
    command: String,
    argument: Option<String>,
    state: String,
    reaction: Option<String>,
    reply: Option<String>,
    taken_ms: i64,
}

impl CommandRow {
    fn into_command(self) -> Result<CommentCommand, LedgerError> {
        let id = self.id;
        let corrupt = |column: &str, why: String| LedgerError::Corrupt {
            what: format!("comment_commands.{column} of row {id}: {why}"),
        };
        let unsigned = |column: &str, n: i64| u64::try_from(n).map_err(|e| corrupt(column, e.to_string()));
        Ok(CommentCommand {
            id: CommentCommandId(id),
            command: NewCommentCommand {
                repo: Repo::new(self.repo).map_err(|e| corrupt("repo", e.to_string()))?,
                comment_id: unsigned("comment_id", self.comment_id)?,
                number: unsigned("number", self.number)?,
                job: JobId(self.job_id),
                author: self.author,
                kind: CommentCommandKind::parse(&self.command)
                    .ok_or_else(|| corrupt("command", format!("unknown command {:?}", self.command)))?,
                argument: self.argument,
            },
            state: CommandState::parse(&self.state)
                .ok_or_else(|| corrupt("state", format!("unknown state {:?}", self.state)))?,
            reaction: self
                .reaction
                .map(|r| {
                    Reaction::parse(&r).ok_or_else(|| corrupt("reaction", format!("unknown reaction {r:?}")))
                })
                .transpose()?,
            reply: self.reply,
            taken_at: DateTime::from_timestamp_millis(self.taken_ms)
                .ok_or_else(|| corrupt("taken_ms", format!("{} is not an instant", self.taken_ms)))?,
        })
    }
}

/// A GitHub number as the ledger stores it (BIGINT).
fn stored(what: &str, n: u64) -> Result<i64, LedgerError> {
    i64::try_from(n).map_err(|_| LedgerError::OutOfRange {
        what: what.to_owned(),
    })
}

impl Ledger {
    /// True when the comment `comment_id` of `repo` was seen as a command already (taken or
    /// ignored): it is never taken again, whatever its later edits say.
    pub async fn comment_command_known(&self, repo: &Repo, comment_id: u64) -> Result<bool, LedgerError> {
        let comment_id = stored("a comment id", comment_id)?;
        let found: Option<(i64,)> = fetch!(
            self,
            fetch_optional,
            "SELECT id FROM comment_commands WHERE repo = $1 AND comment_id = $2",
            repo.as_str(),
            comment_id
        );
        Ok(found.is_some())
    }

    /// Takes `command` (fenced), before anything is done about it: `true` when it is new, `false`
    /// when the comment was seen before (nothing is written). `ignored` stores a command whose
    /// author may not command afk, so that it is said once and never answered.
    pub async fn take_comment_command(
        &self,
        command: &NewCommentCommand,
        ignored: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let comment_id = stored("a comment id", command.comment_id)?;
        let number = stored("an issue number", command.number)?;
        if command.author.contains('\0') || command.argument.as_deref().is_some_and(|a| a.contains('\0')) {
            return Err(LedgerError::OutOfRange {
                what: format!("comment {} (it holds a NUL byte)", command.comment_id),
            });
        }
        let state = if ignored {
            CommandState::Ignored
        } else {
            CommandState::Taken
        };
        let inserted: Option<(i64,)> = with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            Ok(sqlx::query_as(
                "INSERT INTO comment_commands (repo, comment_id, number, job_id, author, command, argument, \
                 state, taken_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (repo, comment_id) DO NOTHING RETURNING id",
            )
            .bind(command.repo.as_str())
            .bind(comment_id)
            .bind(number)
            .bind(command.job.0)
            .bind(&command.author)
            .bind(command.kind.as_str())
            .bind(command.argument.as_deref())
            .bind(state.as_str())
            .bind(millis(now))
            .fetch_optional(&mut *tx)
            .await?)
        }))?;
        Ok(inserted.is_some())
    }

    /// The commands taken and not yet acknowledged (`taken`, then `answered`), oldest first, at
    /// most `limit`; only those in `state` when it is given (so that answers owed to a GitHub
    /// that is down never hold back the answering of newer commands).
    pub async fn open_comment_commands(
        &self,
        state: Option<CommandState>,
        limit: u32,
    ) -> Result<Vec<CommentCommand>, LedgerError> {
        let states = match state {
            Some(state) => vec![state.as_str()],
            None => vec![CommandState::Taken.as_str(), CommandState::Answered.as_str()],
        };
        let rows: Vec<CommandRow> = fetch!(
            self,
            fetch_all,
            "SELECT id, repo, comment_id, number, job_id, author, command, argument, state, reaction, reply, \
             taken_ms FROM comment_commands WHERE state IN ('taken', 'answered') AND (state = $1 OR state = $2) \
             ORDER BY id LIMIT $3",
            states[0],
            states[states.len() - 1],
            i64::from(limit)
        );
        rows.into_iter().map(CommandRow::into_command).collect()
    }

    /// Answers the taken command `id` in one transaction (fenced): records `transition` for its
    /// job (when there is one; with the compare-and-set of [`Ledger::record`]), applies the
    /// answer's instruction change and stores the answer (`answered`). Returns the job as it now
    /// is. [`LedgerError::Conflict`] when the job moved meanwhile and
    /// [`LedgerError::NotFound`] when the command is not `taken` (answered already): nothing is
    /// written then.
    pub async fn answer_comment_command(
        &self,
        id: CommentCommandId,
        job: JobId,
        transition: Option<&Transition>,
        answer: &CommandAnswer,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, LedgerError> {
        let (job, _) = (self.answer_measured(id, job, transition, answer, now, false)).await?;
        Ok(job)
    }

    /// [`Ledger::answer_comment_command`], and how many times it moved the count of changes to
    /// the live attempts ([`WatchedMoves`], measured inside its transaction).
    pub async fn answer_comment_command_counted(
        &self,
        id: CommentCommandId,
        job: JobId,
        transition: Option<&Transition>,
        answer: &CommandAnswer,
        now: DateTime<Utc>,
    ) -> Result<(Option<Job>, WatchedMoves), LedgerError> {
        self.answer_measured(id, job, transition, answer, now, true).await
    }

    async fn answer_measured(
        &self,
        id: CommentCommandId,
        job: JobId,
        transition: Option<&Transition>,
        answer: &CommandAnswer,
        now: DateTime<Utc>,
        measure: bool,
    ) -> Result<(Option<Job>, WatchedMoves), LedgerError> {
        let plan = transition.map(|t| Plan::new(job, t, None)).transpose()?;
        let now = millis(now);
        let mut counting = Counting::new(self.backend(), measure);
        // Only the job's move writes what the count counts: the command's row and the job's
        // instruction are tables of their own (no trigger of migrations 0018, 0021 or 0023).
        let (row, moves): (Option<JobRow>, WatchedMoves) = with_pool!(self, |pool| in_transaction!(
            pool,
            |tx| {
                fence!(self, tx);
                let answered: Option<(i64,)> = sqlx::query_as(
                "UPDATE comment_commands SET state = 'answered', reaction = $1, reply = $2, answered_ms = $3 \
                 WHERE id = $4 AND state = 'taken' RETURNING id",
            )
            .bind(answer.reaction.as_str())
            .bind(answer.reply.as_deref())
            .bind(now)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
                if answered.is_none() {
                    return Err(LedgerError::NotFound(RecordRef::Job(job)));
                }
                let row = match (transition, plan) {
                    (Some(transition), Some(plan)) => {
                        Some(record_in!(tx, job, transition, plan, now, &mut counting))
                    }
                    _ => None,
                };
                match &answer.instruction {
                    InstructionChange::Keep => {}
                    InstructionChange::Clear => {
                        sqlx::query("DELETE FROM job_instructions WHERE job_id = $1")
                            .bind(job.0)
                            .execute(&mut *tx)
                            .await?;
                    }
                    InstructionChange::Set { text, author } => {
                        sqlx::query(
                        "INSERT INTO job_instructions (job_id, instruction, author, set_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (job_id) DO UPDATE SET instruction = $2, author = $3, set_ms = $4",
                    )
                    .bind(job.0)
                    .bind(text)
                    .bind(author)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    }
                }
                Ok((row, count_end!(tx, counting)))
            }
        ))?;
        Ok((row.map(JobRow::into_job).transpose()?, moves))
    }

    /// Marks the answered command `id` acknowledged (fenced): its reaction (and reply) went out.
    /// Idempotent.
    pub async fn acknowledge_comment_command(&self, id: CommentCommandId) -> Result<(), LedgerError> {
        with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            sqlx::query(
                "UPDATE comment_commands SET state = 'acknowledged' WHERE id = $1 AND state = 'answered'",
            )
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }))
    }

    /// The instruction a person gave `job` in a comment, if any.
    pub async fn job_instruction(&self, job: JobId) -> Result<Option<JobInstruction>, LedgerError> {
        let row: Option<(String, String)> = fetch!(
            self,
            fetch_optional,
            "SELECT instruction, author FROM job_instructions WHERE job_id = $1",
            job.0
        );
        Ok(row.map(|(text, author)| JobInstruction { text, author }))
    }

    /// Every comment command of `job`, oldest first (for tests and inspection).
    pub async fn comment_commands_of(&self, job: JobId) -> Result<Vec<CommentCommand>, LedgerError> {
        let rows: Vec<CommandRow> = fetch!(
            self,
            fetch_all,
            "SELECT id, repo, comment_id, number, job_id, author, command, argument, state, reaction, reply, \
             taken_ms FROM comment_commands WHERE job_id = $1 ORDER BY id",
            job.0
        );
        rows.into_iter().map(CommandRow::into_command).collect()
    }
}

impl Ledger {
    /// The issues whose comments may hold a command for their job, ordered by repository and
    /// number: every GitHub job's but those whose pull request was merged and those GitHub no
    /// longer has. Keys only (no bodies), for polling comments every round.
    pub async fn issues_for_commands(&self) -> Result<Vec<afk_core::IssueKey>, LedgerError> {
        const SQL: &str = "SELECT repo, number FROM jobs WHERE source = 'github' AND state <> 'merged' \
             AND (cancel_reason IS NULL OR cancel_reason <> 'issue_gone') ORDER BY repo, number";
        let rows: Vec<(String, i64)> = fetch!(self, fetch_all, SQL);
        rows.into_iter()
            .map(|(repo, number)| {
                let corrupt = |what: String| LedgerError::Corrupt { what };
                Ok(afk_core::IssueKey {
                    repo: Repo::new(repo).map_err(|e| corrupt(format!("jobs.repo: {e}")))?,
                    number: u64::try_from(number).map_err(|_| corrupt(format!("jobs.number {number}")))?,
                })
            })
            .collect()
    }

    /// The job of `repo` one of whose attempts worked on `branch` (the latest such attempt's), if
    /// any: how a comment on a pull request afk's agent opened finds its job.
    pub async fn job_by_branch(&self, repo: &Repo, branch: &str) -> Result<Option<Job>, LedgerError> {
        let row: Option<JobRow> = fetch!(
            self,
            fetch_optional,
            "SELECT j.* FROM jobs j JOIN attempts a ON a.job_id = j.id \
             WHERE j.repo = $1 AND a.branch = $2 ORDER BY a.id DESC LIMIT 1",
            repo.as_str(),
            branch
        );
        row.map(JobRow::into_job).transpose()
    }
}
