//! The WebSocket RPC client against a T3-shaped WebSocket server on 127.0.0.1.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::{token, FakeT3, RotatingToken, PATIENCE};
use t3_client::wire::rpc::DISPATCH_COMMAND;
use t3_client::{
    DispatchIds, DispatchStage, IssueRef, ProjectId, Recorder, RpcConnection, RpcSettings, T3Client, T3Error,
    WorktreePlan,
};

fn quick() -> RpcSettings {
    RpcSettings {
        ping_interval: Duration::from_millis(50),
        missed_pongs: 3,
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(5),
    }
}

async fn connect(t3: &FakeT3) -> RpcConnection {
    RpcConnection::connect(&t3.base_url, token("t0ken"), quick())
        .await
        .expect("connects")
}

async fn within<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, what).await.expect("in time")
}

#[tokio::test]
async fn a_call_returns_t3s_value_whether_the_id_comes_back_as_a_string_or_a_number() {
    let mut t3 = FakeT3::start().await;
    let rpc = connect(&t3).await;
    let mut peer = t3.next_peer().await;
    assert_eq!(t3.upgrades(), [Some("Bearer t0ken".to_owned())]);

    let first = tokio::spawn({
        let rpc = rpc.clone();
        async move { rpc.call("server.getConfig", json!({"x": 1})).await }
    });
    let (id, method, payload) = peer.recv_request().await;
    assert_eq!(
        (id.clone(), method.as_str(), payload),
        (json!("1"), "server.getConfig", json!({"x": 1}))
    );
    peer.succeed(&id, json!({"ok": true}));
    assert_eq!(within(first).await.unwrap().unwrap(), json!({"ok": true}));

    let second = tokio::spawn({
        let rpc = rpc.clone();
        async move { rpc.call("server.getConfig", json!({})).await }
    });
    let (id, _, _) = peer.recv_request().await;
    assert_eq!(id, json!("2"), "ids are unique per connection");
    peer.succeed(&json!(2), json!("as a number"));
    assert_eq!(within(second).await.unwrap().unwrap(), json!("as a number"));
    assert!(rpc.is_alive());
}

#[tokio::test]
async fn a_refused_call_names_the_method_the_url_and_t3s_reason_and_is_not_transient() {
    let mut t3 = FakeT3::start().await;
    let rpc = connect(&t3).await;
    let mut peer = t3.next_peer().await;
    let call = tokio::spawn(async move { rpc.call(DISPATCH_COMMAND, json!({})).await });
    let (id, _, _) = peer.recv_request().await;
    peer.fail(
        &id,
        json!({"_tag": "OrchestrationDispatchCommandError", "message": "Thread 'x' already exists\nin project p"}),
    );
    let err = within(call).await.unwrap().unwrap_err();
    let text = err.to_string();
    assert!(text.contains(DISPATCH_COMMAND), "{text}");
    assert!(text.contains(&t3.base_url.replace("http://", "ws://")), "{text}");
    assert!(
        text.contains("OrchestrationDispatchCommandError: Thread 'x' already exists in project p"),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!err.is_transient(), "a decider refusal is not transient");
    assert!(!err.is_credential_problem());
}

#[tokio::test]
async fn a_missing_scope_is_a_credential_problem() {
    let mut t3 = FakeT3::start().await;
    let rpc = connect(&t3).await;
    let mut peer = t3.next_peer().await;
    let call = tokio::spawn(async move { rpc.call(DISPATCH_COMMAND, json!({})).await });
    let (id, _, _) = peer.recv_request().await;
    peer.fail(
        &id,
        json!({"_tag": "EnvironmentAuthorizationError", "message": "Missing scope",
               "requiredScope": "orchestration:operate"}),
    );
    let err = within(call).await.unwrap().unwrap_err();
    assert!(err.is_credential_problem(), "{err}");
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("required scope orchestration:operate"),
        "{err}"
    );
    match err {
        T3Error::Rpc {
            tag, required_scope, ..
        } => {
            assert_eq!(tag.as_deref(), Some("EnvironmentAuthorizationError"));
            assert_eq!(required_scope.as_deref(), Some("orchestration:operate"));
        }
        other => panic!("expected an RPC failure, got {other}"),
    }
}

#[tokio::test]
async fn an_upgrade_refused_with_401_is_retried_once_with_a_refreshed_bearer() {
    let mut t3 = FakeT3::start().await;
    t3.refuse_next(
        401,
        json!({"_tag": "EnvironmentAuthInvalidError", "code": "auth_invalid"}),
    );
    let bearer = Arc::new(RotatingToken {
        cached: "stale",
        fresh: "fresh",
    });
    let rpc = RpcConnection::connect(&t3.base_url, bearer, quick())
        .await
        .expect("the refreshed token is accepted");
    t3.next_peer().await;
    assert!(rpc.is_alive());
    assert_eq!(
        t3.upgrades(),
        [Some("Bearer stale".to_owned()), Some("Bearer fresh".to_owned())]
    );
}

#[tokio::test]
async fn an_upgrade_refused_twice_is_a_credential_problem_that_never_shows_the_token() {
    let t3 = FakeT3::start().await;
    let refusal = json!({"_tag": "EnvironmentAuthInvalidError", "code": "auth_invalid",
                         "reason": "invalid_credential", "traceId": "t-1"});
    t3.refuse_next(401, refusal.clone());
    t3.refuse_next(401, refusal);
    let err = RpcConnection::connect(&t3.base_url, token("sekret-value"), quick())
        .await
        .unwrap_err();
    assert!(err.is_credential_problem(), "{err}");
    assert!(!err.is_transient());
    assert_eq!(err.status(), Some(401));
    assert_eq!(t3.upgrades().len(), 2, "one retry, no more");
    let text = err.to_string();
    assert!(text.contains("reason invalid_credential"), "{text}");
    assert!(text.contains(&t3.base_url.replace("http://", "ws://")), "{text}");
    assert!(!text.contains("sekret") && !format!("{err:?}").contains("sekret"));
}

#[tokio::test]
async fn an_unreachable_t3_is_a_transient_socket_error_naming_the_url() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = RpcConnection::connect(&format!("http://{addr}"), token("t"), quick())
        .await
        .unwrap_err();
    assert!(matches!(err, T3Error::Socket { .. }), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains(&format!("ws://{addr}/ws")), "{err}");
}

#[tokio::test]
async fn chunks_are_acked_only_when_the_consumer_asks_for_the_next_one() {
    let mut t3 = FakeT3::start().await;
    let rpc = connect(&t3).await;
    let mut peer = t3.next_peer().await;
    let mut stream = rpc
        .stream("orchestration.subscribeShell", json!({}))
        .await
        .unwrap();
    let (id, _, _) = peer.recv_request().await;
    peer.chunk(&id, vec![json!(1), json!(2)]);
    assert_eq!(
        values(within(stream.next_chunk()).await.unwrap().unwrap()),
        [json!(1), json!(2)]
    );

    // The consumer holds the chunk: a later call reaches T3 with no Ack before it.
    let probe = tokio::spawn({
        let rpc = rpc.clone();
        async move { rpc.call("probe", json!({})).await }
    });
    let (probe_id, method, _) = peer.recv_request().await;
    assert_eq!(method, "probe");
    peer.succeed(&probe_id, Value::Null);
    within(probe).await.unwrap().unwrap();

    // Asking for the next chunk acks the first.
    let next = tokio::spawn(async move {
        let chunk = stream.next_chunk().await;
        (chunk, stream)
    });
    assert_eq!(peer.recv().await, json!({"_tag": "Ack", "requestId": id}));
    peer.chunk(&id, vec![json!(3)]);
    let (chunk, mut stream) = within(next).await.unwrap();
    assert_eq!(values(chunk.unwrap().unwrap()), [json!(3)]);

    // The stream's end: its Exit, after the last Ack.
    let end = tokio::spawn(async move { stream.next_chunk().await.is_none() });
    assert_eq!(peer.recv().await["_tag"], "Ack");
    peer.succeed(&id, Value::Null);
    assert!(within(end).await.unwrap(), "a successful Exit ends the stream");
}

#[tokio::test]
async fn dropping_a_stream_interrupts_it() {
    let mut t3 = FakeT3::start().await;
    let rpc = connect(&t3).await;
    let mut peer = t3.next_peer().await;
    let mut stream = rpc
        .stream("orchestration.subscribeShell", json!({}))
        .await
        .unwrap();
    let (id, _, _) = peer.recv_request().await;
    peer.chunk(&id, vec![json!("a")]);
    within(stream.next_chunk()).await.unwrap().unwrap();
    drop(stream);
    assert_eq!(peer.recv().await, json!({"_tag": "Interrupt", "requestId": id}));
    assert!(rpc.is_alive(), "the connection outlives the stream");
}

#[tokio::test]
async fn a_socket_that_stops_answering_pings_is_dead_and_fails_pending_calls_transiently() {
    let mut t3 = FakeT3::start().await;
    let rpc = connect(&t3).await;
    let mut peer = t3.next_peer().await;
    t3.answer_pings(false);
    let call = tokio::spawn({
        let rpc = rpc.clone();
        async move { rpc.call(DISPATCH_COMMAND, json!({})).await }
    });
    peer.recv_request().await;
    // Call timeout is 5 s: only the missed pongs (3 × 50 ms) can end it this early.
    let err = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .expect("the dead socket is noticed within a few ping intervals")
        .unwrap()
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(text.contains("pings"), "{text}");
    assert!(text.contains("may or may not have been applied"), "{text}");
    assert!(!rpc.is_alive());
    let again = rpc.call("probe", json!({})).await.unwrap_err();
    assert!(
        again.is_transient() && again.to_string().contains("nothing was sent"),
        "{again}"
    );
}

#[tokio::test]
async fn a_pending_call_fails_transiently_when_the_socket_drops() {
    let mut t3 = FakeT3::start().await;
    let rpc = connect(&t3).await;
    let mut peer = t3.next_peer().await;
    let call = tokio::spawn({
        let rpc = rpc.clone();
        async move { rpc.call(DISPATCH_COMMAND, json!({})).await }
    });
    peer.recv_request().await;
    drop(peer);
    let err = within(call).await.unwrap().unwrap_err();
    assert!(matches!(err, T3Error::Socket { status: None, .. }), "{err}");
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("may or may not have been applied"),
        "{err}"
    );
    assert!(!rpc.is_alive());
}

#[tokio::test]
async fn a_defect_fails_every_pending_call_and_ends_the_connection() {
    let mut t3 = FakeT3::start().await;
    let rpc = connect(&t3).await;
    let mut peer = t3.next_peer().await;
    let call = tokio::spawn({
        let rpc = rpc.clone();
        async move { rpc.call(DISPATCH_COMMAND, json!({})).await }
    });
    peer.recv_request().await;
    peer.send(json!({"_tag": "Defect", "defect": "cannot decode message"}));
    let err = within(call).await.unwrap().unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("cannot decode message"), "{err}");
    assert!(!rpc.is_alive());
    peer.closed().await;
}

#[tokio::test]
async fn t3s_pings_are_answered() {
    let mut t3 = FakeT3::start().await;
    let _rpc = connect(&t3).await;
    let mut peer = t3.next_peer().await;
    peer.send(json!({"_tag": "Ping"}));
    assert_eq!(peer.recv().await, json!({"_tag": "Pong"}));
}

fn isolated_client(t3: &FakeT3) -> T3Client {
    T3Client::new(&t3.base_url, Arc::new(Recorder::new()), token("t0ken")).with_rpc_settings(quick())
}

/// The body T3 must receive, with the plan's ids and its `createdAt`s left out.
fn expected_turn(ids: &DispatchIds, text: &str) -> Value {
    json!({
        "type": "thread.turn.start",
        "commandId": ids.turn_command_id.as_str(),
        "threadId": ids.thread_id.as_str(),
        "message": {"messageId": ids.message_id.as_str(), "role": "user", "text": text, "attachments": []},
        "runtimeMode": "full-access",
        "interactionMode": "default",
        "bootstrap": {
            "createThread": {
                "projectId": "proj-widgets",
                "title": "acme/widgets#42: Fix the widget",
                "modelSelection": {"instanceId": "claudeAgent", "model": "claude-sonnet-4-5"},
                "runtimeMode": "full-access",
                "interactionMode": "default",
                "branch": "afk/issue-42",
                "worktreePath": null,
            },
            "prepareWorktree": {"projectCwd": "/srv/widgets", "baseBranch": "main", "branch": "afk/issue-42"},
            "runSetupScript": true,
        },
    })
}

/// Removes (and checks) the two `createdAt` timestamps, which T3 replaces anyway.
fn without_timestamps(mut body: Value) -> Value {
    for created in [
        body.as_object_mut().unwrap().remove("createdAt"),
        body["bootstrap"]["createThread"]
            .as_object_mut()
            .unwrap()
            .remove("createdAt"),
    ] {
        let created = created.expect("createdAt is sent");
        assert!(created.as_str().unwrap().ends_with('Z'), "{created}");
    }
    body
}

#[tokio::test]
async fn dispatch_isolated_sends_one_bootstrapped_turn_with_the_same_ids_on_a_retry() {
    let mut t3 = FakeT3::start().await;
    let client = isolated_client(&t3);
    let issue = IssueRef {
        repo: "acme/widgets".into(),
        number: 42,
        title: Some("Fix the widget".into()),
    };
    let plan = client
        .plan(&issue, ProjectId::new("proj-widgets").unwrap(), "Fix it", None)
        .unwrap();
    let worktree = WorktreePlan {
        project_cwd: "/srv/widgets".into(),
        base_branch: "main".into(),
        run_setup_script: true,
    };

    // First try: the socket dies before T3 answers; the outcome is unknown.
    let first = tokio::spawn({
        let (client, plan, worktree) = (client.clone(), plan.clone(), worktree.clone());
        async move { client.dispatch_isolated(&plan, &worktree).await }
    });
    let mut peer = t3.next_peer().await;
    let (_, method, first_body) = peer.recv_request().await;
    assert_eq!(method, DISPATCH_COMMAND);
    drop(peer);
    let err = within(first).await.unwrap().unwrap_err();
    assert_eq!(err.stage, DispatchStage::Bootstrap);
    assert!(err.error.is_transient(), "{}", err.error);
    assert!(
        err.error.to_string().contains("thread.turn.start"),
        "{}",
        err.error
    );

    // The retry reconnects and sends the very same command.
    let retry = tokio::spawn({
        let (client, plan, worktree) = (client.clone(), plan.clone(), worktree.clone());
        async move { client.dispatch_isolated(&plan, &worktree).await }
    });
    let mut peer = t3.next_peer().await;
    let (id, _, retry_body) = peer.recv_request().await;
    peer.succeed(&id, json!({"sequence": 7}));
    assert_eq!(within(retry).await.unwrap().unwrap(), plan.ids.thread_id);

    let expected = expected_turn(&plan.ids, &plan.text);
    assert_eq!(without_timestamps(first_body), expected);
    assert_eq!(without_timestamps(retry_body), expected);
    assert_eq!(t3.upgrades().len(), 2);
}

#[tokio::test]
async fn commands_over_rpc_share_one_connection_and_check_the_sequence_reply() {
    let mut t3 = FakeT3::start().await;
    let client = isolated_client(&t3);
    let thread = t3_client::ThreadId::new("th-1").unwrap();
    let stop = tokio::spawn({
        let client = client.clone();
        let thread = thread.clone();
        async move { stop_over_rpc(&client, &thread).await }
    });
    let mut peer = t3.next_peer().await;
    let (id, _, body) = peer.recv_request().await;
    assert_eq!(body["type"], "thread.session.stop");
    peer.succeed(&id, json!({"sequence": 3}));
    assert_eq!(within(stop).await.unwrap().unwrap().sequence, 3);

    // A second command from a clone goes over the same socket; a reply without a sequence is
    // malformed.
    let again = tokio::spawn({
        let client = client.clone();
        async move { stop_over_rpc(&client, &thread).await }
    });
    let (id, _, _) = peer.recv_request().await;
    peer.succeed(&id, json!({"accepted": true}));
    let err = within(again).await.unwrap().unwrap_err();
    assert!(matches!(err, T3Error::MalformedReply { .. }), "{err}");
    assert_eq!(t3.upgrades().len(), 1);
}

async fn stop_over_rpc(
    client: &T3Client,
    thread: &t3_client::ThreadId,
) -> Result<t3_client::wire::DispatchResult, T3Error> {
    let command = t3_client::wire::ClientCommand::ThreadSessionStop(t3_client::wire::ThreadSessionStop {
        command_id: t3_client::CommandId::generate(),
        thread_id: thread.clone(),
        created_at: t3_client::wire::Timestamp::now(),
    });
    client.send_command_rpc(&command).await
}

/// A chunk's raw values, decoded for comparison.
fn values(raw: Vec<Box<serde_json::value::RawValue>>) -> Vec<Value> {
    raw.iter()
        .map(|v| serde_json::from_str(v.get()).expect("valid JSON"))
        .collect()
}
