//! Bad input is isolated: an issue file afk cannot take is skipped (said once, naming the file and
//! why) and every other issue goes on; the tick never fails because of one file. A symlinked issue
//! file whose target is missing is unreadable, not removed: its job is not cancelled.

mod common;

use std::time::Duration;

use afk_core::JobState;
use chrono::Utc;
use common::*;

fn write(world: &World, name: &str, text: &str) -> std::path::PathBuf {
    let path = world.issues_dir().join(name);
    std::fs::create_dir_all(world.issues_dir()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn files_afk_cannot_take_are_skipped_and_the_others_go_on() {
    let world = World::new(Duration::from_millis(100)).await;
    world.add_issue(REPO_A, 1, "Do it.");
    write(
        &world,
        "huge-number.md",
        "---\nrepo: acme/api\nnumber: 9223372036854775808\ntitle: Too big\n---\nbody\n",
    );
    write(
        &world,
        "nul.md",
        "---\nrepo: acme/api\nnumber: 3\ntitle: NUL\n---\nbefore\0after\n",
    );
    let mut big = String::from("---\nrepo: acme/api\nnumber: 4\ntitle: Big\n---\n");
    big.push_str(&"x".repeat(2 * 1024 * 1024));
    write(&world, "big.md", &big);
    std::fs::create_dir_all(world.issues_dir().join("folder.md")).unwrap();
    let fifo = world.issues_dir().join("pipe.md");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());

    let mut app = world.app().await;
    // Every tick goes through (tick_until fails on a failed tick) and the good issue is done.
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].issue, key(REPO_A, 1));
    assert_eq!(jobs[0].state, JobState::Succeeded);
}

#[tokio::test]
async fn a_dangling_symlinked_issue_file_is_unreadable_not_removed() {
    let world = World::new(Duration::from_secs(60)).await;
    let target = world.dir.path().join("elsewhere.md");
    let issue = world.add_issue(REPO_A, 1, "Do it.");
    std::fs::rename(&issue, &target).unwrap();
    std::os::unix::fs::symlink(&target, &issue).unwrap();
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Running).await;

    // The target goes missing (a volume unmounted, a checkout switching branches).
    std::fs::rename(&target, world.dir.path().join("moved-away.md")).unwrap();
    for _ in 0..5 {
        app.tick(Utc::now()).await.expect("a tick");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(jobs[0].state, JobState::Running, "not cancelled: {jobs:#?}");
    assert!(!first_thread_interrupted(&world.sim), "its thread goes on");

    // A loop is unreadable too.
    std::fs::remove_file(&issue).unwrap();
    std::os::unix::fs::symlink(&issue, &issue).unwrap();
    app.tick(Utc::now()).await.expect("a tick");
    assert_eq!(app.ledger().jobs().await.unwrap()[0].state, JobState::Running);

    // Really removed: cancelled.
    std::fs::remove_file(&issue).unwrap();
    tick_until_first_job_is(&mut app, JobState::Cancelled).await;
}
