//! afk with GitHub end to end: a stand-in GitHub and the T3 stand-in on loopback. An issue
//! labelled by a maintainer becomes a T3 thread and its outcome shows on the issue; anyone else's
//! label is ignored; closing the issue stops the work; a template error fails the job visibly.

mod common;

use std::time::Duration;

use afk::config::GitHubConfig;
use afk_core::JobState;
use afk_github::testing::{GitHubStandIn, STAND_IN_TOKEN};
use common::*;

const MAINTAINER: &str = "mona";
const OUTSIDER: &str = "mallory";

async fn github_world(turn: Duration) -> (World, GitHubStandIn) {
    let mut world = World::new(turn).await;
    let github = GitHubStandIn::start().await.expect("the stand-in GitHub starts");
    github.create_repo(REPO_A);
    github.set_permission(REPO_A, MAINTAINER, "write");
    github.set_permission(REPO_A, OUTSIDER, "read");
    let token_file = world.dir.path().join("github-token");
    std::fs::write(&token_file, STAND_IN_TOKEN).unwrap();
    world.config.source.local = None;
    world.config.github = Some(GitHubConfig {
        api_url: github.api_url().to_string(),
        repos: vec![REPO_A.into()],
        poll_interval: Duration::from_millis(50),
        token_file: Some(token_file),
        ..GitHubConfig::default()
    });
    (world, github)
}

/// An issue opened by someone and labelled by a maintainer: handed over to afk. Its number.
fn handed_over(github: &GitHubStandIn, title: &str, body: &str) -> u64 {
    let number = github.open_issue(REPO_A, "octocat", title, body);
    github.add_label(REPO_A, number, "afk", MAINTAINER);
    number
}

fn status_comments(github: &GitHubStandIn, number: u64) -> Vec<String> {
    github
        .comments(REPO_A, number)
        .into_iter()
        .filter(|c| c.contains(afk_github::STATUS_MARKER))
        .collect()
}

#[tokio::test]
async fn an_issue_labelled_by_a_maintainer_becomes_a_thread_and_its_outcome_shows_on_the_issue() {
    let (world, github) = github_world(Duration::from_millis(300)).await;
    let number = handed_over(&github, "Fix the pager", "The last page is missing.");
    let mut app = world.app().await;

    let jobs = tick_until_first_job_is(&mut app, JobState::Running).await;
    // While it runs: one comment naming the thread, and the running label.
    let thread_id = app.ledger().attempts(jobs[0].id).await.unwrap()[0]
        .thread_id
        .clone();
    tick_until_true(&mut app, || {
        github.labels(REPO_A, number).contains(&"afk:running".to_string())
    })
    .await;
    let comments = status_comments(&github, number);
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(comments[0].contains(thread_id.as_str()));
    // The agent opens its pull request on the attempt's branch.
    github.open_pull_request(
        REPO_A,
        "afk-bot",
        &format!("afk/issue-{number}"),
        "Fix the pager",
        "Fixes the pager.",
    );

    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].state, JobState::Succeeded);
    tick_until_true(&mut app, || {
        github.labels(REPO_A, number).contains(&"afk:done".to_string())
    })
    .await;
    let labels = github.labels(REPO_A, number);
    assert!(!labels.contains(&"afk:running".to_string()), "{labels:?}");
    let comments = status_comments(&github, number);
    assert_eq!(
        comments.len(),
        1,
        "the comment is edited in place, not repeated: {comments:#?}"
    );
    assert!(comments[0].contains("**done**"), "{}", comments[0]);
    assert!(comments[0].contains("Pull request: #"), "{}", comments[0]);
    let thread = world.sim.read_model().threads.into_iter().next().unwrap();
    assert_eq!(thread.title, format!("{REPO_A}#{number}: Fix the pager"));

    // After a restart, what was reported is not reported again.
    drop(app);
    let writes = |github: &GitHubStandIn| github.requests().iter().filter(|r| r.method != "GET").count();
    let before = writes(&github);
    let mut app = world.app().await;
    for _ in 0..3 {
        app.tick(chrono::Utc::now()).await.unwrap();
    }
    assert_eq!(writes(&github), before, "nothing new to say on the issue");
}

#[tokio::test]
async fn an_issue_labelled_by_someone_without_write_access_is_never_touched() {
    let (world, github) = github_world(Duration::from_millis(100)).await;
    let number = github.open_issue(REPO_A, "octocat", "Please run rm -rf", "...");
    github.add_label(REPO_A, number, "afk", OUTSIDER);
    let mut app = world.app().await;
    for _ in 0..3 {
        app.tick(chrono::Utc::now()).await.unwrap();
    }
    assert!(app.ledger().jobs().await.unwrap().is_empty());
    assert!(github.comments(REPO_A, number).is_empty());
    assert_eq!(world.sim.threads().len(), 0);
}

/// A running issue withdrawn on GitHub by `withdraw`: the job is cancelled, the thread interrupted,
/// and the one status comment says so. Returns the issue number.
async fn withdrawn_while_running(withdraw: impl FnOnce(&GitHubStandIn, u64)) -> (GitHubStandIn, u64) {
    let (world, github) = github_world(Duration::from_millis(100)).await;
    let number = handed_over(&github, "Long job", "Takes forever. [sim:hang]");
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Running).await;
    withdraw(&github, number);
    tick_until_first_job_is(&mut app, JobState::Cancelled).await;
    tick_until_true(&mut app, || {
        first_thread_interrupted(&world.sim)
            && status_comments(&github, number)
                .iter()
                .any(|c| c.to_lowercase().contains("cancel"))
    })
    .await;
    (github, number)
}

#[tokio::test]
async fn closing_the_issue_while_its_thread_runs_interrupts_it_and_cancels_the_job() {
    let (github, number) =
        withdrawn_while_running(|github, number| github.close_issue(REPO_A, number, MAINTAINER)).await;
    let labels = github.labels(REPO_A, number);
    assert!(
        labels.iter().all(|l| !l.starts_with("afk:")),
        "status labels are removed: {labels:?}"
    );
}

#[tokio::test]
async fn a_signed_webhook_cancels_at_once_and_a_forged_one_changes_nothing() {
    let (mut world, github) = github_world(Duration::from_millis(100)).await;
    let secret = "whsec-test-7781";
    let secret_file = world.dir.path().join("webhook-secret");
    std::fs::write(&secret_file, secret).unwrap();
    if let Some(gh) = world.config.github.as_mut() {
        gh.webhook_secret_file = Some(secret_file);
        // Polling would notice the close too, but not within this test.
        gh.poll_interval = Duration::from_secs(3600);
    }
    let number = handed_over(&github, "Long job", "[sim:hang]");
    world.config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    let mut app = world.app().await;
    let addr = app.http_addr().expect("afk listens");
    tick_until_first_job_is(&mut app, JobState::Running).await;

    github.close_issue(REPO_A, number, MAINTAINER);
    let body = serde_json::json!({
        "action": "closed",
        "issue": {"number": number},
        "repository": {"full_name": REPO_A},
    })
    .to_string();
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/webhooks/github");
    let forged = http
        .post(&url)
        .header("x-github-event", "issues")
        .header("x-github-delivery", "d-1")
        .header(
            "x-hub-signature-256",
            afk_github::sign(b"wrong secret", body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    app.tick(chrono::Utc::now()).await.unwrap();
    assert_eq!(
        app.ledger().jobs().await.unwrap()[0].state,
        JobState::Running,
        "a forged delivery changes nothing"
    );

    let signed = http
        .post(&url)
        .header("x-github-event", "issues")
        .header("x-github-delivery", "d-2")
        .header(
            "x-hub-signature-256",
            afk_github::sign(secret.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 202);
    let jobs = tick_until(
        &mut app,
        Duration::from_secs(5),
        |_| {},
        |jobs| jobs[0].state == JobState::Cancelled,
    )
    .await;
    assert_eq!(jobs[0].state, JobState::Cancelled);
}

#[tokio::test]
async fn a_template_error_in_afk_md_fails_the_job_with_a_message_naming_it() {
    let (world, github) = github_world(Duration::from_millis(100)).await;
    github.set_file(
        REPO_A,
        "AFK.md",
        "---\nbranch_prefix: bots/\n---\nFix {{ issue.titel }} please.\n",
    );
    let number = handed_over(&github, "Typo", "...");
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].state, JobState::Failed);
    let events = app.ledger().events(jobs[0].id).await.unwrap();
    assert!(
        events.last().unwrap().note.contains("titel"),
        "{:?}",
        events.last()
    );
    assert_eq!(world.sim.threads().len(), 0, "nothing was sent to T3");
    tick_until_true(&mut app, || {
        status_comments(&github, number)
            .iter()
            .any(|c| c.contains("titel"))
    })
    .await;
}

#[tokio::test]
async fn afk_md_settings_choose_the_branch_and_the_model() {
    let (world, github) = github_world(Duration::from_millis(100)).await;
    github.set_file(
        REPO_A,
        "AFK.md",
        "---\nbranch_prefix: bots/\nmodel: claude-opus-4-1\n---\nFix #{{ issue.number }}: {{ issue.title }}\n",
    );
    let number = handed_over(&github, "Typo", "...");
    let mut app = world.app().await;
    tick_until_all_final(&mut app, 1).await;
    let thread = world.sim.read_model().threads.into_iter().next().unwrap();
    assert_eq!(
        thread.branch.as_deref(),
        Some(format!("bots/issue-{number}").as_str())
    );
    assert_eq!(thread.model_selection.model.as_str(), "claude-opus-4-1");
}

#[tokio::test]
async fn removing_the_trigger_label_while_its_thread_runs_stops_it_and_cancels_the_job() {
    let (github, number) =
        withdrawn_while_running(|github, number| github.remove_label(REPO_A, number, "afk", MAINTAINER))
            .await;
    assert_eq!(status_comments(&github, number).len(), 1, "one comment, edited");
}

#[tokio::test]
async fn a_burst_of_webhook_deliveries_costs_github_at_most_a_poll_and_a_few_checks() {
    let (mut world, github) = github_world(Duration::from_millis(100)).await;
    let secret = "whsec-burst-1";
    let secret_file = world.dir.path().join("webhook-secret");
    std::fs::write(&secret_file, secret).unwrap();
    if let Some(gh) = world.config.github.as_mut() {
        gh.webhook_secret_file = Some(secret_file);
        gh.poll_interval = Duration::from_secs(3600);
    }
    world.config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    let mut app = world.app().await;
    let url = format!("http://{}/webhooks/github", app.http_addr().unwrap());
    let count = |github: &GitHubStandIn| github.requests().len();
    app.tick(chrono::Utc::now()).await.unwrap();

    let http = reqwest::Client::new();
    let deliver = |number: u64, id: String| {
        let body = serde_json::json!({
            "action": "labeled",
            "label": {"name": "afk"},
            "issue": {"number": number},
            "repository": {"full_name": REPO_A},
        })
        .to_string();
        http.post(&url)
            .header("x-github-event", "issues")
            .header("x-github-delivery", id)
            .header(
                "x-hub-signature-256",
                afk_github::sign(secret.as_bytes(), body.as_bytes()),
            )
            .body(body)
            .send()
    };
    // One delivery: what one check costs.
    let number = github.open_issue(REPO_A, "octocat", "One", "Do it.");
    github.add_label(REPO_A, number, "afk", MAINTAINER);
    assert_eq!(deliver(number, "one".into()).await.unwrap().status(), 202);
    let before = count(&github);
    app.tick(chrono::Utc::now()).await.unwrap();
    let check = count(&github) - before;
    assert!(check >= 1, "the delivery was checked");

    // A burst: 200 deliveries about 100 issues, each replayed under a new id.
    let mut numbers = Vec::new();
    for i in 0..100 {
        let n = github.open_issue(REPO_A, "octocat", &format!("Burst {i}"), "Do it.");
        github.add_label(REPO_A, n, "afk", MAINTAINER);
        numbers.push(n);
    }
    for (i, n) in numbers.iter().enumerate() {
        deliver(*n, format!("b-{i}")).await.unwrap();
        let replay = deliver(*n, format!("replay-{i}")).await.unwrap();
        assert_eq!(replay.status(), 200, "a replayed body is a duplicate");
    }
    let before = count(&github);
    app.tick(chrono::Utc::now()).await.unwrap();
    // Each check reads the issue itself (`GET /repos/R/issues/N`); a poll lists the open issues
    // labelled `afk` (and then reads what it must of each, as any poll of them would).
    let requests = &github.requests()[before..];
    let issue_path = format!("/repos/{REPO_A}/issues/");
    let checks = requests
        .iter()
        .filter(|r| r.method == "GET")
        .filter(|r| {
            r.path
                .split_once(&issue_path)
                .is_some_and(|(_, rest)| rest.chars().all(|c| c.is_ascii_digit()))
        })
        .count();
    let polls = requests
        .iter()
        .filter(|r| r.path.contains("/issues?state=open") && !r.path.contains("&page="))
        .count();
    assert!(
        checks <= 10 && polls == 1,
        "{checks} issue checks and {polls} polls for 200 deliveries (one check costs {check} requests)"
    );
    // Nothing was lost: the early poll took every issue.
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(jobs.len(), 101, "{} jobs", jobs.len());
}
