//! What afk reads of T3's threads ([`FleetThread`]), decoded straight from the snapshot
//! (`GET /api/orchestration/snapshot`), the shell (`GET /api/orchestration/shell`) and the shell
//! stream's items, without building the full wire types first.
//!
//! At 10,000 threads the full [`Thread`] costs about three times what afk reads of it (a dozen
//! owned strings, the model selection, the empty hydrated arrays): the watcher holds one view
//! (two while polling: the snapshot and the shell), so that is most of `afk run`'s memory
//! (BENCHMARKS.md, "Memory"). The fields afk does not keep are still checked exactly as the full
//! types check them (ids non-empty and trimmed, strings valid UTF-8 without lone surrogates,
//! enums known, timestamps ISO 8601, required keys present) but without allocating, so a thread
//! reads as unreadable here exactly when it does in [`super::ReadModel::decode_per_thread`] and
//! [`super::ShellItem::decode`] (`tests/fuzz.rs` holds the two side by side).

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use indexmap::set::MutableValues;
use indexmap::IndexSet;
use serde::de::DeserializeOwned;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::read_model::{nullable_timestamp, timestamp, waits_for_person, CheckedTimestamp, ThreadFacts};
use super::scan::{self, Shape};
use super::{
    required_nullable, InteractionMode, LatestTurn, Project, ProjectShell, RuntimeMode, SessionStatus,
    Thread, ThreadShell, Timestamp, TurnState, UnreadableThread,
};
use crate::ids::{
    is_ascii_white, is_trimmed_non_empty, IdHasher, IdMap, IdRef, InvalidId, MessageId, ProjectId, ThreadId,
    TurnId,
};

/// A thread as the watcher keeps it: only what afk reads (its state, its turn, its branch and
/// worktree, whether it waits for a person), in the meaning of [`Thread`]'s fields of the same
/// names.
///
/// Its texts (the ids, the branch, the worktree path, the session's last error) are kept in one
/// heap block and read through [`FleetThread::id`], [`FleetThread::branch`], ...: one allocation a
/// thread where one a text cost four or five, and a struct of 144 bytes instead of ~225 (the
/// watcher holds 10,000 of them; BENCHMARKS.md, "Typed decode against the floor").
#[derive(Clone, PartialEq)]
pub struct FleetThread {
    texts: Texts,
    /// The most recent turn, `None` before the first turn is admitted (its ids:
    /// [`FleetThread::turn_id`], [`FleetThread::assistant_message_id`]).
    pub latest_turn: Option<FleetTurn>,
    /// Last change of anything in the thread.
    pub updated_at: Timestamp,
    /// Set once deleted (the snapshot lists deleted threads; the stream's `thread-removed` marks
    /// them so).
    pub deleted_at: Option<Timestamp>,
    /// The provider session, `None` when none was started (its last error:
    /// [`FleetThread::last_error`]).
    pub session: Option<SessionSummary>,
    /// The agent waits for a person's answer (shell only; `false` from the snapshot).
    pub has_pending_user_input: bool,
    /// The agent waits for a person's approval (shell only).
    pub has_pending_approvals: bool,
}

/// What afk reads of a thread's latest turn besides its ids (which its [`FleetThread`] keeps):
/// [`LatestTurn`]'s fields of the same names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetTurn {
    /// Its state.
    pub state: TurnState,
    /// When it was asked for.
    pub requested_at: Timestamp,
    /// When the agent started on it.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub completed_at: Option<Timestamp>,
}

impl From<&LatestTurn> for FleetTurn {
    fn from(turn: &LatestTurn) -> Self {
        Self {
            state: turn.state,
            requested_at: turn.requested_at,
            started_at: turn.started_at,
            completed_at: turn.completed_at,
        }
    }
}

/// What afk reads of a provider session (its last error: [`FleetThread::last_error`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionSummary {
    /// Its status.
    pub status: SessionStatus,
}

/// A thread's texts in one block, one after the other in the order of [`Slot`]: the id (always
/// there), then each optional text when it is there.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Texts {
    text: Box<str>,
    /// Where each [`Slot`] ends in `text` (an absent one is empty).
    ends: [usize; Slot::COUNT],
    /// Which [`Slot`]s are there: bit `Slot as u8`.
    present: u8,
}

/// The texts of a [`FleetThread`], in their order in [`Texts`].
#[derive(Clone, Copy)]
#[repr(u8)]
pub(super) enum Slot {
    Id,
    TurnId,
    AssistantMessageId,
    Branch,
    WorktreePath,
    LastError,
}

impl Slot {
    const COUNT: usize = Slot::LastError as usize + 1;
}

// `Texts::present` has a bit for each.
const _: () = assert!(Slot::COUNT <= u8::BITS as usize);

impl Texts {
    /// The block of `id` and `others` (in [`Slot`]'s order after the id): one allocation.
    pub(super) fn new(id: &str, others: [Option<&str>; Slot::COUNT - 1]) -> Self {
        let len = id.len() + others.iter().flatten().map(|t| t.len()).sum::<usize>();
        let mut text = String::with_capacity(len);
        let mut ends = [0; Slot::COUNT];
        let mut present = 1;
        text.push_str(id);
        ends[0] = text.len();
        for (i, other) in others.iter().enumerate() {
            if let Some(other) = other {
                text.push_str(other);
                present |= 1 << (i + 1);
            }
            ends[i + 1] = text.len();
        }
        Self {
            text: text.into_boxed_str(),
            ends,
            present,
        }
    }

    pub(super) fn get(&self, which: Slot) -> Option<&str> {
        let i = which as usize;
        if self.present & (1 << i) == 0 {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..self.ends[i])
    }
}

impl FleetThread {
    /// The thread of these parts: `latest_turn` with its id and assistant message id, `session`
    /// with its last error. Each id must have been checked as its id type checks it (the scanner's
    /// `Scan::id`, or the id newtypes on `serde`'s path).
    #[allow(clippy::too_many_arguments)] // One per field of the thread, named at each call.
    pub(super) fn of(
        id: &str,
        branch: Option<&str>,
        worktree_path: Option<&str>,
        latest_turn: Option<(FleetTurn, &str, Option<&str>)>,
        updated_at: Timestamp,
        deleted_at: Option<Timestamp>,
        session: Option<(SessionStatus, Option<&str>)>,
        has_pending_user_input: bool,
        has_pending_approvals: bool,
    ) -> Self {
        let (turn_id, message_id) = match latest_turn {
            Some((_, turn_id, message_id)) => (Some(turn_id), message_id),
            None => (None, None),
        };
        let last_error = session.and_then(|(_, error)| error);
        debug_assert!(
            [Some(id), turn_id, message_id]
                .into_iter()
                .flatten()
                .all(is_trimmed_non_empty),
            "a thread's ids are checked before it is built"
        );
        Self {
            texts: Texts::new(id, [turn_id, message_id, branch, worktree_path, last_error]),
            latest_turn: latest_turn.map(|(turn, _, _)| turn),
            updated_at,
            deleted_at,
            session: session.map(|(status, _)| SessionSummary { status }),
            has_pending_user_input,
            has_pending_approvals,
        }
    }

    /// Its id.
    pub fn id(&self) -> IdRef<'_, ThreadId> {
        IdRef::of_checked(self.texts.get(Slot::Id).unwrap_or_default())
    }

    /// Its git branch.
    pub fn branch(&self) -> Option<&str> {
        self.texts.get(Slot::Branch)
    }

    /// Its checkout, `None` for the project's workspace root.
    pub fn worktree_path(&self) -> Option<&str> {
        self.texts.get(Slot::WorktreePath)
    }

    /// Its latest turn's id, `None` before the first turn (and whenever `latest_turn` is `None`,
    /// even if a caller cleared it).
    pub fn turn_id(&self) -> Option<IdRef<'_, TurnId>> {
        self.latest_turn?;
        self.texts.get(Slot::TurnId).map(IdRef::of_checked)
    }

    /// Its latest turn's reply message, once there is one (`None` while `latest_turn` is).
    pub fn assistant_message_id(&self) -> Option<IdRef<'_, MessageId>> {
        self.latest_turn?;
        self.texts.get(Slot::AssistantMessageId).map(IdRef::of_checked)
    }

    /// Its session's last failure, in T3's words (`None` while `session` is).
    pub fn last_error(&self) -> Option<&str> {
        self.session?;
        self.texts.get(Slot::LastError)
    }

    /// True when the agent waits for a person; the same rule as [`Thread::waits_for_person`].
    pub fn waits_for_person(&self) -> bool {
        waits_for_person(self, self.has_pending_user_input || self.has_pending_approvals)
    }
}

impl fmt::Debug for FleetThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetThread")
            .field("id", &self.id())
            .field("branch", &self.branch())
            .field("worktree_path", &self.worktree_path())
            .field("latest_turn", &self.latest_turn)
            .field("turn_id", &self.turn_id())
            .field("assistant_message_id", &self.assistant_message_id())
            .field("updated_at", &self.updated_at)
            .field("deleted_at", &self.deleted_at)
            .field("session", &self.session)
            .field("last_error", &self.last_error())
            .field("has_pending_user_input", &self.has_pending_user_input)
            .field("has_pending_approvals", &self.has_pending_approvals)
            .finish()
    }
}

impl ThreadFacts for FleetThread {
    fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
    fn session_status(&self) -> Option<SessionStatus> {
        self.session.as_ref().map(|s| s.status)
    }
    fn last_error(&self) -> Option<&str> {
        FleetThread::last_error(self)
    }
    fn turn_state(&self) -> Option<TurnState> {
        self.latest_turn.as_ref().map(|t| t.state)
    }
}

/// A wire thread's latest turn as [`FleetThread::of`] takes it.
fn turn_parts(turn: Option<&LatestTurn>) -> Option<(FleetTurn, &str, Option<&str>)> {
    turn.map(|t| {
        (
            FleetTurn::from(t),
            t.turn_id.as_str(),
            t.assistant_message_id.as_ref().map(MessageId::as_str),
        )
    })
}

impl From<Thread> for FleetThread {
    fn from(t: Thread) -> Self {
        Self::of(
            t.id.as_str(),
            t.branch.as_deref(),
            t.worktree_path.as_deref(),
            turn_parts(t.latest_turn.as_ref()),
            t.updated_at,
            t.deleted_at,
            t.session.as_ref().map(|s| (s.status, s.last_error.as_deref())),
            t.has_pending_user_input,
            t.has_pending_approvals,
        )
    }
}

impl From<ThreadShell> for FleetThread {
    fn from(t: ThreadShell) -> Self {
        Self::of(
            t.id.as_str(),
            t.branch.as_deref(),
            t.worktree_path.as_deref(),
            turn_parts(t.latest_turn.as_ref()),
            t.updated_at,
            None,
            t.session.as_ref().map(|s| (s.status, s.last_error.as_deref())),
            t.has_pending_user_input,
            t.has_pending_approvals,
        )
    }
}

// ---- checks that keep nothing ---------------------------------------------------------------

/// Any JSON value, checked as a [`serde_json::Value`] would be (strings valid, escapes paired),
/// kept not at all.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Valid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any valid JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_none<E: de::Error>(self) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Valid, D::Error> {
                Valid::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
                while seq.next_element::<Valid>()?.is_some() {}
                Ok(Valid)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
                while map.next_entry::<Valid, Valid>()?.is_some() {}
                Ok(Valid)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A JSON array of any values, checked as a `Vec<serde_json::Value>` would be.
#[derive(Default)]
struct ValidArray;

impl<'de> Deserialize<'de> for ValidArray {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValidArray;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValidArray, A::Error> {
                while seq.next_element::<Valid>()?.is_some() {}
                Ok(ValidArray)
            }
        }
        deserializer.deserialize_seq(V)
    }
}

/// A string that passes `check` (the message of its refusal otherwise), kept not at all.
fn checked_str<'de, D, F>(deserializer: D, check: F) -> Result<(), D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<(), String>,
{
    struct V<F>(F);
    impl<F: FnOnce(&str) -> Result<(), String>> Visitor<'_> for V<F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
            (self.0)(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_string(V(check))
}

/// Any string ([`String`]'s check).
struct Text;

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, |_| Ok(())).map(|()| Text)
    }
}

/// An id's text, checked as the id types check it.
struct IdText;

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, |text| {
            if !is_trimmed_non_empty(text) {
                Err(InvalidId(text.to_owned()).to_string())
            } else {
                Ok(())
            }
        })
        .map(|()| IdText)
    }
}

/// A [`super::NonEmptyString`]'s check.
struct NonEmpty;

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, |text| {
            // `text.trim().is_empty()`, without trimming when the text starts with an ASCII
            // character that is not white space (model slugs do).
            let starts_solid = text
                .as_bytes()
                .first()
                .is_some_and(|&b| b.is_ascii() && !is_ascii_white(b));
            if !starts_solid && text.trim().is_empty() {
                Err("must be a non-empty string".to_owned())
            } else {
                Ok(())
            }
        })
        .map(|()| NonEmpty)
    }
}

/// [`super::ModelSelection`]'s checks.
#[derive(Deserialize)]
#[serde(rename = "ModelSelection", rename_all = "camelCase")]
#[allow(dead_code)] // Read to be checked, not kept.
struct ModelCheck {
    instance_id: NonEmpty,
    model: NonEmpty,
    #[serde(default)]
    options: Option<Valid>,
}

/// [`super::Session`], keeping what a [`FleetThread`] keeps of it (its status and last error).
#[derive(Deserialize)]
#[serde(rename = "Session", rename_all = "camelCase")]
#[allow(dead_code)] // Read to be checked, not kept.
struct SessionRaw {
    thread_id: IdText,
    status: SessionStatus,
    #[serde(deserialize_with = "required_nullable")]
    provider_name: Option<Text>,
    runtime_mode: RuntimeMode,
    #[serde(deserialize_with = "required_nullable")]
    active_turn_id: Option<IdText>,
    #[serde(deserialize_with = "required_nullable")]
    last_error: Option<String>,
    updated_at: CheckedTimestamp,
}

impl SessionRaw {
    fn parts(&self) -> (SessionStatus, Option<&str>) {
        (self.status, self.last_error.as_deref())
    }
}

/// A snapshot thread, with [`Thread`]'s keys in its order and its checks.
#[derive(Deserialize)]
#[serde(rename = "Thread", rename_all = "camelCase")]
#[allow(dead_code)] // Read to be checked, not kept.
struct SnapshotThread {
    id: ThreadId,
    project_id: IdText,
    title: Text,
    model_selection: ModelCheck,
    runtime_mode: RuntimeMode,
    interaction_mode: InteractionMode,
    #[serde(deserialize_with = "required_nullable")]
    branch: Option<String>,
    #[serde(deserialize_with = "required_nullable")]
    worktree_path: Option<String>,
    #[serde(deserialize_with = "required_nullable")]
    latest_turn: Option<LatestTurn>,
    created_at: CheckedTimestamp,
    #[serde(deserialize_with = "timestamp")]
    updated_at: Timestamp,
    #[serde(default)]
    archived_at: Option<CheckedTimestamp>,
    #[serde(deserialize_with = "nullable_timestamp")]
    deleted_at: Option<Timestamp>,
    #[serde(default)]
    messages: ValidArray,
    #[serde(default)]
    activities: ValidArray,
    #[serde(default)]
    checkpoints: ValidArray,
    #[serde(deserialize_with = "required_nullable")]
    session: Option<SessionRaw>,
    #[serde(default)]
    has_pending_user_input: bool,
    #[serde(default)]
    has_pending_approvals: bool,
}

impl From<SnapshotThread> for FleetThread {
    fn from(t: SnapshotThread) -> Self {
        Self::of(
            t.id.as_str(),
            t.branch.as_deref(),
            t.worktree_path.as_deref(),
            turn_parts(t.latest_turn.as_ref()),
            t.updated_at,
            t.deleted_at,
            t.session.as_ref().map(SessionRaw::parts),
            t.has_pending_user_input,
            t.has_pending_approvals,
        )
    }
}

/// A shell thread, with [`ThreadShell`]'s keys in its order and its checks.
#[derive(Deserialize)]
#[serde(rename = "ThreadShell", rename_all = "camelCase")]
#[allow(dead_code)] // Read to be checked, not kept.
pub(super) struct ShellThread {
    id: ThreadId,
    project_id: IdText,
    title: Text,
    model_selection: ModelCheck,
    runtime_mode: RuntimeMode,
    interaction_mode: InteractionMode,
    #[serde(deserialize_with = "required_nullable")]
    branch: Option<String>,
    #[serde(deserialize_with = "required_nullable")]
    worktree_path: Option<String>,
    #[serde(deserialize_with = "required_nullable")]
    latest_turn: Option<LatestTurn>,
    created_at: CheckedTimestamp,
    #[serde(deserialize_with = "timestamp")]
    updated_at: Timestamp,
    #[serde(default)]
    archived_at: Option<CheckedTimestamp>,
    #[serde(deserialize_with = "required_nullable")]
    session: Option<SessionRaw>,
    #[serde(default)]
    latest_user_message_at: Option<CheckedTimestamp>,
    #[serde(default)]
    has_pending_approvals: bool,
    #[serde(default)]
    has_pending_user_input: bool,
    #[serde(default)]
    has_actionable_proposed_plan: bool,
}

impl From<ShellThread> for FleetThread {
    fn from(t: ShellThread) -> Self {
        Self::of(
            t.id.as_str(),
            t.branch.as_deref(),
            t.worktree_path.as_deref(),
            turn_parts(t.latest_turn.as_ref()),
            t.updated_at,
            None,
            t.session.as_ref().map(SessionRaw::parts),
            t.has_pending_user_input,
            t.has_pending_approvals,
        )
    }
}

// ---- views ----------------------------------------------------------------------------------

const LISTED_TWICE: &str = "listed more than once in one view";

/// Threads looked up by their own id: each [`FleetThread`] is stored once, its id not copied into
/// a key as a map from [`ThreadId`] would (one heap string fewer per thread, in decode time and in
/// the view's memory).
///
/// An [`IndexSet`]: the threads in a vector, the hash table holding only their indices. A view is
/// built without knowing its size (a JSON array does not say its length first), so its table
/// grows as threads arrive; growing a table of indices moves 8 bytes a thread where a table of
/// threads moved each whole thread, and the vector grows by reallocation (for a mapped block,
/// glibc remaps its pages rather than copying them: large blocks are mapped in `afk run`, which
/// fixes the mmap threshold, `crates/afk/src/main.rs`; with glibc's dynamic threshold a large
/// vector may come from the heap and be copied as it grows).
#[derive(Clone, Default)]
pub(crate) struct ThreadsById(IndexSet<ById, IdHasher>);

/// A thread hashed and compared by its id alone (`str`'s hash of it, which is [`ThreadId`]'s), so
/// that the set can be searched with the id's text. Private to [`ThreadsById`]: as a whole thread's
/// equality it would be wrong.
#[derive(Clone)]
struct ById(FleetThread);

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id().as_str().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id() == other.0.id()
    }
}

impl Eq for ById {}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.0.id().as_str()
    }
}

impl ThreadsById {
    fn with_capacity(capacity: usize) -> Self {
        Self(IndexSet::with_capacity_and_hasher(capacity, IdHasher::default()))
    }

    /// The thread with this id.
    pub(crate) fn get(&self, id: &str) -> Option<&FleetThread> {
        self.0.get(id).map(|t| &t.0)
    }

    /// Adds `thread`, replacing the one with its id, which is returned.
    pub(crate) fn insert(&mut self, thread: FleetThread) -> Option<FleetThread> {
        self.0.replace(ById(thread)).map(|t| t.0)
    }

    /// Takes the thread with this id out.
    pub(crate) fn remove(&mut self, id: &str) -> Option<FleetThread> {
        // Order is not kept (the view's threads have none): the last thread fills the gap.
        self.0.swap_take(id).map(|t| t.0)
    }

    /// Changes the thread with this id (`None` when there is none) with `change`, whose answer is
    /// returned. `change` must not change the id.
    pub(crate) fn update<T>(&mut self, id: &str, change: impl FnOnce(&mut FleetThread) -> T) -> Option<T> {
        // In place: `change` keeps the id, so the thread's hash and slot stay right.
        let (_, thread) = self.0.get_full_mut2(id)?;
        let answer = change(&mut thread.0);
        debug_assert_eq!(thread.0.id().as_str(), id, "the id is the key");
        Some(answer)
    }

    /// Every thread, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &FleetThread> {
        self.0.iter().map(|t| &t.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for ThreadsById {
    /// The same threads, whole (not only the same ids).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|t| other.get(t.id().as_str()) == Some(t))
    }
}

impl fmt::Debug for ThreadsById {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter().map(|t| (t.id(), t))).finish()
    }
}

/// The threads of one view by id, and those afk cannot read with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Threads {
    pub(crate) readable: ThreadsById,
    pub(crate) unreadable: IdMap<ThreadId, String>,
}

impl Threads {
    /// The threads of one view: an id listed twice says two things at once about one thread, so
    /// it is unreadable, not the last (or first) of its entries.
    pub(crate) fn of(listed: impl Iterator<Item = FleetThread>, unreadable: Vec<UnreadableThread>) -> Self {
        let mut threads = Threads {
            readable: ThreadsById::with_capacity(listed.size_hint().0),
            unreadable: unreadable.into_iter().map(|u| (u.id, u.reason)).collect(),
        };
        for thread in listed {
            threads.add(thread);
        }
        threads
    }

    fn add(&mut self, thread: FleetThread) {
        if let Some(reason) = self.unreadable.get_mut(thread.id().as_str()) {
            LISTED_TWICE.clone_into(reason);
        } else if let Some(twice) = self.readable.insert(thread) {
            self.readable.remove(twice.id().as_str());
            self.unreadable.insert(twice.id().to_id(), LISTED_TWICE.into());
        }
    }
}

/// Decodes a JSON array of `R` straight into [`Threads`] (no list of them first), failing at the
/// first thread that cannot be read.
fn threads_strict<'de, R, D>(deserializer: D) -> Result<Threads, D::Error>
where
    D: Deserializer<'de>,
    R: Deserialize<'de> + Into<FleetThread>,
{
    struct V<R>(PhantomData<R>);
    impl<'de, R: Deserialize<'de> + Into<FleetThread>> Visitor<'de> for V<R> {
        type Value = Threads;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Threads, A::Error> {
            let mut threads = Threads::default();
            while let Some(thread) = seq.next_element::<R>()? {
                threads.add(thread.into());
            }
            Ok(threads)
        }
    }
    deserializer.deserialize_seq(V::<R>(PhantomData))
}

/// Only the id of a thread, for naming one whose other fields cannot be read.
#[derive(Deserialize)]
pub(super) struct IdOnly {
    pub(super) id: ThreadId,
}

/// Decodes each of `raw` on its own as `R`: a thread that cannot be read is set aside with why.
/// `Err` when a thread's id itself cannot be read.
fn threads_loose<'a, R>(raw: Vec<&'a RawValue>) -> Result<Threads, serde_json::Error>
where
    R: Deserialize<'a> + Into<FleetThread>,
{
    let mut readable = Vec::with_capacity(raw.len());
    let mut unreadable = Vec::new();
    for thread in raw {
        match serde_json::from_str::<R>(thread.get()) {
            Ok(thread) => readable.push(thread.into()),
            Err(error) => unreadable.push(UnreadableThread {
                id: serde_json::from_str::<IdOnly>(thread.get())?.id,
                reason: error.to_string(),
            }),
        }
    }
    Ok(Threads::of(readable.into_iter(), unreadable))
}

/// A view's parts: its sequence, its live projects, its threads.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ViewParts {
    pub(crate) sequence: u64,
    pub(crate) projects: IdMap<ProjectId, ProjectShell>,
    pub(crate) threads: Threads,
}

#[derive(Deserialize)]
#[serde(rename = "ReadModel", rename_all = "camelCase")]
struct SnapshotDoc {
    snapshot_sequence: u64,
    projects: Vec<Project>,
    #[serde(deserialize_with = "threads_strict::<SnapshotThread, _>")]
    threads: Threads,
    #[allow(dead_code)] // Read to be checked, not kept.
    updated_at: CheckedTimestamp,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseSnapshotDoc<'a> {
    snapshot_sequence: u64,
    projects: Vec<Project>,
    #[serde(borrow)]
    threads: Vec<&'a RawValue>,
    #[allow(dead_code)] // Read to be checked, not kept.
    updated_at: CheckedTimestamp,
}

fn live_projects(projects: Vec<Project>) -> IdMap<ProjectId, ProjectShell> {
    projects
        .iter()
        .filter(|p| p.deleted_at.is_none())
        .map(|p| (p.id.clone(), ProjectShell::from(p)))
        .collect()
}

/// A document to decode, as text when it is valid UTF-8.
///
/// `serde_json::from_slice` checks each string it hands out (every key, every value) with
/// `str::from_utf8` on its own; `from_str` trusts the text's own guarantee. One check of the whole
/// body is cheaper than thousands of checks of short strings (callgrind: see BENCHMARKS.md,
/// "Typed decode against the floor"). A body that is not valid UTF-8 is decoded from its bytes as
/// before, so that every outcome (and every error) stays what `from_slice` gives: on valid UTF-8,
/// `from_str` and `from_slice` run the same parser and differ only in that check.
#[derive(Clone, Copy)]
pub(super) enum Body<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Body<'a> {
    pub(super) fn of(body: &'a [u8]) -> Self {
        match std::str::from_utf8(body) {
            Ok(text) => Body::Text(text),
            Err(_) => Body::Bytes(body),
        }
    }

    pub(super) fn decode<T: Deserialize<'a>>(self) -> Result<T, serde_json::Error> {
        match self {
            Body::Text(text) => serde_json::from_str(text),
            Body::Bytes(bytes) => serde_json::from_slice(bytes),
        }
    }
}

/// The snapshot document (`GET /api/orchestration/snapshot`) as the watcher keeps it, thread by
/// thread like [`super::ReadModel::decode_per_thread`] (deleted projects left out). Fails where
/// that fails. Read by the scanner (`wire::scan`) where it can, which answers exactly as `serde`
/// does or declines; where it declines (and for a body that is not UTF-8), by `serde`: the strict
/// decode, then, if that fails, thread by thread.
pub(crate) fn decode_snapshot(body: &[u8]) -> Result<ViewParts, serde_json::Error> {
    let body = Body::of(body);
    match scanned::<Project>(body, Shape::Snapshot) {
        Some((sequence, projects, threads)) => Ok(ViewParts {
            sequence,
            projects: live_projects(projects),
            threads,
        }),
        None => decode_snapshot_by_serde(body),
    }
}

/// The scanner's reading of a document (`wire::scan`): its sequence, projects and threads, `None`
/// where it declines (and always for a body that is not UTF-8, which it does not read).
fn scanned<P: DeserializeOwned>(body: Body<'_>, shape: Shape) -> Option<(u64, Vec<P>, Threads)> {
    let Body::Text(text) = body else {
        return None;
    };
    let mut threads = Threads::default();
    let doc = scan::document::<P>(text, shape, |thread| {
        threads.add(thread.into_fleet());
        Some(())
    })?;
    Some((doc.sequence, doc.projects, threads))
}

/// [`decode_snapshot`] by `serde` alone: the strict decode, then thread by thread.
fn decode_snapshot_by_serde(body: Body<'_>) -> Result<ViewParts, serde_json::Error> {
    if let Ok(doc) = body.decode::<SnapshotDoc>() {
        return Ok(ViewParts {
            sequence: doc.snapshot_sequence,
            projects: live_projects(doc.projects),
            threads: doc.threads,
        });
    }
    let loose: LooseSnapshotDoc<'_> = body.decode()?;
    Ok(ViewParts {
        sequence: loose.snapshot_sequence,
        projects: live_projects(loose.projects),
        threads: threads_loose::<SnapshotThread>(loose.threads)?,
    })
}

#[derive(Deserialize)]
#[serde(rename = "ShellSnapshot", rename_all = "camelCase")]
struct ShellDoc {
    snapshot_sequence: u64,
    projects: Vec<ProjectShell>,
    #[serde(deserialize_with = "threads_strict::<ShellThread, _>")]
    threads: Threads,
    #[allow(dead_code)] // Read to be checked, not kept.
    updated_at: CheckedTimestamp,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseShellDoc<'a> {
    snapshot_sequence: u64,
    projects: Vec<ProjectShell>,
    #[serde(borrow)]
    threads: Vec<&'a RawValue>,
    #[allow(dead_code)] // Read to be checked, not kept.
    updated_at: CheckedTimestamp,
}

/// A shell snapshot (`GET /api/orchestration/shell`, or a stream's `snapshot` item) as the watcher
/// keeps it, thread by thread like [`super::ShellSnapshot::decode_per_thread`]: by the scanner
/// where it can, else by `serde`, as [`decode_snapshot`] reads its document.
pub(crate) fn decode_shell(body: &str) -> Result<ViewParts, serde_json::Error> {
    decode_shell_body(Body::Text(body))
}

/// [`decode_shell`] of bytes (an HTTP body).
pub(crate) fn decode_shell_bytes(body: &[u8]) -> Result<ViewParts, serde_json::Error> {
    decode_shell_body(Body::of(body))
}

fn shell_parts(sequence: u64, projects: Vec<ProjectShell>, threads: Threads) -> ViewParts {
    ViewParts {
        sequence,
        projects: projects.into_iter().map(|p| (p.id.clone(), p)).collect(),
        threads,
    }
}

fn decode_shell_body(body: Body<'_>) -> Result<ViewParts, serde_json::Error> {
    match scanned::<ProjectShell>(body, Shape::Shell) {
        Some((sequence, projects, threads)) => Ok(shell_parts(sequence, projects, threads)),
        None => decode_shell_by_serde(body),
    }
}

/// [`decode_shell`] of text by `serde` alone.
fn shell_by_serde(text: &str) -> Result<ViewParts, serde_json::Error> {
    decode_shell_by_serde(Body::Text(text))
}

/// [`decode_shell`] by `serde` alone: the strict decode, then thread by thread.
fn decode_shell_by_serde(body: Body<'_>) -> Result<ViewParts, serde_json::Error> {
    let parts = shell_parts;
    if let Ok(doc) = body.decode::<ShellDoc>() {
        return Ok(parts(doc.snapshot_sequence, doc.projects, doc.threads));
    }
    let loose: LooseShellDoc<'_> = body.decode()?;
    let threads = threads_loose::<ShellThread>(loose.threads)?;
    Ok(parts(loose.snapshot_sequence, loose.projects, threads))
}

/// One shell stream item as the fleet applies it: [`super::ShellItem`] with its threads in the
/// watcher's form, decoded by [`FleetItem::decode`] without a copy of a snapshot's whole tree.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetItem {
    /// A (shell) snapshot: the whole view, replacing what there was.
    Snapshot(Box<ViewSnapshot>),
    /// The snapshot or replay before it is complete.
    Synchronized,
    /// A project was created or changed.
    ProjectUpserted {
        /// The event's sequence.
        sequence: u64,
        /// The project as it is now.
        project: ProjectShell,
    },
    /// A project was deleted.
    ProjectRemoved {
        /// The event's sequence.
        sequence: u64,
        /// The project.
        project_id: ProjectId,
    },
    /// A thread was created or changed.
    ThreadUpserted {
        /// The event's sequence.
        sequence: u64,
        /// The thread as it is now.
        thread: FleetThread,
    },
    /// A thread upsert afk cannot read.
    ThreadUnreadable {
        /// The event's sequence.
        sequence: u64,
        /// The thread and why it cannot be read.
        thread: UnreadableThread,
    },
    /// A thread was deleted.
    ThreadRemoved {
        /// The event's sequence.
        sequence: u64,
        /// The thread.
        thread_id: ThreadId,
    },
    /// A kind this crate does not know; skipped.
    Other,
}

/// A decoded shell snapshot, as [`FleetItem::Snapshot`] carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSnapshot(pub(crate) ViewParts);

impl FleetItem {
    /// The event's sequence, for the kinds that carry one.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            FleetItem::Snapshot(snapshot) => Some(snapshot.0.sequence),
            FleetItem::ProjectUpserted { sequence, .. }
            | FleetItem::ProjectRemoved { sequence, .. }
            | FleetItem::ThreadUpserted { sequence, .. }
            | FleetItem::ThreadUnreadable { sequence, .. }
            | FleetItem::ThreadRemoved { sequence, .. } => Some(*sequence),
            FleetItem::Synchronized | FleetItem::Other => None,
        }
    }

    /// Decodes one stream item as [`super::ShellItem::decode`] does (a thread afk cannot read is
    /// set aside, never fails the item; an item of a known kind with another shape fails), but
    /// straight into the watcher's form. A `snapshot` item written `{"kind":"snapshot",
    /// "snapshot":...}` is read by the scanner (`wire::scan`) in one pass. Where the scanner
    /// declines, `serde`'s path: a `snapshot` item that starts with its kind is decoded in one
    /// pass by `serde`; any other item has its parts sliced out of `text` (borrowed, no copy),
    /// each then decoded once, a sliced snapshot by the scanner first only when the item does not
    /// start with its kind (one that does was already offered to the scanner, and is not again).
    pub fn decode(text: &str) -> Result<FleetItem, serde_json::Error> {
        let mut threads = Threads::default();
        if let Some(doc) = scan::stream_snapshot::<ProjectShell>(text, |thread| {
            threads.add(thread.into_fleet());
            Some(())
        }) {
            let parts = shell_parts(doc.sequence, doc.projects, threads);
            return Ok(FleetItem::Snapshot(Box::new(ViewSnapshot(parts))));
        }
        if scan::starts_with_kind(text) {
            Self::decode_parts(text, shell_by_serde)
        } else {
            Self::decode_parts(text, decode_shell)
        }
    }

    /// [`FleetItem::decode`] by `serde` alone (its snapshot too, never the scanner).
    fn decode_by_serde(text: &str) -> Result<FleetItem, serde_json::Error> {
        Self::decode_parts(text, shell_by_serde)
    }

    /// `serde`'s path of [`FleetItem::decode`]: a kind-first `snapshot` item in one pass, any
    /// other item's parts sliced out and decoded once each, a sliced snapshot by `shell`.
    fn decode_parts(
        text: &str,
        shell: fn(&str) -> Result<ViewParts, serde_json::Error>,
    ) -> Result<FleetItem, serde_json::Error> {
        /// Every key an item of a known kind has, its value left raw.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Parts<'a> {
            #[serde(borrow)]
            kind: Cow<'a, str>,
            #[serde(borrow, default)]
            sequence: Option<&'a RawValue>,
            #[serde(borrow, default)]
            snapshot: Option<&'a RawValue>,
            #[serde(borrow, default)]
            project: Option<&'a RawValue>,
            #[serde(borrow, default)]
            project_id: Option<&'a RawValue>,
            #[serde(borrow, default)]
            thread: Option<&'a RawValue>,
            #[serde(borrow, default)]
            thread_id: Option<&'a RawValue>,
        }
        fn field<'a, T: Deserialize<'a>>(
            value: Option<&'a RawValue>,
            name: &'static str,
        ) -> Result<T, serde_json::Error> {
            match value {
                Some(value) => serde_json::from_str(value.get()),
                None => Err(de::Error::missing_field(name)),
            }
        }
        if let Some(snapshot) = snapshot_in_one_pass(text) {
            return Ok(FleetItem::Snapshot(Box::new(ViewSnapshot(snapshot))));
        }
        let parts: Parts<'_> = serde_json::from_str(text)?;
        Ok(match parts.kind.as_ref() {
            "snapshot" => {
                let snapshot = parts
                    .snapshot
                    .ok_or_else(|| de::Error::missing_field("snapshot"))?;
                FleetItem::Snapshot(Box::new(ViewSnapshot(shell(snapshot.get())?)))
            }
            "synchronized" => FleetItem::Synchronized,
            "project-upserted" => FleetItem::ProjectUpserted {
                sequence: field(parts.sequence, "sequence")?,
                project: field(parts.project, "project")?,
            },
            "project-removed" => FleetItem::ProjectRemoved {
                sequence: field(parts.sequence, "sequence")?,
                project_id: field(parts.project_id, "projectId")?,
            },
            "thread-upserted" => {
                let sequence = field(parts.sequence, "sequence")?;
                let thread = parts.thread.ok_or_else(|| de::Error::missing_field("thread"))?;
                match serde_json::from_str::<ShellThread>(thread.get()) {
                    Ok(thread) => FleetItem::ThreadUpserted {
                        sequence,
                        thread: thread.into(),
                    },
                    Err(error) => FleetItem::ThreadUnreadable {
                        sequence,
                        thread: UnreadableThread {
                            id: serde_json::from_str::<IdOnly>(thread.get())?.id,
                            reason: error.to_string(),
                        },
                    },
                }
            }
            "thread-removed" => FleetItem::ThreadRemoved {
                sequence: field(parts.sequence, "sequence")?,
                thread_id: field(parts.thread_id, "threadId")?,
            },
            _ => FleetItem::Other,
        })
    }
}

/// A `snapshot` item decoded in one pass, `None` unless it is one that starts with its `kind` and
/// whose threads all read: the stream's first item is the whole fleet, and
/// [`FleetItem::decode`]'s general path parses it twice (once to slice the parts out of the item,
/// once to decode them). `Some` only where that path gives the same snapshot: every key it reads
/// present at most once and valid JSON, no trailing text, the snapshot decoded by the same
/// [`ShellDoc`]. Anything else (another kind, a key out of that order, an unreadable thread, an
/// error) is left to the general path, which then says what it says now.
fn snapshot_in_one_pass(text: &str) -> Option<ViewParts> {
    struct OnePass;
    impl<'de> Visitor<'de> for OnePass {
        type Value = Option<ViewParts>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a shell stream item")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            const RAW_KEYS: [&str; 5] = ["sequence", "project", "projectId", "thread", "threadId"];
            let mut kind = false;
            let mut doc: Option<ShellDoc> = None;
            let mut raw_seen = [false; RAW_KEYS.len()];
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match key.as_ref() {
                    // Only an item that starts with its kind: any other is left at once, so that
                    // no other item is parsed twice for want of knowing its kind.
                    _ if !kind && key != "kind" => return Ok(None),
                    "kind" if !kind => {
                        kind = true;
                        if map.next_value::<Cow<'de, str>>()? != "snapshot" {
                            return Ok(None);
                        }
                    }
                    "snapshot" if kind && doc.is_none() => doc = Some(map.next_value()?),
                    "kind" | "snapshot" => return Ok(None),
                    other => match RAW_KEYS.iter().position(|k| *k == other) {
                        Some(i) if raw_seen[i] => return Ok(None),
                        Some(i) => {
                            raw_seen[i] = true;
                            map.next_value::<Option<&'de RawValue>>()?;
                        }
                        None => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    },
                }
            }
            Ok(doc.map(|doc| shell_parts(doc.snapshot_sequence, doc.projects, doc.threads)))
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parts = deserializer.deserialize_map(OnePass).ok()??;
    deserializer.end().ok()?;
    Some(parts)
}

/// Each watcher decode by its `serde` path alone and by the scanner alone (`wire::scan`), for
/// `tests/fuzz.rs`, which holds them side by side: not part of the API.
#[doc(hidden)]
pub mod oracle {
    use super::*;
    use crate::Fleet;

    /// Whether everything `written` says is in `sent`: each key of an object with a value within
    /// the sent one, arrays item by item, anything else equal. `sent` may say more (keys T3 writes
    /// that afk's types do not have).
    pub fn within(written: &serde_json::Value, sent: &serde_json::Value, path: &str) -> Result<(), String> {
        match (written, sent) {
            (serde_json::Value::Object(w), serde_json::Value::Object(s)) => {
                w.iter().try_for_each(|(key, value)| {
                    let at = format!("{path}/{key}");
                    within(value, s.get(key).ok_or(format!("{at}: not sent"))?, &at)
                })
            }
            (serde_json::Value::Array(w), serde_json::Value::Array(s)) if w.len() == s.len() => w
                .iter()
                .zip(s)
                .enumerate()
                .try_for_each(|(i, (w, s))| within(w, s, &format!("{path}/{i}"))),
            _ if written == sent => Ok(()),
            _ => Err(format!("{path}: {written} was sent as {sent}")),
        }
    }

    /// [`Fleet::decode_snapshot`] by `serde` alone.
    pub fn snapshot_by_serde(body: &[u8]) -> Result<Fleet, serde_json::Error> {
        decode_snapshot_by_serde(Body::of(body)).map(Fleet::of_snapshot)
    }

    /// [`Fleet::decode_snapshot`] by the scanner alone; `None` where it declines.
    pub fn snapshot_by_scanner(text: &str) -> Option<Fleet> {
        let (sequence, projects, threads) = scanned::<Project>(Body::Text(text), Shape::Snapshot)?;
        Some(Fleet::of_snapshot(ViewParts {
            sequence,
            projects: live_projects(projects),
            threads,
        }))
    }

    /// [`crate::ReadModel::decode`] by the scanner alone; `None` where it declines.
    pub fn read_model_by_scanner(text: &str) -> Option<crate::ReadModel> {
        scan::read_model(text)
    }

    /// [`Fleet::decode_shell`] by `serde` alone.
    pub fn shell_by_serde(body: &[u8]) -> Result<Fleet, serde_json::Error> {
        decode_shell_by_serde(Body::of(body)).map(Fleet::of_shell)
    }

    /// [`Fleet::decode_shell`] by the scanner alone; `None` where it declines.
    pub fn shell_by_scanner(text: &str) -> Option<Fleet> {
        let (sequence, projects, threads) = scanned::<ProjectShell>(Body::Text(text), Shape::Shell)?;
        Some(Fleet::of_shell(shell_parts(sequence, projects, threads)))
    }

    /// [`FleetItem::decode`] by `serde` alone: the item's snapshot too is decoded by `serde`, never
    /// by the scanner, so that the scanner is held against `serde` and not against itself.
    pub fn item_by_serde(text: &str) -> Result<FleetItem, serde_json::Error> {
        FleetItem::decode_by_serde(text)
    }

    /// [`FleetItem::decode`] of a `snapshot` item by the scanner alone; `None` where it declines.
    pub fn item_by_scanner(text: &str) -> Option<FleetItem> {
        let mut threads = Threads::default();
        let doc = scan::stream_snapshot::<ProjectShell>(text, |thread| {
            threads.add(thread.into_fleet());
            Some(())
        })?;
        let parts = shell_parts(doc.sequence, doc.projects, threads);
        Some(FleetItem::Snapshot(Box::new(ViewSnapshot(parts))))
    }

    /// [`crate::wire::ShellWaits::decode`] by `serde` alone.
    pub fn waits_by_serde(body: &[u8]) -> Result<crate::wire::ShellWaits, serde_json::Error> {
        crate::wire::ShellWaits::decode_by_serde(Body::of(body))
    }

    /// [`crate::wire::ShellWaits::decode`] by the scanner alone; `None` where it declines.
    pub fn waits_by_scanner(text: &str) -> Option<crate::wire::ShellWaits> {
        crate::wire::ShellWaits::scanned(Body::Text(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ThreadState;
    use crate::Fleet;

    fn shell_thread(id: &str, state: &str, title: &str) -> String {
        format!(
            r#"{{"id":"{id}","projectId":"p","title":"{title}",
            "modelSelection":{{"instanceId":"codex","model":"m"}},"runtimeMode":"full-access",
            "interactionMode":"default","branch":"b-{id}","worktreePath":"/w/{id}",
            "latestTurn":{{"turnId":"t1","state":"{state}","requestedAt":"2026-11-24T19:14:36.116Z",
              "startedAt":null,"completedAt":null,"assistantMessageId":null}},
            "createdAt":"2026-11-24T19:14:36.116Z","updatedAt":"2026-11-24T19:14:37.000Z",
            "archivedAt":null,"session":{{"threadId":"{id}","status":"running","providerName":"codex",
              "runtimeMode":"full-access","activeTurnId":"t1","lastError":null,
              "updatedAt":"2026-11-24T19:14:36.116Z"}},"hasPendingUserInput":true}}"#
        )
    }

    /// Each text of a thread reads back as it was given, an empty one as empty and an absent one
    /// as absent, whichever of the others are there (they share one block).
    #[test]
    fn a_threads_texts_read_back_as_given() {
        let at = Timestamp::now();
        let turn = FleetTurn {
            state: TurnState::Running,
            requested_at: at,
            started_at: None,
            completed_at: None,
        };
        for mask in 0..32u32 {
            let pick = |bit: u32, text: &'static str| (mask & (1 << bit) != 0).then_some(text);
            let branch = pick(0, "");
            let worktree = pick(1, "/w/é");
            let message = pick(2, "m-1");
            let error = pick(3, "boom \u{2028} bang");
            let has_turn = mask & (1 << 4) != 0;
            let thread = FleetThread::of(
                "t-1",
                branch,
                worktree,
                has_turn.then_some((turn, "turn-1", message)),
                at,
                None,
                Some((SessionStatus::Error, error)),
                false,
                false,
            );
            let no_session = FleetThread::of("t-2", branch, worktree, None, at, None, None, false, false);
            assert_eq!(no_session.branch(), branch, "mask {mask}");
            assert_eq!(no_session.worktree_path(), worktree, "mask {mask}");
            assert_eq!((no_session.turn_id(), no_session.last_error()), (None, None));
            assert_eq!(thread.id(), "t-1");
            assert_eq!(thread.branch(), branch, "mask {mask}");
            assert_eq!(thread.worktree_path(), worktree, "mask {mask}");
            assert_eq!(thread.turn_id().map(IdRef::as_str), has_turn.then_some("turn-1"));
            assert_eq!(
                thread.assistant_message_id().map(IdRef::as_str),
                message.filter(|_| has_turn),
                "mask {mask}"
            );
            assert_eq!(thread.last_error(), error, "mask {mask}");
            assert_eq!(ThreadFacts::last_error(&thread), error);
            // A caller that clears the turn or the session clears what they said.
            let mut cleared = thread.clone();
            (cleared.latest_turn, cleared.session) = (None, None);
            assert_eq!(cleared.turn_id(), None);
            assert_eq!(cleared.assistant_message_id(), None);
            assert_eq!(cleared.last_error(), None);
        }
    }

    /// What the watcher holds of each of up to 10,000 threads: this struct (in the view's vector)
    /// and one block of its texts. It was ~225 bytes and four or five strings (BENCHMARKS.md,
    /// "Typed decode against the floor").
    #[test]
    fn a_fleet_thread_is_compact() {
        assert!(
            std::mem::size_of::<FleetThread>() <= 144,
            "{} bytes",
            std::mem::size_of::<FleetThread>()
        );
    }

    /// The one-pass decode is taken for the snapshot as T3 sends it (kind first, every thread
    /// readable), and left to the general path for anything else: it is a shortcut, never an
    /// answer of its own.
    #[test]
    fn a_stream_snapshot_as_t3_sends_it_is_decoded_in_one_pass() {
        let snapshot = format!(
            r#"{{"snapshotSequence":4,"updatedAt":"2026-11-24T19:14:40.000Z","projects":[],"threads":[{},{}]}}"#,
            shell_thread("a", "running", "fine"),
            shell_thread("b", "completed", "fine"),
        );
        let as_sent = format!(r#"{{"kind":"snapshot","snapshot":{snapshot}}}"#);
        assert!(snapshot_in_one_pass(&as_sent).is_some(), "decoded in one pass");
        let mut fleet = Fleet::default();
        fleet.apply(FleetItem::decode(&as_sent).expect("the item decodes"));
        assert_eq!((fleet.sequence(), fleet.len()), (4, 2));
        let reordered = format!(r#"{{"snapshot":{snapshot},"kind":"snapshot"}}"#);
        assert!(snapshot_in_one_pass(&reordered).is_none(), "kind not first");
        let unreadable = as_sent.replace(r#""state":"completed""#, r#""state":"paused""#);
        assert!(
            snapshot_in_one_pass(&unreadable).is_none(),
            "an unreadable thread"
        );
        assert!(FleetItem::decode(&reordered).is_ok() && FleetItem::decode(&unreadable).is_ok());
    }

    #[test]
    fn a_stream_snapshot_keeps_what_afk_reads_and_sets_aside_what_it_cannot() {
        let text = format!(
            r#"{{"kind":"snapshot","snapshot":{{"snapshotSequence":9,"updatedAt":"2026-11-24T19:14:40.000Z",
            "projects":[],"threads":[{},{},{}]}}}}"#,
            shell_thread("a", "running", "fine"),
            shell_thread("b", "paused", "fine"),
            shell_thread("c", "running", "\\ud800 lone"),
        );
        let mut fleet = Fleet::default();
        fleet.apply(FleetItem::decode(&text).expect("the item decodes"));
        assert_eq!(fleet.sequence(), 9);
        let a = fleet.thread_by_id("a").expect("a is readable");
        assert_eq!(a.branch(), Some("b-a"));
        assert_eq!(a.worktree_path(), Some("/w/a"));
        assert!(a.waits_for_person(), "the shell's flag is kept");
        assert_eq!(ThreadState::of(Some(a)), ThreadState::Running);
        let b = ThreadId::new("b").unwrap();
        assert!(fleet.unreadable(&b).is_some_and(|why| why.contains("paused")));
        let c = ThreadId::new("c").unwrap();
        assert!(
            fleet.unreadable(&c).is_some_and(|why| why.contains("escape")),
            "a title afk does not keep is still checked: {:?}",
            fleet.unreadable(&c)
        );
        let upsert = format!(
            r#"{{"kind":"thread-upserted","sequence":10,"thread":{}}}"#,
            shell_thread("a", "paused", "x")
        );
        assert!(matches!(
            FleetItem::decode(&upsert).expect("decodes"),
            FleetItem::ThreadUnreadable { sequence: 10, .. }
        ));
        assert!(FleetItem::decode(r#"{"kind":"thread-removed","sequence":"x"}"#).is_err());
        assert_eq!(
            FleetItem::decode(r#"{"kind":"space-upserted","x":1}"#).unwrap(),
            FleetItem::Other
        );
    }
}
