//! The providers that read something on this machine: an environment variable, a file, a command.

mod support;

use std::path::Path;
use std::time::Duration;

use afk_secrets::{CommandProvider, EnvProvider, FailureKind, FileProvider, Freshness};
use support::{error, value};

#[tokio::test]
async fn env_provider_reads_and_trims_the_variable() {
    std::env::set_var("AFK_SECRETS_TEST_ENV_SET", "  env-token-1\n");
    let provider = EnvProvider::new("AFK_SECRETS_TEST_ENV_SET");
    assert_eq!(value(&provider, Freshness::Cached).await, "env-token-1");
}

#[tokio::test]
async fn env_provider_names_an_unset_or_empty_variable() {
    let provider = EnvProvider::new("AFK_SECRETS_TEST_ENV_UNSET");
    let err = error(&provider, Freshness::Cached).await;
    assert_eq!(
        err.to_string(),
        "cannot read environment variable AFK_SECRETS_TEST_ENV_UNSET: it is not set"
    );
    assert_eq!(err.kind(), FailureKind::Missing);
    assert!(err.needs_person());

    std::env::set_var("AFK_SECRETS_TEST_ENV_EMPTY", " ");
    let err = error(&EnvProvider::new("AFK_SECRETS_TEST_ENV_EMPTY"), Freshness::Cached).await;
    assert_eq!(err.kind(), FailureKind::Empty, "{err:?}");
    assert_eq!(
        err.to_string(),
        "environment variable AFK_SECRETS_TEST_ENV_EMPTY is empty"
    );
}

#[tokio::test]
async fn file_provider_picks_up_a_file_rewritten_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "file-token-1\n").unwrap();
    let provider = FileProvider::new(&path);
    assert_eq!(value(&provider, Freshness::Cached).await, "file-token-1");

    std::fs::write(&path, "file-token-2\n").unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "file-token-2");
}

#[tokio::test]
async fn file_provider_picks_up_a_file_replaced_by_rename() {
    // What Kubernetes secret mounts and Vault Agent do: write a new file, rename it over the old.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "file-token-1").unwrap();
    let provider = FileProvider::new(&path);
    assert_eq!(value(&provider, Freshness::Cached).await, "file-token-1");

    let staged = dir.path().join(".token.tmp");
    std::fs::write(&staged, "  file-token-2\n").unwrap();
    std::fs::rename(&staged, &path).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "file-token-2");
}

#[tokio::test]
async fn file_provider_names_a_missing_or_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let provider = FileProvider::new(&path);
    let err = error(&provider, Freshness::Cached).await;
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read token file {}", path.display())),
        "{err}"
    );
    assert_eq!(err.kind(), FailureKind::Missing);

    std::fs::write(&path, "\n").unwrap();
    let err = error(&provider, Freshness::Cached).await;
    assert_eq!(err.to_string(), format!("token file {} is empty", path.display()));
    assert_eq!(err.kind(), FailureKind::Empty);
    assert!(err.needs_person());
}

#[tokio::test]
async fn command_provider_uses_trimmed_stdout_without_a_shell() {
    // `$HOME` stays literal: no shell expands it.
    let provider = CommandProvider::new("printf", ["  cmd-token $HOME\\n"]);
    assert_eq!(value(&provider, Freshness::Cached).await, "cmd-token $HOME");
}

#[tokio::test]
async fn command_provider_runs_a_shell_script_when_asked() {
    let provider = CommandProvider::shell("echo cmd; echo -token | tr -d '\\n' ; echo");
    assert_eq!(value(&provider, Freshness::Cached).await, "cmd\n-token");
}

#[tokio::test]
async fn failing_command_reports_the_last_line_of_its_stderr_and_not_its_stdout() {
    let provider =
        CommandProvider::shell("echo half-a-token; echo first problem >&2; echo 'login expired' >&2; exit 3");
    let err = error(&provider, Freshness::Cached).await;
    let text = err.to_string();
    assert_eq!(
        text,
        "cannot read shell command (sh -c): it failed (exit status: 3): login expired"
    );
    // The whole stderr is kept for a log field; stdout never.
    assert_eq!(err.detail(), Some("first problem\nlogin expired"));
    assert!(!format!("{err:?}").contains("half-a-token"), "{err:?}");
    assert_eq!(err.kind(), FailureKind::CommandFailed);
    assert!(err.needs_person());
}

#[tokio::test]
async fn missing_program_and_empty_output_are_clear_errors() {
    let err = error(
        &CommandProvider::new("afk-no-such-program", Vec::<String>::new()),
        Freshness::Cached,
    )
    .await;
    assert!(
        err.to_string()
            .starts_with("cannot read command `afk-no-such-program`: cannot start it"),
        "{err}"
    );
    assert_eq!(err.kind(), FailureKind::Missing);

    let err = error(
        &CommandProvider::new("true", Vec::<String>::new()),
        Freshness::Cached,
    )
    .await;
    assert_eq!(err.to_string(), "the output of command `true` is empty");
}

#[tokio::test]
async fn command_that_outlives_its_timeout_is_killed_and_reported() {
    let provider = CommandProvider::new("sleep", ["5"]).with_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = error(&provider, Freshness::Cached).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        err.to_string(),
        "cannot read command `sleep`: it did not finish within 200ms and was killed"
    );
    assert_eq!(err.kind(), FailureKind::TimedOut);
    assert!(!err.needs_person());
}

/// A script that counts its runs in `runs` and prints the content of `token`, which holds
/// `cmd-token-1` at first.
fn counting_command() -> (tempfile::TempDir, CommandProvider) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "cmd-token-1").unwrap();
    let script = format!("echo run >> '{0}/runs'; cat '{0}/token'", dir.path().display());
    (dir, CommandProvider::shell(script))
}

/// A [`counting_command`] cached for `lifetime` that has answered `cmd-token-1` once, after
/// which its token became `cmd-token-2`.
async fn cached_then_rotated(lifetime: Duration) -> (tempfile::TempDir, CommandProvider) {
    let (dir, provider) = counting_command();
    let provider = provider.with_cache_lifetime(lifetime);
    assert_eq!(value(&provider, Freshness::Cached).await, "cmd-token-1");
    std::fs::write(dir.path().join("token"), "cmd-token-2").unwrap();
    (dir, provider)
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn command_without_cache_runs_on_every_request() {
    let (dir, provider) = counting_command();
    value(&provider, Freshness::Cached).await;
    value(&provider, Freshness::Cached).await;
    assert_eq!(runs(dir.path()), 2);
}

#[tokio::test]
async fn cached_command_output_is_reused_within_its_lifetime_and_refresh_reruns() {
    let (dir, provider) = cached_then_rotated(Duration::from_secs(300)).await;
    assert_eq!(value(&provider, Freshness::Cached).await, "cmd-token-1");
    assert_eq!(runs(dir.path()), 1);

    assert_eq!(value(&provider, Freshness::Refresh).await, "cmd-token-2");
    assert_eq!(runs(dir.path()), 2);
}

#[tokio::test]
async fn cached_command_output_expires_after_its_lifetime() {
    let (dir, provider) = cached_then_rotated(Duration::from_millis(300)).await;

    // Poll until the lifetime has passed; the new output must show up, and soon.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if value(&provider, Freshness::Cached).await == "cmd-token-2" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cached output never expired"
        );
        tokio::task::yield_now().await;
    }
    assert!(runs(dir.path()) == 2, "ran {} times", runs(dir.path()));
}
