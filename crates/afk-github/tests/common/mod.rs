//! Helpers shared by the integration tests: a stand-in GitHub and a client pointed at it.
#![allow(dead_code)]

use std::sync::Arc;

use afk_core::{IssueKey, Repo};
use afk_github::testing::{GitHubStandIn, ManualClock, STAND_IN_TOKEN};
use afk_github::{
    AppCredentials, AppId, ClientConfig, Credentials, GitHubClient, InstallationId, Intake, IntakeConfig,
};
use afk_secrets::LiteralProvider;

pub const REPO: &str = "acme/widgets";
pub const MAINTAINER: &str = "mona";
pub const OUTSIDER: &str = "mallory";

pub fn repo() -> Repo {
    Repo::new(REPO).expect("valid repo")
}

/// A stand-in with one repository where `mona` may write and `mallory` may only read.
pub async fn world() -> (GitHubStandIn, Arc<ManualClock>) {
    let clock = ManualClock::new();
    let github = GitHubStandIn::start_with_clock(clock.clone())
        .await
        .expect("stand-in starts");
    github.create_repo(REPO);
    github.set_permission(REPO, MAINTAINER, "write");
    github.set_permission(REPO, OUTSIDER, "read");
    (github, clock)
}

/// A client with the stand-in's personal token and the shared clock.
pub fn client(github: &GitHubStandIn, clock: &Arc<ManualClock>) -> GitHubClient {
    let credentials = Credentials::Token(Arc::new(LiteralProvider::new(STAND_IN_TOKEN)));
    GitHubClient::with_clock(ClientConfig::new(github.api_url(), credentials), clock.clone()).expect("client")
}

/// Intake over `client` watching [`REPO`] with the default configuration.
pub fn intake_over(client: GitHubClient) -> Intake {
    Intake::new(client, IntakeConfig::new(vec![repo()]))
}

/// Intake with the stand-in's token client (see [`client`]) watching [`REPO`].
pub fn intake(github: &GitHubStandIn, clock: &Arc<ManualClock>) -> Intake {
    intake_over(client(github, clock))
}

/// The key of issue `number` of [`REPO`].
pub fn key(number: u64) -> IssueKey {
    IssueKey { repo: repo(), number }
}

/// An issue labelled `afk` by `labeler`.
pub fn labelled_issue(github: &GitHubStandIn, title: &str, labeler: &str) -> u64 {
    let number = github.open_issue(REPO, "octocat", title, &format!("Body of {title}"));
    github.add_label(REPO, number, "afk", labeler);
    number
}

pub const APP_ID: u64 = 4242;
pub const INSTALLATION: u64 = 77;

/// Sets up the stand-in's App (id [`APP_ID`], installation [`INSTALLATION`]) with the test key
/// pair; its installation tokens live an hour.
pub fn enable_app(github: &GitHubStandIn) {
    github.enable_app(
        APP_ID,
        INSTALLATION,
        &fixture("test-only-app-key.pub.pem"),
        std::time::Duration::from_secs(3600),
    );
}

/// A client authenticating as the App [`APP_ID`] with the private key `key` (PEM).
pub fn app_client(github: &GitHubStandIn, clock: &Arc<ManualClock>, key: Vec<u8>) -> GitHubClient {
    let key = String::from_utf8(key).expect("PEM is text");
    let credentials = Credentials::App(AppCredentials {
        app_id: AppId(APP_ID),
        installation_id: InstallationId(INSTALLATION),
        private_key: Arc::new(LiteralProvider::new(key)),
    });
    GitHubClient::with_clock(ClientConfig::new(github.api_url(), credentials), clock.clone()).expect("client")
}

/// A client of the stand-in's App with the test key.
pub fn test_app_client(github: &GitHubStandIn, clock: &Arc<ManualClock>) -> GitHubClient {
    app_client(github, clock, fixture("test-only-app-key.pem"))
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// What the code under test logs (info and above) on this thread while the returned value lives
/// (`#[tokio::test]` runs the test and everything it spawns on one thread).
pub struct Logs {
    buffer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        LOG_BUFFER.with(|b| b.borrow_mut().take());
    }
}

thread_local! {
    static LOG_BUFFER: std::cell::RefCell<Option<std::sync::Arc<std::sync::Mutex<Vec<u8>>>>> =
        const { std::cell::RefCell::new(None) };
}

/// One process-wide subscriber writing to the capturing thread's buffer: a per-thread default
/// subscriber would race with tests on other threads over tracing's cached callsite interest.
pub fn capture_logs() -> Logs {
    struct Sink;
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            LOG_BUFFER.with(|b| {
                if let Some(buffer) = b.borrow().as_ref() {
                    buffer.lock().unwrap().extend_from_slice(bytes);
                }
            });
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| Sink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber in tests");
    });
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    LOG_BUFFER.with(|b| *b.borrow_mut() = Some(buffer.clone()));
    Logs { buffer }
}
