//! Fault injection, seen through the real T3 client: a share of 500s, dropped connections, lost
//! replies, an outage window, forced unavailability, latency; and the pauses crash tests use.

mod common;

use std::time::Duration;

use common::*;
use t3_client::{IssueRef, T3Error, ThreadState};
use t3_sim::{FaultPlan, PausePhase, SimConfig};

fn faulty(faults: FaultPlan) -> SimConfig {
    SimConfig { faults, ..config() }
}

/// Which of `n` sequential snapshot requests got a 500.
async fn error_pattern(server: &t3_sim::SimServer, n: usize) -> Vec<bool> {
    let client = client(server, READ_ONLY);
    let mut pattern = Vec::with_capacity(n);
    for _ in 0..n {
        match client.snapshot().await {
            Ok(_) => pattern.push(false),
            Err(e) => {
                assert_eq!(e.status(), Some(500), "{e}");
                let body = e.body().expect("T3's error body");
                assert_eq!(body.tag.as_deref(), Some("EnvironmentInternalError"));
                assert_eq!(body.reason.as_deref(), Some("orchestration_snapshot_failed"));
                assert!(e.is_transient());
                pattern.push(true);
            }
        }
    }
    pattern
}

/// Starts dispatching issue 1 of [`REPO`] in a task of its own and returns it once `pause` holds
/// the request (`what` names what is held, for the panic when it never is).
async fn dispatch_until_held(
    client: &t3_client::T3Client,
    pause: &t3_sim::Pause,
    what: &str,
) -> tokio::task::JoinHandle<Result<t3_client::ids::ThreadId, t3_client::DispatchError>> {
    let dispatching = tokio::spawn({
        let client = client.clone();
        async move { client.dispatch(REPO, 1, "Fix it").await }
    });
    held(pause, what).await;
    dispatching
}

/// Waits (within [`PATIENCE`]) until `pause` holds a request.
async fn held(pause: &t3_sim::Pause, what: &str) {
    tokio::time::timeout(PATIENCE, pause.hit()).await.expect(what);
}

#[tokio::test]
async fn an_error_rate_answers_that_share_with_500s_the_same_way_for_the_same_seed() {
    let plan = FaultPlan {
        error_rate: 0.3,
        ..FaultPlan::default()
    };
    let server = start(faulty(plan.clone())).await;
    let pattern = error_pattern(&server, 200).await;
    let errors = pattern.iter().filter(|e| **e).count();
    assert!(
        (35..=85).contains(&errors),
        "{errors} of 200 requests failed at a 30% rate"
    );
    server.shutdown().await;

    let replay = start(faulty(plan)).await;
    assert_eq!(
        error_pattern(&replay, 200).await,
        pattern,
        "the same seed, the same faults"
    );
    replay.shutdown().await;
}

#[tokio::test]
async fn an_injected_500_on_dispatch_applies_nothing() {
    let server = start(faulty(FaultPlan {
        error_rate: 1.0,
        ..FaultPlan::default()
    }))
    .await;
    let error = client(&server, OPERATE)
        .dispatch(REPO, 1, "Fix it")
        .await
        .expect_err("500");
    assert_eq!(error.error.status(), Some(500));
    assert_eq!(
        error.error.body().and_then(|b| b.reason.clone()).as_deref(),
        Some("orchestration_dispatch_failed")
    );
    assert!(server.threads().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_reaches_the_client_as_a_transport_error_and_applies_nothing() {
    let server = start(faulty(FaultPlan {
        drop_rate: 1.0,
        ..FaultPlan::default()
    }))
    .await;
    let client = client(&server, OPERATE);
    let error = client.snapshot().await.expect_err("dropped");
    assert!(matches!(error, T3Error::Transport { .. }), "{error}");
    assert!(error.is_transient());
    let error = client.dispatch(REPO, 1, "Fix it").await.expect_err("dropped");
    assert!(
        matches!(error.error, T3Error::Transport { .. }),
        "{}",
        error.error
    );
    assert!(server.threads().is_empty());

    server.set_faults(FaultPlan::default());
    client.snapshot().await.expect("healthy again");
    server.shutdown().await;
}

#[tokio::test]
async fn a_lost_reply_was_applied_and_the_retry_with_the_same_ids_is_answered_as_the_original() {
    let (server, client) = started(OPERATE).await;
    let issue = IssueRef {
        repo: REPO.into(),
        number: 5,
        title: None,
    };
    let plan = client.plan(&issue, project(), "Fix it", None).expect("a plan");

    server.set_faults(FaultPlan {
        lost_reply_rate: 1.0,
        ..FaultPlan::default()
    });
    let error = client.create_thread(&plan).await.expect_err("the reply is lost");
    assert!(matches!(error, T3Error::Transport { .. }), "{error}");
    assert_eq!(server.threads().len(), 1, "the command was applied");
    let applied_at = server.sequence();

    server.set_faults(FaultPlan::default());
    let retry = client.create_thread(&plan).await.expect("the retry is answered");
    assert_eq!(retry.sequence, applied_at, "the original sequence");
    client.start_turn(&plan).await.expect("the turn starts");
    assert_eq!(server.threads().len(), 1);
    assert_eq!(server.threads()[0].turns, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn an_outage_window_answers_503_and_then_recovers() {
    let (server, client) = started(READ_ONLY).await;

    server.set_faults(FaultPlan {
        unavailable: Some((Duration::from_secs(3600), Duration::from_secs(1))),
        ..FaultPlan::default()
    });
    client.snapshot().await.expect("before the window");

    server.set_faults(FaultPlan {
        unavailable: Some((Duration::ZERO, Duration::from_millis(300))),
        ..FaultPlan::default()
    });
    let error = client.snapshot().await.expect_err("in the window");
    assert_eq!(error.status(), Some(503));
    assert!(error.is_transient());
    eventually("the outage to end", || async { client.snapshot().await.ok() }).await;
    server.shutdown().await;
}

#[tokio::test]
async fn set_unavailable_answers_503_until_switched_off() {
    let server = start(config()).await;
    server.set_unavailable(true);
    let (status, _) = get(&server, Some(READ_ONLY), "/api/orchestration/snapshot").await;
    assert_eq!(status, 503);
    let (status, _) = post_dispatch(&server, Some(OPERATE), &thread_create_json("c", "t").to_string()).await;
    assert_eq!(status, 503);
    assert!(server.threads().is_empty());
    server.set_unavailable(false);
    let (status, _) = get(&server, Some(READ_ONLY), "/api/orchestration/snapshot").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn latency_delays_every_request() {
    let server = start(faulty(FaultPlan {
        latency: Duration::from_millis(150),
        ..FaultPlan::default()
    }))
    .await;
    let client = client(&server, READ_ONLY);
    let started = std::time::Instant::now();
    client.snapshot().await.expect("slow but fine");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_pause_before_apply_holds_the_request_until_released() {
    let (server, client) = started(OPERATE).await;
    let pause = server.pause("thread.create", PausePhase::BeforeApply);
    let dispatching = dispatch_until_held(&client, &pause, "the request is held").await;
    assert_eq!(pause.held(), 1);
    assert!(server.threads().is_empty(), "held before it was applied");
    assert!(!dispatching.is_finished());

    pause.release();
    let thread = dispatching.await.expect("the task ran").expect("dispatched");
    assert_eq!(server.threads().len(), 1);
    // Released for good: later creates pass.
    client.dispatch(REPO, 2, "Next").await.expect("not held");
    let _ = thread;
    server.shutdown().await;
}

#[tokio::test]
async fn a_pause_after_apply_holds_the_reply_of_an_applied_command() {
    let (server, client) = started(OPERATE).await;
    let pause = server.pause("thread.turn.start", PausePhase::AfterApply);
    let dispatching = dispatch_until_held(&client, &pause, "the reply is held").await;
    assert_eq!(server.threads()[0].turns, 1, "applied before the reply is held");
    assert!(!dispatching.is_finished());
    pause.release();
    dispatching.await.expect("the task ran").expect("dispatched");
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_killed_while_held_retries_without_a_second_thread() {
    let (server, client) = started(OPERATE).await;
    let issue = IssueRef {
        repo: REPO.into(),
        number: 3,
        title: None,
    };
    let plan = client.plan(&issue, project(), "Fix it", None).expect("a plan");
    let pause = server.pause("thread.create", PausePhase::BeforeApply);
    let doomed = tokio::spawn({
        let (client, plan) = (client.clone(), plan.clone());
        async move { client.dispatch_plan(&plan).await }
    });
    held(&pause, "the request is held").await;
    doomed.abort(); // the client dies with its request in T3's hands
    pause.release();

    let thread = client
        .dispatch_plan(&plan)
        .await
        .expect("the retry after the crash");
    assert_eq!(thread, plan.ids.thread_id);
    let threads = server.threads();
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].turns, 1);
    let done = wait_until_final(&client, &thread, "the turn").await;
    assert_eq!(ThreadState::of(Some(&done)), ThreadState::Succeeded);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_held_requests_and_stops_serving() {
    let server = start(config()).await;
    let url = server.url();
    let client = client(&server, OPERATE);
    let pause = server.pause("thread.create", PausePhase::BeforeApply);
    let dispatching = dispatch_until_held(&client, &pause, "the request is held").await;
    tokio::time::timeout(PATIENCE, server.shutdown())
        .await
        .expect("shutdown finishes");
    let _ = tokio::time::timeout(PATIENCE, dispatching)
        .await
        .expect("the held request ends");
    let refused = raw()
        .get(format!("{url}/.well-known/t3/environment"))
        .send()
        .await;
    assert!(refused.is_err(), "nothing listens any more");
}
