//! The seed's promises, checked with the in-memory recorder.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use t3_client::{
    AgentSettings, DispatchIds, DispatchStage, Freshness, IssueRef, ProjectId, Recorder, Secret, SecretError,
    SecretProvider, T3Client, T3Error, ThreadId, TransportErrorKind,
};

/// A bearer provider that hands out `token-1`, `token-2`, ... and counts how it was asked.
#[derive(Debug, Default)]
struct CountingBearer {
    calls: AtomicUsize,
    refreshes: AtomicUsize,
}

#[async_trait::async_trait]
impl SecretProvider for CountingBearer {
    async fn get(&self, freshness: Freshness) -> Result<Secret, SecretError> {
        if freshness == Freshness::Refresh {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Secret::new(format!("token-{n}")))
    }
}

fn client(recorder: &Arc<Recorder>, bearer: &Arc<CountingBearer>, base: &str) -> T3Client {
    T3Client::new(base, recorder.clone(), bearer.clone())
        .with_project("acme/widgets", ProjectId::new("proj-widgets").unwrap())
}

fn setup() -> (Arc<Recorder>, Arc<CountingBearer>, T3Client) {
    let recorder = Arc::new(Recorder::new());
    let bearer = Arc::new(CountingBearer::default());
    let client = client(&recorder, &bearer, "http://t3.test");
    (recorder, bearer, client)
}

#[tokio::test]
async fn dispatch_posts_create_then_turn_for_the_same_thread() {
    let (recorder, _, client) = setup();
    recorder
        .reply_json(200, json!({"sequence": 7}))
        .reply_json(200, json!({"sequence": 8}));

    let thread = client
        .dispatch("acme/widgets", 42, "Fix the widget.")
        .await
        .unwrap();

    let requests = recorder.requests();
    assert_eq!(requests.len(), 2, "exactly two requests");
    assert!(requests
        .iter()
        .all(|r| r.url == "http://t3.test/api/orchestration/dispatch"));
    let bodies = recorder.posted_json();
    assert_eq!(bodies[0]["type"], "thread.create");
    assert_eq!(bodies[1]["type"], "thread.turn.start");
    assert_eq!(bodies[0]["threadId"], thread.as_str());
    assert_eq!(bodies[1]["threadId"], thread.as_str());
    assert_eq!(bodies[0]["projectId"], "proj-widgets");
    assert_eq!(bodies[0]["title"], "acme/widgets#42");
    assert_eq!(bodies[0]["branch"], "afk/issue-42");
    assert_eq!(bodies[0]["modelSelection"]["instanceId"], "claudeAgent");
    assert_eq!(bodies[0]["runtimeMode"], "full-access");
    assert_ne!(bodies[0]["commandId"], bodies[1]["commandId"]);
    let text = bodies[1]["message"]["text"].as_str().unwrap();
    assert!(text.starts_with(t3_client::preamble::STANDING_RULES));
    assert!(text.ends_with("\n\nFix the widget."));
}

#[tokio::test]
async fn the_bearer_is_asked_for_on_every_request() {
    let (recorder, bearer, client) = setup();
    recorder
        .reply_json(200, json!({"sequence": 1}))
        .reply_json(200, json!({"sequence": 2}));
    client.dispatch("acme/widgets", 1, "p").await.unwrap();
    let tokens: Vec<String> = recorder
        .requests()
        .iter()
        .map(|r| r.bearer.as_ref().unwrap().expose().to_owned())
        .collect();
    assert_eq!(tokens, vec!["token-1", "token-2"]);
    assert_eq!(bearer.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_trailing_slash_on_the_base_url_is_tolerated() {
    let recorder = Arc::new(Recorder::new());
    let bearer = Arc::new(CountingBearer::default());
    let client = client(&recorder, &bearer, "http://t3.test/");
    recorder.reply_json(200, json!({"sequence": 1, "threads": [], "projects": []}));
    let _ = client.snapshot().await;
    assert_eq!(
        recorder.requests()[0].url,
        "http://t3.test/api/orchestration/snapshot"
    );
}

#[tokio::test]
async fn a_failed_create_never_fires_a_turn() {
    let (recorder, _, client) = setup();
    recorder.reply_json(
        500,
        json!({"_tag": "EnvironmentInternalError", "code": "internal_error",
               "reason": "orchestration_dispatch_failed", "traceId": "t-1"}),
    );
    let err = client.dispatch("acme/widgets", 42, "p").await.unwrap_err();
    assert_eq!(err.stage, DispatchStage::Create);
    assert_eq!(recorder.requests().len(), 1, "no turn after a failed create");
    let message = err.to_string();
    assert!(
        message.contains("500") && message.contains("orchestration_dispatch_failed"),
        "{message}"
    );
    assert!(err.error.is_transient());
}

#[tokio::test]
async fn a_create_reply_that_is_not_a_sequence_never_fires_a_turn() {
    for reply in [
        r#"{"threadId": "abc"}"#,
        r#"{"sequence": -1}"#,
        "<html>proxy error</html>",
        "",
    ] {
        let (recorder, _, client) = setup();
        recorder.reply(200, reply);
        let err = client.dispatch("acme/widgets", 42, "p").await.unwrap_err();
        assert_eq!(
            recorder.requests().len(),
            1,
            "reply {reply:?} must not fire a turn"
        );
        assert!(matches!(err.error, T3Error::MalformedReply { .. }), "{err}");
        assert!(!err.error.is_transient());
        let shown = if reply.is_empty() {
            "(an empty body)"
        } else {
            reply
        };
        assert!(
            err.to_string().contains(shown),
            "error must say what came back: {err}"
        );
    }
}

#[tokio::test]
async fn a_prompt_over_the_limit_is_refused_before_any_request() {
    let (recorder, _, client) = setup();
    let prompt = "x".repeat(t3_client::wire::MAX_INPUT_CHARS);
    let err = client.dispatch("acme/widgets", 42, &prompt).await.unwrap_err();
    assert!(matches!(err.error, T3Error::PromptTooLong { .. }), "{err}");
    assert!(recorder.requests().is_empty());
}

#[tokio::test]
async fn the_limit_counts_utf16_units_as_t3_does() {
    let (recorder, _, client) = setup();
    let settings = AgentSettings {
        preamble: String::new(),
        ..AgentSettings::default()
    };
    let client = client.with_settings(settings);
    // 60,001 emoji are 120,002 UTF-16 units: over the limit although only 60,001 chars.
    let prompt = "😀".repeat(60_001);
    let err = client.dispatch("acme/widgets", 1, &prompt).await.unwrap_err();
    assert!(
        matches!(err.error, T3Error::PromptTooLong { len: 120_002, .. }),
        "{err}"
    );
    assert!(recorder.requests().is_empty());
}

#[tokio::test]
async fn a_401_asks_the_provider_again_and_retries_once() {
    let (recorder, bearer, client) = setup();
    let unauthorized = json!({"_tag": "EnvironmentAuthInvalidError", "code": "auth_invalid",
                              "reason": "invalid_credential", "traceId": "t"});
    recorder
        .reply_json(401, unauthorized.clone())
        .reply_json(200, json!({"sequence": 3}));
    client
        .interrupt_turn(
            &ThreadId::new("th").unwrap(),
            None,
            t3_client::CommandId::generate(),
        )
        .await
        .unwrap();
    assert_eq!(recorder.requests().len(), 2);
    assert_eq!(bearer.refreshes.load(Ordering::SeqCst), 1);

    // A second 401 in a row is final: no third request.
    let (recorder, _, client) = setup();
    recorder
        .reply_json(401, unauthorized.clone())
        .reply_json(401, unauthorized);
    let err = client.snapshot().await.unwrap_err();
    assert_eq!(recorder.requests().len(), 2);
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_transient());
    assert!(err.to_string().contains("auth_invalid"), "{err}");
}

#[tokio::test]
async fn errors_say_whether_they_are_transient() {
    let cases: Vec<(u16, bool)> = vec![
        (500, true),
        (502, true),
        (503, true),
        (429, true),
        (400, false),
        (403, false),
        (404, false),
    ];
    for (status, transient) in cases {
        let (recorder, _, client) = setup();
        recorder.reply_json(status, json!({"_tag": "X", "code": "c", "traceId": "t"}));
        let err = client.snapshot().await.unwrap_err();
        assert_eq!(err.is_transient(), transient, "status {status}");
    }
    for kind in [
        TransportErrorKind::Connect,
        TransportErrorKind::Timeout,
        TransportErrorKind::Connection,
    ] {
        let (recorder, _, client) = setup();
        recorder.fail(kind);
        let err = client.snapshot().await.unwrap_err();
        assert!(err.is_transient(), "{kind:?}");
        assert!(err.to_string().contains("no reply"), "{err}");
    }
}

#[tokio::test]
async fn the_caller_can_supply_the_ids_so_a_retry_reuses_them() {
    let (recorder, _, client) = setup();
    let ids = DispatchIds::generate();
    let issue = IssueRef {
        repo: "acme/widgets".into(),
        number: 42,
        title: Some("Fix the widget".into()),
    };
    let plan = client
        .plan(
            &issue,
            ProjectId::new("proj-widgets").unwrap(),
            "p",
            Some(ids.clone()),
        )
        .unwrap();
    for _ in 0..2 {
        recorder
            .reply_json(200, json!({"sequence": 1}))
            .reply_json(200, json!({"sequence": 2}));
        assert_eq!(client.dispatch_plan(&plan).await.unwrap(), ids.thread_id);
    }
    let bodies = recorder.posted_json();
    for (first, again) in [(0, 2), (1, 3)] {
        assert_eq!(
            without_created_at(&bodies[first]),
            without_created_at(&bodies[again])
        );
    }
    assert_eq!(bodies[0]["title"], "acme/widgets#42: Fix the widget");
    assert_eq!(bodies[0]["commandId"], ids.create_command_id.as_str());
    assert_eq!(bodies[1]["commandId"], ids.turn_command_id.as_str());
    assert_eq!(bodies[1]["message"]["messageId"], ids.message_id.as_str());
}

fn without_created_at(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("createdAt");
    v
}

#[tokio::test]
async fn an_unknown_repository_is_refused_before_any_request() {
    let (recorder, _, client) = setup();
    let err = client.dispatch("acme/other", 1, "p").await.unwrap_err();
    assert!(err.to_string().contains("acme/other"), "{err}");
    assert!(recorder.requests().is_empty());
}

#[tokio::test]
async fn a_malformed_snapshot_names_the_offending_path() {
    let (recorder, _, client) = setup();
    let mut doc = sample_snapshot();
    doc["threads"][0]["session"]["status"] = json!("sleeping");
    recorder.reply_json(200, doc);
    let err = client.snapshot().await.unwrap_err();
    assert!(err.to_string().contains("threads[0].session.status"), "{err}");
}

/// A snapshot with text after the document is refused, by the full read model and by the
/// watcher's view alike (the decode that names the path once accepted it).
#[tokio::test]
async fn a_snapshot_with_trailing_text_is_refused() {
    let (recorder, _, client) = setup();
    let body = format!("{} x", sample_snapshot());
    recorder.reply(200, body.clone());
    let err = client.snapshot().await.unwrap_err();
    assert!(err.to_string().contains("trailing characters"), "{err}");
    recorder.reply(200, body);
    let err = client.fleet().await.unwrap_err();
    assert!(err.to_string().contains("trailing characters"), "{err}");
}

#[tokio::test]
async fn the_snapshot_ignores_unknown_fields() {
    let (recorder, _, client) = setup();
    let mut doc = sample_snapshot();
    doc["threads"][0]["someNewField"] = json!({"x": 1});
    doc["brandNew"] = json!(true);
    recorder.reply_json(200, doc);
    let model = client.snapshot().await.unwrap();
    assert_eq!(model.threads.len(), 1);
    assert_eq!(model.threads[0].title, "acme/widgets#42: Fix the widget");
    assert_eq!(
        t3_client::ThreadState::of(model.threads.first()),
        t3_client::ThreadState::Running
    );
}

#[tokio::test]
async fn secrets_never_show_in_debug_output() {
    let (recorder, _, client) = setup();
    recorder.reply_json(200, json!({"sequence": 1}));
    let _ = client.snapshot().await;
    let shown = format!("{:?} {:?}", recorder.requests(), client);
    assert!(!shown.contains("token-1"), "{shown}");
}

fn sample_snapshot() -> Value {
    json!({
      "snapshotSequence": 12,
      "updatedAt": "2026-11-24T19:14:40.000Z",
      "projects": [{
        "id": "proj-widgets", "title": "widgets", "workspaceRoot": "/src/widgets",
        "defaultModelSelection": null, "scripts": [],
        "createdAt": "2026-11-24T19:00:00.000Z", "updatedAt": "2026-11-24T19:00:00.000Z", "deletedAt": null
      }],
      "threads": [{
        "id": "9b2e", "projectId": "proj-widgets", "title": "acme/widgets#42: Fix the widget",
        "modelSelection": {"instanceId": "claudeAgent", "model": "claude-sonnet-4-5"},
        "runtimeMode": "full-access", "interactionMode": "default",
        "branch": "afk/issue-42", "worktreePath": null,
        "latestTurn": {"turnId": "turn-1", "state": "running", "requestedAt": "2026-11-24T19:14:36.200Z",
                       "startedAt": "2026-11-24T19:14:36.300Z", "completedAt": null, "assistantMessageId": null},
        "createdAt": "2026-11-24T19:14:36.116Z", "updatedAt": "2026-11-24T19:14:40.000Z",
        "archivedAt": null, "deletedAt": null, "messages": [], "activities": [], "checkpoints": [],
        "session": {"threadId": "9b2e", "status": "running", "providerName": "claudeAgent",
                    "runtimeMode": "full-access", "activeTurnId": "turn-1", "lastError": null,
                    "updatedAt": "2026-11-24T19:14:40.000Z"}
      }]
    })
}

/// `sample_snapshot`'s thread as thread `id`, changed by `edit`.
fn thread_like(id: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut thread = sample_snapshot()["threads"][0].clone();
    thread["id"] = json!(id);
    thread["session"]["threadId"] = json!(id);
    edit(&mut thread);
    thread
}

#[tokio::test]
async fn a_thread_afk_cannot_read_is_set_aside_and_the_others_are_read() {
    let (recorder, _, client) = setup();
    let mut doc = sample_snapshot();
    doc["threads"] = json!([
        thread_like("good", |_| {}),
        thread_like("paused", |t| t["latestTurn"]["state"] = json!("paused")),
        thread_like("bad-time", |t| t["updatedAt"] = json!("yesterday")),
        thread_like("surrogate", |t| t["title"] = json!("LONE-SURROGATE")),
        thread_like("twice", |_| {}),
        thread_like("twice", |t| t["latestTurn"]["state"] = json!("completed")),
    ]);
    // serde_json cannot make a lone surrogate: it is written into the text.
    let text = doc.to_string().replace("LONE-SURROGATE", "\\ud800 title");
    recorder.reply(200, text.clone());
    let fleet = client.fleet().await.expect("the view is read");
    let id = |s: &str| ThreadId::new(s).unwrap();
    assert_eq!(
        t3_client::ThreadState::of(fleet.thread(&id("good"))),
        t3_client::ThreadState::Running
    );
    for (thread, why) in [
        ("paused", "paused"),
        ("bad-time", "yesterday"),
        ("surrogate", "escape"),
        ("twice", "more than once"),
    ] {
        assert!(fleet.thread(&id(thread)).is_none(), "{thread}");
        let reason = fleet
            .unreadable(&id(thread))
            .unwrap_or_else(|| panic!("{thread} unreadable"));
        assert!(reason.contains(why), "{thread}: {reason}");
    }
    assert!(fleet.unreadable(&id("good")).is_none());

    // The strict read of the same document still says where it went wrong.
    recorder.reply(200, text);
    let err = client.snapshot().await.unwrap_err();
    assert!(err.to_string().contains("threads[1]"), "{err}");
}

#[tokio::test]
async fn a_thread_whose_id_cannot_be_read_makes_the_view_unreadable() {
    let (recorder, _, client) = setup();
    let mut doc = sample_snapshot();
    doc["threads"] = json!([
        thread_like("good", |_| {}),
        thread_like("x", |t| t["id"] = json!(7))
    ]);
    recorder.reply_json(200, doc);
    let err = client.fleet().await.unwrap_err();
    assert!(err.to_string().contains("threads[1].id"), "{err}");
}

#[test]
fn a_shell_item_with_a_thread_afk_cannot_read_is_kept_with_the_thread_set_aside() {
    use t3_client::wire::ShellItem;
    let thread = |id: &str, state: &str| {
        let mut t = thread_like(id, |t| {
            t["latestTurn"]["state"] = json!(state);
            if state == "completed" {
                t["session"]["status"] = json!("ready");
            }
        });
        for key in ["deletedAt", "messages", "activities", "checkpoints"] {
            t.as_object_mut().unwrap().remove(key);
        }
        t
    };
    let upsert = json!({"kind": "thread-upserted", "sequence": 5, "thread": thread("a", "paused")});
    match ShellItem::decode(&upsert.to_string()).expect("decoded") {
        ShellItem::ThreadUnreadable { sequence, thread } => {
            assert_eq!(sequence, 5);
            assert_eq!(thread.id.as_str(), "a");
            assert!(thread.reason.contains("paused"), "{}", thread.reason);
        }
        other => panic!("{other:?}"),
    }
    let snapshot = json!({"kind": "snapshot", "snapshot": {
        "snapshotSequence": 9, "updatedAt": "2026-11-24T19:14:40.000Z", "projects": [],
        "threads": [thread("a", "running"), thread("b", "paused")]}});
    let ShellItem::PartialSnapshot { snapshot, unreadable } =
        ShellItem::decode(&snapshot.to_string()).expect("decoded")
    else {
        panic!("a partial snapshot");
    };
    let mut fleet = t3_client::Fleet::from_shell_with(snapshot, unreadable);
    let b = ThreadId::new("b").unwrap();
    assert!(fleet.unreadable(&b).is_some() && fleet.thread(&b).is_none());
    // Readable again: back in the view, and no longer unreadable.
    let back = json!({"kind": "thread-upserted", "sequence": 10, "thread": thread("b", "completed")});
    fleet.apply(ShellItem::decode(&back.to_string()).unwrap());
    assert!(fleet.unreadable(&b).is_none());
    assert_eq!(
        t3_client::ThreadState::of(fleet.thread(&b)),
        t3_client::ThreadState::Succeeded
    );
    // A kind afk knows with a shape it does not is still an error (the feed reconnects).
    assert!(ShellItem::decode(r#"{"kind":"thread-removed","sequence":"x"}"#).is_err());
}
