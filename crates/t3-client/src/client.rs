//! [`T3Client`]: the seed adapter's contract on T3's real wire.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use afk_secrets::{Freshness, SecretProvider};
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::error::{excerpt, T3Error};
use crate::ids::{CommandId, MessageId, ProjectId, ThreadId, TurnId};
use crate::preamble::{message_text, STANDING_RULES};
use crate::rpc::{RpcConnection, RpcSettings};
use crate::transport::{Method, Request, Transport};
use crate::wire::rpc::DISPATCH_COMMAND;
use crate::wire::vcs::{ListRefs, RefPage, RemoveWorktree, VcsRef, VCS_LIST_REFS, VCS_REMOVE_WORKTREE};
use crate::wire::{
    t3_text_len, BootstrapThread, ClientCommand, DispatchResult, EnvironmentDescriptor, ErrorBody,
    InteractionMode, MessageRole, ModelSelection, NonEmptyString, PrepareWorktree, ProjectCreate, ReadModel,
    RuntimeMode, ServerConfig, ShellSnapshot, ThreadCreate, ThreadDetail, ThreadRef, ThreadSessionStop,
    ThreadTurnInterrupt, ThreadTurnStart, Timestamp, TurnBootstrap, TurnMessage, MAX_INPUT_CHARS,
    SERVER_GET_CONFIG,
};

const DISPATCH_PATH: &str = "/api/orchestration/dispatch";
const SNAPSHOT_PATH: &str = "/api/orchestration/snapshot";
const THREADS_PATH: &str = "/api/orchestration/threads";
const SHELL_PATH: &str = "/api/orchestration/shell";
const ENVIRONMENT_PATH: &str = "/.well-known/t3/environment";

/// One issue of one repository, as the client names it in thread titles and branches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRef {
    /// `OWNER/NAME`.
    pub repo: String,
    /// The issue number.
    pub number: u64,
    /// The issue's title, when known.
    pub title: Option<String>,
}

impl IssueRef {
    /// `OWNER/NAME#N: <title>`, or `OWNER/NAME#N` when no title is known.
    pub fn thread_title(&self) -> String {
        match self.title.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(title) => format!("{}#{}: {}", self.repo, self.number, title),
            None => format!("{}#{}", self.repo, self.number),
        }
    }
}

/// How afk's threads are set up. The defaults are what every afk thread used in the seed.
#[derive(Clone, PartialEq)]
pub struct AgentSettings {
    /// T3's provider instance (default `claudeAgent`).
    pub instance_id: String,
    /// The model (default `claude-sonnet-4-5`).
    pub model: String,
    /// Default `full-access`: nobody is at the keyboard to approve anything.
    pub runtime_mode: RuntimeMode,
    /// Default `default` (act, do not only plan).
    pub interaction_mode: InteractionMode,
    /// The standing rules put before every prompt (default [`STANDING_RULES`]).
    pub preamble: String,
    /// Branch names are this prefix followed by `issue-N` (default `afk/`).
    pub branch_prefix: String,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            instance_id: "claudeAgent".into(),
            model: "claude-sonnet-4-5".into(),
            runtime_mode: RuntimeMode::FullAccess,
            interaction_mode: InteractionMode::Default,
            preamble: STANDING_RULES.into(),
            branch_prefix: "afk/".into(),
        }
    }
}

impl fmt::Debug for AgentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSettings")
            .field("instance_id", &self.instance_id)
            .field("model", &self.model)
            .field("runtime_mode", &self.runtime_mode)
            .field("interaction_mode", &self.interaction_mode)
            .field("preamble_chars", &self.preamble.len())
            .field("branch_prefix", &self.branch_prefix)
            .finish()
    }
}

impl AgentSettings {
    /// The branch for `issue`: the prefix followed by `issue-N`.
    pub fn branch_for(&self, issue: &IssueRef) -> String {
        format!("{}issue-{}", self.branch_prefix, issue.number)
    }

    fn model_selection(&self) -> Result<ModelSelection, T3Error> {
        Ok(ModelSelection {
            instance_id: NonEmptyString::new(self.instance_id.clone())
                .ok_or_else(|| T3Error::InvalidInput("the provider instance id is empty".into()))?,
            model: NonEmptyString::new(self.model.clone())
                .ok_or_else(|| T3Error::InvalidInput("the model is empty".into()))?,
            options: None,
        })
    }
}

/// The ids of one attempt's two commands. Chosen once, before the first request, stored by the
/// caller, and reused on every retry: T3 answers a repeated `commandId` with its original result,
/// so a retry after a crash can never create a second thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchIds {
    /// The thread to create.
    pub thread_id: ThreadId,
    /// The `thread.create` command.
    pub create_command_id: CommandId,
    /// The `thread.turn.start` command.
    pub turn_command_id: CommandId,
    /// The turn's user message.
    pub message_id: MessageId,
}

impl DispatchIds {
    /// Fresh random ids.
    pub fn generate() -> Self {
        Self {
            thread_id: ThreadId::generate(),
            create_command_id: CommandId::generate(),
            turn_command_id: CommandId::generate(),
            message_id: MessageId::generate(),
        }
    }
}

/// Everything one dispatch sends, decided before the first request. Build it with
/// [`T3Client::plan`], which refuses a prompt over T3's limit.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchPlan {
    /// The ids, reused on every retry.
    pub ids: DispatchIds,
    /// The repository's T3 project.
    pub project_id: ProjectId,
    /// The thread's title.
    pub title: String,
    /// The thread's branch.
    pub branch: String,
    /// Where the thread works, for `thread.create` over HTTP (T3 creates nothing there: the
    /// path must be prepared by other means); `None`: the project's checkout.
    pub worktree_path: Option<String>,
    /// The turn's message text: preamble and prompt.
    pub text: String,
}

/// Which dispatch request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchStage {
    /// `thread.create` failed: no turn was sent; the thread may or may not exist (a timeout).
    Create,
    /// `thread.create` succeeded and `thread.turn.start` failed.
    Turn,
    /// The one worktree-isolated `thread.turn.start` ([`T3Client::dispatch_isolated`]) failed:
    /// T3 deletes a half-made thread itself, and a retry with the same ids is safe.
    Bootstrap,
    /// Reading or tidying T3's git before finishing a half-made thread (`vcs.listRefs`,
    /// `vcs.removeWorktree`: [`T3Client::finish_isolated`]) failed: nothing was sent for the
    /// thread itself, so the same finish can be tried again later.
    Recovery,
}

/// Where T3 makes a worktree-isolated thread's git worktree ([`T3Client::dispatch_isolated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreePlan {
    /// The repository checkout T3 adds the worktree to (the project's workspace root, as T3 sees
    /// it).
    pub project_cwd: String,
    /// The branch the thread's new branch starts from.
    pub base_branch: String,
    /// Run the project's setup script in the new worktree before the turn.
    pub run_setup_script: bool,
}

/// How many pages of `vcs.listRefs` are read looking for one branch before it is taken as absent.
const MAX_REF_PAGES: usize = 20;
/// Refs per `vcs.listRefs` page (T3's most).
const REFS_PER_PAGE: u32 = 200;

/// What a worktree bootstrap asks of T3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bootstrap {
    /// Create the thread, add its worktree on a new branch, run the setup script, start the turn.
    CreateThread,
    /// The same for a thread that exists (T3 left it half made).
    FinishThread,
    /// The same for a thread that exists, checking out its existing branch (a bootstrap cut off
    /// after `git worktree add` made it).
    AdoptBranch,
}

/// A failed dispatch: the stage and the error.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct DispatchError {
    /// Where it failed.
    pub stage: DispatchStage,
    /// Why.
    #[source]
    pub error: T3Error,
}

/// A client for one T3 server.
///
/// The transport and the bearer provider are injected: nothing here opens a socket on its own,
/// and the bearer is asked for on **every** request because T3's operate token expires hourly and
/// is refreshed out of band. A 401 asks the provider again, bypassing its cache, and retries once.
/// No other retry happens here: the caller owns the retry policy.
///
/// Commands may also go over T3's WebSocket RPC ([`T3Client::send_command_rpc`],
/// [`T3Client::dispatch_isolated`]): clones share one lazily connected [`RpcConnection`], replaced
/// by a new one on the next call once it died.
#[derive(Clone)]
pub struct T3Client {
    base_url: String,
    transport: Arc<dyn Transport>,
    bearer: Arc<dyn SecretProvider>,
    settings: AgentSettings,
    projects: BTreeMap<String, ProjectId>,
    rpc_settings: RpcSettings,
    rpc: Arc<tokio::sync::Mutex<Option<RpcConnection>>>,
}

impl fmt::Debug for T3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("T3Client")
            .field("base_url", &self.base_url)
            .field("bearer", &self.bearer)
            .field("settings", &self.settings)
            .field("projects", &self.projects)
            .field("rpc_settings", &self.rpc_settings)
            .finish()
    }
}

impl T3Client {
    /// A client for the T3 at `base_url` (a trailing slash is fine).
    pub fn new(base_url: &str, transport: Arc<dyn Transport>, bearer: Arc<dyn SecretProvider>) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            transport,
            bearer,
            settings: AgentSettings::default(),
            projects: BTreeMap::new(),
            rpc_settings: RpcSettings::default(),
            rpc: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Replaces the WebSocket RPC's timing (pings, timeouts) for connections made from now on.
    pub fn with_rpc_settings(mut self, settings: RpcSettings) -> Self {
        self.rpc_settings = settings;
        self
    }

    /// The WebSocket RPC's timing.
    pub fn rpc_settings(&self) -> RpcSettings {
        self.rpc_settings
    }

    /// The bearer provider, so that a [`crate::ShellFeed`] can connect with the same credentials.
    pub fn bearer(&self) -> Arc<dyn SecretProvider> {
        self.bearer.clone()
    }

    /// Replaces the thread settings (instance, model, modes, preamble, branch prefix).
    pub fn with_settings(mut self, settings: AgentSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Maps repository `OWNER/NAME` to its T3 project, for [`T3Client::dispatch`].
    pub fn with_project(mut self, repo: impl Into<String>, project: ProjectId) -> Self {
        self.projects.insert(repo.into(), project);
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The thread settings in use.
    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    /// The seed's contract: spawn one worker thread for `issue` of `repo` with `prompt` and return
    /// its id, after exactly two POSTs (`thread.create`, then `thread.turn.start`). The repository
    /// must have been mapped with [`T3Client::with_project`]. Ids are generated here; use
    /// [`T3Client::plan`] and [`T3Client::dispatch_plan`] to choose or reuse them.
    pub async fn dispatch(&self, repo: &str, issue: u64, prompt: &str) -> Result<ThreadId, DispatchError> {
        let project = self.projects.get(repo).cloned().ok_or_else(|| DispatchError {
            stage: DispatchStage::Create,
            error: T3Error::InvalidInput(format!("no T3 project is configured for repository {repo}")),
        })?;
        let issue = IssueRef {
            repo: repo.to_owned(),
            number: issue,
            title: None,
        };
        let plan = self
            .plan(&issue, project, prompt, None)
            .map_err(|error| DispatchError {
                stage: DispatchStage::Create,
                error,
            })?;
        self.dispatch_plan(&plan).await
    }

    /// Decides everything a dispatch will send: the ids (`ids`, or fresh ones), the title, the
    /// branch and the message text (preamble, then `prompt`). Refuses a text over T3's limit, so
    /// that nothing is sent for it.
    pub fn plan(
        &self,
        issue: &IssueRef,
        project_id: ProjectId,
        prompt: &str,
        ids: Option<DispatchIds>,
    ) -> Result<DispatchPlan, T3Error> {
        let text = message_text(&self.settings.preamble, prompt);
        let len = t3_text_len(&text);
        if len > MAX_INPUT_CHARS {
            return Err(T3Error::PromptTooLong {
                len,
                limit: MAX_INPUT_CHARS,
            });
        }
        if prompt.trim().is_empty() {
            return Err(T3Error::InvalidInput("the prompt is empty".into()));
        }
        Ok(DispatchPlan {
            ids: ids.unwrap_or_else(DispatchIds::generate),
            project_id,
            title: issue.thread_title(),
            branch: self.settings.branch_for(issue),
            worktree_path: None,
            text,
        })
    }

    /// Sends `plan`: `thread.create`, then, only if T3 accepted it with a valid
    /// `{"sequence": n}`, `thread.turn.start`. Returns the thread's id.
    pub async fn dispatch_plan(&self, plan: &DispatchPlan) -> Result<ThreadId, DispatchError> {
        self.create_thread(plan).await.map_err(|error| DispatchError {
            stage: DispatchStage::Create,
            error,
        })?;
        self.start_turn(plan).await.map_err(|error| DispatchError {
            stage: DispatchStage::Turn,
            error,
        })?;
        Ok(plan.ids.thread_id.clone())
    }

    /// The first half of a dispatch: `thread.create` with the plan's ids.
    pub async fn create_thread(&self, plan: &DispatchPlan) -> Result<DispatchResult, T3Error> {
        let command = ClientCommand::ThreadCreate(ThreadCreate {
            command_id: plan.ids.create_command_id.clone(),
            thread_id: plan.ids.thread_id.clone(),
            project_id: plan.project_id.clone(),
            title: thread_title(plan)?,
            model_selection: self.settings.model_selection()?,
            runtime_mode: self.settings.runtime_mode,
            interaction_mode: self.settings.interaction_mode,
            branch: Some(plan.branch.clone()).filter(|b| !b.is_empty()),
            worktree_path: plan.worktree_path.clone(),
            created_at: Timestamp::now(),
        });
        self.send_command(&command).await
    }

    /// The second half of a dispatch: `thread.turn.start` with the plan's ids and text.
    pub async fn start_turn(&self, plan: &DispatchPlan) -> Result<DispatchResult, T3Error> {
        let command = self.user_turn(
            &plan.ids.thread_id,
            plan.ids.turn_command_id.clone(),
            plan.ids.message_id.clone(),
            &plan.text,
            None,
        )?;
        self.send_command(&command).await
    }

    /// A follow-up turn on an existing thread: `text` is sent as is (no preamble; the thread has
    /// it already).
    pub async fn follow_up(
        &self,
        thread: &ThreadId,
        text: &str,
        command_id: CommandId,
        message_id: MessageId,
    ) -> Result<DispatchResult, T3Error> {
        let command = self.user_turn(thread, command_id, message_id, text, None)?;
        self.send_command(&command).await
    }

    /// `thread.turn.start` with `text` as the user's message, refused before anything is sent
    /// when the text is over T3's limit.
    fn user_turn(
        &self,
        thread: &ThreadId,
        command_id: CommandId,
        message_id: MessageId,
        text: &str,
        bootstrap: Option<TurnBootstrap>,
    ) -> Result<ClientCommand, T3Error> {
        let len = t3_text_len(text);
        if len > MAX_INPUT_CHARS {
            return Err(T3Error::PromptTooLong {
                len,
                limit: MAX_INPUT_CHARS,
            });
        }
        Ok(ClientCommand::ThreadTurnStart(ThreadTurnStart {
            command_id,
            thread_id: thread.clone(),
            message: TurnMessage {
                message_id,
                role: MessageRole::User,
                text: text.to_owned(),
                attachments: Vec::new(),
            },
            model_selection: None,
            runtime_mode: self.settings.runtime_mode,
            interaction_mode: self.settings.interaction_mode,
            bootstrap,
            created_at: Timestamp::now(),
        }))
    }

    /// Interrupts the thread's running turn (`turn`, or whichever is running).
    pub async fn interrupt_turn(
        &self,
        thread: &ThreadId,
        turn: Option<&TurnId>,
        command_id: CommandId,
    ) -> Result<DispatchResult, T3Error> {
        self.send_command(&ClientCommand::ThreadTurnInterrupt(ThreadTurnInterrupt {
            command_id,
            thread_id: thread.clone(),
            turn_id: turn.cloned(),
            created_at: Timestamp::now(),
        }))
        .await
    }

    /// Stops the thread's provider session.
    pub async fn stop_session(
        &self,
        thread: &ThreadId,
        command_id: CommandId,
    ) -> Result<DispatchResult, T3Error> {
        self.send_command(&ClientCommand::ThreadSessionStop(ThreadSessionStop {
            command_id,
            thread_id: thread.clone(),
            created_at: Timestamp::now(),
        }))
        .await
    }

    /// Archives the thread.
    pub async fn archive_thread(
        &self,
        thread: &ThreadId,
        command_id: CommandId,
    ) -> Result<DispatchResult, T3Error> {
        self.send_command(&ClientCommand::ThreadArchive(ThreadRef {
            command_id,
            thread_id: thread.clone(),
        }))
        .await
    }

    /// Deletes the thread (T3 stops its session too).
    pub async fn delete_thread(
        &self,
        thread: &ThreadId,
        command_id: CommandId,
    ) -> Result<DispatchResult, T3Error> {
        self.send_command(&ClientCommand::ThreadDelete(ThreadRef {
            command_id,
            thread_id: thread.clone(),
        }))
        .await
    }

    /// Creates a project for a repository checkout at `workspace_root`.
    pub async fn create_project(
        &self,
        project: &ProjectId,
        title: &str,
        workspace_root: &str,
        command_id: CommandId,
    ) -> Result<DispatchResult, T3Error> {
        let title = NonEmptyString::new(title)
            .ok_or_else(|| T3Error::InvalidInput("the project title is empty".into()))?;
        let workspace_root = NonEmptyString::new(workspace_root)
            .ok_or_else(|| T3Error::InvalidInput("the workspace root is empty".into()))?;
        self.send_command(&ClientCommand::ProjectCreate(ProjectCreate {
            command_id,
            project_id: project.clone(),
            title,
            workspace_root,
            create_workspace_root_if_missing: None,
            default_model_selection: None,
            created_at: Timestamp::now(),
        }))
        .await
    }

    /// Sends any command to the dispatch endpoint and checks that the reply is a valid
    /// `{"sequence": n}`.
    pub async fn send_command(&self, command: &ClientCommand) -> Result<DispatchResult, T3Error> {
        let what = command.kind();
        let body = serde_json::to_vec(command)
            .map_err(|e| T3Error::InvalidInput(format!("{what}: cannot encode the command: {e}")))?;
        let reply = self
            .request(what, Method::Post, DISPATCH_PATH, Some(body))
            .await?;
        decode(what, &reply)
    }

    /// Sends any command over the WebSocket RPC (`orchestration.dispatchCommand`) and checks that
    /// the reply is a valid `{"sequence": n}`. Connects first if there is no live connection.
    pub async fn send_command_rpc(&self, command: &ClientCommand) -> Result<DispatchResult, T3Error> {
        let what = format!("{} ({DISPATCH_COMMAND})", command.kind());
        let payload = serde_json::to_value(command)
            .map_err(|e| T3Error::InvalidInput(format!("{what}: cannot encode the command: {e}")))?;
        let connection = self.rpc_connection().await?;
        let value = connection.call_as(&what, DISPATCH_COMMAND, payload).await?;
        serde_json::from_value::<DispatchResult>(value.clone()).map_err(|e| T3Error::MalformedReply {
            what,
            detail: e.to_string(),
            body_excerpt: excerpt(value.to_string().as_bytes()),
        })
    }

    /// One worktree-isolated dispatch over the WebSocket RPC: ONE `thread.turn.start` with the
    /// plan's turn command id, thread id, message id and text, carrying `bootstrap`:
    /// `createThread` (the fields [`T3Client::create_thread`] sends: title, model selection, modes,
    /// `branch` = the plan's branch, `worktreePath` null), `prepareWorktree` (`projectCwd`,
    /// `baseBranch`, `branch` = the plan's branch) and `runSetupScript`. T3 creates the thread,
    /// its worktree on the new branch, runs the setup script and starts the turn, deleting the
    /// thread if a step fails. The plan's ids are the same on every retry, so T3's command receipt
    /// makes a retry safe. Errors carry [`DispatchStage::Bootstrap`].
    pub async fn dispatch_isolated(
        &self,
        plan: &DispatchPlan,
        worktree: &WorktreePlan,
    ) -> Result<ThreadId, DispatchError> {
        self.send_bootstrap(plan, worktree, Bootstrap::CreateThread).await
    }

    /// Finishes the setup of `plan`'s thread that T3 left half made (a bootstrap cut off after
    /// T3 created the thread: the thread exists with its branch recorded but no worktree, no
    /// session and no turn, and T3 never cleans it up): the same bootstrap without creating the
    /// thread, so T3 adds the worktree on the plan's branch and starts the turn under the plan's
    /// turn command id.
    ///
    /// When the cut came after T3's `git worktree add` (the branch exists; T3 would refuse to
    /// create it again), the branch is adopted instead: the worktree the cut-off bootstrap made
    /// (nobody ever worked in it: the thread never had a session) is removed, and the bootstrap
    /// checks the existing branch out in a new one, so T3 records it and runs the setup script
    /// as for any thread. T3's git answers are read first (`vcs.listRefs`), so nothing is
    /// guessed from an error's text. The caller says whether the branch may be adopted
    /// (`may_adopt`: no other thread of T3's records it); a failure of those git calls is
    /// [`DispatchStage::Recovery`].
    pub async fn finish_isolated(
        &self,
        plan: &DispatchPlan,
        worktree: &WorktreePlan,
        may_adopt: bool,
    ) -> Result<ThreadId, DispatchError> {
        let recovering = |error| DispatchError {
            stage: DispatchStage::Recovery,
            error,
        };
        let existing = self
            .local_branch(&worktree.project_cwd, &plan.branch)
            .await
            .map_err(recovering)?;
        let Some(existing) = existing.filter(|_| may_adopt) else {
            // No branch yet (or one the caller knows is another thread's: T3 then refuses to make
            // it again, and nothing of that thread is touched).
            return self.send_bootstrap(plan, worktree, Bootstrap::FinishThread).await;
        };
        if let Some(path) = existing.worktree_path.as_deref() {
            debug!(
                "thread {}: removing the worktree {path} a cut-off bootstrap left on branch {}",
                plan.ids.thread_id, plan.branch
            );
            self.remove_worktree(&worktree.project_cwd, path)
                .await
                .map_err(recovering)?;
        }
        self.send_bootstrap(plan, worktree, Bootstrap::AdoptBranch).await
    }

    /// The local branch `name` of the repository checked out at `cwd`, as T3's git sees it now
    /// (`vcs.listRefs`, read afresh), with the worktree it is checked out in; `None` when the
    /// repository has no such branch.
    pub async fn local_branch(&self, cwd: &str, name: &str) -> Result<Option<VcsRef>, T3Error> {
        let mut cursor = None;
        // The query matches by substring: pages are read until the exact name or the end.
        for _ in 0..MAX_REF_PAGES {
            let page: RefPage = self
                .rpc_call(
                    VCS_LIST_REFS,
                    &ListRefs {
                        cwd: cwd.to_owned(),
                        query: Some(name.to_owned()),
                        cursor,
                        ref_kind: Some("local".into()),
                        refresh: Some(true),
                        limit: Some(REFS_PER_PAGE),
                    },
                )
                .await?;
            if let Some(found) = page.refs.into_iter().find(|r| !r.is_remote && r.name == name) {
                return Ok(Some(found));
            }
            match page.next_cursor {
                Some(next) if Some(next) != cursor => cursor = Some(next),
                _ => return Ok(None),
            }
        }
        // Unknown is not absent: the caller must not act as if the branch were not there.
        Err(T3Error::InvalidInput(format!(
            "{VCS_LIST_REFS}: more than {} branches of {cwd} contain {name:?}; cannot tell whether it exists",
            MAX_REF_PAGES * REFS_PER_PAGE as usize
        )))
    }

    /// Removes the worktree at `path` of the repository checked out at `cwd` (`vcs.removeWorktree`
    /// with `--force`: whatever is in it is lost).
    pub async fn remove_worktree(&self, cwd: &str, path: &str) -> Result<(), T3Error> {
        let input = RemoveWorktree {
            cwd: cwd.to_owned(),
            path: path.to_owned(),
            force: Some(true),
        };
        self.rpc_call::<serde_json::Value>(VCS_REMOVE_WORKTREE, &input)
            .await
            .map(drop)
    }

    /// One RPC call with `input`, its success decoded as `T`.
    async fn rpc_call<T: DeserializeOwned>(
        &self,
        method: &str,
        input: &impl serde::Serialize,
    ) -> Result<T, T3Error> {
        let payload = serde_json::to_value(input)
            .map_err(|e| T3Error::InvalidInput(format!("{method}: cannot encode the input: {e}")))?;
        let connection = self.rpc_connection().await?;
        let value = connection.call_as(method, method, payload).await?;
        serde_json::from_value::<T>(value.clone()).map_err(|e| T3Error::MalformedReply {
            what: method.to_owned(),
            detail: e.to_string(),
            body_excerpt: excerpt(value.to_string().as_bytes()),
        })
    }

    /// Sends `plan`'s bootstrapped turn start, shaped as `how` says.
    async fn send_bootstrap(
        &self,
        plan: &DispatchPlan,
        worktree: &WorktreePlan,
        how: Bootstrap,
    ) -> Result<ThreadId, DispatchError> {
        let fail = |error| DispatchError {
            stage: DispatchStage::Bootstrap,
            error,
        };
        let mut command = self.isolated_turn(plan, worktree).map_err(fail)?;
        if let ClientCommand::ThreadTurnStart(turn) = &mut command {
            if let Some(bootstrap) = turn.bootstrap.as_mut() {
                if how != Bootstrap::CreateThread {
                    bootstrap.create_thread = None;
                }
                if let (Bootstrap::AdoptBranch, Some(prepare)) = (how, bootstrap.prepare_worktree.as_mut()) {
                    // `git worktree add PATH BRANCH`: the branch as it is, no new one.
                    if let Some(branch) = prepare.branch.take() {
                        prepare.base_branch = branch;
                    }
                }
            }
        }
        self.send_command_rpc(&command).await.map_err(fail)?;
        Ok(plan.ids.thread_id.clone())
    }

    fn isolated_turn(&self, plan: &DispatchPlan, worktree: &WorktreePlan) -> Result<ClientCommand, T3Error> {
        let branch = NonEmptyString::new(plan.branch.clone()).ok_or_else(|| {
            T3Error::InvalidInput("a worktree-isolated thread needs a branch; the plan has none".into())
        })?;
        let project_cwd = NonEmptyString::new(worktree.project_cwd.clone()).ok_or_else(|| {
            T3Error::InvalidInput("the project's checkout (projectCwd) for the worktree is empty".into())
        })?;
        let base_branch = NonEmptyString::new(worktree.base_branch.clone())
            .ok_or_else(|| T3Error::InvalidInput("the worktree's base branch is empty".into()))?;
        let bootstrap = TurnBootstrap {
            create_thread: Some(BootstrapThread {
                project_id: plan.project_id.clone(),
                title: thread_title(plan)?,
                model_selection: self.settings.model_selection()?,
                runtime_mode: self.settings.runtime_mode,
                interaction_mode: self.settings.interaction_mode,
                branch: Some(branch.to_string()),
                worktree_path: None,
                created_at: Timestamp::now(),
            }),
            prepare_worktree: Some(PrepareWorktree {
                project_cwd,
                base_branch,
                branch: Some(branch),
                start_from_origin: None,
            }),
            run_setup_script: Some(worktree.run_setup_script),
        };
        self.user_turn(
            &plan.ids.thread_id,
            plan.ids.turn_command_id.clone(),
            plan.ids.message_id.clone(),
            &plan.text,
            Some(bootstrap),
        )
    }

    /// The shared RPC connection: the live one, or a new one when there is none or it died. The
    /// lock is held while connecting so that concurrent callers share one new socket.
    async fn rpc_connection(&self) -> Result<RpcConnection, T3Error> {
        let mut slot = self.rpc.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.is_alive()) {
            return Ok(connection.clone());
        }
        *slot = None;
        let connection =
            RpcConnection::connect(&self.base_url, self.bearer.clone(), self.rpc_settings).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// The fleet: `GET /api/orchestration/snapshot`, decoded. A document that does not match T3's
    /// read model fails with an error naming the offending path.
    pub async fn snapshot(&self) -> Result<ReadModel, T3Error> {
        let reply = self.request("snapshot", Method::Get, SNAPSHOT_PATH, None).await?;
        match ReadModel::decode(&reply) {
            Ok(model) => Ok(model),
            // Decoded again for the error's path.
            Err(_) => decode_with_path("snapshot", &reply),
        }
    }

    /// The fleet as the watcher reads it: `GET /api/orchestration/snapshot`, decoded thread by
    /// thread, so that a thread afk cannot read is set aside in the view
    /// ([`Fleet::unreadable`]) instead of failing it. A document that cannot be read otherwise
    /// fails as [`T3Client::snapshot`] does.
    ///
    /// Decoded straight into the watcher's compact threads ([`crate::wire::FleetThread`]), the
    /// body let go before the view is returned: no full [`ReadModel`] is built.
    pub async fn fleet(&self) -> Result<crate::Fleet, T3Error> {
        let reply = self.request("snapshot", Method::Get, SNAPSHOT_PATH, None).await?;
        match crate::Fleet::decode_snapshot(&reply) {
            Ok(fleet) => Ok(fleet),
            // Decoded again for the error's path.
            Err(_) => decode_with_path::<ReadModel>("snapshot", &reply).map(crate::Fleet::from),
        }
    }

    /// T3's shell view (`GET /api/orchestration/shell`), decoded thread by thread like
    /// [`T3Client::fleet`]: the only HTTP view that says which threads wait for a person
    /// (`hasPendingUserInput`, `hasPendingApprovals`; the snapshot has no such flags).
    pub async fn shell(&self) -> Result<crate::Fleet, T3Error> {
        let reply = self.request("shell", Method::Get, SHELL_PATH, None).await?;
        match crate::Fleet::decode_shell(&reply) {
            Ok(fleet) => Ok(fleet),
            Err(_) => decode_with_path::<ShellSnapshot>("shell", &reply).map(crate::Fleet::from_shell),
        }
    }

    /// Of T3's shell view (`GET /api/orchestration/shell`), only which threads wait for a person
    /// ([`crate::wire::ShellWaits`]): what [`T3Client::shell`] would say of each thread, without
    /// holding a second view of the whole fleet beside the snapshot's. Fails where
    /// [`T3Client::shell`] fails.
    pub async fn shell_waits(&self) -> Result<crate::wire::ShellWaits, T3Error> {
        let reply = self.request("shell", Method::Get, SHELL_PATH, None).await?;
        match crate::wire::ShellWaits::decode(&reply) {
            Ok(waits) => Ok(waits),
            Err(_) => decode_with_path::<ShellSnapshot>("shell", &reply).map(crate::wire::ShellWaits::from),
        }
    }

    /// One thread with its messages and activities (`GET /api/orchestration/threads/:id`);
    /// `None` when T3 answers 404 (no such thread, or a deleted one).
    pub async fn thread_detail(&self, thread: &ThreadId) -> Result<Option<ThreadDetail>, T3Error> {
        let path = format!("{THREADS_PATH}/{thread}");
        match self.request("thread detail", Method::Get, &path, None).await {
            Ok(reply) => decode("thread detail", &reply).map(Some),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// T3's environment descriptor (`GET /.well-known/t3/environment`): whether T3 answers at
    /// all, and its version. Sent without a credential (T3 asks for none), so that it tells a T3
    /// that is down from a token that is refused.
    pub async fn environment(&self) -> Result<EnvironmentDescriptor, T3Error> {
        let what = "environment";
        let url = format!("{}{}", self.base_url, ENVIRONMENT_PATH);
        let request = Request {
            method: Method::Get,
            url: url.clone(),
            bearer: None,
            json_body: None,
        };
        let reply = self
            .transport
            .send(request)
            .await
            .map_err(|source| T3Error::Transport {
                what: what.to_owned(),
                url,
                source,
            })?;
        if !(200..300).contains(&reply.status) {
            return Err(T3Error::Status {
                what: what.to_owned(),
                status: reply.status,
                body: None,
                body_excerpt: Some(excerpt(&reply.body)),
            });
        }
        decode(what, &reply.body)
    }

    /// T3's server config (`server.getConfig` over the RPC; needs `orchestration:read`): its
    /// provider instances.
    pub async fn server_config(&self) -> Result<ServerConfig, T3Error> {
        let connection = self.rpc_connection().await?;
        let value = connection
            .call_as(SERVER_GET_CONFIG, SERVER_GET_CONFIG, serde_json::json!({}))
            .await?;
        serde_json::from_value::<ServerConfig>(value.clone()).map_err(|e| T3Error::MalformedReply {
            what: SERVER_GET_CONFIG.to_owned(),
            detail: e.to_string(),
            body_excerpt: excerpt(value.to_string().as_bytes()),
        })
    }

    /// The snapshot as raw JSON, for `afk t3 snapshot --json` (checked to decode first).
    pub async fn snapshot_json(&self) -> Result<serde_json::Value, T3Error> {
        let reply = self.request("snapshot", Method::Get, SNAPSHOT_PATH, None).await?;
        if ReadModel::decode(&reply).is_err() {
            // Decoded again for the error's path.
            decode_with_path::<ReadModel>("snapshot", &reply)?;
        }
        decode("snapshot", &reply)
    }

    async fn request(
        &self,
        what: &str,
        method: Method,
        path: &str,
        json_body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, T3Error> {
        let url = format!("{}{}", self.base_url, path);
        let mut freshness = Freshness::Cached;
        loop {
            let bearer = self
                .bearer
                .get(freshness)
                .await
                .map_err(|source| T3Error::Bearer {
                    what: what.to_owned(),
                    source,
                })?;
            let request = Request {
                method,
                url: url.clone(),
                bearer: Some(bearer),
                json_body: json_body.clone(),
            };
            let reply = self
                .transport
                .send(request)
                .await
                .map_err(|source| T3Error::Transport {
                    what: what.to_owned(),
                    url: url.clone(),
                    source,
                })?;
            debug!(what, url = %url, status = reply.status, "t3 request");
            if reply.status == 401 && freshness == Freshness::Cached {
                // The token may have rotated since the provider last read it: ask again, once.
                freshness = Freshness::Refresh;
                continue;
            }
            if !(200..300).contains(&reply.status) {
                let body = serde_json::from_slice::<ErrorBody>(&reply.body)
                    .ok()
                    .filter(|b| b.code.is_some() || b.tag.is_some())
                    .map(Box::new);
                let body_excerpt = body.is_none().then(|| excerpt(&reply.body));
                return Err(T3Error::Status {
                    what: what.to_owned(),
                    status: reply.status,
                    body,
                    body_excerpt,
                });
            }
            return Ok(reply.body);
        }
    }
}

/// The plan's title as T3 requires it (non-empty once trimmed).
fn thread_title(plan: &DispatchPlan) -> Result<NonEmptyString, T3Error> {
    NonEmptyString::new(plan.title.clone())
        .ok_or_else(|| T3Error::InvalidInput("the thread title is empty".into()))
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, T3Error> {
    // The fast path first: tracking the path costs as much as the decoding itself, and it is only
    // needed to say where a document went wrong.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    decode_with_path(what, body)
}

/// [`decode`] without its fast path, for a body that a decode of the same type has already
/// refused (or, should it not, decoded by `serde` after all): the error names the path.
fn decode_with_path<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, T3Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let malformed = |detail: String| T3Error::MalformedReply {
        what: what.to_owned(),
        detail,
        body_excerpt: excerpt(body),
    };
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        malformed(if path == "." {
            e.inner().to_string()
        } else {
            format!("at {path}: {}", e.inner())
        })
    })?;
    // As `serde_json::from_slice` does: nothing but white space after the document (without this,
    // a document with trailing text, refused by the fast path, was accepted here).
    de.end().map_err(|e| malformed(e.to_string()))?;
    Ok(value)
}
