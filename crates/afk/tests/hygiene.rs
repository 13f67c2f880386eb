//! Secret hygiene over a whole scenario, at TRACE for every crate (the `log` crate's records of the
//! WebSocket client and reqwest included, as `afk run` sets it up): afk takes issues from a folder
//! and from GitHub (its token from a file, a signed webhook delivered), reads T3 over HTTP and its
//! shell stream over the WebSocket with a read token from Vault (Kubernetes login), dispatches over
//! the WebSocket with an operate token that is rotated mid-run, and reports on GitHub. No secret
//! value may appear in the log (as `afk run` writes it, and even before its scrubbing writer), nor
//! in the ledger.
//!
//! This file holds one test: the log capture is the process's one global logger.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use afk::config::GitHubConfig;
use afk::logging::{self, LogFormat};
use afk_core::JobState;
use afk_github::testing::GitHubStandIn;
use afk_secrets::redact::ScrubbingMakeWriter;
use afk_secrets::testing::VaultStandIn;
use afk_secrets::ProviderSpec;
use common::*;
use t3_sim::TokenGrant;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// A log sink that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Everything at TRACE into `written` through afk's own pipeline (JSON, the noisy libraries held
/// to DEBUG, the scrubbing writer), and into `raw` the same records without the scrubbing writer:
/// afk itself must not hand a secret to its log, whatever the writer would catch.
fn capture_trace(written: &Captured, raw: &Captured) {
    let (written, raw) = (written.clone(), raw.clone());
    tracing_subscriber::registry()
        .with(
            logging::layer(
                LogFormat::Json,
                false,
                ScrubbingMakeWriter::new(move || written.clone()),
            )
            .with_filter(LevelFilter::TRACE),
        )
        .with(logging::layer(LogFormat::Json, false, move || raw.clone()).with_filter(LevelFilter::TRACE))
        // As `afk run`: the `log` crate's records (tungstenite, reqwest) come through too.
        .try_init()
        .expect("the only logger");
}

const MAINTAINER: &str = "mona";
const OLD: &str = "t3-old-token-0c1d9e";
const NEW: &str = "t3-new-token-7ab344";
const READ: &str = "t3-read-token-from-vault-55e2";
const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.hygiene-service-account.sig";
const GITHUB_TOKEN: &str = "ghp_hygieneHygieneHygiene0123456789";
const WEBHOOK_SECRET: &str = "whsec-hygiene-4471";

#[tokio::test]
async fn no_secret_reaches_the_log_at_trace_or_the_ledger_over_a_whole_scenario() {
    let (written, raw) = (Captured::default(), Captured::default());
    capture_trace(&written, &raw);
    let mut world = World::new(Duration::from_millis(100)).await;
    world.config.limits.max_concurrent = 2;

    // T3: the operate token from a file, expiring on its own as T3's hourly tokens do; the read
    // token from Vault, with a Kubernetes login.
    world
        .sim
        .grant_token(TokenGrant::operate(OLD).expiring_after(Duration::from_secs(30)));
    std::fs::write(&world.config.t3.token_file, OLD).unwrap();
    world.sim.grant_token(TokenGrant::read_only(READ));
    let vault = VaultStandIn::start().await.expect("the stand-in Vault starts");
    vault.add_kubernetes_role("afk", JWT, Duration::from_secs(3600));
    vault.set_secret("afk/t3-read", "token", READ);
    let jwt_file = world.dir.path().join("service-account-token");
    std::fs::write(&jwt_file, JWT).unwrap();
    let read_spec = format!(
        "provider = \"vault\"\naddr = \"{}\"\npath = \"afk/t3-read\"\n\
         auth = {{ method = \"kubernetes\", role = \"afk\", jwt_path = \"{}\" }}\n",
        vault.url(),
        jwt_file.display()
    );
    world.config.t3.read_token = Some(toml::from_str::<ProviderSpec>(&read_spec).unwrap());

    // GitHub: one repository, a token from a file, webhooks signed with a secret.
    let github = GitHubStandIn::start().await.expect("the stand-in GitHub starts");
    github.add_token(GITHUB_TOKEN);
    github.create_repo(REPO_B);
    github.set_permission(REPO_B, MAINTAINER, "write");
    let number = github.open_issue(REPO_B, "octocat", "Fix the pager", "The last page is missing.");
    github.add_label(REPO_B, number, "afk", MAINTAINER);
    let github_token_file = world.dir.path().join("github-token");
    std::fs::write(&github_token_file, GITHUB_TOKEN).unwrap();
    let webhook_secret_file = world.dir.path().join("webhook-secret");
    std::fs::write(&webhook_secret_file, WEBHOOK_SECRET).unwrap();
    world.config.github = Some(GitHubConfig {
        api_url: github.api_url().to_string(),
        repos: vec![REPO_B.into()],
        poll_interval: Duration::from_millis(50),
        token_file: Some(github_token_file),
        webhook_secret_file: Some(webhook_secret_file),
        ..GitHubConfig::default()
    });
    world.config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    world.add_issues(REPO_A, 1..=6);
    let mut app = world.app().await;

    let body = serde_json::json!({
        "action": "labeled",
        "label": {"name": "afk"},
        "issue": {"number": number},
        "repository": {"full_name": REPO_B},
    })
    .to_string();
    let delivered = reqwest::Client::new()
        .post(format!("http://{}/webhooks/github", app.http_addr().unwrap()))
        .header("x-github-event", "issues")
        .header("x-github-delivery", "d-hygiene")
        .header(
            "x-hub-signature-256",
            afk_github::sign(WEBHOOK_SECRET.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), 202);

    let jobs = tick_until_all_final_acting_after_first_success(&mut app, 7, || {
        // Rotation as Vault Agent does it: the new token is valid, the old one no longer, and the
        // file is rewritten in place.
        world.sim.grant_token(TokenGrant::operate(NEW));
        world.sim.revoke_token(OLD);
        world.sim.revoke_token(TOKEN);
        std::fs::write(&world.config.t3.token_file, NEW).unwrap();
    })
    .await;
    assert!(jobs.iter().all(|j| j.state == JobState::Succeeded), "{jobs:#?}");
    tick_until_true(&mut app, || {
        github
            .comments(REPO_B, number)
            .iter()
            .any(|c| c.contains(afk_github::STATUS_MARKER))
    })
    .await;
    assert!(
        vault.counts().logins >= 1,
        "the read token came through a Vault login"
    );
    assert!(world.sim.ws_connections() >= 1, "the WebSocket was used");

    let (written, raw) = (written.text(), raw.text());
    for (name, log) in [("the log", &written), ("the unscrubbed log", &raw)] {
        assert!(
            log.contains("TRACE") && log.contains("tungstenite"),
            "{name} was captured at TRACE, the WebSocket client's records included: {} bytes",
            log.len()
        );
    }
    // Nor the ledger: read its file (and its write-ahead log) as bytes.
    let mut ledger_bytes = Vec::new();
    for entry in std::fs::read_dir(world.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("afk.db") {
            ledger_bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!ledger_bytes.is_empty());
    let ledger = String::from_utf8_lossy(&ledger_bytes);
    let vault_tokens = vault.issued_tokens();
    assert!(!vault_tokens.is_empty());
    let secrets = [OLD, NEW, TOKEN, READ, JWT, GITHUB_TOKEN, WEBHOOK_SECRET]
        .into_iter()
        .map(str::to_owned)
        .chain(vault_tokens);
    for secret in secrets {
        assert!(!written.contains(&secret), "a secret reached the log");
        assert!(!raw.contains(&secret), "afk handed a secret to its log");
        assert!(!ledger.contains(&secret), "a secret reached the ledger");
    }
}
