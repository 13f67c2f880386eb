//! The status surface: afk's HTTP listener (`[http] listen`, `127.0.0.1:8787` by default). It
//! serves, read from the ledger, what afk did, does and needs a person for:
//!
//! - `GET /api/v1/state`, `GET /api/v1/jobs`, `GET /api/v1/OWNER/NAME/N` (one issue) and
//!   `POST /api/v1/refresh`: a JSON API shaped like Symphony's (docs/api.md); the actions
//!   `POST /api/v1/OWNER/NAME/N/requeue|cancel` behind `[http.token]`;
//! - `GET /metrics`: Prometheus metrics;
//! - `GET /healthz` (alive) and `GET /readyz` (leads, the ledger answers, T3 was reachable);
//! - `GET /`: the dashboard (embedded assets, live through `GET /api/v1/events`);
//! - `POST /webhooks/github` when a webhook secret is configured (verified by `afk-github`).
//!
//! # Layout
//! - `mod.rs`: [`Hub`], what the handlers share with the control plane ([`PlaneLink`]): the
//!   ledger, the metrics, health, the refresh trigger and the queue of actions;
//! - `views.rs`: the JSON views, built from the ledger's overviews (also `afk status --json` and
//!   `afk jobs --json`);
//! - `api.rs`: the routes and their JSON errors; `auth.rs`: the actions' bearer token;
//! - `metrics.rs`: the Prometheus registry; `serve.rs`: the listener and its limits;
//! - `dashboard.rs` and `assets/`: the page.
//!
//! **Contracts:** the surface only reads the ledger; the actions are carried out by the control
//! plane through its one recorder (the state machine decides whether they apply); nothing a client
//! sends can panic a handler; no secret appears in any answer.

mod api;
mod auth;
mod dashboard;
pub mod metrics;
mod serve;
pub mod views;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afk_core::IssueKey;
use afk_github::WebhookEvent;
use afk_ledger::{Job, Ledger};
use afk_secrets::SecretProvider;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch, Notify};

pub use metrics::Metrics;
pub use serve::{serve, Limits, Listener};

/// Where the dashboard and the API link to: T3's web UI and each issue's page.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// T3's web UI base URL (`t3.web_url`, else `t3.url`), without userinfo: a thread is at
    /// `{t3_web}/{thread_id}`.
    pub t3_web: Option<String>,
    /// GitHub's web root for issues from GitHub (`https://github.com`, or a GitHub Enterprise
    /// host's root).
    pub github_web: Option<String>,
}

/// Whether this process leads the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Not running the loop (yet): tests driving ticks by hand, or before `afk run` asked.
    NotRunning,
    /// Another `afk run` leads the ledger; this one stands by.
    StandingBy {
        /// Why, for `/readyz`.
        why: String,
    },
    /// This process leads the ledger and runs the loop.
    Leading,
}

/// What `/readyz` and the metrics know of the loop.
#[derive(Debug, Clone)]
struct Health {
    leadership: Leadership,
    /// The last tick: when it ended and whether T3 was reachable.
    last_tick: Option<(DateTime<Utc>, bool)>,
    /// The last tick failed on the ledger: its error.
    ledger_error: Option<String>,
}

/// A person's action on a job, carried out by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Queue a job that ended without success again, with a fresh budget.
    Requeue,
    /// Cancel the job; its thread is stopped as for a removed issue.
    Cancel,
}

impl ActionKind {
    /// The action's name in paths and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Requeue => "requeue",
            ActionKind::Cancel => "cancel",
        }
    }
}

/// Why an action was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// The ledger has no job for the issue.
    NotFound,
    /// The state machine does not allow it in the job's state.
    NotAllowed(String),
    /// The ledger failed.
    Ledger(String),
}

/// An action waiting for the control plane.
#[derive(Debug)]
pub struct Action {
    /// The job's issue.
    pub issue: IssueKey,
    /// What to do.
    pub kind: ActionKind,
    /// The outcome: the job as recorded.
    pub reply: oneshot::Sender<Result<Job, ActionError>>,
}

/// What the HTTP handlers share, with each other and with the control plane.
pub struct Hub {
    ledger: Ledger,
    metrics: Arc<Metrics>,
    health: Mutex<Health>,
    refresh: Arc<Notify>,
    /// A refresh is asked for and not yet taken by the loop: further requests coalesce into it.
    refresh_pending: Arc<AtomicBool>,
    actions: mpsc::Sender<Action>,
    token: Option<Arc<dyn SecretProvider>>,
    links: Links,
    /// Bumped after each tick that recorded something (and on actions): the dashboard's live
    /// updates follow it.
    changes: watch::Sender<u64>,
    /// Each live attempt's worktree as T3 last showed it to this process, by thread id (the
    /// ledger does not keep it: T3 chooses it).
    worktrees: Mutex<HashMap<String, String>>,
}

/// How many worktree paths the hub remembers at most (it forgets them all past that: they are a
/// convenience of the issue view).
const WORKTREES_KEPT: usize = 10_000;

/// The control plane's end of the [`Hub`]: the actions to carry out, the refresh trigger, and
/// where to say what a tick did.
pub struct PlaneLink {
    hub: Arc<Hub>,
    actions: mpsc::Receiver<Action>,
}

impl Hub {
    /// A hub over `ledger`; actions need `token` (none: actions are off).
    pub fn new(
        ledger: Ledger,
        token: Option<Arc<dyn SecretProvider>>,
        links: Links,
    ) -> (Arc<Hub>, PlaneLink) {
        let (actions_tx, actions_rx) = mpsc::channel(64);
        let hub = Arc::new(Hub {
            ledger,
            metrics: Arc::new(Metrics::new()),
            health: Mutex::new(Health {
                leadership: Leadership::NotRunning,
                last_tick: None,
                ledger_error: None,
            }),
            refresh: Arc::new(Notify::new()),
            refresh_pending: Arc::new(AtomicBool::new(false)),
            actions: actions_tx,
            token,
            links,
            changes: watch::channel(0).0,
            worktrees: Mutex::new(HashMap::new()),
        });
        let link = PlaneLink {
            hub: hub.clone(),
            actions: actions_rx,
        };
        (hub, link)
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Says whether this process leads the ledger.
    pub fn set_leadership(&self, leadership: Leadership) {
        self.metrics.set_leader(leadership == Leadership::Leading);
        self.health().leadership = leadership;
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // A handler that panicked while holding the lock left plain data behind: still usable.
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the loop to tick now; `true` when an earlier request is still pending (this one
    /// coalesced into it).
    fn request_refresh(&self) -> bool {
        let coalesced = self.refresh_pending.swap(true, Ordering::SeqCst);
        self.refresh.notify_one();
        coalesced
    }

    /// Hands `kind` on `issue` to the control plane and waits (up to `wait`) for its outcome;
    /// `None` when the control plane did not take it in time (it is not running, or stands by).
    async fn act(
        &self,
        issue: IssueKey,
        kind: ActionKind,
        wait: Duration,
    ) -> Option<Result<Job, ActionError>> {
        let (reply, outcome) = oneshot::channel();
        let action = Action { issue, kind, reply };
        tokio::time::timeout(wait, async {
            self.actions.send(action).await.ok()?;
            self.refresh.notify_one();
            outcome.await.ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// The worktree T3 showed for `thread`, if this process saw it.
    pub fn worktree(&self, thread: &str) -> Option<String> {
        self.worktrees
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(thread)
            .cloned()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl PlaneLink {
    /// The metrics the control plane updates.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.hub.metrics.clone()
    }

    /// The actions waiting, taken without waiting.
    pub fn take_actions(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Ok(action) = self.actions.try_recv() {
            actions.push(action);
        }
        actions
    }

    /// Resolves when someone asked for a tick now (`POST /api/v1/refresh`, an action).
    pub async fn refresh_requested(&self) {
        self.hub.refresh.notified().await;
    }

    /// Notes that a tick starts: the refresh asked so far is being served.
    pub fn tick_started(&self) {
        self.hub.refresh_pending.store(false, Ordering::SeqCst);
    }

    /// Notes a finished tick: `recorded` transitions, T3 reachable or not, how long it took,
    /// whether T3's view came from the shell stream (`None`: no stream configured).
    pub fn tick_finished(
        &self,
        recorded: usize,
        t3_reachable: bool,
        took: Duration,
        streaming: Option<bool>,
    ) {
        let now = Utc::now();
        {
            let mut health = self.hub.health();
            health.last_tick = Some((now, t3_reachable));
            health.ledger_error = None;
        }
        self.hub.metrics.tick(took, t3_reachable, streaming);
        if recorded > 0 {
            self.hub.changed();
        }
    }

    /// Notes a tick that failed on the ledger.
    pub fn tick_failed(&self, error: &str, took: Duration) {
        self.hub.health().ledger_error = Some(error.to_owned());
        self.hub.metrics.tick_failed(took);
    }

    /// Notes the worktrees T3 shows for live attempts (thread id, path).
    pub fn saw_worktrees(&self, seen: impl Iterator<Item = (String, String)>) {
        let mut worktrees = self.hub.worktrees.lock().unwrap_or_else(|p| p.into_inner());
        for (thread, path) in seen {
            if worktrees.len() >= WORKTREES_KEPT && !worktrees.contains_key(&thread) {
                worktrees.clear();
            }
            worktrees.insert(thread, path);
        }
    }

    /// Notes that an action changed a job.
    pub fn acted(&self) {
        self.hub.changed();
    }
}

/// The listener's routes; `webhook`: the secret GitHub's deliveries are verified with and where
/// verified ones go.
pub fn router(
    hub: Arc<Hub>,
    webhook: Option<(Arc<dyn SecretProvider>, mpsc::Sender<WebhookEvent>)>,
    limits: &Limits,
) -> axum::Router {
    let router = api::router(hub);
    let router = match webhook {
        Some((secret, events)) => router.merge(afk_github::webhook_router(secret, events)),
        None => router,
    };
    // After the merge: a slow webhook body is cut off like any other.
    api::with_deadline(router, limits)
}
