//! Ten thousand threads: the stand-in holds them, runs their turns and serves their snapshot
//! correctly (correctness is asserted here, not time).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use t3_client::ids::ThreadId;
use t3_client::{IssueRef, ThreadState};
use t3_sim::SimThreadState;

const THREADS: u64 = 10_000;
const WORKERS: u64 = 16;

/// What issue `n`'s prompt scripts: most succeed, every 10th fails, every 100th hangs.
fn prompt(n: u64) -> &'static str {
    if n.is_multiple_of(100) {
        "Scale [sim:hang]"
    } else if n.is_multiple_of(10) {
        "Scale [sim:fail] [sim:duration=20]"
    } else {
        "Scale [sim:duration=20]"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_threads_run_and_show_in_the_snapshot() {
    let server = start(config()).await;
    let client = Arc::new(client(&server, OPERATE));

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let client = client.clone();
        workers.spawn(async move {
            let mut dispatched = Vec::new();
            for n in (worker..THREADS).step_by(WORKERS as usize) {
                let issue = IssueRef {
                    repo: REPO.into(),
                    number: n,
                    title: None,
                };
                let plan = client.plan(&issue, project(), prompt(n), None).expect("a plan");
                match client.dispatch_plan(&plan).await {
                    Ok(thread) => dispatched.push((n, thread)),
                    Err(e) => panic!("dispatch {n} failed: {e}"),
                }
            }
            dispatched
        });
    }
    let mut expected: HashMap<ThreadId, u64> = HashMap::new();
    while let Some(done) = workers.join_next().await {
        expected.extend(done.expect("a worker finished").into_iter().map(|(n, t)| (t, n)));
    }
    assert_eq!(expected.len() as u64, THREADS);

    // Wait (cheaply, without HTTP) until every turn that is meant to end has ended.
    eventually("the turns to end", || async {
        let running = server
            .threads()
            .iter()
            .filter(|t| matches!(t.state, SimThreadState::Starting | SimThreadState::Running))
            .count();
        (running as u64 == THREADS / 100).then_some(())
    })
    .await;

    let snapshot = snapshot(&client).await;
    assert_eq!(snapshot.threads.len() as u64, THREADS);
    assert_eq!(snapshot.snapshot_sequence, server.sequence());
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    for thread in &snapshot.threads {
        let n = *expected.get(&thread.id).expect("only dispatched threads");
        assert_eq!(thread.title, format!("{REPO}#{n}"));
        let state = ThreadState::of(Some(thread));
        let kind = match state {
            ThreadState::Succeeded => "succeeded",
            ThreadState::Failed { .. } => "failed",
            ThreadState::Running => "running",
            other => panic!("thread {n} is {other:?}"),
        };
        let wanted = if n.is_multiple_of(100) {
            "running"
        } else if n.is_multiple_of(10) {
            "failed"
        } else {
            "succeeded"
        };
        assert_eq!(kind, wanted, "issue {n}");
        *counts.entry(kind).or_default() += 1;
    }
    assert_eq!(counts.get("running"), Some(&(THREADS / 100)));
    assert_eq!(counts.get("failed"), Some(&(THREADS / 10 - THREADS / 100)));

    let (status, shell) = get(&server, Some(READ_ONLY), "/api/orchestration/shell").await;
    assert_eq!(status, 200);
    assert_eq!(shell["threads"].as_array().map(Vec::len), Some(THREADS as usize));
    server.shutdown().await;
}
