//! Comment commands end to end (issue 16): `/afk stop`, `/afk retry` and `/afk <instruction>` in
//! comments on a GitHub issue, by polling and by webhook, against the stand-in GitHub and the T3
//! stand-in. Only people with write access command afk; each command is taken once (an edit
//! never counts) and acknowledged with one reaction, also across a crash.

mod common;

use std::sync::Arc;
use std::time::Duration;

use afk_core::{CancelReason, JobState};
use afk_github::testing::{GitHubStandIn, STAND_IN_LOGIN};
use afk_github::SystemClock;
use afk_ledger::CommandState;
use common::*;

const MAINTAINER: &str = GITHUB_WRITER;
const OUTSIDER: &str = GITHUB_READER;

async fn github_world() -> (World, GitHubStandIn) {
    World::new(Duration::from_millis(100))
        .await
        .on_github(Duration::from_millis(50), Arc::new(SystemClock))
        .await
}

fn handed_over(github: &GitHubStandIn, title: &str, body: &str) -> u64 {
    let number = github.open_issue(REPO_A, "octocat", title, body);
    github.add_label(REPO_A, number, "afk", MAINTAINER);
    number
}

fn eyes() -> Vec<(String, String)> {
    vec![(STAND_IN_LOGIN.to_owned(), "eyes".to_owned())]
}

fn thumbs_down() -> Vec<(String, String)> {
    vec![(STAND_IN_LOGIN.to_owned(), "-1".to_owned())]
}

/// The comments afk wrote on the issue other than its status comment (its replies).
fn replies(github: &GitHubStandIn, number: u64) -> Vec<String> {
    github
        .comments(REPO_A, number)
        .into_iter()
        .zip(github.comment_authors(REPO_A, number))
        .filter(|(body, author)| author == STAND_IN_LOGIN && !body.contains(afk_github::STATUS_MARKER))
        .map(|(body, _)| body)
        .collect()
}

async fn notes(app: &afk::app::App, job: afk_core::JobId) -> Vec<String> {
    app.ledger()
        .events(job)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.note)
        .collect()
}

/// Ticks a few GitHub poll intervals (the comment polls among them).
async fn tick_a_while(app: &mut afk::app::App) {
    for _ in 0..6 {
        app.tick(chrono::Utc::now()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

#[tokio::test]
async fn a_writers_stop_cancels_the_job_and_stops_its_threads_session_and_a_readers_is_ignored() {
    let (world, github) = github_world().await;
    let number = handed_over(&github, "Long job", "Takes forever. [sim:hang]");
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Running).await;

    let outsiders = github.add_comment(REPO_A, number, OUTSIDER, "/afk stop");
    tick_a_while(&mut app).await;
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(jobs[0].state, JobState::Running, "a reader cannot stop the job");
    assert!(
        github.reactions(REPO_A, outsiders).is_empty(),
        "no reaction for a reader"
    );
    assert!(replies(&github, number).is_empty(), "no reply to a reader");
    let kept = app.ledger().comment_commands_of(jobs[0].id).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].state, CommandState::Ignored);

    let writers = github.add_comment(REPO_A, number, MAINTAINER, "/afk stop");
    let jobs = tick_until_first_job_is(&mut app, JobState::Cancelled).await;
    assert_eq!(jobs[0].cancel_reason, Some(CancelReason::StoppedByCommand));
    tick_until_true(&mut app, || {
        first_thread_interrupted(&world.sim) && github.reactions(REPO_A, writers) == eyes()
    })
    .await;
    let session = world.sim.read_model().threads[0]
        .session
        .as_ref()
        .map(|s| s.status);
    assert_eq!(
        session,
        Some(t3_client::wire::SessionStatus::Stopped),
        "its session is stopped"
    );
    let notes = notes(&app, jobs[0].id).await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("/afk stop") && n.contains(MAINTAINER)),
        "the note says who stopped it: {notes:#?}"
    );
    assert!(
        replies(&github, number).is_empty(),
        "a taken command gets no reply"
    );
    assert!(github.reactions(REPO_A, outsiders).is_empty());
}

#[tokio::test]
async fn retry_after_giving_up_requeues_with_a_fresh_budget_and_runs() {
    let (mut world, github) = github_world().await;
    world.config.limits.max_attempts = 1;
    let number = handed_over(&github, "Flaky", "Fails once. [sim:fail-times=1]");
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::GivenUp).await;

    let retry = github.add_comment(REPO_A, number, MAINTAINER, "/afk retry");
    let jobs = tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        first_job_is(JobState::Succeeded),
    )
    .await;
    assert_eq!(jobs[0].attempts, 2);
    tick_until_true(&mut app, || github.reactions(REPO_A, retry) == eyes()).await;
    let notes = notes(&app, jobs[0].id).await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("commanded in a comment") && n.contains(MAINTAINER)),
        "{notes:#?}"
    );
}

#[tokio::test]
async fn an_instruction_when_no_attempt_is_alive_starts_one_whose_prompt_carries_it() {
    let (mut world, github) = github_world().await;
    world.config.limits.max_attempts = 1;
    let number = handed_over(&github, "Flaky", "Fails once. [sim:fail-times=1]");
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::GivenUp).await;

    let comment = github.add_comment(
        REPO_A,
        number,
        MAINTAINER,
        "/afk fix the tests\nand keep the API as it is",
    );
    let jobs = tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        first_job_is(JobState::Succeeded),
    )
    .await;
    let attempts = app.ledger().attempts(jobs[0].id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(!attempts[0].prompt.contains("fix the tests"));
    assert!(
        attempts[1]
            .prompt
            .contains("fix the tests\nand keep the API as it is")
            && attempts[1].prompt.contains(MAINTAINER),
        "{}",
        attempts[1].prompt
    );
    tick_until_true(&mut app, || github.reactions(REPO_A, comment) == eyes()).await;
}

/// After the agent's turn ended, `/afk <instruction>` is a follow-up turn on the same thread
/// (same worktree and branch), with the instruction and who gave it, acknowledged with 👀; the
/// job runs again and comes back to its end. The same comment is never a second turn.
#[tokio::test]
async fn an_instruction_after_the_turn_ended_is_a_follow_up_turn_on_the_same_thread() {
    let (world, github) = github_world().await;
    let number = handed_over(&github, "Small job", "Tidy it. [sim:duration=50]");
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Succeeded).await;
    let thread = world.sim.threads()[0].id.clone();

    let comment = github.add_comment(REPO_A, number, MAINTAINER, "/afk also update the changelog");
    tick_until_true(&mut app, || {
        world.sim.thread(&thread).is_some_and(|t| t.turns == 2)
    })
    .await;
    let jobs = tick_until_first_job_is(&mut app, JobState::Succeeded).await;
    tick_until_true(&mut app, || github.reactions(REPO_A, comment) == eyes()).await;
    assert_eq!(world.sim.threads().len(), 1, "the same thread, not a new one");
    let attempts = app.ledger().attempts(jobs[0].id).await.unwrap();
    assert_eq!(attempts.len(), 1, "the same attempt");
    let detail: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/orchestration/threads/{thread}", world.sim.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the thread detail")
        .json()
        .await
        .expect("its JSON");
    let follow_up = detail["thread"]["messages"]
        .as_array()
        .and_then(|m| m.iter().filter(|m| m["role"] == "user").nth(1))
        .and_then(|m| m["text"].as_str())
        .expect("a second message of the person's")
        .to_owned();
    assert!(
        follow_up.contains("also update the changelog") && follow_up.contains(MAINTAINER),
        "{follow_up}"
    );
    tick_a_while(&mut app).await;
    assert_eq!(
        world.sim.thread(&thread).map(|t| t.turns),
        Some(2),
        "one turn per comment"
    );
    assert!(
        replies(&github, number).is_empty(),
        "{:#?}",
        replies(&github, number)
    );
}

#[tokio::test]
async fn an_instruction_to_a_working_agent_is_refused_and_its_edit_is_not_taken() {
    let (world, github) = github_world().await;
    let number = handed_over(&github, "Long job", "Takes forever. [sim:hang]");
    let mut app = world.app().await;
    let jobs = tick_until_first_job_is(&mut app, JobState::Running).await;

    let comment = github.add_comment(REPO_A, number, MAINTAINER, "/afk fix the tests");
    tick_until_true(&mut app, || {
        github.reactions(REPO_A, comment) == thumbs_down() && !replies(&github, number).is_empty()
    })
    .await;
    let said = replies(&github, number);
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(said[0].contains("the agent is working on it"), "{said:#?}");

    // Edited into a stop after afk took it: never read again.
    github.edit_comment(REPO_A, comment, "/afk stop");
    tick_a_while(&mut app).await;
    let now = app.ledger().jobs().await.unwrap();
    assert_eq!(now[0].state, JobState::Running, "the edit is not a new command");
    assert_eq!(github.reactions(REPO_A, comment), thumbs_down());
    assert_eq!(replies(&github, number).len(), 1);
    assert_eq!(
        app.ledger().comment_commands_of(jobs[0].id).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_crash_after_a_command_was_recorded_and_before_its_reaction_acts_once_and_reacts_once() {
    let (world, github) = github_world().await;
    let number = handed_over(&github, "Long job", "Takes forever. [sim:hang]");
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Running).await;

    // The reaction fails, as if afk died right after recording the stop.
    github.fail_reactions(1);
    let comment = github.add_comment(REPO_A, number, MAINTAINER, "/afk stop");
    let jobs = tick_until_first_job_is(&mut app, JobState::Cancelled).await;
    assert!(github.reactions(REPO_A, comment).is_empty());
    let commands = app.ledger().comment_commands_of(jobs[0].id).await.unwrap();
    assert_eq!(
        commands[0].state,
        CommandState::Answered,
        "recorded, not yet acknowledged"
    );
    drop(app);

    let mut app = world.app().await;
    tick_until_true(&mut app, || github.reactions(REPO_A, comment) == eyes()).await;
    tick_a_while(&mut app).await;
    assert_eq!(github.reactions(REPO_A, comment), eyes());
    let reaction_posts = github
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST" && r.path.contains(&format!("/comments/{comment}/reactions")) && r.status < 300
        })
        .count();
    assert_eq!(reaction_posts, 1, "reacted once");
    let stops = notes(&app, jobs[0].id)
        .await
        .into_iter()
        .filter(|n| n.contains("/afk stop"))
        .count();
    assert_eq!(stops, 1, "acted on once");
    let commands = app.ledger().comment_commands_of(jobs[0].id).await.unwrap();
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].state, CommandState::Acknowledged);
}

#[tokio::test]
async fn a_signed_issue_comment_webhook_acts_at_once() {
    let secret = "whsec-comments-1207";
    let (mut world, github) = github_world().await;
    let secret_file = world.dir.path().join("webhook-secret");
    std::fs::write(&secret_file, secret).unwrap();
    if let Some(gh) = world.config.github.as_mut() {
        gh.webhook_secret_file = Some(secret_file);
        // Polled once, at the first tick (before the comment): the delivery is the only news
        // after it, for intake and comment commands alike.
        gh.poll_interval = Duration::from_secs(3600);
    }
    let number = handed_over(&github, "Long job", "Takes forever. [sim:hang]");
    let mut app = world.app().await;
    let addr = app.http_addr().expect("afk listens");
    tick_until_first_job_is(&mut app, JobState::Running).await;

    let comment = github.add_comment(REPO_A, number, MAINTAINER, "/afk stop");
    let body = github.issue_comment_payload(REPO_A, comment).unwrap().to_string();
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/github"))
        .header("x-github-event", "issue_comment")
        .header("x-github-delivery", "c-1")
        .header(
            "x-hub-signature-256",
            afk_github::sign(secret.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let jobs = tick_until_first_job_is(&mut app, JobState::Cancelled).await;
    assert_eq!(jobs[0].cancel_reason, Some(CancelReason::StoppedByCommand));
    tick_until_true(&mut app, || github.reactions(REPO_A, comment) == eyes()).await;
}

#[tokio::test]
async fn a_stop_on_the_pull_request_of_the_jobs_branch_stops_the_job() {
    let secret = "whsec-comments-pr-5521";
    let (mut world, github) = github_world().await;
    let secret_file = world.dir.path().join("webhook-secret");
    std::fs::write(&secret_file, secret).unwrap();
    if let Some(gh) = world.config.github.as_mut() {
        gh.webhook_secret_file = Some(secret_file);
        gh.poll_interval = Duration::from_secs(3600);
    }
    let number = handed_over(&github, "Long job", "Takes forever. [sim:hang]");
    let mut app = world.app().await;
    let addr = app.http_addr().expect("afk listens");
    let jobs = tick_until_first_job_is(&mut app, JobState::Running).await;
    let branch = app.ledger().attempts(jobs[0].id).await.unwrap()[0].branch.clone();
    let pull = github.open_pull_request(
        REPO_A,
        STAND_IN_LOGIN,
        &branch,
        "Fix",
        &format!("Fixes #{number}"),
    );
    // A pull request of another branch is not the job's: its command is not taken.
    let other = github.open_pull_request(REPO_A, OUTSIDER, "feature/x", "Other", "Unrelated");

    for (n, on) in [(1, other), (2, pull)] {
        let comment = github.add_comment(REPO_A, on, MAINTAINER, "/afk stop");
        let body = github.issue_comment_payload(REPO_A, comment).unwrap().to_string();
        let answer = reqwest::Client::new()
            .post(format!("http://{addr}/webhooks/github"))
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", format!("pr-{n}"))
            .header(
                "x-hub-signature-256",
                afk_github::sign(secret.as_bytes(), body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
        if on == other {
            tick_a_while(&mut app).await;
            assert_eq!(app.ledger().jobs().await.unwrap()[0].state, JobState::Running);
            assert!(github.reactions(REPO_A, comment).is_empty());
        } else {
            let jobs = tick_until_first_job_is(&mut app, JobState::Cancelled).await;
            assert_eq!(jobs[0].cancel_reason, Some(CancelReason::StoppedByCommand));
            tick_until_true(&mut app, || github.reactions(REPO_A, comment) == eyes()).await;
        }
    }
}
