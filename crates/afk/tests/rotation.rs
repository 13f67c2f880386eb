//! Token rotation while afk works: the T3 stand-in stops accepting the old token mid-run and afk
//! must pick up the new one from its provider on the next request, without a restart, without
//! losing a job, and without ever writing a token into its log.

mod common;

use std::time::Duration;

use afk_core::JobState;
use afk_secrets::testing::VaultStandIn;
use afk_secrets::ProviderSpec;
use common::*;
use t3_sim::TokenGrant;

#[tokio::test]
async fn with_an_expired_token_and_no_new_one_afk_waits_and_loses_nothing() {
    let world = World::new(Duration::from_millis(50)).await;
    world.add_issues(REPO_A, 1..=2);
    world.sim.revoke_token(TOKEN);
    let mut app = world.app().await;
    tick_without_t3(&mut app, 3, "a rejected token is not fatal").await;
    assert!(app
        .ledger()
        .jobs()
        .await
        .unwrap()
        .iter()
        .all(|j| j.state == JobState::Queued));
    // The operator fixes the token: work resumes.
    world.sim.grant_token(TokenGrant::operate("t3-fixed-token-99"));
    std::fs::write(&world.config.t3.token_file, "t3-fixed-token-99\n").unwrap();
    let jobs = tick_until_all_final(&mut app, 2).await;
    assert!(jobs.iter().all(|j| j.state == JobState::Succeeded));
}

/// A world whose T3 operate token is read from a stand-in Vault (`afk/t3`, field `token`, holding
/// the stand-in T3's token), with token auth from a file and the extra provider `settings` (TOML
/// lines, e.g. `cache_lifetime = "10m"`).
async fn vault_world(turn: Duration, settings: &str) -> (VaultStandIn, World) {
    let vault = VaultStandIn::start().await.expect("the stand-in Vault starts");
    let mut world = World::new(turn).await;
    let vault_token_file = world.dir.path().join("vault-token");
    std::fs::write(&vault_token_file, vault.issue_token(None)).unwrap();
    vault.set_secret("afk/t3", "token", TOKEN);
    let spec = format!(
        "provider = \"vault\"\naddr = \"{}\"\npath = \"afk/t3\"\n{}\n\
         auth = {{ method = \"token\", token = {{ provider = \"file\", path = \"{}\" }} }}\n",
        vault.url(),
        settings,
        vault_token_file.display()
    );
    world.config.t3.token = Some(toml::from_str::<ProviderSpec>(&spec).expect("a valid Vault provider spec"));
    (vault, world)
}

#[tokio::test]
async fn a_token_changed_in_vault_is_read_again_after_t3_refuses_the_old_one() {
    let (vault, mut world) = vault_world(Duration::from_millis(100), r#"cache_lifetime = "10m""#).await;
    world.config.limits.max_concurrent = 1;
    world.add_issues(REPO_A, 1..=3);
    let mut app = world.app().await;
    let new = "t3-rotated-in-vault-51f0";
    let jobs = tick_until_all_final_acting_after_first_success(&mut app, 3, || {
        // The value changes in Vault long before afk's cache lifetime ends: only T3's 401 makes
        // afk read it again.
        vault.set_secret("afk/t3", "token", new);
        world.sim.grant_token(TokenGrant::operate(new));
        world.sim.revoke_token(TOKEN);
    })
    .await;
    assert_all_succeeded_first_time(&jobs);
}

#[tokio::test]
async fn least_privilege_the_watcher_reads_with_its_own_read_only_token() {
    let mut world = World::new(Duration::from_millis(50)).await;
    let operate_only = "t3-operate-only-2d1c";
    let read_only = "t3-read-only-9a0f";
    world.sim.revoke_token(TOKEN);
    // This token may dispatch but not read the snapshot: if afk read with it, nothing would move.
    world.sim.grant_token(TokenGrant {
        token: operate_only.into(),
        scopes: vec!["orchestration:operate".into()],
        lifetime: None,
    });
    world.sim.grant_token(TokenGrant::read_only(read_only));
    std::fs::write(&world.config.t3.token_file, operate_only).unwrap();
    let read_file = world.dir.path().join("t3-read-token");
    std::fs::write(&read_file, read_only).unwrap();
    world.config.t3.read_token_file = Some(read_file);
    world.add_issue(REPO_A, 1, "Do it.");
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].state, JobState::Succeeded);
}

#[tokio::test]
async fn vault_down_holds_afk_without_a_crash_or_a_lost_job() {
    let (mut vault, world) = vault_world(
        Duration::from_millis(50),
        r#"cache_lifetime = "1s"
timeout = "1s""#,
    )
    .await;
    world.add_issue(REPO_A, 1, "Do it.");
    // Vault is down before afk ever read the token.
    vault.go_down().await;
    let mut app = world.app().await;
    tick_without_t3(&mut app, 3, "Vault down is not fatal").await;
    assert_eq!(app.ledger().jobs().await.unwrap()[0].state, JobState::Queued);
    vault.come_back().await.expect("Vault comes back");
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].state, JobState::Succeeded);
}
