//! What afk's credentials may do in each repository, asked without writing anything (`afk
//! doctor`): readable or not, and write access from the repository's permissions (a token) or the
//! App installation's.

mod common;

use afk_core::Repo;
use afk_github::access::missing_permissions;
use afk_github::testing::STAND_IN_LOGIN;
use afk_github::GitHubError;
use common::*;

#[tokio::test]
async fn a_token_sees_each_repository_and_whether_its_account_may_write() {
    let (github, clock) = world().await;
    let client = client(&github, &clock);
    let access = client.repository_access(&repo()).await.unwrap();
    assert!(access.issues.is_ok() && access.pull_requests.is_ok() && access.contents.is_ok());
    assert_eq!(
        access.write,
        Some(false),
        "afk's account has no role in the repository yet"
    );
    github.set_permission(REPO, STAND_IN_LOGIN, "write");
    assert_eq!(client.repository_access(&repo()).await.unwrap().write, Some(true));
    assert_eq!(
        client.installation_permissions().await.unwrap(),
        None,
        "a token is no App"
    );

    let missing = client
        .repository_access(&Repo::new("acme/nothing").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(missing, GitHubError::NotFound { .. }), "{missing}");
}

#[tokio::test]
async fn an_app_installation_says_which_permissions_it_lacks() {
    let (github, clock) = world().await;
    enable_app(&github);
    let client = test_app_client(&github, &clock);
    let granted = client.installation_permissions().await.unwrap().unwrap();
    assert!(missing_permissions(&granted).is_empty(), "{granted:?}");
    github.set_app_permissions(&[("issues", "read"), ("metadata", "read")]);
    let granted = client.installation_permissions().await.unwrap().unwrap();
    assert_eq!(
        missing_permissions(&granted),
        [
            "issues: write (has read)",
            "pull_requests: read (has none)",
            "contents: read (has none)"
        ]
    );
    assert!(client.repository_access(&repo()).await.is_ok());
}
