//! Waiting reasons that stay true: while afk cannot work it says why, naming the part at fault
//! (T3 at its URL, the Vault its token comes from, GitHub) and whether a person must act or it
//! will pass; it says so again only when the cause changes or every few minutes, leaves a part
//! that refuses it alone for longer and longer, and `afk status` shows the current reason.
//!
//! Ticks are driven with a made-up clock (`now`), so minutes pass without waiting for them.

mod common;

use std::path::Path;
use std::time::Duration;

use afk::control::waiting::Topic;
use afk::logging::{self, LogFormat};
use afk::views;
use afk_core::JobState;
use afk_secrets::testing::{LogCapture, VaultStandIn};
use afk_secrets::ProviderSpec;
use chrono::{DateTime, Utc};
use common::*;
use serde_json::Value;
use t3_sim::TokenGrant;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// Logs everything at DEBUG, as JSON, into `capture`, for the current thread (the tests run on
/// one), until the guard is dropped.
fn capture_log(capture: &LogCapture) -> tracing::subscriber::DefaultGuard {
    let subscriber = tracing_subscriber::registry().with(
        logging::layer(LogFormat::Json, false, capture.clone())
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    tracing::subscriber::set_default(subscriber)
}

/// The records that say afk waits.
fn waiting_lines(capture: &LogCapture) -> Vec<Value> {
    capture
        .text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("waiting: ")))
        .collect()
}

/// A provider that reads `token_file` and counts each time it is asked in `count_file`.
fn counting_provider(token_file: &Path, count_file: &Path) -> ProviderSpec {
    ProviderSpec::Command {
        command: vec![format!(
            "echo . >> '{}'; cat '{}'",
            count_file.display(),
            token_file.display()
        )],
        shell: true,
        timeout: Duration::from_secs(10),
        cache_lifetime: None,
    }
}

fn asked(count_file: &Path) -> usize {
    std::fs::read_to_string(count_file)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

#[tokio::test]
async fn a_refused_token_is_said_once_backs_off_says_it_again_minutes_later_and_shows_in_status() {
    let log = LogCapture::default();
    let _guard = capture_log(&log);
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.watch.push = false;
    let count_file = world.dir.path().join("asked");
    world.config.t3.token = Some(counting_provider(&world.config.t3.token_file, &count_file));
    world.sim.revoke_token(TOKEN);
    world.add_issue(REPO_A, 1, "Do it.");
    let mut app = world.app().await;
    let t0 = Utc::now();

    // One second of polls every 25 ms: 40 ticks.
    for n in 0..40 {
        let report = app.tick(t0 + ms(25 * n)).await.unwrap();
        assert!(!report.t3_reachable);
    }
    // Each read asks the provider twice (a 401, then once more with a fresh token). Polled every
    // tick that would be 80; left alone for 25 ms, 50, 100, … it is 6 reads.
    assert_eq!(asked(&count_file), 12, "T3 is left alone for longer and longer");
    let lines = waiting_lines(&log);
    assert_eq!(lines.len(), 1, "said once, not at every poll: {lines:#?}");
    let line = &lines[0];
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["topic"], "t3_read");
    assert_eq!(line["part"], format!("T3 at {}", world.sim.url()));
    assert_eq!(line["kind"], "refused");
    assert_eq!(line["needs_person"], true);
    let message = line["message"].as_str().unwrap();
    assert!(
        message.contains("refused afk's T3 operate token (401)")
            && message.contains("a person must give afk a valid token ([t3.token] or token_file)"),
        "{message}"
    );

    // `afk status` (another process) shows it from the ledger.
    let status = views::status(&world.ledger().await).await.unwrap();
    assert_eq!(status.waiting.len(), 1, "{:#?}", status.waiting);
    assert_eq!(status.waiting[0].topic, "t3_read");
    assert!(status.waiting[0].needs_person);
    assert_eq!(status.waiting[0].since, {
        // Stored to the millisecond.
        DateTime::from_timestamp_millis(t0.timestamp_millis()).unwrap()
    });
    let text = status.text();
    assert!(
        text.contains("(a person must act): nothing is dispatched or watched: T3 at"),
        "{text}"
    );

    // Five minutes on, still refused: said again, with since when.
    app.tick(t0 + chrono::Duration::seconds(301)).await.unwrap();
    let lines = waiting_lines(&log);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[1]["message"].as_str().unwrap().contains("(since "));

    // A person fixes the token: the next read works, the reason is over, and work starts.
    world.sim.grant_token(TokenGrant::operate("t3-fixed-token-77"));
    std::fs::write(&world.config.t3.token_file, "t3-fixed-token-77").unwrap();
    let report = app.tick(t0 + chrono::Duration::seconds(330)).await.unwrap();
    assert!(report.t3_reachable);
    assert!(log.text().contains("no longer waiting: T3 at"), "{}", log.text());
    assert!(views::status(app.ledger()).await.unwrap().waiting.is_empty());
    let jobs = app.ledger().jobs().await.unwrap();
    assert_ne!(jobs[0].state, JobState::Queued, "dispatched once T3 reads again");
    assert_eq!(waiting_lines(&log).len(), 2);
}

#[tokio::test]
async fn a_dispatch_refused_for_its_token_is_waiting_not_failing() {
    let log = LogCapture::default();
    let _guard = capture_log(&log);
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.watch.push = false;
    // Reading works with its own token; the operate token may only read.
    let read_file = world.dir.path().join("t3-read-token");
    std::fs::write(&read_file, "t3-reader-1c2d").unwrap();
    world.sim.grant_token(TokenGrant::read_only("t3-reader-1c2d"));
    world.sim.revoke_token(TOKEN);
    world
        .sim
        .grant_token(TokenGrant::read_only("t3-read-only-as-operate"));
    std::fs::write(&world.config.t3.token_file, "t3-read-only-as-operate").unwrap();
    world.config.t3.read_token_file = Some(read_file);
    world.add_issues(REPO_A, 1..=3);
    // One dispatch at a time, so that the first refusal visibly holds the rest of the tick's
    // (concurrent ones would all be on their way before it came back).
    world.config.limits.parallel_dispatches = 1;
    let mut app = world.app().await;
    let t0 = Utc::now();
    for n in 0..10 {
        assert!(app.tick(t0 + ms(25 * n)).await.unwrap().t3_reachable);
    }
    let (waiting, _) = app
        .control_plane()
        .waiting(Topic::T3Operate)
        .expect("waiting to dispatch");
    assert_eq!(waiting.kind, "insufficient_scope");
    assert!(waiting.needs_person);
    assert!(
        app.control_plane().waiting(Topic::T3Read).is_none(),
        "reading works"
    );
    let lines = waiting_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let message = lines[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("waiting: nothing is dispatched: T3 at")
            && message.contains("lacks the scope orchestration:operate"),
        "{message}"
    );
    // No job is failed for the token, and the first refusal stopped the tick's dispatching.
    let jobs = app.ledger().jobs().await.unwrap();
    assert!(jobs.iter().all(|j| !j.state.is_final()), "{jobs:#?}");
    assert_eq!(
        attempt_count(app.ledger()).await,
        1,
        "one attempt was recorded and refused; the others wait"
    );
}

/// A world whose T3 operate token is read from a stand-in Vault with token auth; the Vault token.
async fn vault_world() -> (VaultStandIn, World, String) {
    let vault = VaultStandIn::start().await.expect("the stand-in Vault starts");
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.watch.push = false;
    let vault_token_file = world.dir.path().join("vault-token");
    let vault_token = vault.issue_token(None);
    std::fs::write(&vault_token_file, &vault_token).unwrap();
    vault.set_secret("afk/t3", "token", TOKEN);
    let spec = format!(
        "provider = \"vault\"\naddr = \"{}\"\npath = \"afk/t3\"\ncache_lifetime = \"1s\"\n\
         auth = {{ method = \"token\", token = {{ provider = \"file\", path = \"{}\" }} }}\n",
        vault.url(),
        vault_token_file.display()
    );
    world.config.t3.token = Some(toml::from_str::<ProviderSpec>(&spec).unwrap());
    (vault, world, vault_token)
}

#[tokio::test]
async fn vault_is_named_as_the_part_at_fault_sealed_will_pass_a_revoked_token_needs_a_person() {
    let log = LogCapture::default();
    let _guard = capture_log(&log);
    let (vault, world, vault_token) = vault_world().await;
    world.add_issue(REPO_A, 1, "Do it.");
    vault.seal();
    let mut app = world.app().await;
    let t0 = Utc::now();
    app.tick(t0).await.unwrap();
    let (waiting, _) = app.control_plane().waiting(Topic::T3Read).expect("waiting");
    assert_eq!(
        waiting.part,
        format!("Vault secret secret/afk/t3 (field token) at {}", vault.url())
    );
    assert_eq!((waiting.kind.as_str(), waiting.needs_person), ("sealed", false));
    let message = waiting.message();
    assert!(
        message.contains("afk's T3 operate token from Vault secret")
            && message.ends_with("— it will pass")
            && !message.contains(&world.sim.url()),
        "Vault's fault, not T3's: {message}"
    );
    let lines = waiting_lines(&log);
    assert_eq!(
        (lines.len(), lines[0]["level"].as_str()),
        (1, Some("WARN")),
        "{lines:#?}"
    );
    let status = views::status(app.ledger()).await.unwrap();
    assert!(status.text().contains("(it will pass): "), "{}", status.text());

    // Unsealed: it passed.
    vault.unseal();
    assert!(app.tick(t0 + ms(100)).await.unwrap().t3_reachable);
    assert!(app.control_plane().waiting(Topic::T3Read).is_none());

    // The Vault token is revoked (its cached value runs out after a second): a person must act,
    // and it is a new cause, said at once.
    vault.revoke_token(&vault_token);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 2;
    while app.control_plane().waiting(Topic::T3Read).is_none() {
        assert!(std::time::Instant::now() < deadline, "{}", log.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.tick(t0 + ms(100 * n)).await.unwrap();
        n += 1;
    }
    let (waiting, _) = app.control_plane().waiting(Topic::T3Read).unwrap();
    assert_eq!(
        (waiting.kind.as_str(), waiting.needs_person),
        ("invalid_token", true)
    );
    assert!(
        waiting.message().contains("a person must"),
        "{}",
        waiting.message()
    );
    let lines = waiting_lines(&log);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[1]["level"], "ERROR");
    assert!(
        !log.text().contains(&vault_token),
        "the Vault token is never logged"
    );
}

#[tokio::test]
async fn github_refusing_the_token_is_a_reason_a_person_must_act_on() {
    use afk::config::GitHubConfig;
    use afk_github::testing::{GitHubStandIn, STAND_IN_TOKEN};
    let log = LogCapture::default();
    let _guard = capture_log(&log);
    let mut world = World::new(Duration::from_millis(50)).await;
    let github = GitHubStandIn::start().await.unwrap();
    github.create_repo(REPO_A);
    let token_file = world.dir.path().join("github-token");
    std::fs::write(&token_file, "ghp_notatokenGitHubKnowsabcdefgh").unwrap();
    world.config.source.local = None;
    world.config.github = Some(GitHubConfig {
        api_url: github.api_url().to_string(),
        repos: vec![REPO_A.into()],
        poll_interval: Duration::from_millis(10),
        token_file: Some(token_file.clone()),
        ..GitHubConfig::default()
    });
    let mut app = world.app().await;
    app.tick(Utc::now()).await.unwrap();
    let (waiting, _) = app
        .control_plane()
        .waiting(Topic::GitHub)
        .expect("waiting for GitHub");
    assert_eq!(waiting.part, "GitHub");
    assert_eq!((waiting.kind.as_str(), waiting.needs_person), ("refused", true));
    assert!(
        waiting
            .message()
            .starts_with("no issue is taken from GitHub: GitHub rejected the credentials (HTTP 401)"),
        "{}",
        waiting.message()
    );
    assert!(!log.text().contains("ghp_notatoken"), "{}", log.text());
    // Fixed: the next poll (once the back-off allows it) ends the wait.
    std::fs::write(&token_file, STAND_IN_TOKEN).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.control_plane().waiting(Topic::GitHub).is_some() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
        app.tick(Utc::now()).await.unwrap();
    }
    assert_eq!(waiting_lines(&log).len(), 1);
}
