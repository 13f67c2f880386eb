//! Many jobs finishing in the same tick (issue #18): every status comment says **done** before any
//! of their label housekeeping, the pull request searches cost one listing, and a comment edit
//! GitHub refuses (a 502, or its secondary rate limit) neither loses nor holds back the others'.
//! A stand-in GitHub and the T3 stand-in on loopback; afk reads T3's snapshot every tick (`[watch]
//! push` off), so the turns finished together are seen together.

mod common;

use std::sync::Arc;
use std::time::Duration;

use afk::app::App;
use afk_core::JobState;
use afk_github::testing::{EditRefusal, GitHubStandIn, RecordedRequest};
use afk_github::SystemClock;
use common::*;
use t3_sim::TurnOutcome;

/// How many jobs finish together.
const N: usize = 6;
const DONE: &str = "· **done**";

/// `N` issues handed over by a maintainer, each running a turn that never ends by itself, with
/// their `running` comment and label on GitHub.
async fn running_together() -> (World, GitHubStandIn, App, Vec<u64>) {
    running(N).await
}

/// [`running_together`] with `n` issues.
async fn running(n: usize) -> (World, GitHubStandIn, App, Vec<u64>) {
    let (mut world, github) = World::new(Duration::from_millis(100))
        .await
        .on_github(Duration::from_millis(50), Arc::new(SystemClock))
        .await;
    world.config.watch.push = false;
    world.config.limits.max_concurrent = n as u32;
    world.config.limits.per_repo = n as u32;
    let numbers: Vec<u64> = (0..n)
        .map(|i| {
            let number = github.open_issue(REPO_A, "octocat", &format!("Job {i}"), "Work. [sim:hang]");
            github.add_label(REPO_A, number, "afk", GITHUB_WRITER);
            number
        })
        .collect();
    let mut app = world.app().await;
    tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        |jobs| jobs.len() == n && jobs.iter().all(|j| j.state == JobState::Running),
    )
    .await;
    tick_until_true(&mut app, || {
        numbers
            .iter()
            .all(|n| github.labels(REPO_A, *n).contains(&"afk:running".to_owned()))
    })
    .await;
    (world, github, app, numbers)
}

/// Ends every running turn at T3 at once.
async fn finish_all(world: &World, app: &App) {
    for attempt in app.ledger().watched_attempts().await.unwrap() {
        assert!(world
            .sim
            .finish_turn(attempt.thread_id.as_str(), TurnOutcome::Completed));
    }
}

/// One tick; the requests GitHub answered during it.
async fn tick(app: &mut App, github: &GitHubStandIn) -> Vec<RecordedRequest> {
    let before = github.requests().len();
    app.tick(chrono::Utc::now()).await.expect("a tick");
    github.requests().split_off(before)
}

fn status_comments(github: &GitHubStandIn, number: u64) -> Vec<String> {
    github
        .comments(REPO_A, number)
        .into_iter()
        .filter(|c| c.contains(afk_github::STATUS_MARKER))
        .collect()
}

/// The issue's one status comment says done (and there is exactly one).
fn says_done(github: &GitHubStandIn, number: u64) -> bool {
    let comments = status_comments(github, number);
    assert_eq!(
        comments.len(),
        1,
        "one status comment on #{number}: {comments:#?}"
    );
    comments[0].contains(DONE)
}

fn is_comment_edit(r: &RecordedRequest) -> bool {
    r.method == "PATCH" && r.path.contains("/issues/comments/")
}

fn is_label_write(r: &RecordedRequest) -> bool {
    r.is_write() && r.path.contains("/labels")
}

/// Every job's labels are the done ones, and its status comment is the one comment afk wrote.
fn assert_all_reported_done(github: &GitHubStandIn, numbers: &[u64]) {
    for &number in numbers {
        assert!(
            says_done(github, number),
            "#{number}: {:#?}",
            status_comments(github, number)
        );
        let labels = github.labels(REPO_A, number);
        assert!(labels.contains(&"afk:done".to_owned()), "#{number}: {labels:?}");
        assert!(
            !labels.contains(&"afk:running".to_owned()),
            "#{number}: {labels:?}"
        );
    }
}

#[tokio::test]
async fn jobs_finishing_together_have_every_done_comment_written_before_any_label_housekeeping() {
    let (world, github, mut app, numbers) = running_together().await;
    finish_all(&world, &app).await;

    let requests = tick(&mut app, &github).await;
    for &number in &numbers {
        assert!(
            says_done(&github, number),
            "#{number} is reported in the tick that saw it finish"
        );
    }
    let edits: Vec<usize> = (requests.iter().enumerate())
        .filter(|(_, r)| is_comment_edit(r))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(edits.len(), N, "one edit per job: {requests:#?}");
    let first_label_write = requests.iter().position(is_label_write).expect("labels change");
    assert!(
        edits.iter().all(|&i| i < first_label_write),
        "every status comment before any job's labels: {requests:#?}"
    );
    // Before each edit only the tick's reads and one listing of the latest pull requests (the
    // searches of all the jobs share it), not one or two searches per job.
    let listings = (requests.iter())
        .filter(|r| r.method == "GET" && r.path.starts_with(&format!("/repos/{REPO_A}/pulls")))
        .count();
    assert_eq!(listings, 1, "{requests:#?}");
    assert_all_reported_done(&github, &numbers);
    // Nothing is left to report: the next tick writes nothing.
    let requests = tick(&mut app, &github).await;
    assert!(!requests.iter().any(RecordedRequest::is_write), "{requests:#?}");
}

#[tokio::test]
async fn a_burst_larger_than_a_pass_of_labels_has_every_comment_at_once_and_its_labels_over_the_next_passes()
{
    // Fifteen: the labels of ten jobs in a pass.
    let (world, github, mut app, numbers) = running(15).await;
    finish_all(&world, &app).await;
    let labels_done = |github: &GitHubStandIn| {
        (numbers.iter())
            .filter(|n| github.labels(REPO_A, **n).contains(&"afk:done".to_owned()))
            .count()
    };

    let first = tick(&mut app, &github).await;
    assert_eq!(first.iter().filter(|r| is_comment_edit(r)).count(), 15);
    for &number in &numbers {
        assert!(says_done(&github, number), "#{number}");
    }
    assert_eq!(labels_done(&github), 10, "the labels of ten jobs, the oldest");
    assert!(
        app.control_plane().reporter_has_labels_to_do(),
        "the loop ticks again at once"
    );

    let second = tick(&mut app, &github).await;
    assert_eq!(
        second.iter().filter(|r| is_comment_edit(r)).count(),
        0,
        "written already: not edited again"
    );
    assert_all_reported_done(&github, &numbers);
    assert!(!app.control_plane().reporter_has_labels_to_do());
    let third = tick(&mut app, &github).await;
    assert!(
        !third.iter().any(RecordedRequest::is_write),
        "all marked reported: {third:#?}"
    );
}

#[tokio::test]
async fn turns_that_ended_are_reported_done_before_the_tick_dispatches_the_jobs_waiting_for_their_slots() {
    // Four slots, eight issues: four run, four wait for a slot.
    let (mut world, github) = World::new(Duration::from_millis(100))
        .await
        .on_github(Duration::from_millis(50), Arc::new(SystemClock))
        .await;
    world.config.watch.push = false;
    world.config.limits.max_concurrent = 4;
    world.config.limits.per_repo = 4;
    for i in 0..8 {
        let number = github.open_issue(REPO_A, "octocat", &format!("Job {i}"), "Work. [sim:hang]");
        github.add_label(REPO_A, number, "afk", GITHUB_WRITER);
    }
    let mut app = world.app().await;
    let running = |jobs: &[afk_ledger::Job]| jobs.iter().filter(|j| j.state == JobState::Running).count();
    tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        |jobs| jobs.len() == 8 && running(jobs) == 4,
    )
    .await;
    let first: Vec<u64> = (app.ledger().jobs().await.unwrap().iter())
        .filter(|j| j.state == JobState::Running)
        .map(|j| j.issue.number)
        .collect();
    tick_until_true(&mut app, || {
        first
            .iter()
            .all(|n| github.labels(REPO_A, *n).contains(&"afk:running".to_owned()))
    })
    .await;
    let threads_before = world.sim.read_model().threads.len();
    finish_all(&world, &app).await;

    tick(&mut app, &github).await;

    let done_at = (github.comment_writes(REPO_A).into_iter())
        .filter(|w| w.body.contains(DONE))
        .map(|w| w.at)
        .collect::<Vec<_>>();
    assert_eq!(done_at.len(), 4);
    let mut threads = world.sim.read_model().threads;
    threads.sort_by_key(|t| t.created_at.0);
    let first_thread = (threads.iter().skip(threads_before))
        .map(|t| t.created_at.0)
        .min()
        .expect("waiting jobs were dispatched in the same tick");
    // T3 stamps milliseconds, truncated.
    assert!(
        done_at
            .iter()
            .all(|at| *at < first_thread + chrono::Duration::milliseconds(1)),
        "every done comment before the first new thread: {done_at:?} against {first_thread}"
    );
}

#[tokio::test]
async fn a_done_comment_github_fails_to_edit_is_written_again_and_holds_back_no_other() {
    let (world, github, mut app, numbers) = running_together().await;
    let refused = numbers[2];
    github.refuse_comment_edit(REPO_A, refused, EditRefusal::ServerError);
    finish_all(&world, &app).await;

    let requests = tick(&mut app, &github).await;
    assert_eq!(
        requests.iter().filter(|r| r.status == 502).count(),
        1,
        "{requests:#?}"
    );
    for &number in numbers.iter().filter(|n| **n != refused) {
        assert!(says_done(&github, number), "#{number}: reported in the same tick");
    }
    // Not tried again in the same tick, and not marked reported until its comment is written:
    // the next tick writes it.
    assert!(!says_done(&github, refused));
    assert!(!is_marked_reported(&app, refused).await);
    tick_until_true(&mut app, || {
        github.labels(REPO_A, refused).contains(&"afk:done".to_owned())
    })
    .await;
    assert_all_reported_done(&github, &numbers);
    let done_edits = (github.comment_writes(REPO_A).into_iter())
        .filter(|w| w.body.contains(DONE))
        .count();
    assert_eq!(done_edits, N, "each job's done comment is written once");
}

#[tokio::test]
async fn one_job_whose_labels_github_keeps_failing_holds_back_no_other_jobs_labels() {
    let (world, github, mut app, numbers) = running_together().await;
    // The oldest: first in every pass's labels.
    let failing = numbers[0];
    github.fail_labels(REPO_A, failing);
    finish_all(&world, &app).await;

    let others: Vec<u64> = numbers.iter().copied().filter(|n| *n != failing).collect();
    tick_until_true(&mut app, || {
        others
            .iter()
            .all(|n| github.labels(REPO_A, *n).contains(&"afk:done".to_owned()))
    })
    .await;
    assert_all_reported_done(&github, &others);
    assert!(says_done(&github, failing), "its comment is written all the same");
    assert!(
        !is_marked_reported(&app, failing).await,
        "reported again while its labels fail"
    );
}

#[tokio::test]
async fn on_taking_the_lead_again_a_report_tried_again_rewrites_a_status_comment_edited_meanwhile() {
    let (world, github, mut app, numbers) = running_together().await;
    let number = numbers[0];
    // Its labels fail: its report is tried again, whole, every tick.
    github.fail_labels(REPO_A, number);
    finish_all(&world, &app).await;
    tick_until_true(&mut app, || says_done(&github, number)).await;
    let comment = (github.comment_writes(REPO_A).into_iter())
        .find(|w| w.issue == number && w.body.contains(DONE))
        .expect("its done comment")
        .comment;
    github.edit_comment(REPO_A, comment, "edited by a person");
    tick(&mut app, &github).await;
    // This process trusts what it wrote itself while it leads: the same words are not sent again.
    assert_eq!(
        github.comments(REPO_A, number),
        vec!["edited by a person".to_owned()]
    );

    // Another afk may have written the comment while this one stood by.
    app.control_plane().forget_cached_ledger();
    tick(&mut app, &github).await;
    assert!(
        says_done(&github, number),
        "{:?}",
        github.comments(REPO_A, number)
    );
}

/// True when the job of issue `number` is marked reported as it is now.
async fn is_marked_reported(app: &App, number: u64) -> bool {
    let job = (app.ledger().jobs().await.unwrap().into_iter())
        .find(|j| j.issue.number == number)
        .expect("its job");
    job.reported.as_deref() == Some(format!("{}:{}", job.state, job.attempts).as_str())
}

#[tokio::test]
async fn a_secondary_rate_limit_on_one_done_comment_loses_none_and_afk_waits_it_out() {
    let (world, github, mut app, numbers) = running_together().await;
    let refused = numbers[2];
    github.refuse_comment_edit(REPO_A, refused, EditRefusal::SecondaryLimit { retry_after: 1 });
    finish_all(&world, &app).await;

    let requests = tick(&mut app, &github).await;
    let refusal = (requests.iter())
        .position(|r| r.status == 403)
        .expect("the edit is refused");
    assert_eq!(
        requests.len(),
        refusal + 1,
        "nothing more is sent once GitHub limits afk: {requests:#?}"
    );
    for (i, &number) in numbers.iter().enumerate() {
        assert_eq!(says_done(&github, number), i < 2, "#{number}");
    }

    // Once the limit is over (Retry-After: 1 s), every report is made, none twice.
    tick_until_true(&mut app, || {
        numbers
            .iter()
            .all(|n| github.labels(REPO_A, *n).contains(&"afk:done".to_owned()))
    })
    .await;
    assert_all_reported_done(&github, &numbers);
    let refusals = github.requests().iter().filter(|r| r.status == 403).count();
    assert_eq!(refusals, 1, "afk sent nothing while the limit held");
    let done_edits = github
        .comment_writes(REPO_A)
        .into_iter()
        .filter(|w| w.body.contains(DONE))
        .count();
    assert_eq!(done_edits, N, "each job's done comment is written once");
}
