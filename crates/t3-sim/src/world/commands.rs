//! The decider: each client command as T3's `decider.ts` decides it, and the worktree bootstrap
//! of T3's WebSocket RPC (`ws.ts`, `dispatchBootstrapTurnStart`).

use serde_json::json;
use t3_client::wire::{
    ClientCommand, Project, Session, SessionStatus, Thread, ThreadCreate, ThreadRef, ThreadTurnStart,
    TurnBootstrap,
};
use tokio::time::Instant;

use super::{
    ActiveTurn, AddedWorktree, AgentProcess, Changed, DispatchFailure, Refusal, ThreadEntry, TimerKind, World,
};
use crate::script::TurnScript;

/// What the first step of a bootstrap left for the rest ([`World::begin_bootstrap`]); a
/// bootstrap is `begin_bootstrap`, then (after [`World::bootstrap_delay`], unless the client
/// went away) [`World::add_bootstrap_worktree`], then (after [`World::worktree_add`], unless the
/// client went away) [`World::finish_bootstrap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bootstrapping {
    /// The bootstrap created the thread (so a failing later step deletes it).
    created: bool,
}

impl World {
    /// The first step of a bootstrap: create the thread (`createThread`, under a server command
    /// id), with its `branch` as given. A client that disconnects after this step leaves the
    /// thread so (T3 does not clean up an interrupted bootstrap).
    pub(crate) fn begin_bootstrap(
        &mut self,
        turn: &ThreadTurnStart,
        now: Instant,
    ) -> Result<Bootstrapping, DispatchFailure> {
        let Some(thread) = turn.bootstrap.as_ref().and_then(|b| b.create_thread.as_ref()) else {
            return Ok(Bootstrapping { created: false });
        };
        let create = ClientCommand::ThreadCreate(ThreadCreate {
            command_id: self.server_command_id("bootstrap-thread-create"),
            thread_id: turn.thread_id.clone(),
            project_id: thread.project_id.clone(),
            title: thread.title.clone(),
            model_selection: thread.model_selection.clone(),
            runtime_mode: thread.runtime_mode,
            interaction_mode: thread.interaction_mode,
            branch: thread.branch.clone(),
            worktree_path: thread.worktree_path.clone(),
            created_at: thread.created_at,
        });
        self.dispatch(&create, now)
            .map_err(|refusal| DispatchFailure::of_step(refusal.message, refusal.error))?;
        Ok(Bootstrapping { created: true })
    }

    /// A bootstrap's `git worktree add` (`prepareWorktree`): on the new `branch` from
    /// `baseBranch`, or, without `branch`, checking `baseBranch` itself out. `None` when the
    /// bootstrap prepares no worktree. The worktree is not on the thread yet: a client that
    /// disconnects before [`World::finish_bootstrap`] leaves the branch and its worktree made
    /// and the thread without them, as in T3.
    pub(crate) fn add_bootstrap_worktree(
        &mut self,
        turn: &ThreadTurnStart,
    ) -> Result<Option<AddedWorktree>, DispatchFailure> {
        let Some(prepare) = turn.bootstrap.as_ref().and_then(|b| b.prepare_worktree.as_ref()) else {
            return Ok(None);
        };
        let cwd = prepare.project_cwd.as_str();
        if TurnScript::parse(&turn.message.text).worktree_fail {
            return Err(DispatchFailure::of_step(
                format!("Git command failed in GitVcsDriver.createWorktree ({cwd}): git worktree add failed"),
                json!({
                    "_tag": "GitCommandError",
                    "operation": "GitVcsDriver.createWorktree",
                    "command": "git",
                    "cwd": cwd,
                    "exitCode": 128,
                    "detail": "git worktree add failed",
                }),
            ));
        }
        self.git_worktree_add(
            cwd,
            prepare.base_branch.as_str(),
            prepare.branch.as_ref().map(|b| b.as_str()),
            None,
        )
        .map(Some)
        .map_err(|(message, error)| DispatchFailure::of_step(message, error))
    }

    /// The rest of a bootstrap after its worktree was added (`added`, or why that failed):
    /// record `branch` / `worktreePath` on the thread, run the setup script (`runSetupScript`),
    /// then start the turn under the command's own id — the one receipt the client's
    /// `commandId` gets. If a step fails after the thread was created, the thread is deleted
    /// again (the worktree and branch stay, as in T3).
    ///
    /// As in T3, only the final turn start is deduplicated by `commandId`: the same bootstrap
    /// sent again fails at `createThread` because the thread exists, and makes nothing twice.
    pub(crate) fn finish_bootstrap(
        &mut self,
        turn: &ThreadTurnStart,
        begun: Bootstrapping,
        added: Result<Option<AddedWorktree>, DispatchFailure>,
        now: Instant,
    ) -> Result<u64, DispatchFailure> {
        let outcome = added.and_then(|added| self.run_bootstrap(turn, added, now));
        if outcome.is_err() && begun.created {
            let delete = ClientCommand::ThreadDelete(ThreadRef {
                command_id: self.server_command_id("bootstrap-thread-delete"),
                thread_id: turn.thread_id.clone(),
            });
            // T3 ignores a failure to clean up, and so does the stand-in.
            let _ = self.dispatch(&delete, now);
        }
        outcome
    }

    fn run_bootstrap(
        &mut self,
        turn: &ThreadTurnStart,
        added: Option<AddedWorktree>,
        now: Instant,
    ) -> Result<u64, DispatchFailure> {
        let bootstrap = turn.bootstrap.clone().unwrap_or(TurnBootstrap {
            create_thread: None,
            prepare_worktree: None,
            run_setup_script: None,
        });
        let script = TurnScript::parse(&turn.message.text);
        let mut worktree_path = bootstrap
            .create_thread
            .as_ref()
            .and_then(|t| t.worktree_path.clone());
        if let Some(AddedWorktree { path, branch }) = added {
            // T3 records the worktree with a `thread.meta.update` of its own.
            let idx = self
                .require_thread(&turn.thread_id, "thread.meta.update")
                .map_err(|r| DispatchFailure::of_step(r.message, r.error))?;
            let ts = self.stamp();
            let thread = &mut self.touch(idx).thread;
            thread.branch = Some(branch);
            thread.worktree_path = Some(path.clone());
            thread.updated_at = ts;
            self.bump(Changed::Thread(idx));
            worktree_path = Some(path);
        }
        // T3 runs the setup script only in a worktree; one that fails to launch is recorded as
        // an activity of the thread and the bootstrap goes on.
        if bootstrap.run_setup_script == Some(true) && worktree_path.is_some() && script.setup_fail {
            let idx = self
                .require_thread(&turn.thread_id, "thread.activity.append")
                .map_err(|r| DispatchFailure::of_step(r.message, r.error))?;
            let ts = self.stamp();
            let entry = self.touch(idx);
            entry.activities.push(json!({
                "id": format!("activity-setup-{}", turn.thread_id),
                "tone": "error",
                "kind": "setup-script.failed",
                "summary": "Setup script failed to start",
                "payload": {
                    "detail": "the project's setup script could not start (scripted by [sim:setup-fail])",
                    "worktreePath": worktree_path,
                },
                "turnId": null,
                "createdAt": ts,
            }));
            self.bump(Changed::Thread(idx));
        }
        let mut start = turn.clone();
        start.bootstrap = None;
        self.dispatch(&ClientCommand::ThreadTurnStart(start), now)
            .map_err(|r| DispatchFailure::of_step(r.message, r.error))
    }

    /// Decides one command; the sequence after it, or the decider's refusal.
    pub(super) fn decide(&mut self, command: &ClientCommand, now: Instant) -> Result<u64, Refusal> {
        let kind = command.kind();
        match command {
            ClientCommand::ProjectCreate(c) => {
                if self.project_index.contains_key(&c.project_id) {
                    return Err(Refusal::invariant(
                        kind,
                        format!(
                            "Project '{}' already exists and cannot be created twice.",
                            c.project_id
                        ),
                    ));
                }
                let ts = self.stamp();
                let project = Project {
                    id: c.project_id.clone(),
                    title: c.title.as_str().to_owned(),
                    workspace_root: c.workspace_root.as_str().to_owned(),
                    repository_identity: None,
                    default_model_selection: c.default_model_selection.clone(),
                    scripts: Vec::new(),
                    created_at: ts,
                    updated_at: ts,
                    deleted_at: None,
                };
                self.project_index
                    .insert(c.project_id.clone(), self.projects.len());
                self.projects.push(project);
                Ok(self.bump(Changed::Project(self.projects.len() - 1)))
            }
            ClientCommand::ThreadCreate(c) => {
                let live_project = self
                    .project_index
                    .get(&c.project_id)
                    .is_some_and(|&i| self.projects[i].deleted_at.is_none());
                if !live_project {
                    return Err(Refusal::invariant(
                        kind,
                        format!(
                            "Project '{}' does not exist for command 'thread.create'.",
                            c.project_id
                        ),
                    ));
                }
                if self.thread_index.contains_key(&c.thread_id) {
                    return Err(Refusal::invariant(
                        kind,
                        format!(
                            "Thread '{}' already exists and cannot be created twice.",
                            c.thread_id
                        ),
                    ));
                }
                let ts = self.stamp();
                let thread = Thread {
                    id: c.thread_id.clone(),
                    project_id: c.project_id.clone(),
                    title: c.title.as_str().to_owned(),
                    model_selection: c.model_selection.clone(),
                    runtime_mode: c.runtime_mode,
                    interaction_mode: c.interaction_mode,
                    branch: c.branch.clone(),
                    worktree_path: c.worktree_path.clone(),
                    latest_turn: None,
                    created_at: ts,
                    updated_at: ts,
                    archived_at: None,
                    deleted_at: None,
                    messages: Vec::new(),
                    activities: Vec::new(),
                    checkpoints: Vec::new(),
                    session: None,
                    has_pending_user_input: false,
                    has_pending_approvals: false,
                };
                self.thread_index.insert(c.thread_id.clone(), self.threads.len());
                self.threads.push(ThreadEntry {
                    thread,
                    messages: Vec::new(),
                    activities: Vec::new(),
                    turns: 0,
                    generation: 0,
                    active: None,
                    fails_by_count: None,
                    latest_user_message_at: None,
                    question: None,
                    pending_user_input: false,
                    agent: AgentProcess::None,
                    agent_starts: 0,
                    json: None,
                });
                Ok(self.bump(Changed::Thread(self.threads.len() - 1)))
            }
            ClientCommand::ThreadTurnStart(c) => {
                let idx = self.require_thread(&c.thread_id, kind)?;
                if self.is_deleted(idx) {
                    // T3 records it; a deleted thread's view stays frozen.
                    return Ok(self.bump(Changed::Thread(idx)));
                }
                self.start_turn(idx, c, now)
            }
            ClientCommand::ThreadTurnInterrupt(c) => {
                let idx = self.require_thread(&c.thread_id, kind)?;
                let sequence = self.bump(Changed::Thread(idx));
                if !self.is_deleted(idx) {
                    self.interrupt(idx, c.turn_id.as_ref(), now);
                }
                Ok(sequence)
            }
            ClientCommand::ThreadSessionStop(c) => {
                let idx = self.require_thread(&c.thread_id, kind)?;
                let sequence = self.bump(Changed::Thread(idx));
                if !self.is_deleted(idx) {
                    self.stop_session(idx);
                }
                Ok(sequence)
            }
            ClientCommand::ThreadUserInputRespond(c) => {
                let idx = self.require_thread(&c.thread_id, kind)?;
                let sequence = self.bump(Changed::Thread(idx));
                if !self.is_deleted(idx) {
                    self.answer(idx, c.request_id.as_str(), &c.answers, now);
                }
                Ok(sequence)
            }
            ClientCommand::ThreadArchive(c) => {
                let idx = self.require_thread(&c.thread_id, kind)?;
                if self.threads[idx].thread.archived_at.is_some() {
                    return Err(Refusal::invariant(
                        kind,
                        format!(
                            "Thread '{}' is already archived and cannot handle command 'thread.archive'.",
                            c.thread_id
                        ),
                    ));
                }
                let ts = self.stamp();
                let thread = &mut self.touch(idx).thread;
                thread.archived_at = Some(ts);
                thread.updated_at = ts;
                Ok(self.bump(Changed::Thread(idx)))
            }
            ClientCommand::ThreadUnarchive(c) => {
                let idx = self.require_thread(&c.thread_id, kind)?;
                if self.threads[idx].thread.archived_at.is_none() {
                    return Err(Refusal::invariant(
                        kind,
                        format!(
                            "Thread '{}' is not archived for command 'thread.unarchive'.",
                            c.thread_id
                        ),
                    ));
                }
                let ts = self.stamp();
                let thread = &mut self.touch(idx).thread;
                thread.archived_at = None;
                thread.updated_at = ts;
                Ok(self.bump(Changed::Thread(idx)))
            }
            ClientCommand::ThreadDelete(c) => {
                let idx = self.require_thread(&c.thread_id, kind)?;
                if self.is_deleted(idx) {
                    // Deleting again is accepted and changes nothing.
                    return Ok(self.bump(Changed::Thread(idx)));
                }
                let ts = self.stamp();
                let entry = self.touch(idx);
                entry.thread.deleted_at = Some(ts);
                entry.thread.updated_at = ts;
                // The thread's view freezes as it is (turn and session included). T3 stops the
                // agent of a session that runs; a session still starting spawns its agent
                // anyway, which then works on with nobody watching.
                let starting = entry.active.as_ref().is_some_and(|a| a.started_at.is_none());
                entry.generation += 1;
                entry.active = None;
                entry.question = None;
                if starting {
                    entry.agent = AgentProcess::Running;
                } else if entry.agent == AgentProcess::Running {
                    entry.agent = AgentProcess::None;
                }
                Ok(self.bump(Changed::Thread(idx)))
            }
        }
    }

    /// `thread.turn.start` on a live thread: the user message, the session `starting` (no
    /// turn yet), and the turn admitted after the startup delay.
    fn start_turn(&mut self, idx: usize, c: &ThreadTurnStart, now: Instant) -> Result<u64, Refusal> {
        let script = TurnScript::parse(&c.message.text);
        let end = self.scripted_end(idx, &script);
        let duration = script.duration.unwrap_or(self.turn_duration);
        let turn_id = self.mint_turn_id();
        if self.threads[idx].active.is_some() {
            // A new turn supersedes the running one (the stand-in runs one turn per thread at a
            // time).
            self.end_turn(idx, super::agent::TurnEnd::Interrupted);
        }
        let ts = self.stamp();
        let entry = self.touch(idx);
        entry.generation += 1;
        entry.turns += 1;
        entry.active = Some(ActiveTurn {
            turn_id,
            requested_at: ts,
            started_at: None,
            end,
            duration,
            ask: script.ask,
            start_fail: script.start_fail,
            stop_lost: false,
        });
        entry.messages.push(json!({
            "id": c.message.message_id,
            "role": "user",
            "text": c.message.text,
            "attachments": [],
            "turnId": null,
            "streaming": false,
            "createdAt": ts,
            "updatedAt": ts,
        }));
        entry.latest_user_message_at = Some(ts);
        if !script.start_fail {
            // The session starts: T3 spawns the agent now. (A session that cannot start shows
            // no `starting` on T3's stream: it goes straight to `error`.)
            entry.thread.session = Some(Session {
                thread_id: c.thread_id.clone(),
                status: SessionStatus::Starting,
                provider_name: Some(entry.thread.model_selection.instance_id.as_str().to_owned()),
                runtime_mode: c.runtime_mode,
                active_turn_id: None,
                last_error: None,
                updated_at: ts,
            });
            if entry.agent != AgentProcess::Running {
                entry.agent = AgentProcess::Running;
                entry.agent_starts += 1;
            }
        }
        entry.thread.updated_at = ts;
        let generation = entry.generation;
        // T3 records two events: the user message, then the turn-start request.
        self.bump(Changed::Thread(idx));
        let sequence = self.bump(Changed::Thread(idx));
        self.set_timer(now + self.startup_delay, idx, generation, TimerKind::Admit);
        Ok(sequence)
    }
}
