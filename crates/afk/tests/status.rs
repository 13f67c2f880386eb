//! The status surface against a running control plane (the T3 stand-in, local issue files, afk
//! wired by `App::build` on port 0): the JSON API as a tool built for Symphony's reads it, the
//! actions behind their token, health, metrics, and a listener that holds under idle, slow and
//! many clients.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use afk_core::JobState;
use afk_secrets::{ProviderSpec, Secret};
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ACTION_TOKEN: &str = "status-action-token-41c9";

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Asserts a JSON error envelope with `code`.
fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn the_state_shows_an_attempt_running_then_its_outcome_and_the_issue_its_whole_story() {
    let world = World::new(Duration::from_millis(600)).await;
    world.add_issue(REPO_A, 7, "Do it.");
    let mut app = world.app().await;
    let addr = app.http_addr().expect("afk listens by default");

    let (status, state) = get(addr, "/api/v1/state").await;
    assert_eq!(status, 200);
    assert_eq!(state["counts"]["queued"], 0, "{state}");
    assert_eq!(state["running"], serde_json::json!([]));

    let jobs = tick_until_first_job_is(&mut app, JobState::Running).await;
    let (_, state) = get(addr, "/api/v1/state").await;
    assert_eq!(state["counts"]["running"], 1, "{state}");
    let running = &state["running"][0];
    assert_eq!(running["issue_identifier"], "acme/api#7");
    assert_eq!(running["attempt"], 1);
    let thread = app.ledger().attempts(jobs[0].id).await.unwrap()[0]
        .thread_id
        .to_string();
    assert_eq!(running["thread_id"], thread.as_str());
    assert_eq!(running["session_id"], thread.as_str());
    assert_eq!(
        running["thread_url"],
        format!("{}/{thread}", world.sim.url()).as_str(),
        "linked to the thread in T3's web UI (t3.url without web_url)"
    );
    assert_eq!(running["api_path"], "/api/v1/acme/api/7");
    assert!(running["seconds_running"].as_f64().unwrap() >= 0.0);
    // `afk status --json`'s fields are there too: the same data.
    assert_eq!(state["jobs"]["running"], 1);
    assert_eq!(state["live"][0]["thread_id"], thread.as_str());

    tick_until_all_final(&mut app, 1).await;
    let (_, state) = get(addr, "/api/v1/state").await;
    assert_eq!(state["counts"]["succeeded"], 1, "{state}");
    assert_eq!(state["running"], serde_json::json!([]));
    assert_eq!(state["recent"][0]["outcome"], "succeeded", "{state}");
    assert_eq!(state["recent"][0]["issue_identifier"], "acme/api#7");
    assert_eq!(state["totals"]["attempts"], 1);
    assert!(state["codex_totals"]["seconds_running"].as_f64().unwrap() > 0.0);
    let cli = afk::views::status(app.ledger()).await.unwrap();
    let cli = serde_json::to_value(cli).unwrap();
    assert_eq!(
        cli["counts"], state["counts"],
        "afk status --json reads the same data"
    );
    assert_eq!(cli["recent"][0]["thread_id"], state["recent"][0]["thread_id"]);

    let (status, issue) = get(addr, "/api/v1/acme/api/7").await;
    assert_eq!(status, 200, "{issue}");
    assert_eq!(issue["issue_identifier"], "acme/api#7");
    assert_eq!(issue["status"], "succeeded");
    assert_eq!(issue["attempt_list"][0]["thread_id"], thread.as_str());
    assert_eq!(issue["attempt_list"][0]["state"], "succeeded");
    assert!(issue["attempt_list"][0]["branch"]
        .as_str()
        .unwrap()
        .contains("issue-7"));
    let worktree = world.sim.read_model().threads[0].worktree_path.clone();
    assert!(worktree.is_some(), "the stand-in made a worktree");
    assert_eq!(
        issue["attempt_list"][0]["worktree"].as_str(),
        worktree.as_deref(),
        "the worktree T3 showed: {issue}"
    );
    let events: Vec<&str> = issue["recent_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "queued -> dispatching",
            "dispatching -> running",
            "running -> succeeded"
        ],
        "{issue}"
    );

    let (status, page) = get(addr, "/api/v1/jobs?state=succeeded&limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(page["jobs"][0]["issue"], "acme/api#7");
    assert_eq!(page["jobs"][0]["thread_id"], thread.as_str());
    assert_eq!(page["next_after"], Value::Null);
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let world = World::new(Duration::from_millis(100)).await;
    let app = world.app().await;
    let addr = app.http_addr().unwrap();

    // (path, status, error code)
    let cases = [
        ("/api/v1/acme/api/404", 404, "issue_not_found"),
        ("/api/v1/acme/api/seven", 400, "bad_path"),
        ("/api/v1/acme/..%2F../1", 400, "bad_path"),
        ("/api/v1/acme", 404, "not_found"),
        ("/api/v1/jobs?limit=0", 400, "bad_query"),
        // A typo'd state is an error, not an empty list.
        ("/api/v1/jobs?state=runing", 400, "bad_query"),
    ];
    for (path, expected, code) in cases {
        let (status, body) = get(addr, path).await;
        assert_eq!(status, expected, "{path}: {body}");
        assert_error(&body, code);
    }
    let (status, body) = post(addr, "/api/v1/state", None).await;
    assert_eq!(status, 405);
    assert_error(&body, "method_not_allowed");

    // An oversized body is refused before it is read through.
    let big = vec![b'x'; 200 * 1024];
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/refresh"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    assert_error(&response.json().await.unwrap(), "body_too_large");

    // Without [http.token], the actions are off.
    let (status, body) = post(addr, "/api/v1/acme/api/1/cancel", Some("anything")).await;
    assert_eq!(status, 403);
    assert_error(&body, "actions_off");
    let (status, body) = post(addr, "/api/v1/acme/api/1/explode", None).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");

    // Garbage on the wire: an error answer or a closed connection, never a dead listener.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"\x00\x01GARBAGE \xff\xfe\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut sink)).await;
    let (status, _) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_refresh_ticks_at_once_and_bursts_coalesce() {
    let mut world = World::new(Duration::from_millis(100)).await;
    // Nothing would happen before the test ends but for the refresh.
    world.config.watch.poll_interval = Duration::from_secs(3600);
    world.config.watch.push = false;
    let app = world.app().await;
    let addr = app.http_addr().unwrap();
    let ledger = app.ledger().clone();

    // Before the loop runs: the first request is queued, the next ones coalesce into it.
    let (status, first) = post(addr, "/api/v1/refresh", None).await;
    assert_eq!(status, 202);
    assert_eq!(first["queued"], true);
    assert_eq!(first["coalesced"], false);
    assert_eq!(first["operations"], serde_json::json!(["poll", "reconcile"]));
    let (_, second) = post(addr, "/api/v1/refresh", None).await;
    assert_eq!(second["coalesced"], true, "{second}");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // The first tick runs at start; wait for the loop to sleep, then add an issue.
    wait_for(Duration::from_secs(10), || async {
        get(addr, "/readyz").await.1["last_tick_at"].is_string()
    })
    .await;
    world.add_issue(REPO_A, 1, "Do it.");
    let (status, _) = post(addr, "/api/v1/refresh", None).await;
    assert_eq!(status, 202);
    wait_for(Duration::from_secs(10), || async {
        ledger.jobs().await.unwrap().len() == 1
    })
    .await;
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}

/// Polls `condition` every 20 ms until it holds; panics after `limit`.
async fn wait_for<F, Fut>(limit: Duration, condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn actions_need_the_token_and_go_through_the_state_machine() {
    let mut world = World::new(Duration::from_millis(300)).await;
    world.config.http.token = Some(ProviderSpec::Literal {
        value: Secret::new(ACTION_TOKEN),
    });
    world.add_issue(REPO_A, 1, "[sim:hang]");
    let app = world.app().await;
    let addr = app.http_addr().unwrap();
    let ledger = app.ledger().clone();

    let (status, body) = post(addr, "/api/v1/acme/api/1/cancel", None).await;
    assert_eq!(status, 401);
    assert_error(&body, "unauthorized");
    let (status, body) = post(addr, "/api/v1/acme/api/1/cancel", Some("wrong-token")).await;
    assert_eq!(status, 401);
    assert_error(&body, "unauthorized");
    assert!(!body.to_string().contains(ACTION_TOKEN));

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    wait_for(Duration::from_secs(20), || async {
        ledger
            .jobs()
            .await
            .unwrap()
            .first()
            .is_some_and(|j| j.state == JobState::Running)
    })
    .await;

    let (status, body) = post(addr, "/api/v1/acme/api/9/cancel", Some(ACTION_TOKEN)).await;
    assert_eq!(status, 404);
    assert_error(&body, "issue_not_found");
    // The scheme is case-insensitive: a lower-case `bearer` gets past the token check too.
    let lower = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/acme/api/9/cancel"))
        .header("authorization", format!("bearer {ACTION_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 404, "lower-case bearer");
    let (status, body) = post(addr, "/api/v1/acme/api/1/requeue", Some(ACTION_TOKEN)).await;
    assert_eq!(status, 409, "a running job cannot be requeued: {body}");
    assert_error(&body, "not_allowed");

    let (status, body) = post(addr, "/api/v1/acme/api/1/cancel", Some(ACTION_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["state"], "cancelled");
    // Its thread is stopped as for a removed issue.
    wait_for(Duration::from_secs(20), || async {
        first_thread_interrupted(&world.sim)
    })
    .await;
    let (_, issue) = get(addr, "/api/v1/acme/api/1").await;
    assert_eq!(issue["job"]["cancel_reason"], "by_hand");

    let (status, body) = post(addr, "/api/v1/acme/api/1/requeue", Some(ACTION_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["state"], "queued");
    wait_for(Duration::from_secs(20), || async {
        ledger
            .attempts(ledger.jobs().await.unwrap()[0].id)
            .await
            .unwrap()
            .len()
            == 2
    })
    .await;
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn ready_only_while_leading_with_the_ledger_and_t3_and_a_standby_says_why() {
    let world = World::new(Duration::from_millis(100)).await;
    let first = world.app().await;
    let first_addr = first.http_addr().unwrap();
    let (status, body) = get(first_addr, "/healthz").await;
    assert_eq!((status, body), (200, Value::String("ok\n".into())));
    let (status, body) = get(first_addr, "/readyz").await;
    assert_eq!(status, 503, "not running the loop yet: {body}");

    let (stop_first, first_stopped) = tokio::sync::oneshot::channel::<()>();
    let first_run = tokio::spawn(first.run_until_stopped(async {
        let _ = first_stopped.await;
    }));
    wait_for(Duration::from_secs(10), || async {
        get(first_addr, "/readyz").await.0 == 200
    })
    .await;
    let (_, ready) = get(first_addr, "/readyz").await;
    assert_eq!(ready["leader"], true, "{ready}");
    assert_eq!(ready["t3_reachable"], true);

    // A second afk on the same ledger stands by and says so.
    let second = world.app().await;
    let second_addr = second.http_addr().unwrap();
    let (stop_second, second_stopped) = tokio::sync::oneshot::channel::<()>();
    let second_run = tokio::spawn(second.run_until_stopped(async {
        let _ = second_stopped.await;
    }));
    wait_for(Duration::from_secs(10), || async {
        let (status, body) = get(second_addr, "/readyz").await;
        status == 503 && body["why"].to_string().contains("standing by")
    })
    .await;
    let metrics = reqwest::get(format!("http://{second_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("afk_leader 0"), "{metrics}");
    let _ = stop_second.send(());
    second_run.await.unwrap().unwrap();

    // T3 out of reach: no longer ready, and why.
    world.sim.shutdown().await;
    wait_for(Duration::from_secs(20), || async {
        let (status, body) = get(first_addr, "/readyz").await;
        status == 503 && body["why"].to_string().contains("T3 was not reachable")
    })
    .await;
    let _ = stop_first.send(());
    first_run.await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_count_jobs_attempts_ticks_and_requests() {
    let mut world = World::new(Duration::from_millis(200)).await;
    // Polling T3's snapshot over HTTP, the requests counted (the WebSocket RPC is not).
    world.config.watch.push = false;
    world.add_issue(REPO_A, 1, "Do it.");
    world.add_issue(REPO_A, 2, "[sim:fail]");
    let mut app = world.app().await;
    let addr = app.http_addr().unwrap();
    tick_until_all_final(&mut app, 2).await;

    let response = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    for line in [
        "afk_jobs{state=\"succeeded\"} 1",
        "afk_jobs{state=\"given_up\"} 1",
        "afk_jobs{state=\"running\"} 0",
        "afk_attempts_finished_total{outcome=\"succeeded\"} 1",
        "afk_ledger_rows{table=\"jobs\"} 2",
        "afk_leader 0",
        "afk_t3_stream{state=\"off\"} 1",
        "afk_t3_stream{state=\"following\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    };
    let failed = value("afk_attempts_finished_total{outcome=\"failed\"}");
    assert!(failed >= 1.0);
    assert_eq!(value("afk_attempts_started_total"), 1.0 + failed);
    assert!(value("afk_tick_duration_seconds_count") >= 2.0);
    assert!(value("afk_dispatch_latency_seconds_count") >= 2.0);
    assert!(value("afk_t3_requests_total{outcome=\"ok\"}") >= 2.0);
    assert!(value("afk_ticks_total{outcome=\"ok\"}") >= 2.0);
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn a_port_in_use_is_one_error_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut world = World::new(Duration::from_millis(100)).await;
    world.config.http.listen = Some(taken.local_addr().unwrap());
    let error = afk::app::App::build(world.config.clone())
        .await
        .err()
        .expect("the port is taken");
    let text = format!("{error:#}");
    assert!(
        text.contains("[http] listen") && text.contains("in use"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

/// Reads until the peer closes the connection (or `limit` passes): true when it closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn the_listener_holds_under_idle_slow_and_many_clients_and_intake_goes_on() {
    let mut world = World::new(Duration::from_millis(100)).await;
    world.config.http.header_timeout = Duration::from_secs(1);
    world.config.http.request_timeout = Duration::from_secs(2);
    world.config.http.max_connections = 1024;
    let app = world.app().await;
    let addr = app.http_addr().unwrap();
    let ledger = app.ledger().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    // 300 idle sockets.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr).await.expect("a connection"));
    }
    // Slowloris: headers a byte at a time, never finished.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let slow_feeder = tokio::spawn(async move {
        for _ in 0..10 {
            for s in slow.iter_mut() {
                let _ = s.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slow
    });
    // A slow body: headers promise 10 bytes, one comes.
    let mut slow_body = TcpStream::connect(addr).await.unwrap();
    slow_body
        .write_all(b"POST /api/v1/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx")
        .await
        .unwrap();

    // Meanwhile: /healthz answers, 500 requests at once all answer, intake goes on.
    let started = Instant::now();
    let (status, _) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let client = reqwest::Client::new();
    let requests = (0..500).map(|i| {
        let client = client.clone();
        async move {
            let path = if i % 2 == 0 { "/healthz" } else { "/api/v1/state" };
            client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let ok = statuses.iter().filter(|s| matches!(s, Ok(200))).count();
    assert_eq!(
        ok,
        500,
        "{:?}",
        statuses
            .iter()
            .filter(|s| !matches!(s, Ok(200)))
            .collect::<Vec<_>>()
    );
    world.add_issue(REPO_A, 1, "Do it.");
    wait_for(Duration::from_secs(20), || async {
        ledger
            .jobs()
            .await
            .unwrap()
            .first()
            .is_some_and(|j| j.state == JobState::Succeeded)
    })
    .await;

    // The idle and slow clients are let go: closed by the server.
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(5)).await,
        "an idle socket was kept"
    );
    assert!(closed_within(&mut idle[299], Duration::from_secs(5)).await);
    let mut slow = slow_feeder.await.unwrap();
    assert!(
        closed_within(&mut slow[0], Duration::from_secs(5)).await,
        "a slowloris was kept"
    );
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow_body.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "a slow body: {answer:?}");
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn requests_to_github_are_counted_and_github_issues_link_to_their_page() {
    let (world, github) = World::new(Duration::from_millis(200))
        .await
        .on_github(
            Duration::from_millis(50),
            std::sync::Arc::new(afk_github::SystemClock),
        )
        .await;
    let number = github.open_issue(REPO_A, "octocat", "Fix the pager", "The last page is missing.");
    github.add_label(REPO_A, number, "afk", "mona");
    let mut app = world.app().await;
    let addr = app.http_addr().unwrap();
    tick_until_all_final(&mut app, 1).await;

    let (_, state) = get(addr, "/api/v1/state").await;
    let web = github.api_url().to_string();
    assert_eq!(
        state["recent"][0]["issue_url"],
        format!("{}/{REPO_A}/issues/{number}", web.trim_end_matches('/')).as_str(),
        "{state}"
    );
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ok: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("afk_github_requests_total{outcome=\"ok\"}"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(ok >= 2.0, "{text}");
}

#[tokio::test]
async fn event_streams_are_capped_so_health_checks_still_get_through() {
    let world = World::new(Duration::from_millis(100)).await;
    let app = world.app().await;
    let addr = app.http_addr().unwrap();
    let client = reqwest::Client::new();
    let events = format!("http://{addr}/api/v1/events");
    let mut streams = Vec::new();
    for _ in 0..32 {
        let stream = client.get(&events).send().await.unwrap();
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let (status, body) = get(addr, "/api/v1/events").await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "too_many_streams");
    assert_eq!(
        get(addr, "/healthz").await.0,
        200,
        "health checks still get through"
    );
    // Closed streams free their places (the server sees it at its next keep-alive at the latest).
    drop(streams);
    wait_for(Duration::from_secs(40), || async {
        client.get(&events).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    drop(app);
}
