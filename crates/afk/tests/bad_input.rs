//! Bad input is isolated: an issue file afk cannot take is skipped (said once, naming the file and
//! why) and every other issue goes on; the tick never fails because of one file. A symlinked issue
//! file whose target is missing is unreadable, not removed: its job is not cancelled.

mod common;

use std::time::Duration;

use afk_core::JobState;
use chrono::Utc;
use common::*;

fn write(world: &World, name: &str, text: &str) -> std::path::PathBuf {
    let path = world.issues_dir().join(name);
    std::fs::create_dir_all(world.issues_dir()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn files_afk_cannot_take_are_skipped_and_the_others_go_on() {
    let world = World::new(Duration::from_millis(100)).await;
    world.add_issue(REPO_A, 1, "Do it.");
    write(
        &world,
        "huge-number.md",
        "---\nrepo: acme/api\nnumber: 9223372036854775808\ntitle: Too big\n---\nbody\n",
    );
    write(
        &world,
        "nul.md",
        "---\nrepo: acme/api\nnumber: 3\ntitle: NUL\n---\nbefore\0after\n",
    );
    let mut big = String::from("---\nrepo: acme/api\nnumber: 4\ntitle: Big\n---\n");
    big.push_str(&"x".repeat(2 * 1024 * 1024));
    write(&world, "big.md", &big);
    std::fs::create_dir_all(world.issues_dir().join("folder.md")).unwrap();
    let fifo = world.issues_dir().join("pipe.md");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());

    let mut app = world.app().await;
    // Every tick goes through (tick_until fails on a failed tick) and the good issue is done.
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].issue, key(REPO_A, 1));
    assert_eq!(jobs[0].state, JobState::Succeeded);
}

#[tokio::test]
async fn a_dangling_symlinked_issue_file_is_unreadable_not_removed() {
    let world = World::new(Duration::from_secs(60)).await;
    let target = world.dir.path().join("elsewhere.md");
    let issue = world.add_issue(REPO_A, 1, "Do it.");
    std::fs::rename(&issue, &target).unwrap();
    std::os::unix::fs::symlink(&target, &issue).unwrap();
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Running).await;

    // The target goes missing (a volume unmounted, a checkout switching branches).
    std::fs::rename(&target, world.dir.path().join("moved-away.md")).unwrap();
    for _ in 0..5 {
        app.tick(Utc::now()).await.expect("a tick");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(jobs[0].state, JobState::Running, "not cancelled: {jobs:#?}");
    assert!(!first_thread_interrupted(&world.sim), "its thread goes on");

    // A loop is unreadable too.
    std::fs::remove_file(&issue).unwrap();
    std::os::unix::fs::symlink(&issue, &issue).unwrap();
    app.tick(Utc::now()).await.expect("a tick");
    assert_eq!(app.ledger().jobs().await.unwrap()[0].state, JobState::Running);

    // Really removed: cancelled.
    std::fs::remove_file(&issue).unwrap();
    tick_until_first_job_is(&mut app, JobState::Cancelled).await;
}

/// A T3 in front of the stand-in whose snapshot, while `garble` is on, describes every finished
/// turn with a state afk does not know (`paused`): the way a newer T3, or a broken one, may.
async fn garbling_proxy(upstream: String, garble: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use axum::body::Body;
    use axum::extract::Request;
    use std::sync::atomic::Ordering;
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: Request| {
        let (http, upstream, garble) = (http.clone(), upstream.clone(), garble.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut forward = http.request(parts.method.clone(), format!("{upstream}{}", parts.uri));
            for (name, value) in &parts.headers {
                if name != "host" && name != "content-length" {
                    forward = forward.header(name, value);
                }
            }
            let reply = forward.body(body).send().await.unwrap();
            let status = reply.status();
            let mut text = reply.text().await.unwrap();
            if parts.uri.path() == "/api/orchestration/snapshot" && garble.load(Ordering::SeqCst) {
                text = text.replace("\"state\":\"completed\"", "\"state\":\"paused\"");
            }
            axum::response::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(text))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test]
async fn a_thread_t3_describes_unreadably_is_unknown_until_readable_and_the_others_go_on() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Turns last a second: long enough to garble T3's view before the first one ends.
    let mut world = World::new(Duration::from_secs(1)).await;
    let garble = std::sync::Arc::new(AtomicBool::new(false));
    world.config.t3.url = garbling_proxy(world.sim.url(), garble.clone()).await;
    // Over HTTP only: the proxy passes no WebSocket.
    world.config.watch.push = false;
    world.config.t3.dispatch = afk::config::DispatchMode::Http;
    world.add_issue(REPO_A, 1, "Do it.");
    world.add_issue(REPO_B, 2, "Long. [sim:hang]");
    let mut app = world.app().await;
    tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        |jobs| jobs.len() == 2 && jobs.iter().all(|j| j.state == JobState::Running),
    )
    .await;
    garble.store(true, Ordering::SeqCst);
    // Issue 1's turn completes in T3, which now describes it unreadably: afk must neither
    // conclude it succeeded nor lose it, and the other job is still watched.
    let finished = |sim: &t3_sim::SimServer| {
        sim.read_model().threads.iter().any(|t| {
            t.latest_turn
                .as_ref()
                .is_some_and(|turn| turn.state == t3_client::wire::TurnState::Completed)
        })
    };
    tick_until_true(&mut app, || finished(&world.sim)).await;
    for _ in 0..10 {
        let report = app.tick(Utc::now()).await.expect("a tick goes through");
        assert!(report.t3_reachable, "T3's view is read despite the odd thread");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(
        states(&jobs),
        [JobState::Running, JobState::Running],
        "unknown, not succeeded nor lost: {jobs:#?}"
    );
    // Readable again: it succeeds.
    garble.store(false, Ordering::SeqCst);
    tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        |jobs| job(jobs, REPO_A, 1).state == JobState::Succeeded,
    )
    .await;
}
