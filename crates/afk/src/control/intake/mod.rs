//! Intake: the sources' issues become jobs. A new issue queues a job, a withdrawn one cancels
//! it, and one that is back is offered to the machine for a requeue (which it allows only when
//! the same source withdrew the job). A job belongs to the source that first reported its issue;
//! no other source changes its text.

mod github;
mod local;

use afk_core::IssueKey;
use afk_github::{EligibleIssue, UntrustedEdit, WebhookEvent};
use chrono::{DateTime, Utc};

pub use github::GitHubIntake;
pub(crate) use local::LocalIntake;

use super::record::Recorder;
use super::waiting::Waiting;
use super::ControlError;

/// The sources a control plane takes issues from.
#[derive(Default)]
pub(crate) struct Intake {
    /// The local issue folder, when that source is on.
    pub(crate) local: Option<LocalIntake>,
    /// GitHub, when `[github]` is configured.
    pub(crate) github: Option<GitHubIntake>,
}

impl Intake {
    /// Brings the ledger's jobs in line with every source: the local folder, then GitHub's
    /// webhook events and, when due and `may_poll_github` (afk is not leaving GitHub alone after
    /// a failure a person must fix), its poll.
    pub(crate) async fn sync(
        &mut self,
        recorder: &mut Recorder,
        may_poll_github: bool,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        if let Some(local) = &mut self.local {
            local.sync(recorder, now).await?;
        }
        if let Some(github) = &mut self.github {
            github.sync(recorder, may_poll_github, now).await?;
        }
        Ok(())
    }

    /// How GitHub's last poll went, once per poll: `None` when none happened since the last call.
    pub(crate) fn github_poll_outcome(&mut self) -> Option<Result<(), Waiting>> {
        self.github.as_mut().and_then(GitHubIntake::take_poll_outcome)
    }

    /// Issues held back for an untrusted edit before afk took them, found since the last call:
    /// the reporter says so on each (once per trusted label).
    pub(crate) fn github_notices(&mut self) -> Vec<(IssueKey, UntrustedEdit)> {
        self.github
            .as_mut()
            .map(GitHubIntake::take_notices)
            .unwrap_or_default()
    }

    /// The comments webhooks delivered since the last call, for the comment commands.
    pub(crate) fn github_comment_events(&mut self) -> Vec<WebhookEvent> {
        self.github
            .as_mut()
            .map(GitHubIntake::take_comment_events)
            .unwrap_or_default()
    }

    /// The latest view of an eligible GitHub issue (its author and URL, which the ledger does not
    /// keep), for its prompt.
    pub(crate) fn github_issue(&self, issue: &IssueKey) -> Option<&EligibleIssue> {
        self.github.as_ref().and_then(|g| g.issue(issue))
    }

    /// When GitHub is to be polled early for webhook deliveries that wait for it, if any.
    pub(crate) fn github_early_poll_due(&self) -> Option<std::time::Instant> {
        self.github.as_ref().and_then(GitHubIntake::early_poll_due)
    }

    /// Waits for the next webhook event (forever when webhooks are off).
    pub(crate) async fn next_event(&mut self) -> Option<WebhookEvent> {
        match &mut self.github {
            Some(github) => github.next_event().await,
            None => std::future::pending().await,
        }
    }

    /// Keeps `event` (one that woke the run loop) for the next sync.
    pub(crate) fn defer(&mut self, event: WebhookEvent) {
        if let Some(github) = &mut self.github {
            github.defer(event);
        }
    }
}
