//! AFK.md: per-repository settings and a strictly rendered prompt template.

mod common;

use std::sync::Arc;

use afk_github::testing::GitHubStandIn;
use afk_github::{PolicyError, PolicySource, PolicyStore, PromptContext, PromptIssue, RepoPolicy};
use common::*;

fn context(attempt: u32, previous_error: Option<&str>) -> PromptContext {
    PromptContext {
        issue: PromptIssue {
            number: 12,
            title: "Crash on empty input".into(),
            body: "Steps: run it with no input.".into(),
            labels: vec!["afk".into(), "bug".into()],
            author: "octocat".into(),
            url: format!("https://github.com/{REPO}/issues/12"),
        },
        repo: REPO.into(),
        attempt,
        previous_error: previous_error.map(str::to_owned),
    }
}

/// A stand-in whose repository has `afk_md` as its `AFK.md` (none with `None`), and a store
/// reading it.
async fn store_with(afk_md: Option<&str>) -> (GitHubStandIn, PolicyStore) {
    let (github, clock) = world().await;
    if let Some(text) = afk_md {
        github.set_file(REPO, "AFK.md", text);
    }
    let store = PolicyStore::new(client(&github, &clock));
    (github, store)
}

const AFK_MD: &str = "---
max_concurrent: 2
branch_prefix: bots/
model: claude-opus
extra_labels: [automated]
---
Fix #{{ issue.number }} ({{ issue.title }}) in {{ repo }} for {{ issue.author }}.
{% if previous_error %}Attempt {{ attempt }}; last time: {{ previous_error }}{% endif %}
";

#[tokio::test]
async fn afk_md_settings_and_template_are_used() {
    let (_github, store) = store_with(Some(AFK_MD)).await;

    let policy = store.policy(&repo()).await.unwrap();

    assert_eq!(policy.settings.max_concurrent.map(|n| n.get()), Some(2));
    assert_eq!(policy.settings.branch_prefix.as_deref(), Some("bots/"));
    assert_eq!(policy.settings.model.as_deref(), Some("claude-opus"));
    assert_eq!(policy.settings.extra_labels, vec!["automated"]);
    assert!(matches!(policy.source, PolicySource::AfkMd { .. }));
    let prompt = policy.render(&context(2, Some("tests failed"))).unwrap();
    assert_eq!(
        prompt,
        "Fix #12 (Crash on empty input) in acme/widgets for octocat.\nAttempt 2; last time: tests failed\n"
    );
}

#[tokio::test]
async fn without_afk_md_the_built_in_template_is_used() {
    let (_github, store) = store_with(None).await;

    let policy = store.policy(&repo()).await.unwrap();

    assert_eq!(policy.source, PolicySource::BuiltIn);
    assert_eq!(policy.settings, Default::default());
    let prompt = policy.render(&context(1, None)).unwrap();
    assert!(
        prompt.contains("Crash on empty input") && prompt.contains("Steps: run it"),
        "{prompt}"
    );
}

#[tokio::test]
async fn an_unknown_setting_is_rejected_naming_the_key() {
    let (_github, store) = store_with(Some("---\nmax_concurent: 2\n---\nDo {{ issue.title }}\n")).await;

    let err = store.policy(&repo()).await.unwrap_err();

    assert!(matches!(err, PolicyError::Settings { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("acme/widgets") && text.contains("max_concurent"),
        "{text}"
    );
    assert!(
        text.contains("max_concurrent"),
        "the valid keys are suggested: {text}"
    );
}

#[tokio::test]
async fn an_unknown_variable_is_an_error_naming_it() {
    let (_github, store) = store_with(Some(
        "Fix {{ issue.title }} assigned to {{ assignee }}, see {{ issue.milestone }}\n",
    ))
    .await;

    let err = store.policy(&repo()).await.unwrap_err();

    assert!(matches!(err, PolicyError::Template { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`assignee`") && text.contains("`issue.milestone`"),
        "{text}"
    );
}

#[test]
fn an_unknown_filter_fails_rendering_naming_it() {
    let policy = RepoPolicy::parse(REPO, "{{ issue.title | shout }}", PolicySource::BuiltIn).unwrap();

    let err = policy.render(&context(1, None)).unwrap_err().to_string();

    assert!(err.contains("unknown filter") && err.contains("shout"), "{err}");
}

#[test]
fn an_undefined_attribute_fails_rendering_instead_of_rendering_blank() {
    // Reached through a loop variable, so the load-time check cannot see it; strict rendering does.
    let policy = RepoPolicy::parse(
        REPO,
        "{% for l in issue.labels %}{{ l.colour }}{% endfor %}",
        PolicySource::BuiltIn,
    )
    .unwrap();

    let err = policy.render(&context(1, None)).unwrap_err().to_string();

    // Which expression, where, and why: labels are plain names.
    assert!(
        err.contains("`l.colour` is undefined (line 1)") && err.contains("plain names"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unchanged_afk_md_is_not_fetched_or_parsed_again() {
    let (github, store) = store_with(Some(AFK_MD)).await;
    let first = store.policy(&repo()).await.unwrap();
    let charged = github.charged_requests();

    let second = store.policy(&repo()).await.unwrap();

    assert!(Arc::ptr_eq(&first, &second), "the parsed policy is reused");
    assert_eq!(github.charged_requests(), charged, "answered 304");

    github.set_file(REPO, "AFK.md", "---\nmodel: other\n---\n{{ issue.title }}\n");
    let third = store.policy(&repo()).await.unwrap();
    assert_eq!(third.settings.model.as_deref(), Some("other"));
}
