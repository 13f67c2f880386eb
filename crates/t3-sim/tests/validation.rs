//! What T3 refuses and how: 400 `invalid_command` for bodies its schema rejects, 500
//! `orchestration_dispatch_failed` for commands its decider refuses, and `commandId`
//! deduplication.

mod common;

use common::*;
use serde_json::json;
use t3_client::ThreadState;

async fn assert_invalid_command(server: &t3_sim::SimServer, body: &str) {
    let (status, reply) = post_dispatch(server, Some(OPERATE), body).await;
    assert_eq!(status, 400, "{body} -> {reply}");
    assert_error_body(&reply, "EnvironmentRequestInvalidError", "invalid_request");
    assert_eq!(reply["reason"], "invalid_command", "{body}");
}

async fn assert_dispatch_failed(server: &t3_sim::SimServer, body: &serde_json::Value) {
    let (status, reply) = post_dispatch(server, Some(OPERATE), &body.to_string()).await;
    assert_eq!(status, 500, "{body} -> {reply}");
    assert_error_body(&reply, "EnvironmentInternalError", "internal_error");
    assert_eq!(reply["reason"], "orchestration_dispatch_failed", "{body}");
}

fn without(mut value: serde_json::Value, key: &str) -> String {
    if let Some(object) = value.as_object_mut() {
        object.remove(key);
    }
    value.to_string()
}

fn with(mut value: serde_json::Value, key: &str, new: serde_json::Value) -> String {
    value[key] = new;
    value.to_string()
}

#[tokio::test]
async fn bodies_that_t3s_schema_rejects_get_400_invalid_command() {
    let server = start(config()).await;
    let create = thread_create_json("c1", "t1");
    for body in [
        "not json".to_owned(),
        "{}".to_owned(),
        json!({"type": "thread.explode", "commandId": "c"}).to_string(),
        without(create.clone(), "title"),
        without(create.clone(), "branch"),
        without(create.clone(), "worktreePath"),
        without(create.clone(), "modelSelection"),
        without(create.clone(), "createdAt"),
        with(create.clone(), "title", json!("   ")),
        with(create.clone(), "threadId", json!("")),
        with(create.clone(), "threadId", json!(" t1")),
        with(create.clone(), "runtimeMode", json!("yolo")),
        with(create.clone(), "interactionMode", json!("chat")),
        with(create.clone(), "branch", json!("")),
        with(create.clone(), "createdAt", json!("yesterday")),
        with(
            create.clone(),
            "modelSelection",
            json!({"instanceId": "claudeAgent"}),
        ),
    ] {
        assert_invalid_command(&server, &body).await;
    }
    let turn = turn_start_json("c2", "t1", "hi");
    for body in [
        without(turn.clone(), "runtimeMode"),
        with(
            turn.clone(),
            "message",
            json!({"messageId": "m", "role": "assistant", "text": "x", "attachments": []}),
        ),
        with(
            turn.clone(),
            "message",
            json!({"messageId": "m", "role": "user", "text": "x", "attachments": [{"type": "file"}]}),
        ),
        turn_start_json("c3", "t1", &"x".repeat(120_001)).to_string(),
    ] {
        assert_invalid_command(&server, &body).await;
    }
    assert!(server.threads().is_empty());
    assert_eq!(server.sequence(), 0, "nothing reached the decider");
    server.shutdown().await;
}

#[tokio::test]
async fn commands_the_decider_refuses_get_500_dispatch_failed() {
    let server = start(config()).await;
    let mut unknown_project = thread_create_json("c1", "t1");
    unknown_project["projectId"] = json!("proj-nope");
    assert_dispatch_failed(&server, &unknown_project).await;

    let (status, _) = post_dispatch(
        &server,
        Some(OPERATE),
        &thread_create_json("c2", "t1").to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_dispatch_failed(&server, &thread_create_json("c3", "t1")).await;
    assert_dispatch_failed(&server, &turn_start_json("c4", "no-such-thread", "hi")).await;
    assert_dispatch_failed(
        &server,
        &json!({"type": "thread.turn.interrupt", "commandId": "c5", "threadId": "nope", "createdAt": "2026-11-24T19:14:36.116Z"}),
    )
    .await;
    assert_dispatch_failed(
        &server,
        &json!({"type": "project.create", "commandId": "c6", "projectId": PROJECT, "title": "again", "workspaceRoot": "/w", "createdAt": "2026-11-24T19:14:36.116Z"}),
    )
    .await;
    let (status, _) = post_dispatch(
        &server,
        Some(OPERATE),
        &json!({"type": "thread.archive", "commandId": "c7", "threadId": "t1"}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_dispatch_failed(
        &server,
        &json!({"type": "thread.archive", "commandId": "c8", "threadId": "t1"}),
    )
    .await;
    let (status, _) = post_dispatch(
        &server,
        Some(OPERATE),
        &json!({"type": "thread.delete", "commandId": "c9", "threadId": "t1"}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    // As in T3, whose decider still finds a deleted thread: a turn for it is accepted (and
    // runs nothing), but its id cannot be reused.
    let (status, body) = post_dispatch(
        &server,
        Some(OPERATE),
        &turn_start_json("c10", "t1", "on a deleted thread").to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .thread(&t3_client::ids::ThreadId::new("t1").expect("an id"))
            .map(|t| (t.turns, t.agent_running)),
        Some((0, false))
    );
    assert_dispatch_failed(&server, &thread_create_json("c11", "t1")).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_client_sees_a_refusal_as_a_500_with_t3s_reason() {
    let server = start(config()).await;
    let client = client(&server, OPERATE)
        .with_project("acme/ghost", t3_client::ProjectId::new("proj-ghost").expect("id"));
    let error = client
        .dispatch("acme/ghost", 1, "Fix it")
        .await
        .expect_err("unknown project");
    assert_eq!(error.stage, t3_client::DispatchStage::Create);
    assert_eq!(error.error.status(), Some(500));
    assert_eq!(
        error.error.body().and_then(|b| b.reason.clone()).as_deref(),
        Some("orchestration_dispatch_failed")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_repeated_command_id_returns_the_original_sequence_and_changes_nothing() {
    let server = start(config()).await;
    let create = thread_create_json("create-1", "t1").to_string();
    let (status, first) = post_dispatch(&server, Some(OPERATE), &create).await;
    assert_eq!(status, 200);
    let sequence = first["sequence"].as_u64().expect("a sequence");

    let turn = turn_start_json("turn-1", "t1", "Fix it [sim:hang]").to_string();
    let (_, turn_reply) = post_dispatch(&server, Some(OPERATE), &turn).await;
    let turn_sequence = turn_reply["sequence"].as_u64().expect("a sequence");
    assert!(turn_sequence > sequence, "the sequence only grows");

    let (status, again) = post_dispatch(&server, Some(OPERATE), &create).await;
    assert_eq!((status, again["sequence"].as_u64()), (200, Some(sequence)));
    let (status, again) = post_dispatch(&server, Some(OPERATE), &turn).await;
    assert_eq!((status, again["sequence"].as_u64()), (200, Some(turn_sequence)));

    let threads = server.threads();
    assert_eq!(threads.len(), 1, "one thread, however often its create is sent");
    assert_eq!(threads[0].turns, 1, "one turn, however often its start is sent");
    server.shutdown().await;
}

#[tokio::test]
async fn a_rejected_command_id_stays_rejected_and_a_reused_one_conflicts() {
    let server = start(config()).await;
    // Rejected: the thread does not exist yet.
    let early_turn = turn_start_json("turn-early", "t1", "too early").to_string();
    let (status, _) = post_dispatch(&server, Some(OPERATE), &early_turn).await;
    assert_eq!(status, 500);
    let (status, _) = post_dispatch(
        &server,
        Some(OPERATE),
        &thread_create_json("create-1", "t1").to_string(),
    )
    .await;
    assert_eq!(status, 200);
    // Same command id: previously rejected, so rejected again although it would now succeed.
    let (status, body) = post_dispatch(&server, Some(OPERATE), &early_turn).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (500, Some("orchestration_dispatch_failed"))
    );
    assert_eq!(server.threads()[0].turns, 0);

    // The create's id aimed at another thread: a conflict.
    let (status, _) = post_dispatch(
        &server,
        Some(OPERATE),
        &thread_create_json("create-1", "t2").to_string(),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(server.threads().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_retried_dispatch_plan_never_creates_a_second_thread() {
    let (server, client) = started(OPERATE).await;
    let issue = t3_client::IssueRef {
        repo: REPO.into(),
        number: 42,
        title: Some("Fix the widget".into()),
    };
    let plan = client.plan(&issue, project(), "Fix it", None).expect("a plan");
    let first = client.dispatch_plan(&plan).await.expect("dispatched");
    let again = client
        .dispatch_plan(&plan)
        .await
        .expect("the retry is answered as the original");
    assert_eq!(first, again);
    assert_eq!(server.threads().len(), 1);
    assert_eq!(server.threads()[0].turns, 1);
    let done = wait_until_final(&client, &first, "the turn").await;
    assert_eq!(ThreadState::of(Some(&done)), ThreadState::Succeeded);
    server.shutdown().await;
}
