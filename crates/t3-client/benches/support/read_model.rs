//! T3 read models in T3's real shapes, generated for benchmarks: `N` threads as T3's lightweight
//! snapshot serves them (`messages`, `activities` and `checkpoints` empty), with UUID ids, ISO
//! timestamps with milliseconds, worktrees and a realistic mix of states.
//!
//! Shared by `t3-client`'s decode bench and `afk`'s comparison bench (included there with
//! `#[path]`), so that both decode the very same documents. Everything is deterministic in `n`:
//! two calls give the same bytes.
//!
//! About 950 bytes per thread, so 10,000 threads make a document of about 9.5 MB, as the issue
//! measured on a real T3.

#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use t3_client::wire::{
    InteractionMode, LatestTurn, ModelSelection, NonEmptyString, Project, ProjectShell, ReadModel,
    RuntimeMode, Session, SessionStatus, ShellSnapshot, Thread, ThreadShell, Timestamp, TurnState,
};
use t3_client::{MessageId, ProjectId, ThreadId, TurnId};

/// The repositories the generated threads belong to, one project each.
const REPOS: [&str; 4] = ["acme/api", "acme/web", "acme/billing", "acme/mobile"];

/// Issue titles of a realistic length; a thread's title is `OWNER/NAME#N: <title>`.
const TITLES: [&str; 4] = [
    "Orders endpoint returns 500 on an empty cursor instead of the first page",
    "Invoice PDF renders the totals table off the page for more than 40 lines",
    "Login form keeps the spinner after a wrong password on slow connections",
    "Crash when the sync job meets a project renamed while it was running",
];

/// A deterministic UUID v4 for `(kind, i)`: T3's own clients mint v4 UUIDs.
pub fn uuid(kind: u64, i: u64) -> String {
    // SplitMix64: cheap, deterministic and well spread.
    let mut x = kind
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i)
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (a, b) = (next(), next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        8 + (b >> 62),
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

fn stamp(base: DateTime<Utc>, millis: i64) -> Timestamp {
    Timestamp(base + Duration::milliseconds(millis))
}

fn project_id(r: usize) -> ProjectId {
    ProjectId::new(uuid(1, r as u64)).expect("a UUID is a valid id")
}

/// The projects: one per repository.
fn projects(base: DateTime<Utc>) -> Vec<Project> {
    REPOS
        .iter()
        .enumerate()
        .map(|(r, repo)| Project {
            id: project_id(r),
            title: (*repo).to_owned(),
            workspace_root: format!("/srv/repos/{repo}"),
            repository_identity: Some(serde_json::json!({
                "canonicalKey": format!("github.com/{repo}"),
                "locator": {"source": "git-remote", "remoteName": "origin",
                            "remoteUrl": format!("git@github.com:{repo}.git")},
            })),
            default_model_selection: Some(model()),
            scripts: Vec::new(),
            created_at: stamp(base, -86_400_000),
            updated_at: stamp(base, -3_600_000),
            deleted_at: None,
        })
        .collect()
}

fn model() -> ModelSelection {
    ModelSelection {
        instance_id: NonEmptyString::new("claudeAgent").expect("non-empty"),
        model: NonEmptyString::new("claude-sonnet-4-5").expect("non-empty"),
        options: None,
    }
}

/// Thread `i`, in the state a fleet of mostly running agents has: of every 100 threads, 90 are
/// running, 4 completed, 2 still starting, 2 failed, 1 interrupted and 1 deleted.
pub fn thread(i: usize, base: DateTime<Utc>) -> Thread {
    let r = i % REPOS.len();
    let number = 1000 + i as u64;
    let id = ThreadId::new(uuid(2, i as u64)).expect("a UUID is a valid id");
    let turn_id = TurnId::new(uuid(3, i as u64)).expect("a UUID is a valid id");
    let created = -(3_600_000 - (i as i64 % 3_000_000));
    let requested = created + 120;
    let started = requested + 1_850;
    let branch = format!("afk/issue-{number}");
    let kind = i % 100;
    let turn = |state: TurnState, done: bool| LatestTurn {
        turn_id: turn_id.clone(),
        state,
        requested_at: stamp(base, requested),
        started_at: Some(stamp(base, started)),
        completed_at: done.then(|| stamp(base, started + 600_000)),
        assistant_message_id: done.then(|| MessageId::new(uuid(4, i as u64)).expect("a UUID is a valid id")),
    };
    let session = |status: SessionStatus, active: bool, error: Option<&str>| Session {
        thread_id: id.clone(),
        status,
        provider_name: Some("claudeAgent".into()),
        runtime_mode: RuntimeMode::FullAccess,
        active_turn_id: active.then(|| turn_id.clone()),
        last_error: error.map(str::to_owned),
        updated_at: stamp(base, started + 30_000),
    };
    let (latest_turn, session, deleted) = match kind {
        0..=89 => (
            Some(turn(TurnState::Running, false)),
            Some(session(SessionStatus::Running, true, None)),
            false,
        ),
        90..=93 => (
            Some(turn(TurnState::Completed, true)),
            Some(session(SessionStatus::Ready, false, None)),
            false,
        ),
        94 | 95 => (None, Some(session(SessionStatus::Starting, false, None)), false),
        96 | 97 => (
            Some(turn(TurnState::Error, true)),
            Some(session(
                SessionStatus::Error,
                false,
                Some("Provider process exited with code 1"),
            )),
            false,
        ),
        98 => (
            Some(turn(TurnState::Interrupted, true)),
            Some(session(SessionStatus::Interrupted, false, None)),
            false,
        ),
        _ => (
            Some(turn(TurnState::Completed, true)),
            Some(session(SessionStatus::Stopped, false, None)),
            true,
        ),
    };
    Thread {
        id,
        project_id: project_id(r),
        title: format!("{}#{number}: {}", REPOS[r], TITLES[i % TITLES.len()]),
        model_selection: model(),
        runtime_mode: RuntimeMode::FullAccess,
        interaction_mode: InteractionMode::Default,
        branch: Some(branch.clone()),
        worktree_path: Some(format!("/srv/t3/worktrees/{}/{branch}", REPOS[r])),
        latest_turn,
        created_at: stamp(base, created),
        updated_at: stamp(base, started + 30_000),
        archived_at: None,
        deleted_at: deleted.then(|| stamp(base, started + 700_000)),
        messages: Vec::new(),
        activities: Vec::new(),
        checkpoints: Vec::new(),
        has_pending_user_input: false,
        has_pending_approvals: false,
        session,
    }
}

/// A read model of `n` threads.
pub fn read_model(n: usize) -> ReadModel {
    let base = DateTime::from_timestamp_millis(1_795_000_000_000).expect("a representable instant");
    ReadModel {
        snapshot_sequence: 40_000 + n as u64 * 6,
        projects: projects(base),
        threads: (0..n).map(|i| thread(i, base)).collect(),
        updated_at: stamp(base, 1_000),
    }
}

/// The JSON document T3 would serve for [`read_model`]`(n)`, with the keys T3 writes that afk's
/// types do not ([`as_t3_writes`]).
pub fn read_model_json(n: usize) -> Vec<u8> {
    let json = serde_json::to_string(&read_model(n)).expect("a read model serialises");
    as_t3_writes(&json, Document::Snapshot).into_bytes()
}

/// Which of T3's documents [`as_t3_writes`] completes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Document {
    Snapshot,
    Shell,
}

/// T3's thread lifecycle keys that afk does not read, as T3 writes them for a thread none of
/// them applies to (`OrchestrationThread` / `OrchestrationThreadShell`, T3 0.0.33), after
/// `archivedAt`.
const LIFECYCLE: &str = r#""settledOverride":null,"settledAt":null,"snoozedUntil":null,"snoozedAt":null,"pinnedAt":null,"pinOrderKey":null,"titleRegeneration":null,"#;

/// `json` (a snapshot or shell document as afk's own types write it) as T3 writes it: T3's
/// `ModelSelection` encoder writes `model` before `instanceId`, a session says its
/// `providerInstanceId`, and each thread has the keys afk's types do not have, where T3 puts
/// them (its `ProjectionSnapshotQuery`: `retention` before `latestTurn`, the lifecycle keys after
/// `archivedAt`, `proposedPlans` after `messages` in the snapshot; `backgroundLiveness` and
/// `planProgress` last in the shell). Nine keys a thread in each document, so that the bench
/// decodes the bytes afk decodes in production, not a shorter document.
fn as_t3_writes(json: &str, document: Document) -> String {
    let at = json.find(r#""threads":["#).expect("a threads key");
    let (head, threads) = json.split_at(at);
    let threads = match document {
        Document::Snapshot => threads
            .replace(r#""latestTurn":"#, r#""retention":"retained","latestTurn":"#)
            .replace(r#","deletedAt":"#, &format!(r#",{LIFECYCLE}"deletedAt":"#))
            .replace(r#""messages":[],"#, r#""messages":[],"proposedPlans":[],"#),
        Document::Shell => threads
            .replace(r#","session":"#, &format!(r#",{LIFECYCLE}"session":"#))
            .replace(
                r#""hasActionableProposedPlan":false"#,
                r#""hasActionableProposedPlan":false,"backgroundLiveness":null,"planProgress":null"#,
            ),
    };
    format!("{head}{threads}")
        .replace(
            r#"{"instanceId":"claudeAgent","model":"claude-sonnet-4-5"}"#,
            r#"{"model":"claude-sonnet-4-5","instanceId":"claudeAgent"}"#,
        )
        .replace(
            r#""providerName":"claudeAgent","#,
            r#""providerName":"claudeAgent","providerInstanceId":"claudeAgent","#,
        )
}

/// The shell document (`GET /api/orchestration/shell`, or the `snapshot` of the shell stream's
/// first item) T3 would serve beside [`read_model`]`(n)`: the same projects and threads in the
/// shell's shape, the deleted threads left out (1 in 100).
pub fn shell_json(n: usize) -> Vec<u8> {
    let model = read_model(n);
    let shell = ShellSnapshot {
        snapshot_sequence: model.snapshot_sequence,
        projects: model.projects.iter().map(ProjectShell::from).collect(),
        threads: model
            .threads
            .iter()
            .filter(|t| t.deleted_at.is_none())
            .map(ThreadShell::of)
            .collect(),
        updated_at: model.updated_at,
    };
    let json = serde_json::to_string(&shell).expect("a shell snapshot serialises");
    as_t3_writes(&json, Document::Shell).into_bytes()
}

/// The number of threads [`shell_json`]`(n)` lists.
pub fn shell_threads(n: usize) -> usize {
    n - n / 100
}
