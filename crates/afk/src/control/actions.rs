//! A person's actions from the status surface (requeue, cancel), carried out at the start of a
//! tick through the one [`Recorder`]: the state machine decides whether each applies, and a
//! cancelled job's thread is stopped by the watcher as for a removed issue (the transition records
//! the stop first).

use afk_core::{apply, CancelReason, Event, RequeueBy};
use chrono::{DateTime, Utc};

use super::record::Recorder;
use super::ControlError;
use crate::status::{ActionError, ActionKind, PlaneLink};

/// The event a person's action is.
fn event_of(kind: ActionKind) -> Event {
    match kind {
        ActionKind::Requeue => Event::Requeue {
            by: RequeueBy::Person,
        },
        ActionKind::Cancel => Event::Cancel {
            reason: CancelReason::ByHand,
        },
    }
}

/// Carries out every action waiting on `link`, answering each. A ledger error is answered and
/// ends the tick, as any ledger error does.
pub(super) async fn carry_out(
    recorder: &mut Recorder,
    link: &mut PlaneLink,
    now: DateTime<Utc>,
) -> Result<(), ControlError> {
    let mut actions = link.take_actions().into_iter();
    while let Some(action) = actions.next() {
        // The asker was answered 503 (not taken) when it stopped waiting: carrying the action
        // out now would contradict that answer.
        if action.reply.is_closed() {
            continue;
        }
        let outcome = act(recorder, &action.issue, action.kind, now).await;
        let (answer, failure) = match outcome {
            Ok(answer) => (answer, None),
            Err(error) => (Err(ActionError::Ledger(error.to_string())), Some(error)),
        };
        if answer.is_ok() {
            link.acted();
        }
        // The asker may have given up waiting: nothing to do then.
        let _ = action.reply.send(answer);
        if let Some(error) = failure {
            // The ones not reached are answered too, not dropped (which reads as "not running").
            for rest in actions {
                let _ = rest.reply.send(Err(ActionError::Ledger(error.to_string())));
            }
            return Err(error);
        }
    }
    Ok(())
}

async fn act(
    recorder: &mut Recorder,
    issue: &afk_core::IssueKey,
    kind: ActionKind,
    now: DateTime<Utc>,
) -> Result<Result<afk_ledger::Job, ActionError>, ControlError> {
    let Some(job) = recorder.ledger().job_by_issue(issue).await? else {
        return Ok(Err(ActionError::NotFound));
    };
    let event = event_of(kind);
    // Asked first for its words: the recorder skips an event the machine refuses quietly.
    if let Err(refused) = apply(job.status(), &event, recorder.retry(), now) {
        return Ok(Err(ActionError::NotAllowed(format!(
            "{issue}: {} is not possible now: {refused}",
            kind.as_str()
        ))));
    }
    match recorder.record(&job, &event, None, now).await? {
        Some((_, updated)) => {
            tracing::info!(issue = %issue, job = job.id.0, "{issue}: {} by a person through the status API", kind.as_str());
            Ok(Ok(updated))
        }
        None => Ok(Err(ActionError::NotAllowed(format!(
            "{issue}: the job changed meanwhile; look again and retry"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requeue_is_a_persons_and_a_cancel_is_by_hand() {
        assert_eq!(
            event_of(ActionKind::Requeue),
            Event::Requeue {
                by: RequeueBy::Person
            }
        );
        assert_eq!(
            event_of(ActionKind::Cancel),
            Event::Cancel {
                reason: CancelReason::ByHand
            }
        );
    }
}
