//! `afk doctor` against the stand-ins (T3, GitHub, Vault) and a real ledger: a working setup
//! passes every check; each mistake a person can make fails the check that names it, with the fix
//! in a sentence, and never shows a secret.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use afk::cmd::doctor::{diagnose, Report};
use afk_github::testing::{GitHubStandIn, STAND_IN_LOGIN};
use afk_ledger::Ledger;
use afk_secrets::testing::VaultStandIn;
use common::*;
use t3_sim::{SimConfig, SimProject, SimServer, TokenGrant};

const READ: &str = "t3-read-token-doctor-8c21";
const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.doctor-service-account.sig";
const GITHUB_TOKEN: &str = "ghp_doctorDoctorDoctor0123456789";
const WEBHOOK_SECRET: &str = "whsec-doctor-5512";

/// Everything afk talks to, set up as a person would, and the TOML that configures afk for it.
struct Setup {
    world: World,
    vault: VaultStandIn,
    github: GitHubStandIn,
    /// Extra TOML appended to the world's file (the read token, GitHub, HTTP).
    extra: String,
}

impl Setup {
    async fn new() -> Setup {
        let world = World::new(Duration::from_millis(100)).await;
        std::fs::create_dir_all(world.dir.path().join("issues")).unwrap();
        world.sim.grant_token(TokenGrant::read_only(READ));
        let vault = VaultStandIn::start().await.unwrap();
        vault.add_kubernetes_role("afk", JWT, Duration::from_secs(3600));
        vault.set_secret("afk/t3-read", "token", READ);
        let jwt_file = world.dir.path().join("sa-token");
        std::fs::write(&jwt_file, JWT).unwrap();
        let github = GitHubStandIn::start().await.unwrap();
        github.add_token(GITHUB_TOKEN);
        for repo in [REPO_A, REPO_B] {
            github.create_repo(repo);
            github.set_permission(repo, STAND_IN_LOGIN, "write");
        }
        let github_token = world.dir.path().join("github-token");
        std::fs::write(&github_token, GITHUB_TOKEN).unwrap();
        let webhook_secret = world.dir.path().join("webhook-secret");
        std::fs::write(&webhook_secret, WEBHOOK_SECRET).unwrap();
        let extra = format!(
            r#"
[t3.read_token]
provider = "vault"
addr = "{vault}"
path = "afk/t3-read"
auth = {{ method = "kubernetes", role = "afk", jwt_path = "{jwt}" }}

[github]
api_url = "{api}"
repos = ["{a}", "{b}"]
token_file = "{token}"
webhook_secret_file = "{secret}"
"#,
            vault = vault.url(),
            jwt = jwt_file.display(),
            api = github.api_url(),
            a = REPO_A,
            b = REPO_B,
            token = github_token.display(),
            secret = webhook_secret.display(),
        );
        Setup {
            world,
            vault,
            github,
            extra,
        }
    }

    /// The config file as it stands, with `edit` applied to its text.
    fn config(&self, edit: impl FnOnce(String) -> String) -> PathBuf {
        let path = self.world.write_config();
        let text = std::fs::read_to_string(&path).unwrap() + &self.extra;
        std::fs::write(&path, edit(text)).unwrap();
        path
    }

    async fn diagnose(&self, edit: impl FnOnce(String) -> String) -> Report {
        self.diagnose_and(edit, false).await
    }

    /// [`Setup::diagnose`], repairing what the doctor repairs with `repair` (`--repair`).
    async fn diagnose_and(&self, edit: impl FnOnce(String) -> String, repair: bool) -> Report {
        let path = self.config(edit);
        let report = diagnose(Some(&path), &|_| None, repair).await;
        for secret in [TOKEN, READ, JWT, GITHUB_TOKEN, WEBHOOK_SECRET] {
            let shown = serde_json::to_string(&report).unwrap() + &report.text();
            assert!(!shown.contains(secret), "a secret was shown: {shown}");
        }
        report
    }
}

fn same(text: String) -> String {
    text
}

#[tokio::test]
async fn a_working_setup_passes_every_check_in_order() {
    let setup = Setup::new().await;
    let report = setup.diagnose(same).await;
    let text = report.text();
    assert!(report.ok, "{text}");
    assert!(report.checks.iter().all(|c| c.ok), "{text}");
    let ids: Vec<&str> = report.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "config",
            "secret.t3_token",
            "secret.t3_read_token",
            "secret.github_token",
            "secret.github_webhook_secret",
            "t3.reachable",
            "t3.read",
            "t3.operate",
            "t3.project.acme/api",
            "t3.project.acme/web",
            "t3.websocket",
            "t3.provider",
            "source.local",
            "github.credentials",
            "github.repo.acme/api",
            "github.repo.acme/web",
            "github.webhooks",
            "ledger.reachable",
        ],
        "{text}"
    );
    // Which provider and where, never the value.
    let read = report.check("secret.t3_read_token").unwrap();
    assert_eq!(
        read.detail,
        format!(
            "read from vault secret/afk/t3-read (field token) at {}",
            setup.vault.url()
        )
    );
    assert!(
        text.contains(
            "✓ t3.provider: T3's provider instance claudeAgent (claudeAgent 1.0.0) is enabled, ready"
        ),
        "{text}"
    );
    assert!(
        text.contains("✓ t3.project.acme/api: T3 project proj-api, workspace root /srv/acme/api"),
        "{text}"
    );
    assert!(text.contains("afk run creates it"), "{text}");
    assert!(text.ends_with("all 18 checks passed\n"), "{text}");

    // With a ledger: its migrations, and whether an afk run leads it.
    let ledger = Ledger::open(&setup.world.config.ledger.url).await.unwrap();
    let mut leadership = ledger.try_lead().await.unwrap().unwrap();
    let report = setup.diagnose(same).await;
    let text = report.text();
    assert!(
        text.contains("✓ ledger.migrations: its ") && text.contains("migrations are current"),
        "{text}"
    );
    assert!(
        text.contains("✓ ledger.leader: an afk run leads it now"),
        "{text}"
    );
    // The afk run is undisturbed: it still leads, and a second one still stands by. (A look that
    // tried the lock would only be refused here; the ledger's tests make trying it fail.)
    leadership.check().await.expect("the afk run still leads");
    let standby = Ledger::open(&setup.world.config.ledger.url).await.unwrap();
    assert!(
        standby.try_lead().await.unwrap().is_none(),
        "the lock is still held"
    );
    standby.close().await;
    leadership.release().await;
}

/// Runs the doctor on a fresh setup changed by `prepare` (the stand-ins) and `edit` (the file);
/// asserts that check `id` failed saying each of `said` (in its detail and fix), and whether the
/// command fails for it.
async fn mistake(
    prepare: impl FnOnce(&Setup),
    edit: impl FnOnce(String) -> String,
    id: &str,
    said: &[&str],
    a_person_must_act: bool,
) {
    let setup = Setup::new().await;
    prepare(&setup);
    let report = setup.diagnose(edit).await;
    let text = report.text();
    let check = report
        .check(id)
        .unwrap_or_else(|| panic!("no check {id}: {text}"));
    assert!(!check.ok, "{id} passed: {text}");
    let line = format!("{} — {}", check.detail, check.fix.clone().unwrap_or_default());
    for s in said {
        assert!(line.contains(s), "{id} should say {s:?}: {line}");
    }
    assert!(
        text.contains(&format!("✗ {id}: ")),
        "one ✗ line per failed check: {text}"
    );
    assert_eq!(!check.will_pass, a_person_must_act, "{line}");
    assert_eq!(report.ok, !a_person_must_act, "{text}");
}

#[tokio::test]
async fn configuration_mistakes_name_the_key_the_file_and_where() {
    mistake(
        |_| {},
        |text| text.replace("per_repo = 2", "per_repo = two"),
        "config",
        &[
            "afk.toml",
            "not valid TOML at line",
            "column 12",
            "docs/config.md",
        ],
        true,
    )
    .await;
    mistake(
        |_| {},
        |text| text + "\n[t3.token]\nprovider = \"file\"\n",
        "config",
        &["key t3.token.path: missing; give the token file"],
        true,
    )
    .await;
    mistake(
        |_| {},
        |text| text.replace("role = \"afk\"", "role = \"\""),
        "config",
        &["t3.read_token.auth.role"],
        true,
    )
    .await;
}

#[tokio::test]
async fn a_missing_issue_folder_is_named() {
    // afk run takes nothing from a folder that is not there and cancels nothing, so without
    // this check a wrong working directory would look like an empty queue.
    mistake(
        |setup| std::fs::remove_dir_all(setup.world.dir.path().join("issues")).unwrap(),
        same,
        "source.local",
        &["the local issue folder", "cannot be read", "[source.local] dir"],
        true,
    )
    .await;
}

#[tokio::test]
async fn secret_mistakes_name_the_provider_and_where_it_looked() {
    mistake(
        |s| std::fs::remove_file(&s.world.config.t3.token_file).unwrap(),
        same,
        "secret.t3_token",
        &["cannot read token file", "t3-token", "[t3.token] or token_file"],
        true,
    )
    .await;
    mistake(
        |_| {},
        |text| text.replace("role = \"afk\"", "role = \"afk-typo\""),
        "secret.t3_read_token",
        &["afk-typo", "at http://127.0.0.1"],
        true,
    )
    .await;
    // A sealed Vault is shown, but it will pass: the command does not fail for it.
    mistake(
        |s| s.vault.seal(),
        same,
        "secret.t3_read_token",
        &["sealed", "it will pass"],
        false,
    )
    .await;
}

#[tokio::test]
async fn t3_mistakes_say_what_t3_refused_and_how_to_fix_it() {
    mistake(
        |_| {},
        |text| {
            let url = text
                .lines()
                .find(|l| l.starts_with("url = \"http"))
                .unwrap()
                .to_owned();
            text.replace(&url, "url = \"http://127.0.0.1:9\"")
        },
        "t3.reachable",
        &[
            "no answer from T3 at http://127.0.0.1:9",
            "start T3, or correct [t3] url",
        ],
        true,
    )
    .await;
    mistake(
        |s| s.world.sim.revoke_token(READ),
        same,
        "t3.read",
        &[
            "refused afk's T3 read token (401)",
            "[t3.read_token] or read_token_file",
        ],
        true,
    )
    .await;
    mistake(
        |s| {
            s.world.sim.revoke_token(TOKEN);
            s.world
                .sim
                .grant_token(TokenGrant::read_only("t3-read-only-as-operate"));
            std::fs::write(&s.world.config.t3.token_file, "t3-read-only-as-operate").unwrap();
        },
        same,
        "t3.operate",
        &[
            "lacks the scope orchestration:operate",
            "[t3.token] or token_file",
        ],
        true,
    )
    .await;
    mistake(
        |_| {},
        |text| text.replace("= \"proj-api\"", "= \"proj-apl\""),
        "t3.project.acme/api",
        &[
            "T3 has no project proj-apl; it has: proj-api (/srv/acme/api), proj-web",
            "[t3.projects]",
        ],
        true,
    )
    .await;
    mistake(
        |_| {},
        |text| text.replace("[t3]\n", "[t3]\ninstance_id = \"claude\"\n"),
        "t3.provider",
        &[
            "T3 has no provider instance claude; it has: claudeAgent, codex",
            "set [t3] instance_id",
        ],
        true,
    )
    .await;
}

#[tokio::test]
async fn a_disabled_provider_instance_is_named() {
    let mut providers = SimConfig::default_providers();
    providers[0].enabled = false;
    providers[0].status = "disabled".into();
    let sim = SimServer::start(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            tokens: vec![TokenGrant::operate(TOKEN), TokenGrant::read_only(READ)],
            projects: vec![
                SimProject::new("proj-api", "/srv/acme/api"),
                SimProject::new("proj-web", "/srv/acme/web"),
            ],
            providers,
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let url = sim.url();
    mistake(
        |_| {},
        move |text| {
            let line = text
                .lines()
                .find(|l| l.starts_with("url = \"http"))
                .unwrap()
                .to_owned();
            text.replace(&line, &format!("url = \"{url}\""))
        },
        "t3.provider",
        &[
            "T3's provider instance claudeAgent is disabled",
            "enable it in T3's settings",
        ],
        true,
    )
    .await;
}

#[tokio::test]
async fn github_mistakes_name_the_repository_and_the_access_it_lacks() {
    mistake(
        |s| s.github.revoke_token(GITHUB_TOKEN),
        same,
        "github.credentials",
        &[
            "GitHub rejected the credentials (HTTP 401)",
            "a valid token or App installation",
        ],
        true,
    )
    .await;
    mistake(
        |s| s.github.set_permission(REPO_B, STAND_IN_LOGIN, "read"),
        same,
        "github.repo.acme/web",
        &["afk-bot has no write access", "Issues read and write"],
        true,
    )
    .await;
    mistake(
        |_| {},
        |text| {
            text.replace(
                "repos = [\"acme/api\", \"acme/web\"]",
                "repos = [\"acme/api\", \"acme/Web\"]",
            )
            .replace("\"acme/web\" = \"proj-web\"", "\"acme/Web\" = \"proj-web\"")
        },
        "github.repo.acme/Web",
        &["acme/Web cannot be read", "not found", "[github] repos"],
        true,
    )
    .await;
    mistake(
        |_| {},
        |text| text.replace("listen = \"127.0.0.1:0\"", "listen = \"off\""),
        "github.webhooks",
        &["[http] listen is not: webhooks are off", "set [http] listen"],
        true,
    )
    .await;
}

#[tokio::test]
async fn an_app_installation_lacking_permissions_is_named() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../afk-github/tests/fixtures");
    let key = fixtures.join("test-only-app-key.pem");
    mistake(
        |s| {
            let public = std::fs::read(fixtures.join("test-only-app-key.pub.pem")).unwrap();
            s.github.enable_app(31, 41, &public, Duration::from_secs(3600));
            s.github
                .set_app_permissions(&[("issues", "read"), ("metadata", "read")]);
        },
        |text| {
            text.replace(
                &text
                    .lines()
                    .find(|l| l.starts_with("token_file = ") && l.contains("github-token"))
                    .unwrap()
                    .to_owned(),
                &format!(
                    "app_id = 31\ninstallation_id = 41\nprivate_key_file = \"{}\"",
                    key.display()
                ),
            )
        },
        "github.app_permissions",
        &["lacks issues: write (has read), pull_requests: read (has none), contents: read (has none)"],
        true,
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_ledger_is_named_without_its_password() {
    mistake(
        |_| {},
        |text| {
            let line = text
                .lines()
                .find(|l| l.starts_with("url = \"sqlite"))
                .unwrap()
                .to_owned();
            text.replace(&line, "url = \"postgres://afk:s3cret-pw@127.0.0.1:9/afk\"")
        },
        "ledger.reachable",
        &["127.0.0.1:9", "correct [ledger] url"],
        true,
    )
    .await;
}

#[tokio::test]
async fn the_command_exits_non_zero_with_one_line_per_check_and_json_for_scripts() {
    let setup = Setup::new().await;
    let path = setup.config(|text| text.replace("= \"proj-api\"", "= \"proj-apl\""));
    let run = |json: bool| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_afk"));
        command
            .arg("doctor")
            .arg("--config")
            .arg(&path)
            .env("AFK_LOG", "warn")
            .env_remove("AFK_CONFIG");
        if json {
            command.arg("--json");
        }
        command.output()
    };
    let out = run(false).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .all(|l| l.starts_with("✓ ") || l.starts_with("✗ ") || l.contains("check")),
        "{text}"
    );
    assert!(
        text.contains("✗ t3.project.acme/api: T3 has no project proj-apl"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 check(s) failed; a person must fix them"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(true).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["t3.project.acme/api"]);
    // Fixed: exit 0.
    let path = setup.config(same);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_afk"))
        .args(["doctor", "--config"])
        .arg(&path)
        .env("AFK_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Running totals that drifted from the ledger's rows (a write that ran no trigger, a restore of
/// an older copy) fail `ledger.totals` in one line naming each, with the repair in the fix;
/// `afk doctor --repair` recounts them and says so, and the next look finds them right. On SQLite
/// and on PostgreSQL.
#[tokio::test]
async fn running_totals_that_drifted_are_named_and_repaired_on_request() {
    let setup = Setup::new().await;
    let sqlite = setup.world.config.ledger.url.clone();
    drifted_totals_are_repaired(&setup, &sqlite).await;
    if let Some((url, schema)) = pg_schema("afk_doctor").await {
        drifted_totals_are_repaired(&setup, &url).await;
        let pg = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pg)
            .await
            .unwrap();
    }
}

async fn drifted_totals_are_repaired(setup: &Setup, url: &str) {
    let ledger = Ledger::open(url).await.unwrap();
    let new_job = afk_ledger::NewJob {
        issue: afk_core::IssueKey {
            repo: afk_core::Repo::new(REPO_A).unwrap(),
            number: 7,
        },
        title: "Seven".into(),
        body: "Body".into(),
        labels: vec![],
        priority: afk_core::Priority::new(2).unwrap(),
        source: afk_core::JobSource::Local,
    };
    ledger.upsert_job(&new_job, chrono::Utc::now()).await.unwrap();
    // An older copy of the totals row restored: 3 attempts where the ledger has none.
    let corrupt = "UPDATE ledger_totals SET attempts = attempts + 3 WHERE id = 1";
    match ledger.backend() {
        afk_ledger::Backend::Sqlite => {
            let raw = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(corrupt).execute(&raw).await.unwrap();
            raw.close().await;
        }
        afk_ledger::Backend::Postgres => {
            let raw = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(corrupt).execute(&raw).await.unwrap();
            raw.close().await;
        }
    }
    let at = |text: String| {
        let line = text
            .lines()
            .find(|l| l.starts_with("url = \"sqlite"))
            .unwrap()
            .to_owned();
        text.replace(&line, &format!("url = \"{url}\""))
    };
    let report = setup.diagnose(at).await;
    let text = report.text();
    let check = report.check("ledger.totals").unwrap_or_else(|| panic!("{text}"));
    assert!(!check.ok && !check.will_pass, "a person must act: {text}");
    assert!(
        text.contains(
            "✗ ledger.totals: 1 running total(s) differ from a recount of the rows (attempts 3 kept, \
             0 counted): afk status shows them wrong — run afk doctor --repair"
        ),
        "{text}"
    );
    assert_eq!(
        ledger.size().await.unwrap().attempts,
        3,
        "still wrong: the doctor only looked"
    );

    let report = setup.diagnose_and(at, true).await;
    let text = report.text();
    assert!(
        text.contains(
            "✓ ledger.totals: 1 running total(s) differ from a recount of the rows (attempts 3 kept, \
             0 counted): recounted and repaired"
        ),
        "{text}"
    );
    assert_eq!(ledger.size().await.unwrap().attempts, 0, "repaired");
    let report = setup.diagnose(at).await;
    assert!(
        report.text().contains("✓ ledger.totals: its running totals"),
        "{}",
        report.text()
    );
    ledger.close().await;
}

/// `afk doctor --repair` while a transaction is left open on the ledger (a SQL session that wrote
/// and never committed): the repair waits its bounded time for the ledger's writers, then the
/// check fails saying so and what to end, and the totals are left as they were.
#[tokio::test]
async fn a_repair_blocked_by_a_transaction_left_open_says_what_to_end() {
    let setup = Setup::new().await;
    let url = setup.world.config.ledger.url.clone();
    let ledger = Ledger::open(&url).await.unwrap();
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE ledger_totals SET attempts = attempts + 3 WHERE id = 1")
        .execute(&raw)
        .await
        .unwrap();
    let mut session = raw.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *session)
        .await
        .unwrap();
    let report = setup.diagnose_and(same, true).await;
    sqlx::query("ROLLBACK").execute(&mut *session).await.unwrap();
    let text = report.text();
    let check = report.check("ledger.totals").unwrap_or_else(|| panic!("{text}"));
    assert!(!check.ok && !check.will_pass, "{text}");
    assert!(
        text.contains(&format!(
            "the repair waited {} s for the ledger's writers in vain",
            afk_ledger::REPAIR_LOCK_WAIT.as_secs()
        )) && text.contains("a SQL session left in a transaction"),
        "{text}"
    );
    assert_eq!(ledger.size().await.unwrap().attempts, 3, "nothing was repaired");
    drop(session);
    raw.close().await;
    ledger.close().await;
}
