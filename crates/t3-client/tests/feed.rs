//! The shell feed against a T3-shaped WebSocket server on 127.0.0.1.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::{token, FakeT3, Peer, PATIENCE};
use t3_client::wire::rpc::SUBSCRIBE_SHELL;
use t3_client::{
    FeedSettings, FeedStatus, Recorder, RpcSettings, ShellFeed, T3Client, ThreadId, ThreadState,
};
use tokio::sync::watch;

fn settings() -> FeedSettings {
    FeedSettings {
        rpc: RpcSettings {
            ping_interval: Duration::from_millis(50),
            missed_pongs: 3,
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
        },
        reconnect_initial: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(100),
        sync_timeout: Duration::from_secs(30),
    }
}

fn start(t3: &FakeT3) -> ShellFeed {
    let client = T3Client::new(&t3.base_url, Arc::new(Recorder::new()), token("t0ken"));
    ShellFeed::start(&client, settings())
}

/// A shell thread; `turn` is its latest turn's state (`None`: not started), `at` its `updatedAt`.
fn thread(id: &str, turn: Option<&str>, at: &str) -> Value {
    json!({
        "id": id, "projectId": "proj-widgets", "title": id,
        "modelSelection": {"instanceId": "claudeAgent", "model": "claude-sonnet-4-5"},
        "runtimeMode": "full-access", "interactionMode": "default",
        "branch": null, "worktreePath": null,
        "latestTurn": turn.map(|state| json!({
            "turnId": "turn-1", "state": state, "requestedAt": "2026-11-24T19:00:00.000Z",
            "startedAt": null, "completedAt": null, "assistantMessageId": null,
        })),
        "createdAt": "2026-11-24T19:00:00.000Z", "updatedAt": at, "session": null,
    })
}

fn snapshot(sequence: u64, threads: Vec<Value>) -> Value {
    json!({"kind": "snapshot", "snapshot": {
        "snapshotSequence": sequence, "projects": [], "threads": threads,
        "updatedAt": "2026-11-24T19:00:00.000Z",
    }})
}

fn upsert(sequence: u64, thread: Value) -> Value {
    json!({"kind": "thread-upserted", "sequence": sequence, "thread": thread})
}

fn synchronized() -> Value {
    json!({"kind": "synchronized"})
}

/// Waits (bounded) until `condition` holds, re-checking on every bump of the feed's counter.
async fn until(changes: &mut watch::Receiver<u64>, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            changes.changed().await.expect("the feed runs");
        }
    })
    .await
    .expect("the feed reaches the expected state in time");
}

/// Waits for the client's Ack of stream `id`: the chunk before it was applied and published.
async fn acked(peer: &mut Peer, id: &Value) {
    assert_eq!(peer.recv().await, json!({"_tag": "Ack", "requestId": id}));
}

fn state(feed: &ShellFeed, id: &str) -> ThreadState {
    let fleet = feed.fleet().expect("the feed is live");
    ThreadState::of(fleet.thread(&ThreadId::new(id).unwrap()))
}

#[tokio::test]
async fn a_synchronized_feed_serves_the_fleet_and_wakes_only_for_state_changes() {
    let mut t3 = FakeT3::start().await;
    let feed = start(&t3);
    let mut changes = feed.changes();
    let mut peer = t3.next_peer().await;
    let (id, method, payload) = peer.recv_request().await;
    assert_eq!(method, SUBSCRIBE_SHELL);
    assert_eq!(payload, json!({"requestCompletionMarker": true}));
    assert_eq!(feed.status(), FeedStatus::Connecting);

    // The snapshot alone is not enough: T3 has not said the view is complete.
    peer.chunk(
        &id,
        vec![snapshot(
            3,
            vec![thread("a", Some("running"), "2026-11-24T19:00:01.000Z")],
        )],
    );
    acked(&mut peer, &id).await;
    assert!(feed.fleet().is_none(), "no view before synchronized");

    peer.chunk(&id, vec![synchronized()]);
    until(&mut changes, || feed.fleet().is_some()).await;
    assert_eq!(feed.status(), FeedStatus::Live { sequence: 3 });
    assert_eq!(state(&feed, "a"), ThreadState::Running);
    let live = *changes.borrow_and_update();

    // Only updatedAt moves: applied, but nobody is woken.
    acked(&mut peer, &id).await;
    peer.chunk(
        &id,
        vec![upsert(
            4,
            thread("a", Some("running"), "2026-11-24T19:00:02.000Z"),
        )],
    );
    acked(&mut peer, &id).await;
    assert_eq!(feed.fleet().unwrap().sequence(), 4);
    assert_eq!(*changes.borrow(), live, "an updatedAt-only change wakes nobody");

    // The turn completes: the counter moves once.
    peer.chunk(
        &id,
        vec![upsert(
            5,
            thread("a", Some("completed"), "2026-11-24T19:00:03.000Z"),
        )],
    );
    until(&mut changes, || feed.fleet().is_some_and(|f| f.sequence() == 5)).await;
    assert_eq!(state(&feed, "a"), ThreadState::Succeeded);
    assert_eq!(*changes.borrow(), live + 1);
    assert_eq!(feed.status(), FeedStatus::Live { sequence: 5 });
}

#[tokio::test]
async fn a_dropped_socket_hides_the_fleet_then_resumes_after_the_last_sequence_seen() {
    let mut t3 = FakeT3::start().await;
    let feed = start(&t3);
    let mut changes = feed.changes();
    let mut peer = t3.next_peer().await;
    let (id, _, _) = peer.recv_request().await;
    peer.chunk(
        &id,
        vec![
            snapshot(3, vec![thread("a", Some("running"), "2026-11-24T19:00:01.000Z")]),
            synchronized(),
            upsert(5, thread("a", Some("running"), "2026-11-24T19:00:02.000Z")),
        ],
    );
    until(&mut changes, || feed.fleet().is_some()).await;
    let live = *changes.borrow_and_update();
    acked(&mut peer, &id).await;

    // T3 goes away; its first comeback refuses the upgrade.
    t3.refuse_next(
        503,
        json!({"_tag": "EnvironmentInternalError", "code": "internal_error"}),
    );
    drop(peer);
    until(&mut changes, || matches!(feed.status(), FeedStatus::Down { .. })).await;
    assert!(feed.fleet().is_none(), "no view while the stream is down");

    // The feed retries and resumes after sequence 5, still without a view until synchronized.
    let mut peer = t3.next_peer().await;
    let (id, method, payload) = peer.recv_request().await;
    assert_eq!(method, SUBSCRIBE_SHELL);
    assert_eq!(
        payload,
        json!({"afterSequence": 5, "requestCompletionMarker": true})
    );
    assert!(feed.fleet().is_none());
    assert_eq!(t3.upgrades().len(), 3, "the refused upgrade was retried");

    peer.chunk(
        &id,
        vec![
            upsert(6, thread("a", Some("completed"), "2026-11-24T19:00:03.000Z")),
            synchronized(),
        ],
    );
    until(&mut changes, || feed.fleet().is_some()).await;
    assert_eq!(feed.status(), FeedStatus::Live { sequence: 6 });
    assert_eq!(
        state(&feed, "a"),
        ThreadState::Succeeded,
        "the kept fleet got the replay"
    );
    // One bump down, one bump up: the refused retry was no transition of its own.
    assert_eq!(*changes.borrow(), live + 2);
}

#[tokio::test]
async fn dropping_the_feed_closes_its_socket() {
    let mut t3 = FakeT3::start().await;
    let feed = start(&t3);
    let mut peer = t3.next_peer().await;
    peer.recv_request().await;
    drop(feed);
    tokio::time::timeout(PATIENCE, async {
        // The stream's Interrupt may come first; then the socket closes.
        while let Some(message) = peer.recv_or_closed().await {
            assert_eq!(message["_tag"], "Interrupt", "{message}");
        }
    })
    .await
    .expect("the socket closes once the feed is dropped");
}

#[tokio::test]
async fn the_feed_tells_which_threads_changed_since_a_sequence_until_a_snapshot_replaces_its_view() {
    let mut t3 = FakeT3::start().await;
    let feed = start(&t3);
    let mut changes = feed.changes();
    let mut peer = t3.next_peer().await;
    let (id, _, _) = peer.recv_request().await;
    let at = |s: u32| format!("2026-11-24T19:00:0{s}.000Z");
    peer.chunk(
        &id,
        vec![
            snapshot(
                3,
                vec![
                    thread("a", Some("running"), &at(1)),
                    thread("b", Some("running"), &at(1)),
                    thread("c", Some("running"), &at(1)),
                ],
            ),
            synchronized(),
        ],
    );
    until(&mut changes, || feed.fleet().is_some()).await;
    acked(&mut peer, &id).await;
    let view = feed.replacements();
    let ids = |names: &[&str]| {
        names
            .iter()
            .map(|n| ThreadId::new(*n).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(feed.threads_changed(view, 3, 3), Some(vec![]));

    // An `updatedAt` tick of a (it wakes nobody, yet a stall clock must see it), then b ends.
    peer.chunk(
        &id,
        vec![
            upsert(4, thread("a", Some("running"), &at(2))),
            upsert(5, thread("b", Some("completed"), &at(2))),
        ],
    );
    until(&mut changes, || feed.fleet().is_some_and(|f| f.sequence() == 5)).await;
    acked(&mut peer, &id).await;
    assert_eq!(feed.threads_changed(view, 3, 5), Some(ids(&["a", "b"])));
    assert_eq!(feed.threads_changed(view, 4, 5), Some(ids(&["b"])));
    assert_eq!(
        feed.threads_changed(view, 3, 4),
        Some(ids(&["a"])),
        "up to a view at 4"
    );
    assert_eq!(
        feed.threads_changed(view, 5, 4),
        None,
        "a view older than the base"
    );

    // A reconnect at the same sequence: nothing was missed, nothing changed.
    drop(peer);
    until(&mut changes, || matches!(feed.status(), FeedStatus::Down { .. })).await;
    let mut peer = t3.next_peer().await;
    let (id, _, payload) = peer.recv_request().await;
    assert_eq!(payload["afterSequence"], json!(5));
    peer.chunk(&id, vec![synchronized()]);
    until(&mut changes, || feed.fleet().is_some()).await;
    assert_eq!(feed.replacements(), view, "replayed, not replaced");
    assert_eq!(feed.threads_changed(view, 5, 5), Some(vec![]));
    assert_eq!(feed.threads_changed(view, 3, 5), Some(ids(&["a", "b"])));

    // A T3 that cannot replay sends a snapshot: nothing before it compares with it.
    drop(peer);
    until(&mut changes, || matches!(feed.status(), FeedStatus::Down { .. })).await;
    let mut peer = t3.next_peer().await;
    let (id, _, _) = peer.recv_request().await;
    peer.chunk(
        &id,
        vec![
            snapshot(7, vec![thread("c", Some("running"), &at(3))]),
            synchronized(),
        ],
    );
    until(&mut changes, || feed.fleet().is_some()).await;
    assert_ne!(feed.replacements(), view);
    assert_eq!(feed.threads_changed(view, 5, 7), None);
    let replaced = feed.replacements();
    assert_eq!(feed.threads_changed(replaced, 7, 7), Some(vec![]));
    assert_eq!(
        feed.threads_changed(replaced, 5, 7),
        None,
        "from before the snapshot"
    );
}
