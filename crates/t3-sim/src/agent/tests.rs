//! The app-server driven over pipes, as T3 drives it over the process's stdin and stdout.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};
use tokio::task::JoinHandle;

use super::*;

/// How long a test waits for a message that should come within milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

/// T3's side of one app-server session.
struct T3Side {
    to_agent: DuplexStream,
    from_agent: Lines<BufReader<DuplexStream>>,
    agent: JoinHandle<io::Result<()>>,
    next_id: u64,
}

impl T3Side {
    fn start(cwd: &Path) -> T3Side {
        let (to_agent, agent_in) = tokio::io::duplex(64 * 1024);
        let (agent_out, from_agent) = tokio::io::duplex(64 * 1024);
        let settings = AgentSettings {
            turn_duration: Duration::from_millis(20),
            cwd: cwd.to_owned(),
        };
        let agent = tokio::spawn(serve(BufReader::new(agent_in), agent_out, settings));
        T3Side {
            to_agent,
            from_agent: BufReader::new(from_agent).lines(),
            agent,
            next_id: 1,
        }
    }

    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.to_agent
            .write_all(line.as_bytes())
            .await
            .expect("the agent reads");
    }

    /// Sends a request; returns its id.
    async fn call(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({ "id": id, "method": method, "params": params }))
            .await;
        id
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(PATIENCE, self.from_agent.next_line())
            .await
            .expect("the agent says something in time")
            .expect("the agent's output reads")
            .expect("the agent's output is still open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The next message, which must be the response to request `id`; its result.
    async fn result_of(&mut self, id: u64) -> Value {
        let message = self.next().await;
        assert_eq!(message["id"], id, "{message}");
        assert!(message.get("error").is_none(), "{message}");
        message["result"].clone()
    }

    /// The next message, which must be the notification `method`; its params.
    async fn notification(&mut self, method: &str) -> Value {
        let message = self.next().await;
        assert_eq!(message["method"], method, "{message}");
        assert!(message.get("id").is_none(), "{message}");
        message["params"].clone()
    }

    /// `initialize` and `thread/start`, as T3 opens a session; the provider thread's id.
    async fn open(&mut self, cwd: &Path) -> String {
        let id = self
            .call(
                "initialize",
                json!({"clientInfo": {"name": "t3code_desktop", "title": "T3 Code Desktop", "version": "0.0.33"}, "capabilities": {"experimentalApi": true}}),
            )
            .await;
        self.result_of(id).await;
        self.send(json!({"method": "initialized"})).await;
        let id = self
            .call(
                "thread/start",
                json!({"cwd": cwd, "approvalPolicy": "never", "sandbox": "danger-full-access", "approvalsReviewer": "user", "model": "gpt-5-codex"}),
            )
            .await;
        let opened = self.result_of(id).await;
        let thread = opened["thread"]["id"].as_str().expect("a thread id").to_owned();
        let started = self.notification("thread/started").await;
        assert_eq!(started["thread"]["id"], thread.as_str());
        thread
    }

    /// `turn/start` with `text`; the turn's id, after its response and `turn/started`.
    async fn start_turn(&mut self, thread: &str, text: &str) -> String {
        let id = self
            .call(
                "turn/start",
                json!({"threadId": thread, "input": [{"type": "text", "text": text}], "approvalPolicy": "never"}),
            )
            .await;
        let started = self.result_of(id).await;
        assert_eq!(started["turn"]["status"], "inProgress", "{started}");
        assert_eq!(started["turn"]["items"], json!([]));
        let turn = started["turn"]["id"].as_str().expect("a turn id").to_owned();
        let notified = self.notification("turn/started").await;
        assert_eq!(notified["threadId"], thread);
        assert_eq!(notified["turn"]["id"], turn.as_str());
        turn
    }

    /// Skips item notifications up to `turn/completed`; its turn.
    async fn completed_turn(&mut self) -> (Vec<Value>, Value) {
        let mut items = Vec::new();
        loop {
            let message = self.next().await;
            match message["method"].as_str() {
                Some("turn/completed") => return (items, message["params"]["turn"].clone()),
                Some(_) => items.push(message),
                None => panic!("a response out of turn: {message}"),
            }
        }
    }

    /// Closes the agent's stdin and waits for it to end.
    async fn close(self) {
        drop(self.to_agent);
        tokio::time::timeout(PATIENCE, self.agent)
            .await
            .expect("the agent ends once its input closes")
            .expect("the agent's task did not panic")
            .expect("the agent ended cleanly");
    }
}

fn git(cwd: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    git(dir.path(), &["init", "--quiet", "-b", "main"]);
    git(dir.path(), &["checkout", "--quiet", "-b", "afk/issue-7"]);
    dir
}

#[tokio::test]
async fn it_answers_the_handshake_and_the_health_probe() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut t3 = T3Side::start(dir.path());
    let id = t3
        .call("initialize", json!({"clientInfo": {"name": "t", "version": "1"}}))
        .await;
    let init = t3.result_of(id).await;
    assert_eq!(init["platformFamily"], "unix");
    assert!(init["codexHome"].as_str().is_some_and(|h| h.starts_with('/')));
    // T3 reads the version after the user agent's first '/'.
    assert!(
        init["userAgent"].as_str().is_some_and(|u| u.contains('/')),
        "{init}"
    );
    let id = t3.call("account/read", json!({})).await;
    assert_eq!(
        t3.result_of(id).await,
        json!({"account": null, "requiresOpenaiAuth": false})
    );
    let id = t3.call("skills/list", json!({"cwds": ["/x"]})).await;
    assert_eq!(t3.result_of(id).await, json!({"data": []}));
    let id = t3.call("model/list", json!({})).await;
    assert_eq!(t3.result_of(id).await, json!({"data": [], "nextCursor": null}));
    let id = t3.call("config/mcpServer/reload", Value::Null).await;
    assert_eq!(t3.result_of(id).await, json!({}));
    let id = t3.call("thread/fork", json!({})).await;
    let refused = t3.next().await;
    assert_eq!(refused["id"], id);
    assert_eq!(refused["error"]["code"], protocol::METHOD_NOT_FOUND, "{refused}");
    t3.close().await;
}

#[tokio::test]
async fn thread_start_and_resume_answer_with_the_thread() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut t3 = T3Side::start(dir.path());
    let thread = t3.open(dir.path()).await;
    assert!(!thread.is_empty());
    let id = t3
        .call(
            "thread/resume",
            json!({"threadId": "prov-1", "cwd": "/w", "sandbox": "workspace-write"}),
        )
        .await;
    let resumed = t3.result_of(id).await;
    assert_eq!(resumed["thread"]["id"], "prov-1");
    assert_eq!(resumed["thread"]["status"], json!({"type": "idle"}));
    assert_eq!(resumed["cwd"], "/w");
    assert_eq!(resumed["sandbox"], json!({"type": "workspaceWrite"}));
    assert_eq!(resumed["approvalsReviewer"], "user");
    assert_eq!(t3.notification("thread/started").await["thread"]["id"], "prov-1");
    t3.close().await;
}

#[tokio::test]
async fn an_unscripted_turn_commits_its_work_and_completes() {
    let repo = repository();
    let mut t3 = T3Side::start(repo.path());
    let thread = t3.open(repo.path()).await;
    let turn = t3.start_turn(&thread, "Fix the widget [sim:duration=10]").await;
    let (items, completed) = t3.completed_turn().await;
    assert_eq!(completed["id"], turn.as_str());
    assert_eq!(completed["status"], "completed", "{completed}");
    let methods: Vec<&str> = items.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        methods,
        ["item/started", "item/agentMessage/delta", "item/completed"]
    );
    let message = items[2]["params"]["item"]["text"].as_str().expect("a message");
    let head = git(repo.path(), &["rev-parse", "afk/issue-7"]);
    assert!(message.contains(&head), "{message} names the commit {head}");
    assert_eq!(
        git(repo.path(), &["show", "--name-only", "--format=", "HEAD"]),
        format!("t3-sim-work/{turn}.md")
    );
    t3.close().await;
}

#[tokio::test]
async fn a_fail_marker_fails_the_turn_with_an_error() {
    let repo = repository();
    let mut t3 = T3Side::start(repo.path());
    let thread = t3.open(repo.path()).await;
    t3.start_turn(&thread, "Do it [sim:fail] [sim:duration=0]").await;
    let (_, completed) = t3.completed_turn().await;
    assert_eq!(completed["status"], "failed");
    assert!(
        completed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[sim:fail]")),
        "{completed}"
    );
    assert_eq!(
        git(repo.path(), &["rev-list", "--all", "--count"]),
        "0",
        "a failed turn commits nothing"
    );
    t3.close().await;
}

#[tokio::test]
async fn an_interrupt_ends_a_hanging_turn_at_once() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut t3 = T3Side::start(dir.path());
    let thread = t3.open(dir.path()).await;
    let turn = t3.start_turn(&thread, "[sim:hang]").await;
    let id = t3
        .call("turn/interrupt", json!({"threadId": thread, "turnId": turn}))
        .await;
    assert_eq!(t3.result_of(id).await, json!({}));
    let (items, completed) = t3.completed_turn().await;
    assert!(items.is_empty(), "{items:?}");
    assert_eq!(completed["id"], turn.as_str());
    assert_eq!(completed["status"], "interrupted");
    // The session goes on: a next turn runs.
    t3.start_turn(&thread, "again [sim:duration=0] [sim:fail]").await;
    assert_eq!(t3.completed_turn().await.1["status"], "failed");
    t3.close().await;
}

#[tokio::test]
async fn an_ask_marker_waits_for_the_persons_answer() {
    let repo = repository();
    let mut t3 = T3Side::start(repo.path());
    let thread = t3.open(repo.path()).await;
    let turn = t3
        .start_turn(&thread, "Ask first [sim:ask] [sim:duration=0]")
        .await;
    let question = t3.next().await;
    assert_eq!(question["method"], "item/tool/requestUserInput", "{question}");
    let params = &question["params"];
    assert_eq!(params["threadId"], thread.as_str());
    assert_eq!(params["turnId"], turn.as_str());
    assert!(params["itemId"].as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(params["questions"][0]["id"], QUESTION_ID);
    assert_eq!(params["questions"][0]["options"][0]["label"], "yes");
    // Nothing more until the person answers.
    let quiet = tokio::time::timeout(Duration::from_millis(200), t3.from_agent.next_line()).await;
    assert!(quiet.is_err(), "the agent went on without an answer: {quiet:?}");
    let request = question["id"].clone();
    t3.send(json!({"id": request, "result": {"answers": {QUESTION_ID: {"answers": ["yes"]}}}}))
        .await;
    let resolved = t3.notification("serverRequest/resolved").await;
    assert_eq!(resolved["requestId"], request);
    let (items, completed) = t3.completed_turn().await;
    assert_eq!(completed["status"], "completed");
    let message = items[2]["params"]["item"]["text"].as_str().expect("a message");
    assert!(message.contains("answered: yes"), "{message}");
    t3.close().await;
}

#[tokio::test]
async fn closing_stdin_ends_the_session_even_mid_turn() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut t3 = T3Side::start(dir.path());
    let thread = t3.open(dir.path()).await;
    t3.start_turn(&thread, "[sim:hang]").await;
    t3.close().await;
}

#[tokio::test]
async fn exec_is_refused() {
    let args = AgentArgs {
        turn_duration: None,
        mode: AgentMode::Exec {
            args: vec!["--output-last-message".into(), "/tmp/x".into(), "-".into()],
        },
    };
    let err = run(args).await.expect_err("exec is refused");
    assert!(err.to_string().contains("codex exec"), "{err}");
}
