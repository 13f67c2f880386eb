//! Client commands: the bodies of `POST /api/orchestration/dispatch`.

use serde::{Deserialize, Serialize};

use super::{required_nullable, InteractionMode, ModelSelection, NonEmptyString, RuntimeMode, Timestamp};
use crate::ids::{CommandId, MessageId, ProjectId, ThreadId, TurnId};

/// T3's limit on a turn's message text, in UTF-16 code units as JavaScript counts a string's
/// length (`PROVIDER_SEND_TURN_MAX_INPUT_CHARS`).
pub const MAX_INPUT_CHARS: usize = 120_000;

/// The length of `text` as T3 measures it (JavaScript's `String.length`).
pub fn t3_text_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// One command for T3's dispatch endpoint, tagged by its `type`.
// A turn with its bootstrap is larger than the other commands; a command is built once per
// request, so boxing it would only burden every constructor here and in the stand-in.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientCommand {
    /// Register a workspace (one repository) as a project.
    #[serde(rename = "project.create")]
    ProjectCreate(ProjectCreate),
    /// Create a thread (no agent runs until a turn starts).
    #[serde(rename = "thread.create")]
    ThreadCreate(ThreadCreate),
    /// Send a user message and start the agent's turn.
    #[serde(rename = "thread.turn.start")]
    ThreadTurnStart(ThreadTurnStart),
    /// Interrupt the running turn.
    #[serde(rename = "thread.turn.interrupt")]
    ThreadTurnInterrupt(ThreadTurnInterrupt),
    /// Stop the thread's provider session.
    #[serde(rename = "thread.session.stop")]
    ThreadSessionStop(ThreadSessionStop),
    /// Archive the thread (hidden from the default list, kept).
    #[serde(rename = "thread.archive")]
    ThreadArchive(ThreadRef),
    /// Bring an archived thread back.
    #[serde(rename = "thread.unarchive")]
    ThreadUnarchive(ThreadRef),
    /// Delete the thread.
    #[serde(rename = "thread.delete")]
    ThreadDelete(ThreadRef),
    /// Answer the agent's question (a pending user input).
    #[serde(rename = "thread.user-input.respond")]
    ThreadUserInputRespond(ThreadUserInputRespond),
}

impl ClientCommand {
    /// The command's `type` literal.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientCommand::ProjectCreate(_) => "project.create",
            ClientCommand::ThreadCreate(_) => "thread.create",
            ClientCommand::ThreadTurnStart(_) => "thread.turn.start",
            ClientCommand::ThreadTurnInterrupt(_) => "thread.turn.interrupt",
            ClientCommand::ThreadSessionStop(_) => "thread.session.stop",
            ClientCommand::ThreadArchive(_) => "thread.archive",
            ClientCommand::ThreadUnarchive(_) => "thread.unarchive",
            ClientCommand::ThreadDelete(_) => "thread.delete",
            ClientCommand::ThreadUserInputRespond(_) => "thread.user-input.respond",
        }
    }

    /// The command's id (T3 keeps one receipt per id).
    pub fn command_id(&self) -> &CommandId {
        match self {
            ClientCommand::ProjectCreate(c) => &c.command_id,
            ClientCommand::ThreadCreate(c) => &c.command_id,
            ClientCommand::ThreadTurnStart(c) => &c.command_id,
            ClientCommand::ThreadTurnInterrupt(c) => &c.command_id,
            ClientCommand::ThreadSessionStop(c) => &c.command_id,
            ClientCommand::ThreadArchive(c)
            | ClientCommand::ThreadUnarchive(c)
            | ClientCommand::ThreadDelete(c) => &c.command_id,
            ClientCommand::ThreadUserInputRespond(c) => &c.command_id,
        }
    }

    /// The thread the command is about, if any.
    pub fn thread_id(&self) -> Option<&ThreadId> {
        match self {
            ClientCommand::ProjectCreate(_) => None,
            ClientCommand::ThreadCreate(c) => Some(&c.thread_id),
            ClientCommand::ThreadTurnStart(c) => Some(&c.thread_id),
            ClientCommand::ThreadTurnInterrupt(c) => Some(&c.thread_id),
            ClientCommand::ThreadSessionStop(c) => Some(&c.thread_id),
            ClientCommand::ThreadArchive(c)
            | ClientCommand::ThreadUnarchive(c)
            | ClientCommand::ThreadDelete(c) => Some(&c.thread_id),
            ClientCommand::ThreadUserInputRespond(c) => Some(&c.thread_id),
        }
    }
}

/// `project.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectCreate {
    /// The command's id.
    pub command_id: CommandId,
    /// The project's id, chosen by the client.
    pub project_id: ProjectId,
    /// Shown in T3's sidebar.
    pub title: NonEmptyString,
    /// The repository checkout the project's threads work in.
    pub workspace_root: NonEmptyString,
    /// Create the folder when it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_workspace_root_if_missing: Option<bool>,
    /// The model new threads use unless they choose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model_selection: Option<ModelSelection>,
    /// When the client sent it (T3 replaces it with the time it received it).
    pub created_at: Timestamp,
}

/// `thread.create`: every field T3 requires; `branch` and `worktreePath` are always sent (as
/// `null` when unknown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadCreate {
    /// The command's id.
    pub command_id: CommandId,
    /// The new thread's id, chosen by the client.
    pub thread_id: ThreadId,
    /// The project the thread works in.
    pub project_id: ProjectId,
    /// Shown in T3's thread list.
    pub title: NonEmptyString,
    /// The agent that runs the thread.
    pub model_selection: ModelSelection,
    /// How much the agent may do without asking.
    pub runtime_mode: RuntimeMode,
    /// Act or plan.
    pub interaction_mode: InteractionMode,
    /// The git branch the thread works on.
    #[serde(deserialize_with = "required_nullable")]
    pub branch: Option<String>,
    /// The checkout the thread works in; `null` means the project's workspace root.
    #[serde(deserialize_with = "required_nullable")]
    pub worktree_path: Option<String>,
    /// When the client sent it.
    pub created_at: Timestamp,
}

/// The role of a message sent by a client: always a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    /// A person (or afk speaking for one).
    User,
}

/// The user message that starts a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnMessage {
    /// The message's id, chosen by the client.
    pub message_id: MessageId,
    /// Always `user`.
    pub role: MessageRole,
    /// What the agent is asked to do; at most [`MAX_INPUT_CHARS`].
    pub text: String,
    /// Images and files; afk sends none.
    pub attachments: Vec<serde_json::Value>,
}

/// `thread.turn.start` in its client form (`runtimeMode` and `interactionMode` are required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadTurnStart {
    /// The command's id.
    pub command_id: CommandId,
    /// The thread the turn runs in.
    pub thread_id: ThreadId,
    /// The user message.
    pub message: TurnMessage,
    /// Overrides the thread's model for this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_selection: Option<ModelSelection>,
    /// How much the agent may do without asking.
    pub runtime_mode: RuntimeMode,
    /// Act or plan.
    pub interaction_mode: InteractionMode,
    /// Create the thread and its worktree first. T3 honours it only over the WebSocket RPC
    /// (`orchestration.dispatchCommand`); omitted when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<TurnBootstrap>,
    /// When the client sent it.
    pub created_at: Timestamp,
}

/// `thread.turn.start`'s `bootstrap`: what T3 sets up before the turn, in this order, deleting
/// the thread again if any step fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnBootstrap {
    /// Create the thread (the turn's `threadId`) with these fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_thread: Option<BootstrapThread>,
    /// Add a git worktree on a new branch and record it on the thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_worktree: Option<PrepareWorktree>,
    /// Run the project's setup script in the new worktree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_setup_script: Option<bool>,
}

/// `bootstrap.createThread`: `thread.create`'s fields without `type`, `commandId` and `threadId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapThread {
    /// The project the thread belongs to.
    pub project_id: ProjectId,
    /// The thread's title (non-empty).
    pub title: NonEmptyString,
    /// Provider instance and model.
    pub model_selection: ModelSelection,
    /// How much the agent may do without asking.
    pub runtime_mode: RuntimeMode,
    /// Act or plan.
    pub interaction_mode: InteractionMode,
    /// The git branch, `null` for none (required key).
    #[serde(deserialize_with = "required_nullable")]
    pub branch: Option<String>,
    /// The worktree, `null` for none (required key); T3 fills it in from `prepareWorktree`.
    #[serde(deserialize_with = "required_nullable")]
    pub worktree_path: Option<String>,
    /// When the client sent it.
    pub created_at: Timestamp,
}

/// `bootstrap.prepareWorktree`: where T3 adds the thread's git worktree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareWorktree {
    /// The repository checkout to add the worktree to (the project's workspace root).
    pub project_cwd: NonEmptyString,
    /// The branch the new branch starts from.
    pub base_branch: NonEmptyString,
    /// The new branch; T3 names one when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<NonEmptyString>,
    /// Start from the remote's copy of the base branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_from_origin: Option<bool>,
}

/// `thread.turn.interrupt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadTurnInterrupt {
    /// The command's id.
    pub command_id: CommandId,
    /// The thread whose turn to interrupt.
    pub thread_id: ThreadId,
    /// The turn to interrupt; the running one when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<TurnId>,
    /// When the client sent it.
    pub created_at: Timestamp,
}

/// `thread.session.stop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadSessionStop {
    /// The command's id.
    pub command_id: CommandId,
    /// The thread whose session to stop.
    pub thread_id: ThreadId,
    /// When the client sent it.
    pub created_at: Timestamp,
}

/// `thread.archive`, `thread.unarchive` and `thread.delete`: a command id and a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadRef {
    /// The command's id.
    pub command_id: CommandId,
    /// The thread.
    pub thread_id: ThreadId,
}

/// `thread.user-input.respond`: a person's answers to the question the agent asked (the
/// `requestId` of the thread's `user-input.requested` activity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadUserInputRespond {
    /// The command's id.
    pub command_id: CommandId,
    /// The thread whose agent asked.
    pub thread_id: ThreadId,
    /// T3's id of the question (`payload.requestId` of the `user-input.requested` activity).
    pub request_id: NonEmptyString,
    /// Per question id, the answer: a text or a list of the chosen options' labels.
    pub answers: serde_json::Map<String, serde_json::Value>,
    /// When the client sent it.
    pub created_at: Timestamp,
}
