//! The simulated agent and what T3 does around it, as the real server was seen doing it
//! (`t3-api.md`, "Observed behaviour of the real server"; `t3_sim::real`):
//! - a turn is admitted after the startup delay, then ends as its text scripts it;
//! - `[sim:start-fail]`: the provider session cannot start — session `error` with T3's
//!   multi-line, multi-kilobyte `lastError` (for a `claudeAgent` thread: session `stopped` with
//!   `Claude runtime stream failed.`), no turn, a `provider.turn.start.failed` activity;
//! - `[sim:ask]`: once admitted, the agent asks a person (`hasPendingUserInput` in the shell, a
//!   `user-input.requested` activity) and works only once `thread.user-input.respond` answers;
//! - an interrupt naming the running turn shows `interrupted/running`, then `interrupted/ready`,
//!   then T3 marks the turn `completed` (it re-captures its checkpoint); one without a turn id
//!   (or naming another turn) interrupts the running turn by session, which then reads
//!   `completed` without ever showing `interrupted`; an interrupt for a thread whose agent is
//!   lost (T3 restarted) starts the agent again to deliver it;
//! - a session stop ends the turn `interrupted/stopped` and the agent.

use std::cmp::Reverse;

use serde_json::{json, Map, Value};
use t3_client::ids::{ThreadId, TurnId};
use t3_client::wire::{LatestTurn, SessionStatus, TurnState};
use tokio::time::Instant;

use super::{AgentProcess, Changed, ScriptedEnd, TimerKind, TurnOutcome, World};
use crate::script::TurnScript;

/// How a turn ended.
pub(super) enum TurnEnd {
    Completed,
    Error(String),
    /// Interrupted with its id named: the turn reads `interrupted` until T3 settles it.
    Interrupted,
    /// Interrupted by session (no turn id, or another turn's): T3 shows it `completed`.
    InterruptedUnnamed,
    SessionStopped,
}

impl World {
    /// Runs every timer due at `now`; returns when the next one is due.
    pub(crate) fn fire_due(&mut self, now: Instant) -> Option<Instant> {
        loop {
            match self.timers.peek() {
                Some(Reverse(timer)) if timer.at <= now => {}
                Some(Reverse(timer)) => return Some(timer.at),
                None => return None,
            }
            if let Some(Reverse(timer)) = self.timers.pop() {
                self.fire(timer.thread, timer.generation, timer.kind, timer.at);
            }
        }
    }

    fn fire(&mut self, idx: usize, generation: u64, kind: TimerKind, at: Instant) {
        let Some(entry) = self.threads.get(idx) else {
            return;
        };
        if entry.generation != generation || entry.thread.deleted_at.is_some() {
            return;
        }
        match kind {
            TimerKind::Admit => self.admit(idx, Some(at)),
            TimerKind::Finish => {
                let end = entry.active.as_ref().map(|a| a.end.clone());
                match end {
                    Some(ScriptedEnd::Complete) => {
                        self.end_turn(idx, TurnEnd::Completed);
                    }
                    Some(ScriptedEnd::Fail(message)) => {
                        self.end_turn(idx, TurnEnd::Error(message));
                    }
                    Some(ScriptedEnd::Hang) | None => {}
                }
            }
            TimerKind::InterruptSettled => {
                let ts = self.stamp();
                let entry = self.touch(idx);
                let Some(session) = entry.thread.session.as_mut() else {
                    return;
                };
                if session.status != SessionStatus::Running {
                    return;
                }
                session.status = SessionStatus::Ready;
                session.active_turn_id = None;
                session.updated_at = ts;
                entry.thread.updated_at = ts;
                self.bump(Changed::Thread(idx));
            }
            TimerKind::InterruptCompleted => {
                let ts = self.stamp();
                let entry = self.touch(idx);
                let Some(turn) = entry.thread.latest_turn.as_mut() else {
                    return;
                };
                if turn.state != TurnState::Interrupted {
                    return;
                }
                turn.state = TurnState::Completed;
                let checkpoint = checkpoint_captured(&turn.turn_id, "ready", ts);
                entry.activities.push(checkpoint);
                if let Some(session) = entry.thread.session.as_mut() {
                    if session.status == SessionStatus::Running {
                        session.status = SessionStatus::Ready;
                        session.active_turn_id = None;
                    }
                }
                self.bump(Changed::Thread(idx));
            }
            TimerKind::Recovered => {
                let ts = self.stamp();
                let entry = self.touch(idx);
                let running = entry.active.as_ref().is_some_and(|a| a.started_at.is_some());
                if let Some(session) = entry.thread.session.as_mut() {
                    if session.status == SessionStatus::Starting {
                        session.status = if running {
                            SessionStatus::Running
                        } else {
                            SessionStatus::Ready
                        };
                        session.updated_at = ts;
                    }
                }
                self.bump(Changed::Thread(idx));
            }
        }
    }

    /// Ends `thread`'s turn now with `outcome`. False when no turn was starting or running.
    pub(crate) fn finish_turn(&mut self, thread: &ThreadId, outcome: TurnOutcome) -> bool {
        let Some(&idx) = self.thread_index.get(thread) else {
            return false;
        };
        if self.threads[idx].active.is_none() || self.is_deleted(idx) {
            return false;
        }
        if self.threads[idx]
            .active
            .as_ref()
            .is_some_and(|a| a.started_at.is_none())
        {
            self.admit(idx, None);
        }
        self.end_turn(
            idx,
            match outcome {
                TurnOutcome::Completed => TurnEnd::Completed,
                // T3's `lastError` is a trimmed non-empty string.
                TurnOutcome::Error(message) if message.trim().is_empty() => {
                    TurnEnd::Error("t3-sim: the turn was ended in error by the test".into())
                }
                TurnOutcome::Error(message) => TurnEnd::Error(message.trim().to_owned()),
            },
        );
        true
    }

    /// The session is up and the turn runs (or the session fails to start, or the agent asks
    /// first). With `due`, the turn's end is scheduled from then.
    pub(super) fn admit(&mut self, idx: usize, due: Option<Instant>) {
        let start_fail = self.threads[idx].active.as_ref().is_some_and(|a| a.start_fail);
        if start_fail {
            self.fail_session_start(idx);
            return;
        }
        if self.threads[idx].active.as_ref().is_some_and(|a| a.stop_lost) {
            // The start outlived a stop: the session is bound again, the turn never runs.
            let ts = self.stamp();
            let entry = self.touch(idx);
            if let Some(session) = entry.thread.session.as_mut() {
                session.status = SessionStatus::Starting;
                session.updated_at = ts;
            }
            entry.thread.updated_at = ts;
            self.bump(Changed::Thread(idx));
            return;
        }
        let question = self.threads[idx]
            .active
            .as_ref()
            .is_some_and(|a| a.ask)
            .then(|| self.mint_uuid());
        let ts = self.stamp();
        let entry = self.touch(idx);
        let Some(active) = entry.active.as_mut() else {
            return;
        };
        active.started_at = Some(ts);
        entry.thread.latest_turn = Some(LatestTurn {
            turn_id: active.turn_id.clone(),
            state: TurnState::Running,
            requested_at: active.requested_at,
            started_at: Some(ts),
            completed_at: None,
            assistant_message_id: None,
        });
        if let Some(session) = entry.thread.session.as_mut() {
            session.status = SessionStatus::Running;
            session.active_turn_id = Some(active.turn_id.clone());
            session.updated_at = ts;
        }
        entry.thread.updated_at = ts;
        let finish = (active.end != ScriptedEnd::Hang).then_some(active.duration);
        let turn_id = active.turn_id.clone();
        let generation = entry.generation;
        if let Some(request) = &question {
            // The agent asks before it works; T3 shows it in the same change.
            entry.question = Some(request.clone());
            entry.pending_user_input = true;
            entry.activities.push(json!({
                "id": format!("activity-{request}"),
                "tone": "info",
                "kind": "user-input.requested",
                "summary": "User input requested",
                "payload": {
                    "requestId": request,
                    "questions": [{
                        "id": crate::agent::QUESTION_ID,
                        "header": "t3-sim",
                        "question": "The simulated agent asks: may it go on? ([sim:ask])",
                        "options": [
                            { "label": "yes", "description": "Go on and finish the turn." },
                            { "label": "no", "description": "Go on anyway: the stand-in only records the answer." },
                        ],
                        "multiSelect": false,
                    }],
                },
                "turnId": turn_id,
                "createdAt": ts,
            }));
        }
        self.bump(Changed::Thread(idx));
        if question.is_none() {
            if let (Some(due), Some(duration)) = (due, finish) {
                self.set_timer(due + duration, idx, generation, TimerKind::Finish);
            }
        }
    }

    /// `thread.user-input.respond`: when `request` is the question the agent waits on, the
    /// answer reaches it and it goes on; otherwise nothing happens (T3 accepts the command and
    /// its provider finds no such question).
    pub(super) fn answer(&mut self, idx: usize, request: &str, answers: &Map<String, Value>, now: Instant) {
        if self.threads[idx].question.as_deref() != Some(request) {
            return;
        }
        let ts = self.stamp();
        let entry = self.touch(idx);
        entry.question = None;
        entry.pending_user_input = false;
        let turn_id = entry.active.as_ref().map(|a| a.turn_id.clone());
        entry.activities.push(json!({
            "id": format!("activity-{request}-resolved"),
            "tone": "info",
            "kind": "user-input.resolved",
            "summary": "User input submitted",
            "payload": { "requestId": request, "answers": answers },
            "turnId": turn_id,
            "createdAt": ts,
        }));
        entry.thread.updated_at = ts;
        let generation = entry.generation;
        let finish = entry
            .active
            .as_ref()
            .filter(|a| a.end != ScriptedEnd::Hang)
            .map(|a| a.duration);
        self.bump(Changed::Thread(idx));
        if let Some(duration) = finish {
            self.set_timer(now + duration, idx, generation, TimerKind::Finish);
        }
    }

    /// The provider session could not start (`[sim:start-fail]`): session `error` with the
    /// stack trace T3 reports for a codex binary it cannot spawn, no turn.
    fn fail_session_start(&mut self, idx: usize) {
        let ts = self.stamp();
        let entry = self.touch(idx);
        let Some(active) = entry.active.take() else {
            return;
        };
        entry.generation += 1;
        entry.agent = AgentProcess::None;
        let instance = entry.thread.model_selection.instance_id.as_str().to_owned();
        // As T3 reports it: codex (and the rest) fail to spawn, session `error`; claudeAgent's
        // runtime stream fails, session `stopped` (`t3-api.md`).
        let (status, error) = if instance == "claudeAgent" {
            (SessionStatus::Stopped, "Claude runtime stream failed.".to_owned())
        } else {
            (
                SessionStatus::Error,
                spawn_failure(&instance, entry.thread.id.as_str()),
            )
        };
        entry.thread.session = Some(t3_client::wire::Session {
            thread_id: entry.thread.id.clone(),
            status,
            provider_name: Some(instance),
            runtime_mode: entry.thread.runtime_mode,
            active_turn_id: None,
            last_error: Some(error.clone()),
            updated_at: ts,
        });
        entry.activities.push(json!({
            "id": format!("activity-start-failed-{}", active.turn_id),
            "tone": "error",
            "kind": "provider.turn.start.failed",
            "summary": "Provider turn start failed",
            "payload": { "detail": error },
            "turnId": null,
            "createdAt": ts,
        }));
        entry.thread.updated_at = ts;
        self.bump(Changed::Thread(idx));
    }

    /// `thread.turn.interrupt`.
    pub(super) fn interrupt(&mut self, idx: usize, turn: Option<&TurnId>, now: Instant) {
        let entry = &self.threads[idx];
        let session_up = entry
            .thread
            .session
            .as_ref()
            .is_some_and(|s| s.status != SessionStatus::Stopped);
        if entry.agent == AgentProcess::Lost && session_up {
            self.recover_agent(idx, now);
            return;
        }
        let Some(active) = &entry.active else {
            return;
        };
        if active.started_at.is_none() {
            // Nothing runs yet: T3's provider has no turn to interrupt, and the turn starts.
            return;
        }
        let named = turn.is_some_and(|t| *t == active.turn_id);
        let end = if named {
            TurnEnd::Interrupted
        } else {
            TurnEnd::InterruptedUnnamed
        };
        self.end_turn(idx, end);
        let generation = self.threads[idx].generation;
        if named {
            self.set_timer(
                now + self.interrupt_settle,
                idx,
                generation,
                TimerKind::InterruptSettled,
            );
            self.set_timer(
                now + self.interrupt_settle * 2,
                idx,
                generation,
                TimerKind::InterruptCompleted,
            );
        }
    }

    /// T3 starts a lost agent again (`thread/resume`) to deliver an interrupt: the session
    /// reads `starting` until the agent is up, then as before.
    fn recover_agent(&mut self, idx: usize, now: Instant) {
        let ts = self.stamp();
        let entry = self.touch(idx);
        entry.agent = AgentProcess::Running;
        entry.agent_starts += 1;
        if let Some(session) = entry.thread.session.as_mut() {
            session.status = SessionStatus::Starting;
            session.updated_at = ts;
        }
        let generation = entry.generation;
        self.bump(Changed::Thread(idx));
        self.set_timer(now + self.startup_delay, idx, generation, TimerKind::Recovered);
    }

    /// Every agent process is gone while T3 keeps each session's status, as after T3
    /// restarted: turns in progress never end by themselves.
    pub(crate) fn lose_agents(&mut self) {
        for entry in &mut self.threads {
            if entry.agent == AgentProcess::Running && entry.thread.deleted_at.is_none() {
                entry.agent = AgentProcess::Lost;
                entry.generation += 1;
            }
        }
    }

    /// Ends the active turn, if any, and records how. Returns whether there was one.
    pub(super) fn end_turn(&mut self, idx: usize, end: TurnEnd) -> bool {
        let assistant_message = matches!(end, TurnEnd::Completed).then(|| self.mint_message_id());
        let ts = self.stamp();
        let entry = self.touch(idx);
        let Some(active) = entry.active.take() else {
            return false;
        };
        entry.generation += 1;
        entry.question = None;
        // T3 captures the ended turn's checkpoint: `missing` for an interrupted turn (then, as
        // its reactor captures it again, `ready`, and the turn reads `completed`), `error` for a
        // failed one. The activity stays: the one sign in T3's data of an interrupted turn.
        let checkpoints: &[&str] = match &end {
            TurnEnd::Completed => &["ready"],
            TurnEnd::Error(_) => &["error"],
            TurnEnd::Interrupted => &["missing"],
            TurnEnd::InterruptedUnnamed => &["missing", "ready"],
            TurnEnd::SessionStopped => &[],
        };
        let (turn_state, session_status, last_error) = match end {
            TurnEnd::Completed => (TurnState::Completed, SessionStatus::Ready, None),
            TurnEnd::Error(message) => (TurnState::Error, SessionStatus::Error, Some(message)),
            TurnEnd::Interrupted => (TurnState::Interrupted, SessionStatus::Running, None),
            TurnEnd::InterruptedUnnamed => (TurnState::Completed, SessionStatus::Ready, None),
            TurnEnd::SessionStopped => (TurnState::Interrupted, SessionStatus::Stopped, None),
        };
        for status in checkpoints {
            entry
                .activities
                .push(checkpoint_captured(&active.turn_id, status, ts));
        }
        if let Some(id) = &assistant_message {
            entry.messages.push(json!({
                "id": id,
                "role": "assistant",
                "text": "t3-sim: the simulated agent finished this turn (no real agent ran).",
                "turnId": active.turn_id,
                "streaming": false,
                "createdAt": ts,
                "updatedAt": ts,
            }));
        }
        entry.thread.latest_turn = Some(LatestTurn {
            turn_id: active.turn_id.clone(),
            state: turn_state,
            requested_at: active.requested_at,
            started_at: active.started_at,
            completed_at: Some(ts),
            assistant_message_id: assistant_message,
        });
        if let Some(session) = entry.thread.session.as_mut() {
            session.status = session_status;
            session.active_turn_id =
                (session_status == SessionStatus::Running).then(|| active.turn_id.clone());
            session.last_error = last_error;
            session.updated_at = ts;
        }
        if session_status == SessionStatus::Stopped {
            entry.agent = AgentProcess::None;
        }
        entry.thread.updated_at = ts;
        self.bump(Changed::Thread(idx));
        true
    }

    /// Stops the thread's session, interrupting its turn if one is active; the agent ends.
    /// Never starts an agent (T3 does not resume a session to stop it). A thread that never had
    /// a session gets a `stopped` one, as on the real server (its reactor sets the session
    /// whether or not one was up).
    pub(super) fn stop_session(&mut self, idx: usize) {
        let unadmitted = self.threads[idx]
            .active
            .as_ref()
            .filter(|a| a.started_at.is_none() && !a.start_fail)
            .map(|a| a.stop_lost);
        match unadmitted {
            // The session is still starting: T3 marks it stopped, and its start goes on.
            Some(false) => {
                let ts = self.stamp();
                let entry = self.touch(idx);
                if let Some(active) = entry.active.as_mut() {
                    active.stop_lost = true;
                }
                if let Some(session) = entry.thread.session.as_mut() {
                    session.status = SessionStatus::Stopped;
                    session.updated_at = ts;
                }
                entry.thread.updated_at = ts;
                self.bump(Changed::Thread(idx));
                return;
            }
            // Still starting after a lost stop: this one is lost as well.
            Some(true)
                if self.threads[idx]
                    .thread
                    .session
                    .as_ref()
                    .is_some_and(|s| s.status == SessionStatus::Stopped) =>
            {
                return;
            }
            // Up again after a lost stop: this stop ends the agent; no turn ever ran.
            Some(true) => {
                let entry = self.touch(idx);
                entry.active = None;
                entry.generation += 1;
            }
            None => {
                if self.end_turn(idx, TurnEnd::SessionStopped) {
                    return;
                }
            }
        }
        let stopped = self.threads[idx]
            .thread
            .session
            .as_ref()
            .is_some_and(|s| s.status == SessionStatus::Stopped);
        self.threads[idx].agent = AgentProcess::None;
        if !stopped {
            let ts = self.stamp();
            let thread = &mut self.touch(idx).thread;
            match thread.session.as_mut() {
                Some(session) => {
                    session.status = SessionStatus::Stopped;
                    session.active_turn_id = None;
                    session.updated_at = ts;
                }
                None => {
                    thread.session = Some(t3_client::wire::Session {
                        thread_id: thread.id.clone(),
                        status: SessionStatus::Stopped,
                        provider_name: None,
                        runtime_mode: thread.runtime_mode,
                        active_turn_id: None,
                        last_error: None,
                        updated_at: ts,
                    })
                }
            }
            thread.updated_at = ts;
            self.bump(Changed::Thread(idx));
        }
    }

    pub(super) fn scripted_end(&mut self, idx: usize, script: &TurnScript) -> ScriptedEnd {
        if script.hang {
            return ScriptedEnd::Hang;
        }
        if script.fail {
            return ScriptedEnd::Fail("t3-sim: the simulated agent failed, as scripted by [sim:fail]".into());
        }
        let Some(times) = script.fail_times else {
            return ScriptedEnd::Complete;
        };
        let fails = match self.threads[idx].fails_by_count {
            Some(fails) => fails,
            None => {
                let seen = self
                    .fail_times_seen
                    .entry(self.threads[idx].thread.title.clone())
                    .or_insert(0);
                let fails = *seen < times;
                *seen += 1;
                self.threads[idx].fails_by_count = Some(fails);
                fails
            }
        };
        if fails {
            ScriptedEnd::Fail(format!(
                "t3-sim: the simulated agent failed, as scripted by [sim:fail-times={times}]"
            ))
        } else {
            ScriptedEnd::Complete
        }
    }
}

/// T3's `checkpoint.captured` activity for `turn`'s checkpoint, captured with `status`.
fn checkpoint_captured(turn: &TurnId, status: &str, ts: t3_client::wire::Timestamp) -> Value {
    json!({
        "id": format!("activity-checkpoint-{turn}-{status}"),
        "tone": "info",
        "kind": "checkpoint.captured",
        "summary": "Checkpoint captured",
        "payload": { "turnCount": 1, "status": status },
        "turnId": turn,
        "createdAt": ts,
    })
}

/// The `lastError` T3 records when it cannot spawn a provider's binary: a multi-line stack
/// trace of some 4 kB whose first line names the thread (the real text, with T3's paths).
fn spawn_failure(instance: &str, thread: &str) -> String {
    const SRC: &str = "file:///opt/t3code/src";
    const EFFECT: &str =
        "file:///opt/t3code/src/node_modules/.pnpm/effect@4.0.0-beta.103/node_modules/effect/dist";
    const PLATFORM: &str = "file:///opt/t3code/src/node_modules/.pnpm/@effect+platform-node-shared@4.0.0-beta.103/node_modules/@effect/platform-node-shared/dist";
    let command = format!("/opt/t3-sim/bin/{instance} app-server");
    let frames = |indent: &str| {
        [
            format!("{SRC}/apps/server/src/provider/Layers/CodexAdapter.ts:1709:15"),
            format!("{EFFECT}/internal/effect.js:1383:96"),
            format!("~effect/Utils/internal ({EFFECT}/Utils.js:79:14)"),
            format!("startSession ({SRC}/apps/server/src/orchestration/Layers/ProviderCommandReactor.ts:679:23)"),
            format!("startSession (definition) ({SRC}/apps/server/src/provider/Layers/ProviderService.ts:528:70)"),
            format!("ensureSessionForThread ({SRC}/apps/server/src/orchestration/Layers/ProviderCommandReactor.ts:805:12)"),
            format!("ensureSessionForThread (definition) ({SRC}/apps/server/src/orchestration/Layers/ProviderCommandReactor.ts:533:41)"),
            format!("processTurnStartRequested ({SRC}/apps/server/src/orchestration/Layers/ProviderCommandReactor.ts:1479:16)"),
            format!("processTurnStartRequested (definition) ({SRC}/apps/server/src/orchestration/Layers/ProviderCommandReactor.ts:1164:44)"),
            format!("processDomainEvent ({SRC}/apps/server/src/orchestration/Layers/ProviderCommandReactor.ts:1497:5)"),
        ]
        .iter()
        .map(|f| format!("\n{indent}at {f}"))
        .collect::<String>()
    };
    format!(
        "ProviderAdapterProcessError: Provider adapter process error ({instance}) for thread {thread}: Failed to spawn Codex App Server process for command: {command}{} {{\n  [cause]: CodexAppServerSpawnError: Failed to spawn Codex App Server process for command: {command}{} {{\n    [cause]: PlatformError: NotFound: ChildProcess.spawn ({command})\n        at Module.systemError ({EFFECT}/PlatformError.js:144:39)\n        at toPlatformError ({PLATFORM}/NodeChildProcessSpawner.js:26:54)\n        at ChildProcess.<anonymous> ({PLATFORM}/NodeChildProcessSpawner.js:244:26)\n        at ChildProcess.emit (node:events:514:28)\n        at ChildProcess._handle.onexit (node:internal/child_process:322:12) {{\n      [cause]: Error: spawn /opt/t3-sim/bin/{instance} ENOENT\n          at ChildProcess._handle.onexit (node:internal/child_process:316:19)\n          at onErrorNT (node:internal/child_process:554:16)\n          at process.processTicksAndRejections (node:internal/process/task_queues:90:21)\n    }}\n  }}\n}}",
        frames("    "),
        frames("      "),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_spawn_failure_reads_like_t3s() {
        let error = super::spawn_failure("codex", "t-1");
        let first = error.lines().next().unwrap_or_default();
        assert!(first.starts_with(
            "ProviderAdapterProcessError: Provider adapter process error (codex) for thread t-1: Failed to spawn Codex App Server process"
        ));
        assert!(error.lines().count() > 10, "{error}");
        assert!(error.len() > 2000, "{} bytes", error.len());
    }
}
