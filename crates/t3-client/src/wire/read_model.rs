//! The read model served by `GET /api/orchestration/snapshot`, and afk's reading of a thread.
//!
//! Decoding ignores fields T3 adds over time and rejects a document whose known fields have the
//! wrong shape. The snapshot endpoint serves threads without their messages, activities and
//! checkpoints (T3 stopped hydrating them there), so those arrays default to empty.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::view::Body;
use super::{required_nullable, scan, InteractionMode, ModelSelection, RuntimeMode, Timestamp};
use crate::ids::{MessageId, ProjectId, ThreadId, TurnId};

/// The whole fleet as T3 sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadModel {
    /// The event sequence this snapshot reflects.
    pub snapshot_sequence: u64,
    /// Every project.
    pub projects: Vec<Project>,
    /// Every thread, including archived and deleted ones.
    pub threads: Vec<Thread>,
    /// When anything last changed.
    #[serde(deserialize_with = "timestamp")]
    pub updated_at: Timestamp,
}

/// A thread T3 listed that afk cannot read (a turn state it does not know, a bad timestamp, a
/// title with a lone surrogate, an id listed twice): its id and why. afk reads its attempt as
/// unknown (neither lost nor ended) until T3 describes it readably again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableThread {
    /// The thread's id (a thread whose id cannot be read makes the whole view unreadable).
    pub id: ThreadId,
    /// What is wrong with it, in the decoder's words.
    pub reason: String,
}

/// Only the id of a thread, for naming one whose other fields cannot be read.
#[derive(Deserialize)]
struct IdOnly {
    id: ThreadId,
}

/// Decodes each thread of `raw` on its own: the readable ones, and the id and reason of each that
/// is not. `Err` when a thread's id itself cannot be read (the view cannot say which thread is
/// missing then).
pub(crate) fn threads_one_by_one<T: serde::de::DeserializeOwned>(
    raw: Vec<Box<serde_json::value::RawValue>>,
) -> Result<(Vec<T>, Vec<UnreadableThread>), serde_json::Error> {
    let mut readable = Vec::with_capacity(raw.len());
    let mut unreadable = Vec::new();
    for thread in raw {
        match serde_json::from_str::<T>(thread.get()) {
            Ok(thread) => readable.push(thread),
            Err(error) => unreadable.push(UnreadableThread {
                id: serde_json::from_str::<IdOnly>(thread.get())?.id,
                reason: error.to_string(),
            }),
        }
    }
    Ok((readable, unreadable))
}

/// [`ReadModel`] with its threads left undecoded, for [`ReadModel::decode_per_thread`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseReadModel {
    snapshot_sequence: u64,
    projects: Vec<Project>,
    threads: Vec<Box<serde_json::value::RawValue>>,
    #[serde(deserialize_with = "timestamp")]
    updated_at: Timestamp,
}

impl ReadModel {
    /// Decodes a snapshot document (`GET /api/orchestration/snapshot`'s body): exactly what
    /// `serde_json::from_slice::<ReadModel>` gives, the same model or the same error. Read by the
    /// scanner written for T3's shapes (`wire::scan`), which gives `serde`'s answer or declines;
    /// where it declines (and for a body that is not UTF-8), by `serde`. What `T3Client::snapshot`
    /// runs, in about half the time of `serde`'s derived visitors (BENCHMARKS.md, "Typed decode
    /// against the floor").
    pub fn decode(body: &[u8]) -> Result<ReadModel, serde_json::Error> {
        let body = Body::of(body);
        if let Body::Text(text) = body {
            if let Some(model) = scan::read_model(text) {
                return Ok(model);
            }
        }
        body.decode()
    }

    /// Decodes a snapshot document thread by thread: a thread that cannot be read is set aside
    /// (its id and why) instead of failing the whole view. A document whose other parts (or a
    /// thread's id) cannot be read fails as [`serde_json::from_slice`] would. Decodes in one pass
    /// when every thread is readable.
    pub fn decode_per_thread(body: &[u8]) -> Result<(ReadModel, Vec<UnreadableThread>), serde_json::Error> {
        if let Ok(model) = ReadModel::decode(body) {
            return Ok((model, Vec::new()));
        }
        let loose: LooseReadModel = serde_json::from_slice(body)?;
        let (threads, unreadable) = threads_one_by_one(loose.threads)?;
        let model = ReadModel {
            snapshot_sequence: loose.snapshot_sequence,
            projects: loose.projects,
            threads,
            updated_at: loose.updated_at,
        };
        Ok((model, unreadable))
    }

    /// The thread with this id, if T3 knows it.
    pub fn thread(&self, id: &ThreadId) -> Option<&Thread> {
        self.threads.iter().find(|t| &t.id == id)
    }
}

/// A project: one repository's workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// Its id.
    pub id: ProjectId,
    /// Its title.
    pub title: String,
    /// The checkout threads work in by default.
    pub workspace_root: String,
    /// Where the repository comes from, when T3 knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_identity: Option<serde_json::Value>,
    /// The model new threads use.
    #[serde(deserialize_with = "required_nullable")]
    pub default_model_selection: Option<ModelSelection>,
    /// Project scripts (setup, test, ...), passed through as T3 sends them.
    #[serde(default)]
    pub scripts: Vec<serde_json::Value>,
    /// Creation time.
    #[serde(deserialize_with = "timestamp")]
    pub created_at: Timestamp,
    /// Last change.
    #[serde(deserialize_with = "timestamp")]
    pub updated_at: Timestamp,
    /// Set once the project is deleted.
    #[serde(deserialize_with = "nullable_timestamp")]
    pub deleted_at: Option<Timestamp>,
}

/// A thread: one agent conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thread {
    /// Its id.
    pub id: ThreadId,
    /// The project it works in.
    pub project_id: ProjectId,
    /// Its title.
    pub title: String,
    /// The agent that runs it.
    pub model_selection: ModelSelection,
    /// How much the agent may do without asking.
    pub runtime_mode: RuntimeMode,
    /// Act or plan.
    pub interaction_mode: InteractionMode,
    /// Its git branch.
    #[serde(deserialize_with = "required_nullable")]
    pub branch: Option<String>,
    /// Its checkout, `null` for the project's workspace root.
    #[serde(deserialize_with = "required_nullable")]
    pub worktree_path: Option<String>,
    /// The most recent turn, `null` before the first turn is admitted.
    #[serde(deserialize_with = "required_nullable")]
    pub latest_turn: Option<LatestTurn>,
    /// Creation time.
    #[serde(deserialize_with = "timestamp")]
    pub created_at: Timestamp,
    /// Last change of anything in the thread.
    #[serde(deserialize_with = "timestamp")]
    pub updated_at: Timestamp,
    /// Set once archived.
    #[serde(default, deserialize_with = "nullable_timestamp")]
    pub archived_at: Option<Timestamp>,
    /// Set once deleted.
    #[serde(deserialize_with = "nullable_timestamp")]
    pub deleted_at: Option<Timestamp>,
    /// Empty in the snapshot (T3 does not hydrate it there).
    #[serde(default)]
    pub messages: Vec<serde_json::Value>,
    /// Empty in the snapshot.
    #[serde(default)]
    pub activities: Vec<serde_json::Value>,
    /// Empty in the snapshot.
    #[serde(default)]
    pub checkpoints: Vec<serde_json::Value>,
    /// The provider session, `null` when none was started.
    #[serde(deserialize_with = "required_nullable")]
    pub session: Option<Session>,
    /// The agent waits for a person's answer (`item/tool/requestUserInput`). Only the shell
    /// (`GET /api/orchestration/shell`, `orchestration.subscribeShell`) carries this flag; the
    /// snapshot has none, so a thread read from it says `false`. Not serialised when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub has_pending_user_input: bool,
    /// The agent waits for a person's approval; shell only, like `has_pending_user_input`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub has_pending_approvals: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Thread {
    /// True when this thread's detail (not the snapshot, whose threads carry no activities)
    /// shows that `turn` was interrupted. T3 marks an interrupted turn `completed` within half a
    /// second (its checkpoint reactor captures the interrupted turn's checkpoint as `missing`,
    /// then captures it again as `ready`), so `latestTurn.state` cannot tell; the
    /// `checkpoint.captured` activity with `status: "missing"` for the turn stays.
    pub fn turn_was_interrupted(&self, turn: &TurnId) -> bool {
        self.activities.iter().any(|activity| {
            activity.get("kind").and_then(serde_json::Value::as_str) == Some("checkpoint.captured")
                && activity.get("turnId").and_then(serde_json::Value::as_str) == Some(turn.as_str())
                && activity
                    .pointer("/payload/status")
                    .and_then(serde_json::Value::as_str)
                    == Some("missing")
        })
    }

    /// True when the agent waits for a person: the shell's `hasPendingUserInput` or
    /// `hasPendingApprovals` (false in a thread read from the snapshot, which lacks them), counted
    /// only while the thread runs with its session `running`: on T3 the flag stays true for good
    /// after a session stop, and once showed while the session was still starting.
    pub fn waits_for_person(&self) -> bool {
        waits_for_person(self, self.has_pending_user_input || self.has_pending_approvals)
    }

    /// What the agent asks people and nobody answered yet, oldest first, as the thread's detail
    /// says it (the snapshot's threads have no activities: empty there): every
    /// `user-input.requested` and `approval.requested` activity without a later
    /// `user-input.resolved` / `approval.resolved` of the same `requestId`. Tolerant: an activity
    /// or a question afk cannot read is skipped, and missing texts read as empty.
    pub fn pending_requests(&self) -> Vec<PendingRequest> {
        let activities = self.typed_activities();
        let request_id = |a: &Activity| {
            a.payload
                .get("requestId")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let resolved = |kind: &str, id: &Option<String>| {
            activities
                .iter()
                .any(|a| a.kind == kind && id.is_some() && request_id(a) == *id)
        };
        let mut pending = Vec::new();
        for activity in &activities {
            let id = request_id(activity);
            match activity.kind.as_str() {
                "user-input.requested" if !resolved("user-input.resolved", &id) => {
                    let questions = activity
                        .payload
                        .get("questions")
                        .and_then(serde_json::Value::as_array)
                        .map(|qs| {
                            qs.iter()
                                .filter_map(|q| serde_json::from_value::<Question>(q.clone()).ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    pending.push(PendingRequest::UserInput {
                        request_id: id,
                        questions,
                    });
                }
                "approval.requested" if !resolved("approval.resolved", &id) => {
                    let text = |key: &str| {
                        activity
                            .payload
                            .get(key)
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_owned)
                    };
                    pending.push(PendingRequest::Approval {
                        request_id: id,
                        summary: activity.summary.clone(),
                        detail: text("detail"),
                    });
                }
                _ => {}
            }
        }
        pending
    }

    /// Its activities, typed (the thread detail has them; the snapshot's are empty). An entry
    /// that is not an activity is skipped.
    pub fn typed_activities(&self) -> Vec<Activity> {
        self.activities
            .iter()
            .filter_map(|a| serde_json::from_value(a.clone()).ok())
            .collect()
    }
}

/// `GET /api/orchestration/threads/:threadId`: one thread with its messages and activities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadDetail {
    /// The event sequence this detail reflects.
    pub snapshot_sequence: u64,
    /// The thread, hydrated.
    pub thread: Thread,
}

/// Something the agent asks a person and waits for (see [`Thread::pending_requests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingRequest {
    /// A question (`user-input.requested`; a person answers with `thread.user-input.respond`).
    UserInput {
        /// T3's id of the request (`payload.requestId`), when it gave one.
        request_id: Option<String>,
        /// The questions, as far as they could be read.
        questions: Vec<Question>,
    },
    /// An approval of a command or a change (`approval.requested`).
    Approval {
        /// T3's id of the request, when it gave one.
        request_id: Option<String>,
        /// T3's line for people, e.g. "Command approval requested".
        summary: String,
        /// What is to be approved (the command, the file), when T3 says.
        detail: Option<String>,
    },
}

/// One question of a `user-input.requested` activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Question {
    /// Its id (the key of its answer in `thread.user-input.respond`).
    #[serde(default)]
    pub id: String,
    /// A short heading, when given.
    #[serde(default)]
    pub header: Option<String>,
    /// The question itself.
    #[serde(default)]
    pub question: String,
    /// The answers offered, if any.
    #[serde(default)]
    pub options: Vec<QuestionOption>,
}

/// One answer a question offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuestionOption {
    /// The answer.
    #[serde(default)]
    pub label: String,
    /// What it means, when given.
    #[serde(default)]
    pub description: Option<String>,
}

/// One entry of a thread's activity log (T3's `OrchestrationThreadActivity`), e.g.
/// `user-input.requested` (payload `{requestId, questions}`), `user-input.resolved` (payload
/// `{requestId, answers}`), `provider.turn.start.failed` (payload `{detail}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// Its id.
    pub id: String,
    /// `info`, `error`, …
    pub tone: String,
    /// What happened, e.g. `user-input.requested`.
    pub kind: String,
    /// A line for people.
    pub summary: String,
    /// The kind's details.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// The turn it belongs to, if any.
    #[serde(default)]
    pub turn_id: Option<TurnId>,
    /// When.
    #[serde(deserialize_with = "timestamp")]
    pub created_at: Timestamp,
}

/// The state of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnState {
    /// The agent is working.
    Running,
    /// Someone interrupted it.
    Interrupted,
    /// The agent finished.
    Completed,
    /// The agent failed.
    Error,
}

/// The most recent turn of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestTurn {
    /// Its id.
    pub turn_id: TurnId,
    /// Its state.
    pub state: TurnState,
    /// When it was asked for.
    #[serde(deserialize_with = "timestamp")]
    pub requested_at: Timestamp,
    /// When the agent started on it.
    #[serde(deserialize_with = "nullable_timestamp")]
    pub started_at: Option<Timestamp>,
    /// When it ended.
    #[serde(deserialize_with = "nullable_timestamp")]
    pub completed_at: Option<Timestamp>,
    /// The agent's reply message.
    #[serde(deserialize_with = "required_nullable")]
    pub assistant_message_id: Option<MessageId>,
}

/// The status of a provider session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Not started.
    Idle,
    /// Starting up.
    Starting,
    /// Working on a turn.
    Running,
    /// Waiting for the next turn.
    Ready,
    /// Its turn was interrupted.
    Interrupted,
    /// Stopped.
    Stopped,
    /// Failed.
    Error,
}

/// A thread's provider session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The thread it belongs to.
    pub thread_id: ThreadId,
    /// Its status.
    pub status: SessionStatus,
    /// The provider's name, e.g. `claudeAgent`.
    #[serde(deserialize_with = "required_nullable")]
    pub provider_name: Option<String>,
    /// How much the agent may do without asking.
    pub runtime_mode: RuntimeMode,
    /// The turn it is working on.
    #[serde(deserialize_with = "required_nullable")]
    pub active_turn_id: Option<TurnId>,
    /// The last failure, in T3's words.
    #[serde(deserialize_with = "required_nullable")]
    pub last_error: Option<String>,
    /// Last change.
    #[serde(deserialize_with = "timestamp")]
    pub updated_at: Timestamp,
}

/// What afk reads from a thread: the state of the attempt it carries (afk's rule in `t3-api.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadState {
    /// Created, but its turn is not admitted yet (`latestTurn` is `null`).
    Starting,
    /// The agent is working.
    Running,
    /// The turn completed and the session is no longer running.
    Succeeded,
    /// The turn or the session ended in error; T3's last error when it gave one.
    Failed {
        /// `session.lastError`.
        reason: Option<String>,
    },
    /// The turn was interrupted (by afk or by a person in T3).
    Interrupted,
    /// The thread is gone or deleted.
    Lost,
}

/// What [`ThreadState::of`] reads of a thread: the wire's [`Thread`] and the fleet's compact
/// [`super::FleetThread`] both answer it, so that both read by the one rule.
pub trait ThreadFacts {
    /// T3 deleted the thread.
    fn is_deleted(&self) -> bool;
    /// Its provider session's status, `None` when no session was started.
    fn session_status(&self) -> Option<SessionStatus>;
    /// The session's last failure, in T3's words.
    fn last_error(&self) -> Option<&str>;
    /// Its latest turn's state, `None` before the first turn.
    fn turn_state(&self) -> Option<TurnState>;
}

impl<T: ThreadFacts + ?Sized> ThreadFacts for &T {
    fn is_deleted(&self) -> bool {
        (**self).is_deleted()
    }
    fn session_status(&self) -> Option<SessionStatus> {
        (**self).session_status()
    }
    fn last_error(&self) -> Option<&str> {
        (**self).last_error()
    }
    fn turn_state(&self) -> Option<TurnState> {
        (**self).turn_state()
    }
}

impl ThreadFacts for Thread {
    fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
    fn session_status(&self) -> Option<SessionStatus> {
        self.session.as_ref().map(|s| s.status)
    }
    fn last_error(&self) -> Option<&str> {
        self.session.as_ref().and_then(|s| s.last_error.as_deref())
    }
    fn turn_state(&self) -> Option<TurnState> {
        self.latest_turn.as_ref().map(|t| t.state)
    }
}

/// The rule of [`Thread::waits_for_person`] for any thread that answers [`ThreadFacts`]:
/// `flagged` (the shell's `hasPendingUserInput` or `hasPendingApprovals`) counts only while the
/// thread runs with its session `running`.
pub(crate) fn waits_for_person<T: ThreadFacts + ?Sized>(thread: &T, flagged: bool) -> bool {
    flagged
        && thread.session_status() == Some(SessionStatus::Running)
        && ThreadState::of(Some(thread)) == ThreadState::Running
}

impl ThreadState {
    /// The state of the attempt whose thread is `thread` (`None` when the snapshot lacks it).
    pub fn of<T: ThreadFacts + ?Sized>(thread: Option<&T>) -> ThreadState {
        let Some(thread) = thread else {
            return ThreadState::Lost;
        };
        if thread.is_deleted() {
            return ThreadState::Lost;
        }
        let session_status = thread.session_status();
        let turn_state = thread.turn_state();
        let last_error = thread.last_error().map(str::to_owned);
        // A session that could not start: `error`, or (claudeAgent) `stopped` with a
        // `lastError` and never a turn.
        let start_failed =
            turn_state.is_none() && session_status == Some(SessionStatus::Stopped) && last_error.is_some();
        if turn_state == Some(TurnState::Error)
            || session_status == Some(SessionStatus::Error)
            || start_failed
        {
            return ThreadState::Failed { reason: last_error };
        }
        let session_running = matches!(
            session_status,
            Some(SessionStatus::Starting | SessionStatus::Running)
        );
        if turn_state == Some(TurnState::Running) || session_running {
            return ThreadState::Running;
        }
        match turn_state {
            Some(TurnState::Completed) => ThreadState::Succeeded,
            Some(TurnState::Interrupted) => ThreadState::Interrupted,
            _ => ThreadState::Starting,
        }
    }

    /// True once the thread will not change without a new command.
    pub fn is_final(&self) -> bool {
        !matches!(self, ThreadState::Starting | ThreadState::Running)
    }
}

/// Decodes a [`Timestamp`] exactly as its own `Deserialize` does (any RFC 3339 date-time, else an
/// error), but without allocating and, for the one form T3 writes (`2026-11-24T19:14:36.116Z`),
/// without chrono's general parser: a read model carries seven or so timestamps per thread, and
/// their decoding was a sixth of the typed decode's instructions (see BENCHMARKS.md).
pub(crate) fn timestamp<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
    struct Iso;
    impl Visitor<'_> for Iso {
        type Value = Timestamp;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTING_TIMESTAMP)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Timestamp, E> {
            match t3_form(text) {
                Some(t) => Ok(t),
                None => rfc3339(text),
            }
        }
    }
    deserializer.deserialize_str(Iso)
}

/// [`timestamp`] for a key that may be `null`.
pub(crate) fn nullable_timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Timestamp>, D::Error> {
    struct Fast(Timestamp);
    impl<'de> Deserialize<'de> for Fast {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            timestamp(deserializer).map(Fast)
        }
    }
    Ok(Option::<Fast>::deserialize(deserializer)?.map(|f| f.0))
}

/// A timestamp afk checks but does not keep (a thread's `createdAt`, a session's `updatedAt`):
/// accepted and refused exactly as [`timestamp`] decodes it, with the same error, but T3's own
/// form is only validated ([`is_t3_form`]), no date built. As `Option<CheckedTimestamp>` it is
/// [`nullable_timestamp`]'s check.
pub(crate) struct CheckedTimestamp;

impl<'de> Deserialize<'de> for CheckedTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Check;
        impl Visitor<'_> for Check {
            type Value = CheckedTimestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTING_TIMESTAMP)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<CheckedTimestamp, E> {
                if !is_t3_form(text) {
                    rfc3339::<E>(text)?;
                }
                Ok(CheckedTimestamp)
            }
        }
        deserializer.deserialize_str(Check)
    }
}

/// What [`timestamp`] makes of a string's text (`None` where it refuses it), for the scanner
/// (`wire::scan`), which reads strings itself.
pub(crate) fn parse_timestamp(text: &str) -> Option<Timestamp> {
    t3_form(text).or_else(|| rfc3339::<serde_json::Error>(text).ok())
}

/// True exactly when [`CheckedTimestamp`] accepts a string of this text.
pub(crate) fn is_timestamp(text: &str) -> bool {
    is_t3_form(text) || DateTime::parse_from_rfc3339(text).is_ok()
}

const EXPECTING_TIMESTAMP: &str = "an ISO 8601 date-time string";

/// Any RFC 3339 date-time, as [`Timestamp`]'s own `Deserialize` reads it (and refuses it).
fn rfc3339<E: de::Error>(text: &str) -> Result<Timestamp, E> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| Timestamp(t.with_timezone(&Utc)))
        .map_err(|e| E::custom(format!("not an ISO 8601 date-time {text:?}: {e}")))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form T3 writes, or `None` for anything else (which the caller
/// hands to chrono's RFC 3339 parser: a leap second, an offset, other precisions).
fn t3_form(text: &str) -> Option<Timestamp> {
    let [year, month, day, hour, minute, second, milli] = t3_form_fields(text)?;
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let time = date.and_hms_milli_opt(hour, minute, second, milli)?;
    Some(Timestamp(time.and_utc()))
}

/// True exactly when [`t3_form`] gives a timestamp, without building it: chrono's calendar
/// (proleptic Gregorian; the years' four digits are all within its range) and clock (no leap
/// second: three digits of milliseconds never reach the 1,000 that chrono needs for one).
/// `tests::the_t3_form_is_validated_as_it_is_built` holds the two side by side.
fn is_t3_form(text: &str) -> bool {
    let Some([year, month, day, hour, minute, second, _milli]) = t3_form_fields(text) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day) && hour < 24 && minute < 60 && second < 60
}

/// The seven numbers of `YYYY-MM-DDTHH:MM:SS.mmmZ` (year, month, day, hour, minute, second,
/// millisecond), none of them range-checked; `None` when `text` has another shape. Read a word
/// (eight bytes) at a time: a snapshot has about six timestamps a thread, and reading them digit
/// by digit was ~800 instructions a thread (BENCHMARKS.md, "Typed decode against the floor").
/// `tests::the_t3_form_is_read_as_digit_by_digit` holds it against the digit-by-digit reading.
fn t3_form_fields(text: &str) -> Option<[u32; 7]> {
    /// Each byte's high bit.
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let b: &[u8; 24] = text.as_bytes().try_into().ok()?;
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes"));
    // The form's punctuation, and where it stands in each word (little-endian: byte 0 lowest).
    let (w0, w1, w2) = (word(0), word(8), word(16));
    const PUNCT: [(u64, u64); 3] = [
        // "YYYY-MM-": `-` at 4 and 7.
        (0xFF00_00FF_0000_0000, 0x2D00_002D_0000_0000),
        // "DDTHH:MM": `T` at 2 (10), `:` at 5 (13).
        (0x0000_FF00_00FF_0000, 0x0000_3A00_0054_0000),
        // ":SS.mmmZ": `:` at 0 (16), `.` at 3 (19), `Z` at 7 (23).
        (0xFF00_0000_FF00_00FF, 0x5A00_0000_2E00_003A),
    ];
    let mut values = [0u64; 3];
    for (i, (w, (mask, punct))) in [w0, w1, w2].into_iter().zip(PUNCT).enumerate() {
        if w & mask != punct {
            return None;
        }
        // The punctuation made a `0`, then every byte a digit: `b - '0'` and `b + 0x46` both
        // keep the high bit clear exactly for `0`..=`9` (a byte of 0x80 or more is caught by
        // its own high bit; a carry or borrow across bytes only follows a byte caught already).
        let digits = (w & !mask) | (0x3030_3030_3030_3030 & mask);
        let value = digits.wrapping_sub(0x3030_3030_3030_3030);
        if (digits | value | digits.wrapping_add(0x4646_4646_4646_4646)) & HIGH != 0 {
            return None;
        }
        values[i] = value;
    }
    let digit = |at: usize| ((values[at / 8] >> (8 * (at % 8))) & 0xFF) as u32;
    let two = |at: usize| digit(at) * 10 + digit(at + 1);
    Some([
        two(0) * 100 + two(2),
        two(5),
        two(8),
        two(11),
        two(14),
        two(17),
        two(20) * 10 + digit(22),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `Timestamp`'s own `Deserialize` makes of `text`.
    fn by_chrono(text: &str) -> Result<Timestamp, String> {
        serde_json::from_value::<Timestamp>(serde_json::Value::String(text.into())).map_err(|e| e.to_string())
    }

    fn by_read_model(text: &str) -> Result<Timestamp, String> {
        timestamp(serde_json::Value::String(text.into())).map_err(|e| e.to_string())
    }

    #[test]
    fn timestamps_decode_as_the_timestamp_type_does() {
        for text in [
            "2026-11-24T19:14:36.116Z",
            "1970-01-01T00:00:00.000Z",
            "2024-02-29T23:59:59.999Z",
            "2026-11-24T19:14:36Z",
            "2026-11-24T19:14:36.116123Z",
            "2026-11-24T21:14:36.116+02:00",
            "2026-11-24t19:14:36.116z",
            "2016-12-31T23:59:60.000Z",
        ] {
            assert_eq!(by_read_model(text).ok(), by_chrono(text).ok(), "{text}");
            assert!(by_read_model(text).is_ok(), "{text}");
        }
        for text in [
            "2026-02-30T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-11-24T24:00:00.000Z",
            "2026-11-24T19:14:36.1a6Z",
            "+026-11-24T19:14:36.116Z",
            "2026-11-24 19:14:36.116",
            "",
        ] {
            assert!(by_chrono(text).is_err(), "{text}");
            let error = by_read_model(text).expect_err(text);
            assert!(error.contains("not an ISO 8601 date-time"), "{error}");
        }
    }

    /// What the check of a timestamp afk does not keep makes of `text`.
    fn by_check(text: &str) -> Result<(), String> {
        CheckedTimestamp::deserialize(serde_json::Value::String(text.into()))
            .map(|CheckedTimestamp| ())
            .map_err(|e| e.to_string())
    }

    /// A timestamp only checked is accepted and refused as one decoded, with the same error,
    /// through serde (where a thread's `createdAt` meets it) and on its own.
    #[test]
    fn a_checked_timestamp_is_accepted_and_refused_as_a_decoded_one() {
        for text in [
            "2026-11-24T19:14:36.116Z",
            "2024-02-29T23:59:59.999Z",
            "2023-02-29T23:59:59.999Z",
            "1900-02-29T00:00:00.000Z",
            "2000-02-29T00:00:00.000Z",
            "0000-02-29T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "2026-04-31T00:00:00.000Z",
            "2026-00-10T00:00:00.000Z",
            "2026-11-00T00:00:00.000Z",
            "2026-11-24T19:60:00.000Z",
            "2026-11-24T19:14:60.000Z",
            "2016-12-31T23:59:60.000Z",
            "2026-11-24T19:14:36Z",
            "2026-11-24T21:14:36.116+02:00",
            "2026-11-24t19:14:36.116z",
            "2026-11-24T24:00:00.000Z",
            "2026-11-24T19:14:36.1a6Z",
            "+026-11-24T19:14:36.116Z",
            "",
        ] {
            assert_eq!(by_check(text), by_read_model(text).map(|_| ()), "{text}");
        }
        let session = |updated: &str| {
            serde_json::from_str::<Option<CheckedTimestamp>>(updated)
                .map(|t| t.is_some())
                .map_err(|e| e.to_string())
        };
        let decoded = |updated: &str| {
            let mut de = serde_json::Deserializer::from_str(updated);
            nullable_timestamp(&mut de)
                .map(|t| t.is_some())
                .map_err(|e| e.to_string())
        };
        for json in [
            "null",
            "\"2026-11-24T19:14:36.116Z\"",
            "\"2026-02-30T00:00:00.000Z\"",
            "12",
            "{}",
        ] {
            assert_eq!(session(json), decoded(json), "{json}");
        }
        assert!(session("12").is_err_and(|e| e.contains("an ISO 8601 date-time string")));
    }

    /// `is_t3_form` against building the date with chrono (`t3_form`): every day of every month
    /// (and the ones past its end) of years where the leap-year rule turns, February in every
    /// year T3's form can write, and the clock's limits.
    #[test]
    fn the_t3_form_is_validated_as_it_is_built() {
        let text = |y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.123Z")
        };
        let same = |t: &str| assert_eq!(is_t3_form(t), t3_form(t).is_some(), "{t}");
        for year in [
            0, 1, 4, 100, 200, 400, 1600, 1700, 1900, 1970, 2000, 2023, 2024, 2100, 2400, 9996, 9999,
        ] {
            for month in 0..=13 {
                for day in 0..=32 {
                    same(&text(year, month, day, 12, 0, 0));
                }
            }
        }
        for year in 0..=9999 {
            for day in 28..=30 {
                same(&text(year, 2, day, 0, 0, 0));
            }
        }
        for hour in 0..=25 {
            for minute in [0, 59, 60, 99] {
                for second in [0, 59, 60, 61, 99] {
                    same(&text(2026, 11, 24, hour, minute, second));
                }
            }
        }
    }

    /// The fields as read before the word-at-a-time reading ([`t3_form_fields`]): digit by digit.
    fn t3_form_fields_by_digit(text: &str) -> Option<[u32; 7]> {
        let b: &[u8; 24] = text.as_bytes().try_into().ok()?;
        if b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'.'
            || b[23] != b'Z'
        {
            return None;
        }
        let digit = |i: usize| {
            let value = b[i].wrapping_sub(b'0');
            (value < 10).then_some(u32::from(value))
        };
        let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
        Some([
            two(0)? * 100 + two(2)?,
            two(5)?,
            two(8)?,
            two(11)?,
            two(14)?,
            two(17)?,
            two(20)? * 10 + digit(22)?,
        ])
    }

    /// Every byte of a T3-form timestamp replaced by each of the 256 byte values (where the
    /// text stays UTF-8): the word-at-a-time reading gives what the digit-by-digit one gives.
    #[test]
    fn the_t3_form_is_read_as_digit_by_digit() {
        let base = *b"2026-11-24T19:14:36.116Z";
        for at in 0..base.len() {
            for byte in 0..=255u8 {
                let mut bytes = base;
                bytes[at] = byte;
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    assert_eq!(t3_form_fields(text), t3_form_fields_by_digit(text), "{text:?}");
                }
            }
        }
        for text in [
            "",
            "2026-11-24T19:14:36.116",
            "2026-11-24T19:14:36.116ZZ",
            "9999-99-99T99:99:99.999Z",
        ] {
            assert_eq!(t3_form_fields(text), t3_form_fields_by_digit(text), "{text:?}");
        }
    }

    proptest::proptest! {
        /// Any numbers in T3's form, and any text near it: validated exactly as built.
        #[test]
        fn any_t3_form_is_validated_as_it_is_built(
            y in 0u32..=9999, mo in 0u32..=14, d in 0u32..=33, h in 0u32..=25, mi in 0u32..=61,
            s in 0u32..=61, ms in 0u32..=999,
            near in "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}[.,][0-9]{3}[Z+]",
            other in ".{0,30}",
        ) {
            let t = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
            for t in [t.as_str(), near.as_str(), other.as_str()] {
                proptest::prop_assert_eq!(is_t3_form(t), t3_form(t).is_some(), "{}", t);
                proptest::prop_assert_eq!(by_check(t), by_read_model(t).map(|_| ()), "{}", t);
                proptest::prop_assert_eq!(t3_form_fields(t), t3_form_fields_by_digit(t), "{}", t);
            }
        }
    }

    #[test]
    fn a_required_timestamp_may_be_null_but_not_missing() {
        let turn = |extra: &str| {
            serde_json::from_str::<LatestTurn>(&format!(
                r#"{{"turnId":"t1","state":"running","requestedAt":"2026-11-24T19:14:36.116Z"{extra}}}"#
            ))
        };
        let decoded =
            turn(r#","startedAt":null,"completedAt":"2026-11-24T19:20:00.000Z","assistantMessageId":null"#)
                .expect("decodes");
        assert_eq!(decoded.started_at, None);
        assert_eq!(
            decoded.completed_at.map(|t| t.to_iso()).as_deref(),
            Some("2026-11-24T19:20:00.000Z")
        );
        let missing =
            turn(r#","completedAt":null,"assistantMessageId":null"#).expect_err("startedAt is required");
        assert!(missing.to_string().contains("startedAt"), "{missing}");
    }

    #[test]
    fn a_thread_reads_as_the_state_afk_gives_its_attempt() {
        let thread = |turn: Option<&str>, session: Option<&str>, last_error: Option<&str>, deleted: bool| {
            let turn = turn.map(|state| {
                serde_json::json!({"turnId": "t1", "state": state, "requestedAt": "2026-11-24T19:14:36.116Z",
                    "startedAt": null, "completedAt": null, "assistantMessageId": null})
            });
            let session = session.map(|status| {
                serde_json::json!({"threadId": "th", "status": status, "providerName": "codex",
                    "runtimeMode": "full-access", "activeTurnId": null, "lastError": last_error,
                    "updatedAt": "2026-11-24T19:14:36.116Z"})
            });
            let deleted = deleted.then_some("2026-11-24T19:15:00.000Z");
            serde_json::from_value::<Thread>(serde_json::json!({
                "id": "th", "projectId": "p", "title": "t",
                "modelSelection": {"instanceId": "codex", "model": "m"},
                "runtimeMode": "full-access", "interactionMode": "default", "branch": null,
                "worktreePath": null, "latestTurn": turn, "createdAt": "2026-11-24T19:14:36.116Z",
                "updatedAt": "2026-11-24T19:14:36.116Z", "archivedAt": null, "deletedAt": deleted,
                "session": session,
            }))
            .expect("a thread")
        };
        let failed = |reason: Option<&str>| ThreadState::Failed {
            reason: reason.map(str::to_owned),
        };
        // (latestTurn.state, session.status, lastError, deleted, the state, why)
        #[rustfmt::skip]
        let cases = [
            (None, None, None, false, ThreadState::Starting, "created, its turn not yet asked for"),
            (None, Some("starting"), None, false, ThreadState::Running, "its session starts"),
            (Some("running"), Some("running"), None, false, ThreadState::Running, "working"),
            (Some("completed"), Some("ready"), None, false, ThreadState::Succeeded, "done"),
            (Some("interrupted"), Some("ready"), None, false, ThreadState::Interrupted, "interrupted"),
            (Some("error"), Some("error"), Some("boom"), false, failed(Some("boom")), "the turn failed"),
            (None, Some("error"), Some("spawn ENOENT"), false, failed(Some("spawn ENOENT")),
                "codex could not start"),
            (None, Some("stopped"), Some("Claude runtime stream failed."), false,
                failed(Some("Claude runtime stream failed.")), "claudeAgent could not start"),
            (None, Some("stopped"), None, false, ThreadState::Starting, "stopped without a reason or a turn"),
            (Some("completed"), Some("ready"), None, true, ThreadState::Lost, "deleted"),
        ];
        for (turn, session, last_error, deleted, expected, why) in cases {
            let thread = thread(turn, session, last_error, deleted);
            assert_eq!(ThreadState::of(Some(&thread)), expected, "{why}");
        }
        assert_eq!(ThreadState::of(None::<&Thread>), ThreadState::Lost, "absent");
    }
    fn waiting_thread(turn: &str, session: &str, flag: bool, activities: serde_json::Value) -> Thread {
        serde_json::from_value::<Thread>(serde_json::json!({
            "id": "th", "projectId": "p", "title": "t",
            "modelSelection": {"instanceId": "codex", "model": "m"},
            "runtimeMode": "full-access", "interactionMode": "default", "branch": null,
            "worktreePath": null,
            "latestTurn": {"turnId": "t1", "state": turn, "requestedAt": "2026-11-24T19:14:36.116Z",
                "startedAt": null, "completedAt": null, "assistantMessageId": null},
            "createdAt": "2026-11-24T19:14:36.116Z", "updatedAt": "2026-11-24T19:14:36.116Z",
            "archivedAt": null, "deletedAt": null,
            "session": {"threadId": "th", "status": session, "providerName": "codex",
                "runtimeMode": "full-access", "activeTurnId": null, "lastError": null,
                "updatedAt": "2026-11-24T19:14:36.116Z"},
            "hasPendingUserInput": flag,
            "activities": activities,
        }))
        .expect("a thread")
    }

    #[test]
    fn a_thread_waits_for_a_person_only_while_it_runs_with_the_flag_up() {
        let none = serde_json::json!([]);
        // (turn, session, flag, waits, why)
        let cases = [
            ("running", "running", true, true, "asked while running"),
            ("running", "running", false, false, "no flag"),
            (
                "interrupted",
                "stopped",
                true,
                false,
                "the flag stays up for good after a session stop",
            ),
            (
                "running",
                "starting",
                true,
                false,
                "it once showed while the session was starting",
            ),
            ("completed", "ready", true, false, "done"),
        ];
        for (turn, session, flag, waits, why) in cases {
            assert_eq!(
                waiting_thread(turn, session, flag, none.clone()).waits_for_person(),
                waits,
                "{why}"
            );
        }
    }

    #[test]
    fn pending_requests_are_the_questions_and_approvals_nobody_resolved() {
        let activity = |kind: &str, payload: serde_json::Value| {
            serde_json::json!({"id": format!("a-{kind}"), "tone": "info", "kind": kind, "summary": "s",
                "payload": payload, "turnId": "t1", "createdAt": "2026-11-24T19:14:36.116Z"})
        };
        let asked = |id: &str| {
            activity(
                "user-input.requested",
                serde_json::json!({"requestId": id, "questions": [
                    {"id": "q", "header": "H", "question": "Go on?", "options": [{"label": "yes", "description": "d"}],
                     "multiSelect": false},
                    {"unexpected": true},
                ]}),
            )
        };
        let activities = serde_json::json!([
            asked("r1"),
            activity("user-input.resolved", serde_json::json!({"requestId": "r1", "answers": {}})),
            asked("r2"),
            activity("approval.requested", serde_json::json!({"requestId": "p1", "detail": "rm -rf x"})),
            {"not": "an activity"},
        ]);
        let thread = waiting_thread("running", "running", true, activities);
        let pending = thread.pending_requests();
        assert_eq!(pending.len(), 2, "{pending:?}");
        let PendingRequest::UserInput {
            request_id,
            questions,
        } = &pending[0]
        else {
            panic!("{pending:?}");
        };
        assert_eq!(request_id.as_deref(), Some("r2"), "r1 was answered");
        assert_eq!(questions[0].question, "Go on?");
        assert_eq!(questions[0].options[0].label, "yes");
        assert_eq!(
            questions.len(),
            2,
            "an odd question reads with empty texts, not as an error"
        );
        assert_eq!(
            pending[1],
            PendingRequest::Approval {
                request_id: Some("p1".into()),
                summary: "s".into(),
                detail: Some("rm -rf x".into()),
            }
        );
    }
}
