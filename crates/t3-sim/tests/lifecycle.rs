//! The simulated agent's lifecycle, driven by the real T3 client over loopback: dispatch, the
//! snapshot, success, failure, hang and interrupt, session stop, follow-ups, archive and delete.

mod common;

use std::time::Duration;

use common::*;
use t3_client::ids::ThreadId;
use t3_client::wire::{SessionStatus, TurnState};
use t3_client::{IssueRef, ThreadState};
use t3_sim::{SimThreadState, TurnOutcome};

async fn dispatch(client: &t3_client::T3Client, issue: u64, prompt: &str) -> ThreadId {
    match client.dispatch(REPO, issue, prompt).await {
        Ok(thread) => thread,
        Err(e) => panic!("dispatch failed: {e}"),
    }
}

#[tokio::test]
async fn a_dispatched_thread_shows_in_the_snapshot_and_completes() {
    let (server, client) = started(OPERATE).await;
    let before = snapshot(&client).await;

    let thread_id = dispatch(&client, 1, "Fix the widget").await;

    let first = snapshot(&client).await;
    let thread = first
        .thread(&thread_id)
        .expect("the snapshot shows the new thread");
    assert_eq!(thread.title, "acme/widgets#1");
    assert_eq!(thread.branch.as_deref(), Some("afk/issue-1"));
    assert_eq!(thread.project_id, project());
    assert!(thread.messages.is_empty() && thread.activities.is_empty() && thread.checkpoints.is_empty());
    assert!(
        !ThreadState::of(Some(thread)).is_final(),
        "just dispatched, so starting or running"
    );
    assert!(first.snapshot_sequence > before.snapshot_sequence);
    assert!(first.updated_at >= before.updated_at);

    let done = wait_until_final(&client, &thread_id, "the turn to complete").await;
    assert_eq!(ThreadState::of(Some(&done)), ThreadState::Succeeded);
    let turn = done.latest_turn.as_ref().expect("a latest turn");
    assert_eq!(turn.state, TurnState::Completed);
    assert!(turn.started_at.is_some() && turn.completed_at.is_some() && turn.assistant_message_id.is_some());
    let session = done.session.as_ref().expect("a session");
    assert_eq!(session.status, SessionStatus::Ready);
    assert_eq!(session.active_turn_id, None);
    assert!(done.updated_at >= thread.updated_at);

    let sim = server.thread(&thread_id).expect("the stand-in knows the thread");
    assert_eq!((sim.turns, sim.state), (1, SimThreadState::Completed));
    server.shutdown().await;
}

#[tokio::test]
async fn the_session_starts_before_the_turn_is_admitted() {
    let server = start(t3_sim::SimConfig {
        startup_delay: Duration::from_secs(60),
        ..config()
    })
    .await;
    let client = client(&server, OPERATE);
    let thread_id = dispatch(&client, 2, "Fix it").await;

    assert_eq!(
        observe(&server, &client, &thread_id).await,
        Observed {
            session: Some(SessionStatus::Starting),
            turn: None, // not admitted while the session starts
            state: ThreadState::Running,
            sim: Some(SimThreadState::Starting),
        }
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_fail_marker_ends_the_turn_in_error_with_a_last_error() {
    let (server, client) = started(OPERATE).await;
    let thread_id = dispatch(&client, 3, "Fix it [sim:fail]").await;

    let done = wait_until_final(&client, &thread_id, "the turn to fail").await;
    match ThreadState::of(Some(&done)) {
        ThreadState::Failed { reason: Some(reason) } => assert!(reason.contains("[sim:fail]"), "{reason}"),
        other => panic!("expected a failure with a reason, got {other:?}"),
    }
    assert_eq!(done.latest_turn.map(|t| t.state), Some(TurnState::Error));
    assert_eq!(done.session.map(|s| s.status), Some(SessionStatus::Error));
    server.shutdown().await;
}

#[tokio::test]
async fn a_hanging_turn_runs_until_interrupted() {
    // Each step of the interrupt lasts long enough for a poll on a loaded machine to see it.
    let server = start(t3_sim::SimConfig {
        interrupt_settle: Duration::from_secs(1),
        ..config()
    })
    .await;
    let client = client(&server, OPERATE);
    let thread_id = dispatch(&client, 4, "Fix it [sim:hang]").await;

    let running = wait_for_thread(&client, &thread_id, "the turn to run", |t| {
        t.latest_turn
            .as_ref()
            .is_some_and(|turn| turn.state == TurnState::Running)
    })
    .await;
    // Several turn durations later it still runs (this sleep asserts an absence, it does not
    // synchronise anything).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let still = thread_now(&client, &thread_id).await;
    assert_eq!(ThreadState::of(Some(&still)), ThreadState::Running);
    assert_eq!(
        still.session.as_ref().and_then(|s| s.active_turn_id.clone()),
        running.latest_turn.as_ref().map(|t| t.turn_id.clone())
    );

    // As in T3: an interrupt naming the turn shows it `interrupted` (the session still
    // `running`), then the session `ready`, then T3 marks the turn `completed`.
    let turn = running.latest_turn.as_ref().map(|t| t.turn_id.clone());
    client
        .interrupt_turn(&thread_id, turn.as_ref(), command_id())
        .await
        .expect("interrupt is accepted");
    let interrupted = wait_until_final(&client, &thread_id, "the interrupt").await;
    assert_eq!(
        interrupted.latest_turn.as_ref().map(|t| t.state),
        Some(TurnState::Interrupted)
    );
    assert!(interrupted.latest_turn.and_then(|t| t.completed_at).is_some());
    let done = wait_for_thread(&client, &thread_id, "T3 to mark the turn completed", |t| {
        t.latest_turn.as_ref().map(|t| t.state) == Some(TurnState::Completed)
    })
    .await;
    assert_eq!(done.session.map(|s| s.status), Some(SessionStatus::Ready));
    assert_eq!(
        server.thread(&thread_id).map(|t| t.agent_running),
        Some(true),
        "an interrupt ends the turn, not the agent"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_interrupt_naming_another_turn_interrupts_the_running_one() {
    let (server, client) = started(OPERATE).await;
    let thread_id = dispatch(&client, 5, "[sim:hang]").await;
    wait_for_thread(&client, &thread_id, "the turn to run", |t| {
        t.latest_turn.is_some()
    })
    .await;

    // T3 interrupts by session: the running turn ends, and never reads `interrupted`.
    let other_turn = t3_client::TurnId::new("some-other-turn").expect("a valid id");
    client
        .interrupt_turn(&thread_id, Some(&other_turn), command_id())
        .await
        .expect("T3 accepts it");
    assert_eq!(
        server.thread(&thread_id).map(|t| t.state),
        Some(SimThreadState::Completed)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn stopping_the_session_interrupts_the_turn_and_stops_the_session() {
    let (server, client) = started(OPERATE).await;
    let thread_id = dispatch(&client, 6, "[sim:hang]").await;
    wait_for_thread(&client, &thread_id, "the turn to run", |t| {
        t.latest_turn.is_some()
    })
    .await;

    client
        .stop_session(&thread_id, command_id())
        .await
        .expect("stop is accepted");

    assert_eq!(
        observe(&server, &client, &thread_id).await,
        Observed {
            session: Some(SessionStatus::Stopped),
            turn: Some(TurnState::Interrupted),
            state: ThreadState::Interrupted,
            sim: Some(SimThreadState::Stopped),
        }
    );
    server.shutdown().await;
}

#[tokio::test]
async fn fail_times_fails_the_first_threads_of_a_title_then_succeeds() {
    let (server, client) = started(OPERATE).await;
    let mut outcomes = Vec::new();
    for _attempt in 0..3 {
        // One new thread per attempt, all with the issue's title, as afk retries.
        let thread_id = dispatch(&client, 7, "Fix it [sim:fail-times=2]").await;
        let done = wait_until_final(&client, &thread_id, "the attempt to end").await;
        outcomes.push(matches!(ThreadState::of(Some(&done)), ThreadState::Succeeded));
    }
    assert_eq!(outcomes, vec![false, false, true]);

    // Another title has its own count.
    let other = dispatch(&client, 8, "Fix it [sim:fail-times=1]").await;
    let done = wait_until_final(&client, &other, "the other issue's attempt").await;
    assert!(matches!(ThreadState::of(Some(&done)), ThreadState::Failed { .. }));
    server.shutdown().await;
}

#[tokio::test]
async fn a_duration_marker_overrides_the_turn_duration() {
    let server = start(t3_sim::SimConfig {
        turn_duration: Duration::from_secs(3600),
        ..config()
    })
    .await;
    let client = client(&server, OPERATE);
    let thread_id = dispatch(&client, 9, "Quick one [sim:duration=50]").await;
    let done = wait_until_final(&client, &thread_id, "the short turn").await;
    assert_eq!(ThreadState::of(Some(&done)), ThreadState::Succeeded);
    server.shutdown().await;
}

#[tokio::test]
async fn finish_turn_ends_a_turn_on_demand() {
    let (server, client) = started(OPERATE).await;
    let thread_id = dispatch(&client, 10, "[sim:hang]").await;

    assert!(server.finish_turn(thread_id.as_str(), TurnOutcome::Error("the agent gave up".into())));
    let thread = thread_now(&client, &thread_id).await;
    assert_eq!(
        ThreadState::of(Some(&thread)),
        ThreadState::Failed {
            reason: Some("the agent gave up".into())
        }
    );
    assert!(
        !server.finish_turn(thread_id.as_str(), TurnOutcome::Completed),
        "nothing left to finish"
    );
    assert!(!server.finish_turn("no-such-thread", TurnOutcome::Completed));
    server.shutdown().await;
}

#[tokio::test]
async fn a_follow_up_turn_runs_on_the_same_thread() {
    let (server, client) = started(OPERATE).await;
    let thread_id = dispatch(&client, 11, "First").await;
    let first = wait_until_final(&client, &thread_id, "the first turn").await;

    client
        .follow_up(
            &thread_id,
            "CI failed, fix it",
            command_id(),
            t3_client::MessageId::generate(),
        )
        .await
        .expect("the follow-up is accepted");
    let second = wait_for_thread(&client, &thread_id, "the second turn", |t| {
        t.latest_turn.as_ref().map(|turn| &turn.turn_id)
            != first.latest_turn.as_ref().map(|turn| &turn.turn_id)
            && ThreadState::of(Some(t)).is_final()
    })
    .await;
    assert_eq!(ThreadState::of(Some(&second)), ThreadState::Succeeded);
    assert_eq!(server.thread(&thread_id).map(|t| t.turns), Some(2));
    server.shutdown().await;
}

#[tokio::test]
async fn archived_threads_leave_the_shell_and_deleted_threads_are_lost() {
    let (server, client) = started(OPERATE).await;
    let archived = dispatch(&client, 12, "[sim:duration=10]").await;
    let deleted = dispatch(&client, 13, "[sim:hang]").await;

    client
        .archive_thread(&archived, command_id())
        .await
        .expect("archive is accepted");
    client
        .send_command(&t3_client::wire::ClientCommand::ThreadDelete(
            t3_client::wire::ThreadRef {
                command_id: command_id(),
                thread_id: deleted.clone(),
            },
        ))
        .await
        .expect("delete is accepted");

    let model = snapshot(&client).await;
    assert!(model.thread(&archived).is_some_and(|t| t.archived_at.is_some()));
    let gone = model
        .thread(&deleted)
        .expect("a deleted thread stays in the read model");
    assert!(gone.deleted_at.is_some());
    assert_eq!(ThreadState::of(Some(gone)), ThreadState::Lost);
    // As in T3, a deleted thread's view freezes as it was (here its session was still starting
    // or running), and its commands are still accepted.
    assert!(matches!(
        gone.session.as_ref().map(|s| s.status),
        Some(SessionStatus::Starting | SessionStatus::Running)
    ));
    client
        .stop_session(&deleted, command_id())
        .await
        .expect("a command for a deleted thread is accepted");
    assert_eq!(
        snapshot(&client)
            .await
            .thread(&deleted)
            .and_then(|t| t.session.clone()),
        gone.session,
        "and changes nothing"
    );

    let (status, shell) = get(&server, Some(READ_ONLY), "/api/orchestration/shell").await;
    assert_eq!(status, 200);
    assert_eq!(shell["threads"].as_array().map(Vec::len), Some(0), "{shell}");

    let (status, body) = get(
        &server,
        Some(READ_ONLY),
        &format!("/api/orchestration/threads/{deleted}"),
    )
    .await;
    assert_eq!(status, 404);
    assert_error_body(&body, "EnvironmentResourceNotFoundError", "not_found");
    assert_eq!(body["reason"], "thread_not_found");

    let sims = server.threads();
    assert!(sims.iter().any(|t| t.id == archived && t.archived));
    assert!(sims.iter().any(|t| t.id == deleted && t.deleted));
    server.shutdown().await;
}

#[tokio::test]
async fn shell_thread_detail_and_environment_have_t3s_shapes() {
    let (server, client) = started(OPERATE).await;
    let thread_id = dispatch(&client, 14, "Show me").await;
    wait_until_final(&client, &thread_id, "the turn to end").await;

    let (status, shell) = get(&server, Some(READ_ONLY), "/api/orchestration/shell").await;
    assert_eq!(status, 200);
    assert!(shell["snapshotSequence"].is_u64() && shell["updatedAt"].is_string());
    assert_eq!(shell["projects"][0]["id"], PROJECT);
    assert!(
        shell["projects"][0].get("deletedAt").is_none(),
        "the shell project has no deletedAt"
    );
    let thread = &shell["threads"][0];
    assert_eq!(thread["id"], thread_id.as_str());
    for key in [
        "hasPendingApprovals",
        "hasPendingUserInput",
        "hasActionableProposedPlan",
    ] {
        assert_eq!(thread[key], false, "{key} in {thread}");
    }
    assert!(thread["latestUserMessageAt"].is_string());
    assert_eq!(thread["latestTurn"]["state"], "completed");
    assert!(thread.get("messages").is_none(), "the shell carries no messages");

    let path = format!("/api/orchestration/threads/{thread_id}");
    let (status, detail) = get(&server, Some(READ_ONLY), &path).await;
    assert_eq!(status, 200);
    assert!(detail["snapshotSequence"].is_u64());
    assert!(detail.get("page").is_none());
    let messages = detail["thread"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        messages.len(),
        2,
        "the user message and the simulated reply: {detail}"
    );
    assert_eq!(messages[0]["role"], "user");
    assert!(messages[0]["text"]
        .as_str()
        .is_some_and(|t| t.ends_with("Show me")));
    assert_eq!(messages[1]["role"], "assistant");

    let (status, windowed) = get(&server, Some(READ_ONLY), &format!("{path}?turnLimit=5")).await;
    assert_eq!(status, 200);
    assert_eq!(windowed["page"]["hasMore"], false);
    assert!(windowed["page"]["beforeCursor"].is_null());
    let (status, _) = get(&server, Some(READ_ONLY), &format!("{path}?turnLimit=0")).await;
    assert_eq!(status, 400);

    let (status, missing) = get(&server, Some(READ_ONLY), "/api/orchestration/threads/nope").await;
    assert_eq!(status, 404);
    assert_error_body(&missing, "EnvironmentResourceNotFoundError", "not_found");

    let (status, environment) = get(&server, None, "/.well-known/t3/environment").await;
    assert_eq!(status, 200);
    assert!(environment["environmentId"]
        .as_str()
        .is_some_and(|id| id.len() == 36));
    assert_eq!(environment["label"], "t3-sim");
    assert!(environment["platform"]["os"].is_string() && environment["platform"]["arch"].is_string());
    assert!(environment["serverVersion"].is_string());
    assert_eq!(environment["capabilities"]["repositoryIdentity"], false);
    server.shutdown().await;
}

#[tokio::test]
async fn a_created_project_takes_threads() {
    let (server, client) = started(OPERATE).await;
    let project = t3_client::ProjectId::new("proj-gadgets").expect("a valid id");
    client
        .create_project(&project, "gadgets", "/tmp/gadgets", command_id())
        .await
        .expect("project.create is accepted");

    let issue = IssueRef {
        repo: "acme/gadgets".into(),
        number: 1,
        title: Some("Polish".into()),
    };
    let plan = client
        .plan(&issue, project.clone(), "Polish it", None)
        .expect("a plan");
    let thread_id = client
        .dispatch_plan(&plan)
        .await
        .expect("dispatch into the new project");

    let model = snapshot(&client).await;
    let created = model
        .projects
        .iter()
        .find(|p| p.id == project)
        .expect("the project");
    assert_eq!(
        (created.title.as_str(), created.workspace_root.as_str()),
        ("gadgets", "/tmp/gadgets")
    );
    assert_eq!(
        model.thread(&thread_id).map(|t| t.title.as_str()),
        Some("acme/gadgets#1: Polish")
    );
    server.shutdown().await;
}

/// The keys of a JSON object, sorted.
fn keys(value: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test]
async fn the_raw_snapshot_carries_exactly_t3s_read_model_keys() {
    let (server, client) = started(OPERATE).await;
    let thread_id = dispatch(&client, 15, "[sim:hang]").await;
    wait_for_thread(&client, &thread_id, "the turn to run", |t| {
        t.latest_turn.is_some()
    })
    .await;

    let (status, model) = get(&server, Some(READ_ONLY), "/api/orchestration/snapshot").await;
    assert_eq!(status, 200);
    assert_eq!(
        keys(&model),
        ["projects", "snapshotSequence", "threads", "updatedAt"]
    );
    assert_eq!(
        keys(&model["projects"][0]),
        [
            "createdAt",
            "defaultModelSelection",
            "deletedAt",
            "id",
            "scripts",
            "title",
            "updatedAt",
            "workspaceRoot"
        ]
    );
    let thread = &model["threads"][0];
    assert_eq!(
        keys(thread),
        [
            "activities",
            "archivedAt",
            "branch",
            "checkpoints",
            "createdAt",
            "deletedAt",
            "id",
            "interactionMode",
            "latestTurn",
            "messages",
            "modelSelection",
            "projectId",
            "runtimeMode",
            "session",
            "title",
            "updatedAt",
            "worktreePath",
        ]
    );
    assert_eq!(
        keys(&thread["latestTurn"]),
        [
            "assistantMessageId",
            "completedAt",
            "requestedAt",
            "startedAt",
            "state",
            "turnId"
        ]
    );
    assert_eq!(
        keys(&thread["session"]),
        [
            "activeTurnId",
            "lastError",
            "providerName",
            "runtimeMode",
            "status",
            "threadId",
            "updatedAt"
        ]
    );
    assert_eq!(thread["session"]["providerName"], "claudeAgent");
    // ISO 8601 UTC with milliseconds, as T3 writes instants.
    let created = thread["createdAt"].as_str().expect("a string");
    assert!(
        created.ends_with('Z') && created.len() == "2026-11-24T19:14:36.116Z".len(),
        "{created}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn commands_applied_in_process_behave_as_dispatched_ones() {
    let server = start(config()).await;
    let create: t3_client::wire::ClientCommand =
        serde_json::from_value(thread_create_json("create-1", "t1")).expect("a valid command");
    let first = server.apply_command(create.clone()).expect("applied");
    assert_eq!(server.apply_command(create).expect("the receipt"), first);
    let turn: t3_client::wire::ClientCommand =
        serde_json::from_value(turn_start_json("turn-1", "t1", "[sim:duration=10]"))
            .expect("a valid command");
    server.apply_command(turn).expect("applied");
    let missing: t3_client::wire::ClientCommand =
        serde_json::from_value(turn_start_json("turn-2", "nope", "x")).expect("a valid command");
    let refusal = server.apply_command(missing).expect_err("no such thread");
    assert!(refusal.contains("does not exist"), "{refusal}");

    // Over HTTP, the same command id is answered from the same receipt.
    let (status, body) = post_dispatch(
        &server,
        Some(OPERATE),
        &thread_create_json("create-1", "t1").to_string(),
    )
    .await;
    assert_eq!((status, body["sequence"].as_u64()), (200, Some(first.sequence)));
    let client = client(&server, OPERATE);
    let thread = ThreadId::new("t1").expect("id");
    let done = wait_until_final(&client, &thread, "the turn").await;
    assert_eq!(ThreadState::of(Some(&done)), ThreadState::Succeeded);
    server.shutdown().await;
}

#[tokio::test]
async fn after_t3_restarts_an_interrupt_starts_the_lost_agent_again_and_a_stop_does_not() {
    let (server, client) = started(OPERATE).await;
    let interrupted = dispatch(&client, 20, "[sim:duration=10]").await;
    let stopped = dispatch(&client, 21, "[sim:duration=10]").await;
    for id in [&interrupted, &stopped] {
        wait_for_thread(&client, id, "the turn to complete", |t| {
            ThreadState::of(Some(t)) == ThreadState::Succeeded
        })
        .await;
    }
    server.lose_agents();
    let sim = |id: &ThreadId| server.thread(id).expect("the thread");
    assert!(!sim(&interrupted).agent_running && !sim(&stopped).agent_running);
    assert_eq!(sim(&interrupted).agent_starts, 1);

    client
        .interrupt_turn(&interrupted, None, command_id())
        .await
        .expect("accepted");
    assert_eq!(
        (sim(&interrupted).agent_starts, sim(&interrupted).agent_running),
        (2, true),
        "T3 starts the agent again to deliver the interrupt"
    );
    let recovered = wait_for_thread(&client, &interrupted, "the session to be back", |t| {
        t.session.as_ref().map(|s| s.status) == Some(SessionStatus::Ready)
    })
    .await;
    assert_eq!(recovered.latest_turn.map(|t| t.state), Some(TurnState::Completed));

    client
        .stop_session(&stopped, command_id())
        .await
        .expect("accepted");
    assert_eq!(
        (sim(&stopped).agent_starts, sim(&stopped).agent_running),
        (1, false),
        "a stop starts nothing"
    );
    server.shutdown().await;
}
