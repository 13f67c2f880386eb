//! afk's GitHub adapter: trusted intake, `AFK.md` policy, status reporting and webhooks.
//!
//! **API boundary.** Only this crate knows GitHub's JSON; callers see domain types
//! ([`EligibleIssue`], [`RepoPolicy`], [`StatusReport`], [`WebhookEvent`]).
//!
//! Start with a [`GitHubClient`] (REST root + [`Credentials`]; conditional requests, GitHub's
//! rate-limit rules in [`rate_limit`], afk's own identity); it is shared by:
//! - [`Intake`] — `scan()` lists issues that carry the trigger label **applied by someone with
//!   write access**, whose title and body nobody without write access changed since
//!   ([`edits`]): the safety boundary, as the agent runs with full access;
//! - [`PolicyStore`] — each repository's `AFK.md` settings and strict prompt template;
//! - [`Reporter`] — one status comment per issue (afk's own), the `afk:*` and extra labels, the
//!   untrusted-edit notice, and detection of a pull request afk can trust;
//! - [`CommentCommands`] — comment commands (`/afk ...`, read by [`parse_command`]): an issue's
//!   comments since an instant, whether their author may command afk, reactions and replies;
//! - [`webhook_router`] — a verified `POST /webhooks/github` feeding a channel.
//!
//! [`access`] says what the credentials may do in each repository (for `afk doctor`); [`trust`]
//! says who is trusted (write, maintain, admin); the private `http` and `model` modules
//! hold the wire details.
//!
//! Behind the `testing` feature, [`testing::GitHubStandIn`] is a loopback GitHub for tests.
//!
//! **Invariants:** no token, private key or webhook secret reaches a log, an error or `Debug`;
//! intake never writes to GitHub; while a rate limit applies the client sends nothing at all;
//! afk edits only comments it wrote and names only pull requests from its attempts' branches or
//! by trusted authors; an issue GitHub no longer has (410, 301, 404) is final.

#![warn(missing_docs)]

pub mod access;
pub mod auth;
pub mod client;
pub mod clock;
pub mod commands;
pub mod edits;
pub mod error;
pub mod follow;
mod http;
pub mod intake;
mod model;
pub mod policy;
pub mod rate_limit;
pub mod report;
pub mod trust;
pub mod webhook;

#[cfg(feature = "testing")]
pub mod testing;

pub use access::RepoAccess;
pub use auth::{AppCredentials, AppId, Credentials, InstallationId, APP_TOKEN_REFRESH_MARGIN};
pub use client::{ClientConfig, GitHubClient, RequestObserver, GITHUB_API};
pub use clock::{Clock, SystemClock};
pub use commands::{
    parse_command, Command, CommandReaction, CommentCommands, CommentId, IssueComment, Parsed,
    COMMAND_PREFIX, MAX_COMMAND_BYTES,
};
pub use edits::{EditedField, TextEdit, TrustedLabel, UntrustedEdit};
pub use error::{GitHubError, IssueGone};
pub use follow::{
    ChangesRequested, CheckKind, FailedCheck, LineComment, PullRequestActivity, PullRequestState,
};
pub use intake::{
    priority_from_labels, EligibleIssue, Intake, IntakeConfig, Scan, SkipReason, SkippedIssue, Verdict,
    DEFAULT_TRIGGER_LABEL,
};
pub use policy::{
    BudgetSettings, PolicyError, PolicySettings, PolicySource, PolicyStore, PromptContext, PromptIssue,
    RepoPolicy, BUILT_IN_TEMPLATE,
};
pub use rate_limit::{RateLimitBlock, RateLimitKind};
pub use report::{
    closes_issue, render_comment, status_label, FollowUpStatus, PullRequestMatch, PullRequestRef,
    PullRequestSearch, RecentPulls, ReportOutcome, Reporter, StatusComment, StatusReport, ThreadLink,
    LABEL_CLOSED, LABEL_DONE, LABEL_FAILED, LABEL_IN_REVIEW, LABEL_MERGED, LABEL_NEEDS_YOU, LABEL_RUNNING,
    STATUS_MARKER,
};
pub use trust::{Login, Permission};
pub use webhook::{
    read_delivery, sign, signature_is_valid, webhook_router, WebhookEvent, WebhookEventKind, WEBHOOK_PATH,
};

/// Locks `m`, also when a panic poisoned it: every lock in this crate guards plain caches and
/// counters (single inserts and reads), which a panic cannot leave half-written.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
