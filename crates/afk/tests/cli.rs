//! The `afk` binary as people and scripts use it: exit codes, the last line of `afk t3 dispatch`,
//! `afk jobs --json`, `afk dispatch`, `afk status`, and errors that name what is wrong.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;

async fn afk(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_afk"))
        .args(args)
        .env("AFK_LOG", "warn")
        .env_remove("AFK_CONFIG")
        .output()
        .await
        .expect("afk runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn t3_dispatch_prints_the_thread_id_last_and_snapshot_shows_it() {
    let world = World::new(Duration::from_millis(100)).await;
    let token = world.config.t3.token_file.display().to_string();
    let base = format!("{}/", world.sim.url());
    let out = afk(&[
        "t3",
        "dispatch",
        "--base-url",
        &base,
        "--token-file",
        &token,
        "--project-id",
        "proj-api",
        "--repo",
        REPO_A,
        "--issue",
        "12",
        "--title",
        "Fix it",
        "--prompt",
        "Please fix it.",
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let thread_id = stdout(&out).lines().last().unwrap_or_default().trim().to_owned();
    let threads = world.sim.threads();
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].id.as_str(), thread_id);
    assert_eq!(threads[0].title, format!("{REPO_A}#12: Fix it"));

    let out = afk(&["t3", "snapshot", "--base-url", &base, "--token-file", &token]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&thread_id));
    let out = afk(&[
        "t3",
        "snapshot",
        "--base-url",
        &base,
        "--token-file",
        &token,
        "--json",
    ])
    .await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["threads"][0]["id"], thread_id.as_str());
}

#[tokio::test]
async fn t3_dispatch_to_an_unknown_project_exits_non_zero_with_t3s_reason() {
    let world = World::new(Duration::from_millis(100)).await;
    let token = world.config.t3.token_file.display().to_string();
    let out = afk(&[
        "t3",
        "dispatch",
        "--base-url",
        &world.sim.url(),
        "--token-file",
        &token,
        "--project-id",
        "no-such-project",
        "--repo",
        REPO_A,
        "--issue",
        "1",
        "--prompt",
        "x",
    ])
    .await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("afk: error:") && err.contains("thread.create"),
        "{err}"
    );
    assert_eq!(world.sim.threads().len(), 0);
}

#[tokio::test]
async fn dispatch_queues_a_job_that_jobs_and_status_show() {
    let world = World::new(Duration::from_millis(100)).await;
    let config = world.write_config();
    let config = config.to_str().unwrap();
    let out = afk(&[
        "dispatch",
        "--config",
        config,
        "--repo",
        REPO_B,
        "--issue",
        "5",
        "--prompt",
        "Tidy the CSS.",
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // Twice is refused: the job exists.
    let again = afk(&[
        "dispatch", "--config", config, "--repo", REPO_B, "--issue", "5", "--prompt", "x",
    ])
    .await;
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already has job"), "{}", stderr(&again));
    // GitHub numbers issues from 1: issue 0 is a typo, refused before anything is written.
    let zero = afk(&[
        "dispatch", "--config", config, "--repo", REPO_B, "--issue", "0", "--prompt", "x",
    ])
    .await;
    assert!(!zero.status.success());
    assert!(stderr(&zero).contains("--issue"), "{}", stderr(&zero));

    let out = afk(&["jobs", "--config", config, "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("an array of jobs");
    assert_eq!(jobs.as_array().map(Vec::len), Some(1));
    assert_eq!(jobs[0]["repo"], REPO_B);
    assert_eq!(jobs[0]["number"], 5);
    assert_eq!(jobs[0]["state"], "queued");
    assert_eq!(jobs[0]["attempts"], 0);

    let out = afk(&["status", "--config", config, "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["jobs"]["queued"], 1);
    assert_eq!(status["jobs"]["given_up"], 0);
    let out = afk(&["jobs", "--config", config]).await;
    assert!(stdout(&out).contains(&format!("{REPO_B}#5")));
}

#[tokio::test]
async fn a_bad_config_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("afk.toml");
    std::fs::write(&path, "[limits]\nper_repo = 0\n").unwrap();
    let out = afk(&["jobs", "--config", path.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("limits.per_repo") && err.contains("afk.toml"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear message: {err}");

    std::fs::write(&path, "[watch]\npoll_interval = \"5s\"\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_afk"))
        .args(["jobs", "--config", path.to_str().unwrap()])
        .env("AFK_WATCH_POLL_INTERVAL", "often")
        .env(
            "AFK_LEDGER_URL",
            format!("sqlite://{}", dir.path().join("l.db").display()),
        )
        .output()
        .await
        .unwrap();
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("AFK_WATCH_POLL_INTERVAL"),
        "{err}"
    );
}

#[tokio::test]
async fn a_non_utf8_override_is_refused_naming_the_variable() {
    use std::os::unix::ffi::OsStrExt;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_afk"))
        .args(["jobs"])
        .env("AFK_LOG", "warn")
        .env_remove("AFK_CONFIG")
        .env("AFK_T3_MODEL", std::ffi::OsStr::from_bytes(b"claude-\xff"))
        .output()
        .await
        .expect("afk runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("AFK_T3_MODEL") && err.contains("not UTF-8"), "{err}");
}

#[tokio::test]
async fn afk_run_refuses_a_memory_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("afk.toml");
    std::fs::write(&config, "[ledger]\nurl = \"sqlite::memory:\"\n").unwrap();
    let out = afk(&["run", "--config", config.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("ledger.url") && err.contains("keeps nothing"),
        "{err}"
    );
}

#[tokio::test]
async fn status_and_jobs_say_there_is_no_ledger_instead_of_making_one() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("nowhere").join("afk.db");
    let config = dir.path().join("afk.toml");
    std::fs::write(
        &config,
        format!("[ledger]\nurl = \"sqlite://{}\"\n", ledger.display()),
    )
    .unwrap();
    for command in ["status", "jobs"] {
        let out = afk(&[command, "--config", config.to_str().unwrap()]).await;
        assert!(!out.status.success(), "{command}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("no ledger at {}", ledger.display())) && err.contains("afk run creates it"),
            "{command}: {err}"
        );
    }
    assert!(
        !dir.path().join("nowhere").exists(),
        "neither made a folder nor a file"
    );
}

#[tokio::test]
async fn status_links_each_live_attempt_to_its_thread_in_t3() {
    let world = World::new(Duration::from_secs(3600)).await;
    world.add_issue(REPO_A, 1, "Long.");
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, afk_core::JobState::Running).await;
    let config = world.write_config();
    let out = afk(&["status", "--config", config.to_str().unwrap(), "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let thread = world.sim.threads()[0].id.as_str().to_owned();
    assert_eq!(
        status["running"][0]["thread_url"],
        format!("{}/{thread}", world.sim.url().trim_end_matches('/')),
        "{status:#}"
    );
}

#[tokio::test]
async fn status_says_whether_an_afk_run_leads_the_ledger() {
    let world = World::new(Duration::from_secs(3600)).await;
    let config = world.write_config();
    let config = config.to_str().unwrap();
    let ledger = world.ledger().await;
    let status = || async {
        let json = afk(&["status", "--config", config, "--json"]).await;
        assert!(json.status.success(), "{}", stderr(&json));
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status JSON");
        let text = afk(&["status", "--config", config]).await;
        assert!(text.status.success(), "{}", stderr(&text));
        (json["leader"].clone(), stdout(&text))
    };

    let (leader, text) = status().await;
    assert_eq!(leader["leading"], false, "{leader}");
    assert_eq!(leader["since"], serde_json::Value::Null);
    assert!(
        text.contains("leader: no afk run seen leading this ledger (none ever did)"),
        "{text}"
    );

    // As `afk run` holds it.
    let lead = ledger.try_lead().await.unwrap().expect("nobody else leads");
    let (leader, text) = status().await;
    assert_eq!(
        (&leader["leading"], &leader["epoch"]),
        (&true.into(), &1.into()),
        "{leader}"
    );
    let since = leader["since"]
        .as_str()
        .expect("when it took the lead")
        .to_owned();
    assert!(
        text.contains(&format!("leader: an afk run leads this ledger (since {since})")),
        "{text}"
    );

    lead.release().await;
    let (leader, text) = status().await;
    assert_eq!(leader["leading"], false, "{leader}");
    assert!(
        text.contains(&format!("the last one took the lead at {since}")),
        "{text}"
    );
    // `afk status` looked without taking the lock: the next afk run leads at once.
    assert!(ledger.try_lead().await.unwrap().is_some());
}

/// A ledger at the world's URL holding `count` queued jobs, REPO_A's issues 1.. then REPO_B's.
async fn ledger_with_jobs(world: &World, for_a: u64, for_b: u64) {
    let ledger = afk_ledger::Ledger::open(&world.config.ledger.url)
        .await
        .expect("the ledger opens");
    let now = chrono::Utc::now();
    for (repo, count) in [(REPO_A, for_a), (REPO_B, for_b)] {
        for number in 1..=count {
            let job = afk_ledger::NewJob {
                issue: afk_core::IssueKey {
                    repo: afk_core::Repo::new(repo.to_owned()).unwrap(),
                    number,
                },
                title: format!("Issue {number}"),
                body: String::new(),
                labels: Vec::new(),
                priority: afk_core::Priority::new(2).unwrap(),
                source: afk_core::JobSource::Manual,
            };
            ledger.upsert_job(&job, now).await.expect("a job is queued");
        }
    }
    ledger.close().await;
}

#[tokio::test]
async fn jobs_lists_the_newest_fifty_and_says_how_many_more() {
    let world = World::new(Duration::from_millis(100)).await;
    let config = world.write_config();
    let config = config.to_str().unwrap();
    ledger_with_jobs(&world, 40, 20).await;

    let out = afk(&["jobs", "--config", config, "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON array");
    let jobs = jobs.as_array().expect("an array");
    assert_eq!(jobs.len(), 50);
    let ids: Vec<i64> = jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.first(), Some(&60), "newest first");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert!(stderr(&out).contains("10 more"), "{}", stderr(&out));

    let out = afk(&["jobs", "--config", config]).await;
    let text = stdout(&out);
    assert!(text.contains(&format!("{REPO_B}#20")) && !text.contains(&format!("{REPO_A}#10 ")));
    assert!(text.trim_end().ends_with("--limit N lists more)"), "{text}");
    assert!(text.contains("and 10 more"), "{text}");

    // Everything fits: no line about more.
    let out = afk(&["jobs", "--config", config, "--limit", "100"]).await;
    assert!(stdout(&out).contains(&format!("{REPO_A}#1 ")));
    assert!(!stdout(&out).contains("more"), "{}", stdout(&out));
}

#[tokio::test]
async fn jobs_filters_by_repository_and_state() {
    let world = World::new(Duration::from_millis(100)).await;
    let config = world.write_config();
    let config = config.to_str().unwrap();
    ledger_with_jobs(&world, 40, 20).await;

    let out = afk(&[
        "jobs", "--config", config, "--json", "--limit", "5", "--repo", REPO_B,
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let numbers: Vec<u64> = jobs
        .as_array()
        .unwrap()
        .iter()
        .inspect(|j| assert_eq!(j["repo"], REPO_B))
        .map(|j| j["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [20, 19, 18, 17, 16]);
    assert!(stderr(&out).contains("15 more"), "{}", stderr(&out));
    // GitHub's names are case-insensitive: so is the filter.
    let shouted = REPO_B.to_uppercase();
    let out = afk(&[
        "jobs", "--config", config, "--json", "--limit", "5", "--repo", &shouted,
    ])
    .await;
    let same: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(same.as_array().map(Vec::len), Some(5), "{}", stderr(&out));

    let out = afk(&[
        "jobs",
        "--config",
        config,
        "--json",
        "--limit",
        "1000",
        "--state",
        "queued,running",
    ])
    .await;
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs.as_array().map(Vec::len), Some(60));

    let out = afk(&[
        "jobs",
        "--config",
        config,
        "--state",
        "succeeded",
        "--state",
        "given_up",
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "no jobs match\n");

    let out = afk(&["jobs", "--config", config, "--state", "done"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--state"), "{}", stderr(&out));
    let out = afk(&["jobs", "--config", config, "--limit", "0"]).await;
    assert!(!out.status.success());
}
