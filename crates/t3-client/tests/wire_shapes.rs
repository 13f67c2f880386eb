//! The JSON afk sends, field for field, against golden files written from `t3-api.md`'s examples.
//! Regenerate after a deliberate change with `UPDATE_GOLDEN=1 cargo nextest run -p t3-client`.

use std::path::PathBuf;

use serde_json::Value;
use t3_client::wire::{
    ClientCommand, InteractionMode, MessageRole, ModelSelection, NonEmptyString, ProjectCreate, RuntimeMode,
    ThreadCreate, ThreadRef, ThreadSessionStop, ThreadTurnInterrupt, ThreadTurnStart, Timestamp, TurnMessage,
};
use t3_client::{CommandId, MessageId, ProjectId, ThreadId, TurnId};

fn at() -> Timestamp {
    "2026-11-24T19:14:36.116Z"
        .parse::<chrono::DateTime<chrono::Utc>>()
        .map(Timestamp)
        .unwrap()
}

fn text(s: &str) -> NonEmptyString {
    NonEmptyString::new(s).unwrap()
}

fn commands() -> Vec<(&'static str, ClientCommand)> {
    let thread = ThreadId::new("9b2e").unwrap();
    vec![
        (
            "thread.create",
            ClientCommand::ThreadCreate(ThreadCreate {
                command_id: CommandId::new("6f1c").unwrap(),
                thread_id: thread.clone(),
                project_id: ProjectId::new("proj-widgets").unwrap(),
                title: text("acme/widgets#42: Fix the widget"),
                model_selection: ModelSelection {
                    instance_id: text("claudeAgent"),
                    model: text("claude-sonnet-4-5"),
                    options: None,
                },
                runtime_mode: RuntimeMode::FullAccess,
                interaction_mode: InteractionMode::Default,
                branch: Some("afk/issue-42".into()),
                worktree_path: None,
                created_at: at(),
            }),
        ),
        (
            "thread.turn.start",
            ClientCommand::ThreadTurnStart(ThreadTurnStart {
                command_id: CommandId::new("a81d").unwrap(),
                thread_id: thread.clone(),
                message: TurnMessage {
                    message_id: MessageId::new("c0de").unwrap(),
                    role: MessageRole::User,
                    text: "<preamble>\n\n<prompt>".into(),
                    attachments: vec![],
                },
                model_selection: None,
                runtime_mode: RuntimeMode::FullAccess,
                interaction_mode: InteractionMode::Default,
                bootstrap: None,
                created_at: at(),
            }),
        ),
        (
            "thread.turn.interrupt",
            ClientCommand::ThreadTurnInterrupt(ThreadTurnInterrupt {
                command_id: CommandId::new("i-1").unwrap(),
                thread_id: thread.clone(),
                turn_id: Some(TurnId::new("turn-1").unwrap()),
                created_at: at(),
            }),
        ),
        (
            "thread.session.stop",
            ClientCommand::ThreadSessionStop(ThreadSessionStop {
                command_id: CommandId::new("s-1").unwrap(),
                thread_id: thread.clone(),
                created_at: at(),
            }),
        ),
        (
            "thread.archive",
            ClientCommand::ThreadArchive(ThreadRef {
                command_id: CommandId::new("a-1").unwrap(),
                thread_id: thread.clone(),
            }),
        ),
        (
            "thread.delete",
            ClientCommand::ThreadDelete(ThreadRef {
                command_id: CommandId::new("d-1").unwrap(),
                thread_id: thread,
            }),
        ),
        (
            "project.create",
            ClientCommand::ProjectCreate(ProjectCreate {
                command_id: CommandId::new("p-1").unwrap(),
                project_id: ProjectId::new("proj-widgets").unwrap(),
                title: text("widgets"),
                workspace_root: text("/src/widgets"),
                create_workspace_root_if_missing: None,
                default_model_selection: None,
                created_at: at(),
            }),
        ),
    ]
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"))
}

#[test]
fn every_command_matches_its_golden_shape() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, command) in commands() {
        let actual = serde_json::to_value(&command).unwrap();
        let path = golden_path(name);
        if update {
            std::fs::write(&path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
            continue;
        }
        let expected: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(actual, expected, "{name} differs from {}", path.display());
        // And the shape decodes back to the same command, as the stand-in reads it.
        assert_eq!(
            serde_json::from_value::<ClientCommand>(expected).unwrap(),
            command
        );
    }
}

#[test]
fn thread_create_always_sends_branch_and_worktree_path_even_when_null() {
    let (_, command) = commands().remove(0);
    let mut json = serde_json::to_value(command).unwrap();
    assert!(json["worktreePath"].is_null());
    assert!(json.as_object().unwrap().contains_key("worktreePath"));
    assert!(
        !json.as_object().unwrap().contains_key("retention"),
        "upstream T3 has no retention"
    );
    // A command missing a required-nullable key is not a valid thread.create.
    json.as_object_mut().unwrap().remove("worktreePath");
    let err = serde_json::from_value::<ClientCommand>(json).unwrap_err();
    assert!(err.to_string().contains("worktreePath"), "{err}");
}

#[test]
fn literals_are_spelled_as_t3_spells_them() {
    let all: Vec<Value> = commands()
        .into_iter()
        .map(|(_, c)| serde_json::to_value(c).unwrap())
        .collect();
    let types: Vec<&str> = all.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "thread.create",
            "thread.turn.start",
            "thread.turn.interrupt",
            "thread.session.stop",
            "thread.archive",
            "thread.delete",
            "project.create"
        ]
    );
    assert_eq!(all[1]["message"]["role"], "user");
    assert_eq!(all[1]["message"]["attachments"], serde_json::json!([]));
    for mode in ["approval-required", "auto-accept-edits", "auto", "full-access"] {
        let parsed: RuntimeMode = serde_json::from_value(Value::from(mode)).unwrap();
        assert_eq!(serde_json::to_value(parsed).unwrap(), mode);
    }
    assert_eq!(all[0]["createdAt"], "2026-11-24T19:14:36.116Z");
}
