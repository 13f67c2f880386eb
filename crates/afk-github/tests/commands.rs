//! Comment commands against the stand-in GitHub: listing an issue's comments since an instant,
//! who may command afk, reactions in GitHub's shapes, one reply per comment, and the
//! `issue_comment` webhook payload.

mod common;

use std::time::Duration;

use afk_github::testing::STAND_IN_LOGIN;
use afk_github::{
    read_delivery, Clock, Command, CommandReaction, CommentCommands, CommentId, Login, WebhookEventKind,
};
use common::*;

#[tokio::test]
async fn comments_are_listed_since_an_instant_and_an_edit_lists_one_again() {
    let (github, clock) = world().await;
    let commands = CommentCommands::new(client(&github, &clock));
    let number = labelled_issue(&github, "Listed", MAINTAINER);
    let first = github.add_comment(REPO, number, MAINTAINER, "/afk stop");
    clock.advance(Duration::from_secs(60));
    let cut = clock.now();
    let second = github.add_comment(REPO, number, OUTSIDER, "/afk retry");

    let all = commands.list_since(&key(number), None).await.unwrap();
    let ids: Vec<u64> = all.iter().map(|c| c.id.0).collect();
    assert_eq!(ids, [first, second]);
    assert_eq!(all[0].author, Some(Login::new(MAINTAINER)));
    assert_eq!(all[0].body, "/afk stop");
    assert_eq!(all[0].number, number);
    assert!(all[0].updated_at.is_some(), "GitHub's updated_at is read");

    let since: Vec<u64> = commands
        .list_since(&key(number), Some(cut))
        .await
        .unwrap()
        .iter()
        .map(|c| c.id.0)
        .collect();
    assert_eq!(since, [second], "only comments changed at or after `since`");

    clock.advance(Duration::from_secs(60));
    github.edit_comment(REPO, first, "/afk retry");
    let later = clock.now() - chrono::Duration::seconds(1);
    let edited = commands.list_since(&key(number), Some(later)).await.unwrap();
    assert_eq!(edited.len(), 1);
    assert_eq!((edited[0].id.0, edited[0].body.as_str()), (first, "/afk retry"));
}

#[tokio::test]
async fn only_people_with_write_access_may_command() {
    let (github, clock) = world().await;
    let commands = CommentCommands::new(client(&github, &clock));
    assert!(commands
        .may_command(&repo(), &Login::new(MAINTAINER))
        .await
        .unwrap());
    assert!(!commands
        .may_command(&repo(), &Login::new(OUTSIDER))
        .await
        .unwrap());
    assert!(!commands
        .may_command(&repo(), &Login::new("stranger"))
        .await
        .unwrap());
}

#[tokio::test]
async fn a_reaction_is_left_once_however_often_it_is_asked() {
    let (github, clock) = world().await;
    let commands = CommentCommands::new(client(&github, &clock));
    let number = labelled_issue(&github, "Reacted", MAINTAINER);
    let comment = github.add_comment(REPO, number, MAINTAINER, "/afk stop");
    for _ in 0..2 {
        commands
            .react(&repo(), CommentId(comment), CommandReaction::Taken)
            .await
            .unwrap();
    }
    commands
        .react(&repo(), CommentId(comment), CommandReaction::Refused)
        .await
        .unwrap();
    assert_eq!(
        github.reactions(REPO, comment),
        [
            (STAND_IN_LOGIN.to_owned(), "eyes".to_owned()),
            (STAND_IN_LOGIN.to_owned(), "-1".to_owned())
        ]
    );
    let posts = github
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/reactions"))
        .count();
    assert_eq!(posts, 3, "each reaction is one POST to the comment's reactions");
}

#[tokio::test]
async fn a_reply_names_its_comment_and_is_sent_once() {
    let (github, clock) = world().await;
    let commands = CommentCommands::new(client(&github, &clock));
    let number = labelled_issue(&github, "Replied", MAINTAINER);
    let comment = github.add_comment(REPO, number, MAINTAINER, "/afk stop");
    let posted = commands
        .reply(&key(number), CommentId(comment), MAINTAINER, "nothing to stop")
        .await
        .unwrap();
    assert!(posted);
    let again = commands
        .reply(&key(number), CommentId(comment), MAINTAINER, "nothing to stop")
        .await
        .unwrap();
    assert!(!again, "a reply already there is not sent again (after a crash)");
    let replies: Vec<String> = github
        .comments(REPO, number)
        .into_iter()
        .filter(|b| b.contains("nothing to stop"))
        .collect();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].contains(&format!("@{MAINTAINER}: nothing to stop")));
}

#[tokio::test]
async fn the_issue_comment_payload_reads_as_a_comment_and_an_edit_is_not_delivered() {
    let (github, _clock) = world().await;
    let number = labelled_issue(&github, "Delivered", MAINTAINER);
    let comment = github.add_comment(REPO, number, MAINTAINER, "/afk fix the tests");
    let payload = github.issue_comment_payload(REPO, comment).unwrap();
    let body = serde_json::to_vec(&payload).unwrap();
    let (repo_read, n, kind) = read_delivery("issue_comment", &body).unwrap().unwrap();
    assert_eq!((repo_read, n), (repo(), number));
    let WebhookEventKind::Commented {
        comment: read,
        on_pull_request,
    } = kind
    else {
        panic!("expected a comment, got {kind:?}");
    };
    assert!(!on_pull_request);
    assert_eq!(read.id, CommentId(comment));
    assert_eq!(read.author, Some(Login::new(MAINTAINER)));
    assert_eq!(
        afk_github::parse_command(&read.body),
        afk_github::Parsed::Command(Command::Instruct("fix the tests".into()))
    );

    let mut edited = payload.clone();
    edited["action"] = "edited".into();
    let body = serde_json::to_vec(&edited).unwrap();
    assert_eq!(read_delivery("issue_comment", &body).unwrap(), None);
    assert!(read_delivery("issue_comment", b"{}").is_err());
}

#[tokio::test]
async fn a_comment_on_a_pull_request_is_marked_so_and_its_branch_is_found() {
    let (github, clock) = world().await;
    let commands = CommentCommands::new(client(&github, &clock));
    let pull = github.open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-1", "Fix", "Fixes #1");
    let comment = github.add_comment(REPO, pull, MAINTAINER, "/afk stop");
    let body = serde_json::to_vec(&github.issue_comment_payload(REPO, comment).unwrap()).unwrap();
    let (_, n, kind) = read_delivery("issue_comment", &body).unwrap().unwrap();
    assert_eq!(n, pull);
    assert!(matches!(
        kind,
        WebhookEventKind::Commented {
            on_pull_request: true,
            ..
        }
    ));
    assert_eq!(
        commands
            .pull_request_branch(&repo(), pull)
            .await
            .unwrap()
            .as_deref(),
        Some("afk/issue-1")
    );
}
