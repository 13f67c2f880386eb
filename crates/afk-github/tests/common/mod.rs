//! Helpers shared by the integration tests: a stand-in GitHub and a client pointed at it.
#![allow(dead_code)]

use std::sync::Arc;

use afk_core::Repo;
use afk_github::testing::{GitHubStandIn, ManualClock, STAND_IN_TOKEN};
use afk_github::{ClientConfig, Credentials, GitHubClient};
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

/// An issue labelled `afk` by `labeler`.
pub fn labelled_issue(github: &GitHubStandIn, title: &str, labeler: &str) -> u64 {
    let number = github.open_issue(REPO, "octocat", title, &format!("Body of {title}"));
    github.add_label(REPO, number, "afk", labeler);
    number
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}
