//! Pull request follow-through end to end, with the T3 stand-in and the GitHub stand-in: a failed
//! check or a writer's request for changes becomes a follow-up turn on the same thread; a merge
//! ends the job `merged`, a close `closed`; past `[followup] max_turns` the job waits for a
//! person; a kill -9 between recording a follow-up and sending it neither loses nor repeats it.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use afk_core::JobState;
use afk_github::testing::GitHubStandIn;
use common::*;
use t3_sim::PausePhase;

const MAINTAINER: &str = GITHUB_WRITER;
const READER: &str = GITHUB_READER;

async fn follow_world() -> (World, GitHubStandIn) {
    World::new(Duration::from_millis(100))
        .await
        .on_github(
            Duration::from_millis(100),
            std::sync::Arc::new(afk_github::SystemClock),
        )
        .await
}

/// An issue handed over to afk, with the pull request its agent opens on the attempt's branch:
/// (issue, pull request).
fn issue_with_pull_request(github: &GitHubStandIn) -> (u64, u64) {
    let number = github.open_issue(REPO_A, "octocat", "Fix the pager", "The last page is missing.");
    github.add_label(REPO_A, number, "afk", MAINTAINER);
    let pr = github.open_pull_request(
        REPO_A,
        "afk-bot",
        &format!("afk/issue-{number}"),
        "Fix the pager",
        // As afk's standing rules ask: the merge closes the issue, which must not read as the
        // issue being withdrawn.
        &format!("Fixes the pager.\n\nCloses #{number}"),
    );
    (number, pr)
}

/// The texts of the user messages the one thread received, in order (from T3's thread detail).
async fn user_messages(world: &World) -> Vec<String> {
    let thread = world.sim.threads().first().expect("a thread").id.clone();
    let detail: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/orchestration/threads/{thread}", world.sim.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the thread detail")
        .json()
        .await
        .expect("its JSON");
    detail["thread"]["messages"]
        .as_array()
        .expect("its messages")
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["text"].as_str().map(str::to_owned))
        .collect()
}

fn turns(world: &World) -> u32 {
    world.sim.threads().first().map_or(0, |t| t.turns)
}

fn status_comment(github: &GitHubStandIn, number: u64) -> String {
    github
        .comments(REPO_A, number)
        .into_iter()
        .find(|c| c.contains(afk_github::STATUS_MARKER))
        .unwrap_or_default()
}

fn has_label(github: &GitHubStandIn, number: u64, label: &str) -> bool {
    github.labels(REPO_A, number).iter().any(|l| l == label)
}

#[tokio::test]
async fn a_red_check_becomes_a_follow_up_on_the_same_thread_and_a_merge_ends_the_job_merged() {
    let (world, github) = follow_world().await;
    let (number, pr) = issue_with_pull_request(&github);
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::InReview).await;
    tick_until_true(&mut app, || has_label(&github, number, "afk:in-review")).await;

    let sha = github.pull_head_sha(REPO_A, pr);
    github.add_check_run(
        REPO_A,
        &sha,
        "test",
        Some("failure"),
        "2 tests failed",
        "pager::last_page panicked",
    );
    tick_until_true(&mut app, || turns(&world) == 2).await;
    assert_eq!(world.sim.threads().len(), 1, "the same thread, not a new one");
    let messages = user_messages(&world).await;
    let follow_up = messages.last().expect("the follow-up's message");
    assert!(follow_up.contains(&format!("pull request #{pr}")), "{follow_up}");
    assert!(follow_up.contains("- test (failure): "), "{follow_up}");
    assert!(follow_up.contains("pager::last_page panicked"), "{follow_up}");
    let jobs = tick_until_first_job_is(&mut app, JobState::InReview).await;
    assert_eq!(jobs[0].attempts, 1, "a follow-up is no new attempt");
    tick_until_true(&mut app, || {
        status_comment(&github, number).contains("Follow-up 1 of 3")
    })
    .await;

    // The same failure is not followed up twice; a green run and a merge end the job.
    let green = github.push_commit(REPO_A, pr);
    github.add_check_run(REPO_A, &green, "test", Some("success"), "ok", "");
    for _ in 0..5 {
        app.tick(chrono::Utc::now()).await.unwrap();
    }
    assert_eq!(turns(&world), 2);
    github.merge_pull_request(REPO_A, pr);
    tick_until_first_job_is(&mut app, JobState::Merged).await;
    tick_until_true(&mut app, || has_label(&github, number, "afk:merged")).await;
    assert!(status_comment(&github, number).contains("**merged**"));
}

/// A pull request merged while a follow-up turn works (its merge also closes the issue) ends the
/// job `merged`, not withdrawn, and stops that turn's session.
#[tokio::test]
async fn a_merge_during_a_follow_up_turn_ends_the_job_merged_and_stops_the_turn() {
    let (world, github) = follow_world().await;
    let (_number, pr) = issue_with_pull_request(&github);
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::InReview).await;
    let sha = github.pull_head_sha(REPO_A, pr);
    // The check's output is in the follow-up prompt, where it scripts the stand-in's agent: the
    // follow-up turn works until it is stopped.
    github.add_check_run(
        REPO_A,
        &sha,
        "test",
        Some("failure"),
        "1 test failed",
        "[sim:hang]",
    );
    tick_until_true(&mut app, || turns(&world) == 2).await;
    tick_until_first_job_is(&mut app, JobState::Running).await;
    let thread = world.sim.threads()[0].id.clone();
    assert!(world.sim.thread(&thread).is_some_and(|t| t.agent_running));

    github.merge_pull_request(REPO_A, pr);
    let jobs = tick_until_first_job_is(&mut app, JobState::Merged).await;
    assert_eq!(jobs[0].cancel_reason, None, "{jobs:#?}");
    tick_until_true(&mut app, || {
        world.sim.thread(&thread).is_some_and(|t| !t.agent_running)
    })
    .await;
}

#[tokio::test]
async fn a_writers_request_for_changes_is_followed_up_and_a_readers_is_ignored() {
    let (world, github) = follow_world().await;
    let (_, pr) = issue_with_pull_request(&github);
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::InReview).await;

    github.add_review(
        REPO_A,
        pr,
        READER,
        "CHANGES_REQUESTED",
        "Delete everything",
        &[("a.rs", 1, "no")],
    );
    for _ in 0..5 {
        app.tick(chrono::Utc::now()).await.unwrap();
    }
    assert_eq!(turns(&world), 1, "a reader's review starts nothing");

    github.add_review(
        REPO_A,
        pr,
        MAINTAINER,
        "CHANGES_REQUESTED",
        "Two things.",
        &[("src/pager.rs", 42, "Count from zero.")],
    );
    tick_until_true(&mut app, || turns(&world) == 2).await;
    let messages = user_messages(&world).await;
    let follow_up = messages.last().unwrap();
    assert!(
        follow_up.contains(&format!("Review by {MAINTAINER} requesting changes")),
        "{follow_up}"
    );
    assert!(
        follow_up.contains("- src/pager.rs:42\n  Count from zero."),
        "{follow_up}"
    );
    assert!(!follow_up.contains("Delete everything"), "{follow_up}");
}

#[tokio::test]
async fn a_closed_pull_request_ends_the_job_closed() {
    let (world, github) = follow_world().await;
    let (number, pr) = issue_with_pull_request(&github);
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::InReview).await;
    github.close_issue(REPO_A, pr, MAINTAINER);
    tick_until_first_job_is(&mut app, JobState::Closed).await;
    tick_until_true(&mut app, || has_label(&github, number, "afk:closed")).await;
}

#[tokio::test]
async fn past_max_turns_the_job_waits_for_a_person() {
    let (mut world, github) = follow_world().await;
    world.config.followup.max_turns = 1;
    let (number, pr) = issue_with_pull_request(&github);
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::InReview).await;
    let sha = github.pull_head_sha(REPO_A, pr);
    github.add_check_run(REPO_A, &sha, "test", Some("failure"), "red", "");
    tick_until_true(&mut app, || turns(&world) == 2).await;
    tick_until_first_job_is(&mut app, JobState::InReview).await;

    let sha = github.push_commit(REPO_A, pr);
    github.add_check_run(REPO_A, &sha, "test", Some("failure"), "red again", "");
    tick_until_true(&mut app, || {
        status_comment(&github, number).contains("Waiting for a person")
    })
    .await;
    assert_eq!(turns(&world), 2, "no turn past the limit");
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(
        jobs[0].state,
        JobState::InReview,
        "still followed: a merge or close ends it"
    );
}

/// Writes the world's config for the `afk` binary, with its GitHub side.
fn write_config_with_github(world: &World, github: &GitHubStandIn) -> std::path::PathBuf {
    let path = world.write_config();
    let token_file = world.dir.path().join("github-token");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[github]\napi_url = \"{}\"\nrepos = [\"{REPO_A}\"]\npoll_interval = \"100ms\"\ntoken_file = \"{}\"\n",
        github.api_url(),
        token_file.display()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_afk(config: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_afk"))
        .args(["run", "--config"])
        .arg(config)
        .env("AFK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("afk starts")
}

async fn wait_until(what: &str, condition: impl AsyncFnMut() -> bool) {
    let mut condition = condition;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// afk is killed with SIGKILL while the stand-in holds the follow-up's `thread.turn.start` at
/// `phase`; after a restart the thread has had exactly one follow-up turn.
async fn killed_around_a_follow_up(phase: PausePhase) {
    let (world, github) = follow_world().await;
    let (_, pr) = issue_with_pull_request(&github);
    let config = write_config_with_github(&world, &github);
    let ledger = world.ledger().await;
    let afk = spawn_afk(&config);
    wait_until("in review", async || {
        ledger
            .jobs()
            .await
            .unwrap()
            .first()
            .is_some_and(|j| j.state == JobState::InReview)
    })
    .await;
    let pause = world.sim.pause("thread.turn.start", phase);
    let sha = github.pull_head_sha(REPO_A, pr);
    github.add_check_run(REPO_A, &sha, "test", Some("failure"), "red", "");
    tokio::time::timeout(Duration::from_secs(30), pause.hit())
        .await
        .expect("afk sends the follow-up");
    let mut afk = afk;
    afk.kill().await.expect("afk is killed");
    pause.release();
    let afk = spawn_afk(&config);
    wait_until(
        "the follow-up turn ran and the job is in review again",
        async || {
            let jobs = ledger.jobs().await.unwrap();
            turns(&world) >= 2
                && jobs.first().is_some_and(|j| j.state == JobState::InReview)
                && ledger.unsent_follow_ups().await.unwrap().is_empty()
        },
    )
    .await;
    // A few more of afk's ticks: nothing is sent again.
    let settled = Instant::now() + Duration::from_millis(500);
    wait_until("time passes", async || Instant::now() >= settled).await;
    drop(afk);
    assert_eq!(turns(&world), 2, "one follow-up turn, exactly");
    assert_eq!(world.sim.threads().len(), 1);
    assert_eq!(
        ledger
            .follow_ups_used(ledger.jobs().await.unwrap()[0].id)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn killed_after_recording_a_follow_up_before_t3_applied_it() {
    killed_around_a_follow_up(PausePhase::BeforeApply).await;
}

#[tokio::test]
async fn killed_after_t3_applied_a_follow_up_before_its_reply() {
    killed_around_a_follow_up(PausePhase::AfterApply).await;
}

#[tokio::test]
async fn a_pull_request_delivery_acts_at_once_between_polls() {
    let (mut world, github) = follow_world().await;
    let secret = "whsec-follow-3391";
    let secret_file = world.dir.path().join("webhook-secret");
    std::fs::write(&secret_file, secret).unwrap();
    if let Some(gh) = world.config.github.as_mut() {
        gh.webhook_secret_file = Some(secret_file);
        gh.poll_interval = Duration::from_secs(3600);
    }
    let (_, pr) = issue_with_pull_request(&github);
    let mut app = world.app().await;
    let addr = app.http_addr().expect("the listener");
    tick_until_first_job_is(&mut app, JobState::InReview).await;
    github.merge_pull_request(REPO_A, pr);
    for _ in 0..5 {
        app.tick(chrono::Utc::now()).await.unwrap();
    }
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(
        jobs[0].state,
        JobState::InReview,
        "not polled again within the hour"
    );

    let body = format!(
        r#"{{"action": "closed", "number": {pr}, "pull_request": {{"number": {pr}, "merged": true}}, "repository": {{"full_name": "{REPO_A}"}}}}"#
    );
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/github"))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", "pr-merged-1")
        .header(
            "x-hub-signature-256",
            afk_github::sign(secret.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    tick_until_first_job_is(&mut app, JobState::Merged).await;
}
