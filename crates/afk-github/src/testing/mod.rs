//! A stand-in GitHub on loopback, for this crate's tests and afk's end-to-end tests.
//!
//! [`GitHubStandIn`] serves the REST endpoints afk uses (and the one GraphQL query), with GitHub's
//! JSON shapes, and behaves as GitHub documents where afk must cope with it:
//! - authentication: 401 on an unknown or expired token; App installation tokens minted from an
//!   RS256 JWT; each token belongs to an account (`GET /user`; `GET /app` with the JWT), and what
//!   a request writes is written by that account (`<slug>[bot]` for the App);
//! - conditional requests: an `ETag` per page, over the page's body only; a 304 is not charged
//!   and carries no `Link`;
//! - rate limits: `x-ratelimit-*` headers; the primary limit (403 or 429 with remaining 0, with
//!   `Retry-After` when set); a secondary limit (403 or 429 with budget left, GitHub's message,
//!   with or without `Retry-After`);
//! - issues: `updated_at` moving with every change; body edits (GraphQL `lastEditedAt` and
//!   `editor`), title changes (`renamed` events); deleted issues (410) and transferred ones (301
//!   with `Location`);
//! - comments with their authors; pull requests with authors and head repositories (forks).
//!
//! Every request is recorded for assertions.
//!
//! Test setup goes through methods (`open_issue`, `add_label`, `set_permission`, ...) rather than
//! HTTP, so a test reads as the story it tells. The server stops when the value is dropped.
//!
//! It is not GitHub: ordering, filters and pagination follow GitHub's documentation only as far as
//! afk relies on them.

mod server;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use url::Url;

use crate::clock::{Clock, SystemClock};

/// A clock that moves only when told to. Starts at the system time of its creation, so JWTs
/// signed with it are also acceptable to libraries that check expiry against the real clock.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at the current system time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(Utc::now()),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.now);
        *now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.now)
    }
}

/// One request the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, e.g. `/repos/acme/widgets/issues?state=open`.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// Whether it was charged against the rate limit (304s and 401s are not).
    pub charged: bool,
    /// When the stand-in answered it, by the system's wall clock (as [`CommentWrite::at`]), for
    /// latency profiles.
    pub at: DateTime<Utc>,
}

impl RecordedRequest {
    /// Whether it changed something on GitHub: any method but `GET`, except a GraphQL query
    /// (a `POST` that only reads).
    pub fn is_write(&self) -> bool {
        self.method != "GET" && !(self.method == "POST" && self.path.starts_with("/graphql"))
    }
}

/// Which status the stand-in refuses with when a rate limit applies: GitHub documents both 403
/// and 429, for its primary and its secondary limits alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitRefusal {
    /// 403 Forbidden.
    Forbidden,
    /// 429 Too Many Requests.
    TooManyRequests,
}

impl RateLimitRefusal {
    fn status(self) -> axum::http::StatusCode {
        match self {
            RateLimitRefusal::Forbidden => axum::http::StatusCode::FORBIDDEN,
            RateLimitRefusal::TooManyRequests => axum::http::StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// A secondary rate limit in force: every request is refused until `until`, while the primary
/// budget (`x-ratelimit-remaining`) is left as it is.
pub(crate) struct SecondaryLimit {
    pub(crate) until: DateTime<Utc>,
    pub(crate) refusal: RateLimitRefusal,
    pub(crate) retry_after: Option<u64>,
}

pub(crate) struct AppInstallation {
    pub(crate) app_id: u64,
    pub(crate) slug: String,
    pub(crate) installation_id: u64,
    /// The installation's repository permissions, as `GET /app/installations/{id}` shows them.
    pub(crate) permissions: BTreeMap<String, String>,
    pub(crate) key: jsonwebtoken::DecodingKey,
    pub(crate) token_lifetime: chrono::Duration,
}

pub(crate) struct RateLimit {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset_at: DateTime<Utc>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) refusal: RateLimitRefusal,
}

#[derive(Clone)]
pub(crate) struct IssueEventData {
    pub(crate) id: u64,
    pub(crate) event: &'static str,
    pub(crate) actor: String,
    pub(crate) label: Option<String>,
    /// For a `renamed` event: the title before and after.
    pub(crate) rename: Option<(String, String)>,
    pub(crate) created_at: DateTime<Utc>,
}

pub(crate) struct IssueData {
    pub(crate) number: u64,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) author: String,
    pub(crate) open: bool,
    pub(crate) labels: Vec<String>,
    pub(crate) events: Vec<IssueEventData>,
    /// Set when this "issue" is a pull request.
    pub(crate) pull: Option<PullHead>,
    pub(crate) created_at: DateTime<Utc>,
    /// Moves with every change to the issue (labels, comments, edits, state), as GitHub's does.
    pub(crate) updated_at: DateTime<Utc>,
    /// The last edit of the body: who and when (GraphQL `editor` and `lastEditedAt`).
    pub(crate) body_edit: Option<(String, DateTime<Utc>)>,
}

/// Where a pull request's changes come from.
pub(crate) struct PullHead {
    /// The head branch.
    pub(crate) branch: String,
    /// The repository the branch is in (`owner/name`): the base repository itself, or a fork.
    pub(crate) repo: String,
    /// The head commit's SHA (40 hex digits).
    pub(crate) sha: String,
    /// When it was merged.
    pub(crate) merged_at: Option<DateTime<Utc>>,
}

/// A check run on a commit (`GET /repos/{repo}/commits/{sha}/check-runs`).
pub(crate) struct CheckRunData {
    pub(crate) id: u64,
    pub(crate) sha: String,
    pub(crate) name: String,
    /// `None` while it runs.
    pub(crate) conclusion: Option<String>,
    pub(crate) title: String,
    pub(crate) summary: String,
}

/// A commit status (`GET /repos/{repo}/commits/{sha}/statuses`).
pub(crate) struct CommitStatusData {
    pub(crate) id: u64,
    pub(crate) sha: String,
    pub(crate) context: String,
    pub(crate) state: String,
    pub(crate) description: String,
    pub(crate) created_at: DateTime<Utc>,
}

/// A pull request review, with its comments on lines.
pub(crate) struct ReviewData {
    pub(crate) id: u64,
    pub(crate) pull: u64,
    pub(crate) reviewer: String,
    pub(crate) state: String,
    pub(crate) body: String,
    pub(crate) commit_id: String,
    pub(crate) submitted_at: DateTime<Utc>,
    /// (comment id, path, line, body).
    pub(crate) comments: Vec<(u64, String, u64, String)>,
}

pub(crate) struct CommentData {
    pub(crate) id: u64,
    pub(crate) issue: u64,
    pub(crate) body: String,
    pub(crate) author: String,
    pub(crate) created_at: DateTime<Utc>,
    /// Moves with every edit (GitHub's `since` filters on it).
    pub(crate) updated_at: DateTime<Utc>,
    /// Reactions on it: (login, content), one per login and content as on GitHub.
    pub(crate) reactions: Vec<(String, String)>,
}

#[derive(Default)]
pub(crate) struct RepoData {
    pub(crate) issues: BTreeMap<u64, IssueData>,
    pub(crate) permissions: HashMap<String, String>,
    pub(crate) files: HashMap<String, String>,
    pub(crate) comments: Vec<CommentData>,
    /// Numbers of deleted issues (410 Gone).
    pub(crate) deleted: HashSet<u64>,
    /// Transferred issues: old number → (new repository, new number) (301).
    pub(crate) transferred: HashMap<u64, (String, u64)>,
    pub(crate) check_runs: Vec<CheckRunData>,
    pub(crate) statuses: Vec<CommitStatusData>,
    pub(crate) reviews: Vec<ReviewData>,
    /// Every comment created or edited through the API, in order ([`GitHubStandIn::comment_writes`]).
    pub(crate) comment_writes: Vec<CommentWrite>,
}

/// A comment written through the API (created or edited), with when the stand-in applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentWrite {
    /// The issue (or pull request) number the comment is on.
    pub issue: u64,
    /// The comment's id.
    pub comment: u64,
    /// The body written.
    pub body: String,
    /// True when the write created the comment, false when it edited it.
    pub created: bool,
    /// When the stand-in applied the write, by the system's wall clock (not the stand-in's
    /// clock, which a test may stop): comparable with another stand-in's timestamps, for
    /// latency measurements.
    pub at: DateTime<Utc>,
}

pub(crate) struct World {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) base: String,
    /// Personal tokens and the login each belongs to.
    pub(crate) tokens: HashMap<String, String>,
    pub(crate) app: Option<AppInstallation>,
    pub(crate) installation_tokens: HashMap<String, DateTime<Utc>>,
    pub(crate) installation_tokens_issued: u32,
    pub(crate) repos: BTreeMap<String, RepoData>,
    pub(crate) rate: RateLimit,
    pub(crate) secondary: Option<SecondaryLimit>,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) next_id: u64,
    /// The account [`STAND_IN_TOKEN`] and [`GitHubStandIn::add_token`] tokens belong to.
    pub(crate) bot_login: String,
    /// Reaction requests still to fail with 502 ([`GitHubStandIn::fail_reactions`]).
    pub(crate) failing_reactions: u32,
    /// The next edit of a comment on these issues is refused so
    /// ([`GitHubStandIn::refuse_comment_edit`]): (repository, issue number, how).
    pub(crate) refused_edits: Vec<(String, u64, EditRefusal)>,
    /// Issues whose label requests all fail with 502 ([`GitHubStandIn::fail_labels`]):
    /// (repository, issue number).
    pub(crate) failing_labels: Vec<(String, u64)>,
}

/// How the stand-in refuses a comment edit it was told to refuse
/// ([`GitHubStandIn::refuse_comment_edit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditRefusal {
    /// `502 Bad Gateway`, as when GitHub fails for a moment; nothing else changes.
    ServerError,
    /// GitHub's secondary rate limit: `403` with its "secondary rate limit" message and
    /// `Retry-After: retry_after` seconds, and every request is refused as long (on the
    /// stand-in's clock), as GitHub does once it limits a client.
    SecondaryLimit {
        /// Seconds, said in `Retry-After`.
        retry_after: u64,
    },
}

impl World {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// A deterministic commit SHA for the `push`th commit of pull request `number` of `repo`.
fn commit_sha(repo: &str, number: u64, push: u64) -> String {
    let digest = Sha256::digest(format!("{repo}#{number}").as_bytes());
    let prefix: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{push:08x}")
}

/// The token [`GitHubStandIn::start`] accepts out of the box.
pub const STAND_IN_TOKEN: &str = "stand-in-token";
/// The account [`STAND_IN_TOKEN`] belongs to: the author of what afk writes with it.
pub const STAND_IN_LOGIN: &str = "afk-bot";
/// The slug of the App [`GitHubStandIn::enable_app`] sets up; its bot account is
/// `afk-app[bot]`, the author of what afk writes with its installation tokens.
pub const STAND_IN_APP_SLUG: &str = "afk-app";

/// A stand-in GitHub serving on `127.0.0.1`, stopped on drop.
pub struct GitHubStandIn {
    addr: SocketAddr,
    world: Arc<Mutex<World>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for GitHubStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubStandIn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for GitHubStandIn {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

impl GitHubStandIn {
    /// Starts on `127.0.0.1:0` with the system clock, accepting [`STAND_IN_TOKEN`], with a rate
    /// limit of 5000 requests an hour.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// Starts with `clock` for token expiry and rate-limit windows (share it with the client under
    /// test to move time forward).
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let now = clock.now();
        let world = Arc::new(Mutex::new(World {
            clock,
            base: format!("http://{addr}"),
            tokens: HashMap::from([(STAND_IN_TOKEN.to_owned(), STAND_IN_LOGIN.to_owned())]),
            app: None,
            installation_tokens: HashMap::new(),
            installation_tokens_issued: 0,
            repos: BTreeMap::new(),
            rate: RateLimit {
                limit: 5000,
                remaining: 5000,
                reset_at: now + chrono::Duration::hours(1),
                retry_after: None,
                refusal: RateLimitRefusal::Forbidden,
            },
            secondary: None,
            requests: Vec::new(),
            next_id: 1000,
            bot_login: STAND_IN_LOGIN.to_owned(),
            failing_reactions: 0,
            refused_edits: Vec::new(),
            failing_labels: Vec::new(),
        }));
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = server::router(world.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            world,
            shutdown: Some(shutdown),
            task,
        })
    }

    /// The REST API root to give [`crate::ClientConfig::new`].
    pub fn api_url(&self) -> Url {
        // A formatted socket address is always a valid URL host.
        Url::parse(&format!("http://{}/", self.addr)).unwrap_or_else(|_| unreachable!("loopback URL"))
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Accepts `token` as a personal access token of [`STAND_IN_LOGIN`].
    pub fn add_token(&self, token: &str) {
        let mut world = self.world();
        let login = world.bot_login.clone();
        world.tokens.insert(token.to_owned(), login);
    }

    /// Accepts `token` as a personal access token of `login` (`GET /user` answers `login`, and
    /// what the token writes is written by `login`).
    pub fn add_token_for(&self, token: &str, login: &str) {
        self.world().tokens.insert(token.to_owned(), login.to_owned());
    }

    /// Stops accepting `token` (as a revoked or rotated token would be).
    pub fn revoke_token(&self, token: &str) {
        let mut world = self.world();
        world.tokens.remove(token);
        world.installation_tokens.remove(token);
    }

    /// Accepts App JWTs for `app_id` signed by the key whose public half is `public_key_pem`, and
    /// mints installation tokens for `installation_id` that live `token_lifetime`.
    pub fn enable_app(
        &self,
        app_id: u64,
        installation_id: u64,
        public_key_pem: &[u8],
        token_lifetime: Duration,
    ) {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem)
            .unwrap_or_else(|e| panic!("the stand-in's App public key is not an RSA PEM key: {e}"));
        self.world().app = Some(AppInstallation {
            app_id,
            slug: STAND_IN_APP_SLUG.to_owned(),
            installation_id,
            permissions: [
                ("issues", "write"),
                ("pull_requests", "read"),
                ("contents", "read"),
                ("metadata", "read"),
            ]
            .into_iter()
            .map(|(name, access)| (name.to_owned(), access.to_owned()))
            .collect(),
            key,
            token_lifetime: chrono::Duration::from_std(token_lifetime).unwrap_or(chrono::Duration::hours(1)),
        });
    }

    /// Replaces the App installation's repository permissions (`issues` → `write`, …; by default
    /// what docs/github.md lists). Does nothing before [`GitHubStandIn::enable_app`].
    pub fn set_app_permissions(&self, permissions: &[(&str, &str)]) {
        if let Some(app) = self.world().app.as_mut() {
            app.permissions = permissions
                .iter()
                .map(|(name, access)| (name.to_string(), access.to_string()))
                .collect();
        }
    }

    /// How many installation tokens were minted.
    pub fn installation_tokens_issued(&self) -> u32 {
        self.world().installation_tokens_issued
    }

    /// Sets the hourly limit and what is left of it now. With `retry_after`, refusals carry a
    /// `Retry-After` of that many seconds.
    pub fn set_rate_limit(
        &self,
        limit: u64,
        remaining: u64,
        retry_after: Option<u64>,
        refusal: RateLimitRefusal,
    ) {
        let mut world = self.world();
        let now = world.clock.now();
        world.rate = RateLimit {
            limit,
            remaining,
            reset_at: now + chrono::Duration::hours(1),
            retry_after,
            refusal,
        };
    }

    /// Trips GitHub's secondary limit for `lasting` (on the stand-in's clock): every request is
    /// refused with `refusal`'s status and GitHub's "You have exceeded a secondary rate limit"
    /// message, with `Retry-After: retry_after` seconds when given, and `x-ratelimit-remaining`
    /// unchanged (the hourly budget is not what ran out). Refusals are not charged.
    pub fn impose_secondary_limit(
        &self,
        lasting: Duration,
        refusal: RateLimitRefusal,
        retry_after: Option<u64>,
    ) {
        let mut world = self.world();
        let until =
            world.clock.now() + chrono::Duration::from_std(lasting).unwrap_or(chrono::Duration::zero());
        world.secondary = Some(SecondaryLimit {
            until,
            refusal,
            retry_after,
        });
    }

    /// What is left of the rate limit.
    pub fn rate_limit_remaining(&self) -> u64 {
        self.world().rate.remaining
    }

    /// Creates an empty repository `owner/name`.
    pub fn create_repo(&self, repo: &str) {
        self.world().repos.entry(repo.to_owned()).or_default();
    }

    /// Gives `login` a permission on `repo`: `admin`, `maintain`, `write`, `triage`, `read` or
    /// `none`. A login never given one is not a collaborator (404).
    pub fn set_permission(&self, repo: &str, login: &str, permission: &str) {
        self.world()
            .repos
            .entry(repo.to_owned())
            .or_default()
            .permissions
            .insert(login.to_owned(), permission.to_owned());
    }

    /// Opens an issue by `author`; returns its number.
    pub fn open_issue(&self, repo: &str, author: &str, title: &str, body: &str) -> u64 {
        self.insert_issue(repo, author, title, body, None)
    }

    /// Opens a pull request from `head_branch` of `repo` itself with `body`; returns its number
    /// (shared with issues, as on GitHub, and listed among issues with a `pull_request` key).
    pub fn open_pull_request(
        &self,
        repo: &str,
        author: &str,
        head_branch: &str,
        title: &str,
        body: &str,
    ) -> u64 {
        let head = PullHead {
            branch: head_branch.to_owned(),
            repo: repo.to_owned(),
            sha: String::new(),
            merged_at: None,
        };
        self.insert_issue(repo, author, title, body, Some(head))
    }

    /// Opens a pull request into `repo` from `head_branch` of the fork `fork` (`owner/name`), as
    /// anyone may: GitHub labels its head `<fork owner>:<branch>` and names the fork as its head
    /// repository.
    pub fn open_fork_pull_request(
        &self,
        repo: &str,
        fork: &str,
        author: &str,
        head_branch: &str,
        title: &str,
        body: &str,
    ) -> u64 {
        let head = PullHead {
            branch: head_branch.to_owned(),
            repo: fork.to_owned(),
            sha: String::new(),
            merged_at: None,
        };
        self.insert_issue(repo, author, title, body, Some(head))
    }

    fn insert_issue(
        &self,
        repo: &str,
        author: &str,
        title: &str,
        body: &str,
        mut pull: Option<PullHead>,
    ) -> u64 {
        let mut world = self.world();
        let now = world.clock.now();
        let data = world.repos.entry(repo.to_owned()).or_default();
        let number = data.issues.keys().next_back().copied().unwrap_or(0) + 1;
        if let Some(pull) = &mut pull {
            pull.sha = commit_sha(repo, number, 1);
        }
        data.issues.insert(
            number,
            IssueData {
                number,
                title: title.to_owned(),
                body: body.to_owned(),
                author: author.to_owned(),
                open: true,
                labels: Vec::new(),
                events: Vec::new(),
                pull,
                created_at: now,
                updated_at: now,
                body_edit: None,
            },
        );
        number
    }

    /// The head commit's SHA of pull request `number`.
    ///
    /// # Panics
    /// When `number` is not a pull request of `repo` (a test's mistake).
    pub fn pull_head_sha(&self, repo: &str, number: u64) -> String {
        let world = self.world();
        let pull = world
            .repos
            .get(repo)
            .and_then(|r| r.issues.get(&number))
            .and_then(|i| i.pull.as_ref());
        pull.expect("a pull request of the stand-in").sha.clone()
    }

    /// A new commit is pushed to pull request `number`'s branch; returns its SHA.
    ///
    /// # Panics
    /// When `number` is not a pull request of `repo` (a test's mistake).
    pub fn push_commit(&self, repo: &str, number: u64) -> String {
        let mut world = self.world();
        let now = world.clock.now();
        let issue = world.repos.get_mut(repo).and_then(|r| r.issues.get_mut(&number));
        let issue = issue.expect("a pull request of the stand-in");
        let pull = issue.pull.as_mut().expect("a pull request of the stand-in");
        let pushes = u64::from_str_radix(&pull.sha[32..], 16).unwrap_or(0) + 1;
        pull.sha = commit_sha(repo, number, pushes);
        issue.updated_at = now;
        pull.sha.clone()
    }

    /// A check run named `name` on commit `sha`: completed with `conclusion` (`success`,
    /// `failure`, `timed_out`, ...) or, with `None`, still in progress. Returns its id.
    pub fn add_check_run(
        &self,
        repo: &str,
        sha: &str,
        name: &str,
        conclusion: Option<&str>,
        title: &str,
        summary: &str,
    ) -> u64 {
        let mut world = self.world();
        let id = world.next_id();
        world
            .repos
            .entry(repo.to_owned())
            .or_default()
            .check_runs
            .push(CheckRunData {
                id,
                sha: sha.to_owned(),
                name: name.to_owned(),
                conclusion: conclusion.map(str::to_owned),
                title: title.to_owned(),
                summary: summary.to_owned(),
            });
        id
    }

    /// A commit status `state` (`pending`, `success`, `failure`, `error`) for `context` on
    /// commit `sha`. Returns its id.
    pub fn add_commit_status(
        &self,
        repo: &str,
        sha: &str,
        context: &str,
        state: &str,
        description: &str,
    ) -> u64 {
        let mut world = self.world();
        let id = world.next_id();
        let now = world.clock.now();
        world
            .repos
            .entry(repo.to_owned())
            .or_default()
            .statuses
            .push(CommitStatusData {
                id,
                sha: sha.to_owned(),
                context: context.to_owned(),
                state: state.to_owned(),
                description: description.to_owned(),
                created_at: now,
            });
        id
    }

    /// `reviewer` reviews pull request `number` at its head commit: `state` is GitHub's
    /// (`CHANGES_REQUESTED`, `APPROVED`, `COMMENTED`), `comments` are (path, line, text).
    /// Returns the review's id.
    ///
    /// # Panics
    /// When `number` is not a pull request of `repo` (a test's mistake).
    pub fn add_review(
        &self,
        repo: &str,
        number: u64,
        reviewer: &str,
        state: &str,
        body: &str,
        comments: &[(&str, u64, &str)],
    ) -> u64 {
        let sha = self.pull_head_sha(repo, number);
        let mut world = self.world();
        let id = world.next_id();
        let now = world.clock.now();
        let comments = comments
            .iter()
            .map(|(path, line, text)| (world.next_id(), (*path).to_owned(), *line, (*text).to_owned()))
            .collect();
        world
            .repos
            .entry(repo.to_owned())
            .or_default()
            .reviews
            .push(ReviewData {
                id,
                pull: number,
                reviewer: reviewer.to_owned(),
                state: state.to_owned(),
                body: body.to_owned(),
                commit_id: sha,
                submitted_at: now,
                comments,
            });
        id
    }

    /// Merges pull request `number` (it is closed and merged, as GitHub shows a merged one).
    ///
    /// # Panics
    /// When `number` is not a pull request of `repo` (a test's mistake).
    pub fn merge_pull_request(&self, repo: &str, number: u64) {
        let mut world = self.world();
        let now = world.clock.now();
        let issue = world.repos.get_mut(repo).and_then(|r| r.issues.get_mut(&number));
        let issue = issue.expect("a pull request of the stand-in");
        issue.open = false;
        issue.updated_at = now;
        issue
            .pull
            .as_mut()
            .expect("a pull request of the stand-in")
            .merged_at = Some(now);
        // As GitHub does: the issues its body closes (`Closes #N`, `fixes #N`, ...) close too.
        let closed = closing_references(&issue.body);
        if let Some(repo) = world.repos.get_mut(repo) {
            for n in closed {
                if let Some(linked) = repo.issues.get_mut(&n).filter(|i| i.pull.is_none()) {
                    linked.open = false;
                    linked.updated_at = now;
                }
            }
        }
    }

    /// `actor` adds `label` to the issue (recorded as a `labeled` event).
    pub fn add_label(&self, repo: &str, number: u64, label: &str, actor: &str) {
        self.with_issue(repo, number, |issue, event| {
            if !issue.labels.iter().any(|l| l == label) {
                issue.labels.push(label.to_owned());
            }
            issue.events.push(IssueEventData {
                event: "labeled",
                actor: actor.to_owned(),
                label: Some(label.to_owned()),
                ..event
            });
        });
    }

    /// `actor` removes `label` from the issue (recorded as an `unlabeled` event).
    pub fn remove_label(&self, repo: &str, number: u64, label: &str, actor: &str) {
        self.with_issue(repo, number, |issue, event| {
            issue.labels.retain(|l| l != label);
            issue.events.push(IssueEventData {
                event: "unlabeled",
                actor: actor.to_owned(),
                label: Some(label.to_owned()),
                ..event
            });
        });
    }

    /// `editor` replaces the issue's body (GitHub keeps no event for it; GraphQL's `editor` and
    /// `lastEditedAt` show the last edit).
    pub fn edit_issue_body(&self, repo: &str, number: u64, editor: &str, body: &str) {
        self.with_issue(repo, number, |issue, event| {
            issue.body = body.to_owned();
            issue.body_edit = Some((editor.to_owned(), event.created_at));
        });
    }

    /// `actor` changes the issue's title (recorded as a `renamed` event with the old and new title).
    pub fn rename_issue(&self, repo: &str, number: u64, actor: &str, title: &str) {
        self.with_issue(repo, number, |issue, event| {
            let from = std::mem::replace(&mut issue.title, title.to_owned());
            issue.events.push(IssueEventData {
                event: "renamed",
                actor: actor.to_owned(),
                rename: Some((from, title.to_owned())),
                ..event
            });
        });
    }

    /// `actor` closes the issue.
    pub fn close_issue(&self, repo: &str, number: u64, actor: &str) {
        self.with_issue(repo, number, |issue, event| {
            issue.open = false;
            issue.events.push(IssueEventData {
                event: "closed",
                actor: actor.to_owned(),
                ..event
            });
        });
    }

    fn with_issue(&self, repo: &str, number: u64, change: impl FnOnce(&mut IssueData, IssueEventData)) {
        let mut world = self.world();
        let id = world.next_id();
        let now = world.clock.now();
        let event = IssueEventData {
            id,
            event: "",
            actor: String::new(),
            label: None,
            rename: None,
            created_at: now,
        };
        let issue = world
            .repos
            .get_mut(repo)
            .and_then(|r| r.issues.get_mut(&number))
            .unwrap_or_else(|| panic!("the stand-in has no issue {repo}#{number}"));
        change(issue, event);
        issue.updated_at = now;
    }

    /// Deletes the issue (as an admin would): from now on GitHub answers 410 Gone for it and its
    /// comments and events, and it is no longer listed.
    pub fn delete_issue(&self, repo: &str, number: u64) {
        let mut world = self.world();
        let data = world.repos.entry(repo.to_owned()).or_default();
        data.issues.remove(&number);
        data.comments.retain(|c| c.issue != number);
        data.deleted.insert(number);
    }

    /// Transfers the issue to `to_repo`, where it gets the next free number (returned): from now
    /// on its old address answers 301 with a `Location` pointing at the new one, and it is no
    /// longer listed in `repo`. Labels and comments move with it.
    pub fn transfer_issue(&self, repo: &str, number: u64, to_repo: &str) -> u64 {
        let mut world = self.world();
        let data = world.repos.entry(repo.to_owned()).or_default();
        let Some(mut issue) = data.issues.remove(&number) else {
            panic!("the stand-in has no issue {repo}#{number}");
        };
        let (comments, kept): (Vec<CommentData>, Vec<CommentData>) = std::mem::take(&mut data.comments)
            .into_iter()
            .partition(|c| c.issue == number);
        data.comments = kept;
        let target = world.repos.entry(to_repo.to_owned()).or_default();
        let new_number = target.issues.keys().next_back().copied().unwrap_or(0) + 1;
        issue.number = new_number;
        target.issues.insert(new_number, issue);
        target.comments.extend(comments.into_iter().map(|c| CommentData {
            issue: new_number,
            ..c
        }));
        world
            .repos
            .entry(repo.to_owned())
            .or_default()
            .transferred
            .insert(number, (to_repo.to_owned(), new_number));
        new_number
    }

    /// The issue's labels.
    pub fn labels(&self, repo: &str, number: u64) -> Vec<String> {
        self.world()
            .repos
            .get(repo)
            .and_then(|r| r.issues.get(&number))
            .map(|i| i.labels.clone())
            .unwrap_or_default()
    }

    /// The bodies of the issue's comments, oldest first.
    pub fn comments(&self, repo: &str, number: u64) -> Vec<String> {
        self.world()
            .repos
            .get(repo)
            .map(|r| {
                r.comments
                    .iter()
                    .filter(|c| c.issue == number)
                    .map(|c| c.body.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The authors of the issue's comments, oldest first (matching [`Self::comments`]).
    pub fn comment_authors(&self, repo: &str, number: u64) -> Vec<String> {
        self.world()
            .repos
            .get(repo)
            .map(|r| {
                r.comments
                    .iter()
                    .filter(|c| c.issue == number)
                    .map(|c| c.author.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds a comment by `author` directly (as a person would), returning its id.
    pub fn add_comment(&self, repo: &str, number: u64, author: &str, body: &str) -> u64 {
        let mut world = self.world();
        let id = world.next_id();
        let now = world.clock.now();
        let data = world.repos.entry(repo.to_owned()).or_default();
        if let Some(issue) = data.issues.get_mut(&number) {
            issue.updated_at = now;
        }
        data.comments.push(CommentData {
            id,
            issue: number,
            body: body.to_owned(),
            author: author.to_owned(),
            created_at: now,
            updated_at: now,
            reactions: Vec::new(),
        });
        id
    }

    /// Edits the comment `id` of `repo` (as its author would): its body changes and its
    /// `updated_at` moves, so a `since` listing shows it again.
    pub fn edit_comment(&self, repo: &str, id: u64, body: &str) {
        let mut world = self.world();
        let now = world.clock.now();
        if let Some(comment) = world
            .repos
            .get_mut(repo)
            .and_then(|r| r.comments.iter_mut().find(|c| c.id == id))
        {
            comment.body = body.to_owned();
            comment.updated_at = now;
        }
    }

    /// The reactions on the comment `id` of `repo`: (login, content), oldest first.
    pub fn reactions(&self, repo: &str, id: u64) -> Vec<(String, String)> {
        self.world()
            .repos
            .get(repo)
            .and_then(|r| r.comments.iter().find(|c| c.id == id))
            .map(|c| c.reactions.clone())
            .unwrap_or_default()
    }

    /// Makes the next `count` reaction requests fail with 502 (afk must try them again later).
    pub fn fail_reactions(&self, count: u32) {
        self.world().failing_reactions = count;
    }

    /// Refuses the next edit (`PATCH`) of a comment on issue `number` of `repo` as `how` says;
    /// the comment stays as it was. Each call refuses one edit.
    pub fn refuse_comment_edit(&self, repo: &str, number: u64, how: EditRefusal) {
        self.world().refused_edits.push((repo.to_owned(), number, how));
    }

    /// Fails every request about the labels of issue `number` of `repo` (reading, adding or
    /// removing them) with `502 Bad Gateway` from now on; the labels stay as they are.
    pub fn fail_labels(&self, repo: &str, number: u64) {
        self.world().failing_labels.push((repo.to_owned(), number));
    }

    /// The body of an `issue_comment` `created` webhook delivery (GitHub's shape) for the comment
    /// `id` of `repo` as it is now; `None` when there is no such comment.
    pub fn issue_comment_payload(&self, repo: &str, id: u64) -> Option<serde_json::Value> {
        let world = self.world();
        let data = world.repos.get(repo)?;
        let comment = data.comments.iter().find(|c| c.id == id)?;
        let issue = data.issues.get(&comment.issue)?;
        let mut issue_json = serde_json::json!({
            "number": issue.number,
            "title": issue.title,
            "state": if issue.open { "open" } else { "closed" },
            "user": { "login": issue.author },
        });
        if issue.pull.is_some() {
            issue_json["pull_request"] = serde_json::json!({
                "url": format!("{}/repos/{repo}/pulls/{}", world.base, issue.number),
            });
        }
        Some(serde_json::json!({
            "action": "created",
            "issue": issue_json,
            "comment": server::comment_json(&world.base, repo, comment),
            "repository": { "full_name": repo },
            "sender": { "login": comment.author },
        }))
    }

    /// Puts a file on the default branch (e.g. `AFK.md`).
    pub fn set_file(&self, repo: &str, path: &str, content: &str) {
        self.world()
            .repos
            .entry(repo.to_owned())
            .or_default()
            .files
            .insert(path.to_owned(), content.to_owned());
    }

    /// Every comment created or edited on `repo` through the API so far, oldest first, with when
    /// each was applied (wall clock).
    pub fn comment_writes(&self, repo: &str) -> Vec<CommentWrite> {
        self.world()
            .repos
            .get(repo)
            .map(|r| r.comment_writes.clone())
            .unwrap_or_default()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.world().requests.clone()
    }

    /// How many requests were charged against the rate limit.
    pub fn charged_requests(&self) -> usize {
        self.world().requests.iter().filter(|r| r.charged).count()
    }
}

pub(crate) use crate::lock;

/// The issue numbers a pull request's body closes on merge, as GitHub reads its keywords
/// (`close`, `fix`, `resolve` and their forms, then `#N`), case-insensitively.
fn closing_references(body: &str) -> Vec<u64> {
    const KEYWORDS: [&str; 9] = [
        "close", "closes", "closed", "fix", "fixes", "fixed", "resolve", "resolves", "resolved",
    ];
    let words: Vec<&str> = body.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| KEYWORDS.contains(&w[0].trim_end_matches(':').to_lowercase().as_str()))
        .filter_map(|w| w[1].strip_prefix('#'))
        .filter_map(|n| n.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .collect()
}
