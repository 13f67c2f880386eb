//! The dispatcher: starts attempts for ready jobs in priority order within the limits, and
//! finishes dispatches that a crash or a T3 outage interrupted, with the ids chosen before the
//! first request.

use std::collections::HashMap;

use afk_core::{Event, JobId, JobState};
use afk_ledger::{Attempt, Job, NewAttempt};
use chrono::{DateTime, Utc};
use t3_client::{
    CommandId, DispatchError, DispatchIds, DispatchPlan, DispatchStage, IssueRef, MessageId, ProjectId,
    ReadModel, T3Client, ThreadId,
};

use super::{ControlError, ControlPlane, JobPrompt, TickReport};

/// Resumes every attempt left in `dispatching` whose back-off has passed, resolved against the
/// snapshot: a thread with a turn is already dispatched; a thread without one needs only its turn;
/// no thread needs both commands. T3 deduplicates the command ids, so even a stale snapshot cannot
/// make a second thread.
pub(super) async fn resume(
    plane: &ControlPlane,
    snapshot: &ReadModel,
    live: &[(Job, Attempt)],
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    for (job, attempt) in live {
        if job.state != JobState::Dispatching || job.not_before.is_some_and(|t| t > now) {
            continue;
        }
        let plan = match plan_of(attempt) {
            Ok(plan) => plan,
            Err(error) => {
                let event = Event::DispatchRejected {
                    error: format!("the ledger's attempt cannot be sent again: {error}"),
                };
                plane.transition(job, &event, None, now, report).await?;
                continue;
            }
        };
        // Created exactly as first planned: with the model the repository chose, if any.
        let client = client_for(
            &plane.t3,
            &JobPrompt {
                model: attempt.model.clone(),
                ..JobPrompt::default()
            },
        );
        let thread = snapshot.thread(&plan.ids.thread_id);
        let outcome = match thread {
            Some(thread) if thread.latest_turn.is_some() => Ok(()),
            Some(_) => client
                .start_turn(&plan)
                .await
                .map(drop)
                .map_err(|error| DispatchError {
                    stage: DispatchStage::Turn,
                    error,
                }),
            None => client.dispatch_plan(&plan).await.map(drop),
        };
        conclude(plane, job, outcome, now, report).await?;
    }
    Ok(())
}

/// Starts a new attempt for each ready job, in priority order, while the global and per-repository
/// limits allow. The attempt's ids are recorded with the transition, before the first request.
pub(super) async fn dispatch_ready(
    plane: &mut ControlPlane,
    stopping: &HashMap<JobId, Job>,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    let ready = plane.ledger.ready_jobs(now, usize::MAX).await?;
    if ready.is_empty() {
        return Ok(());
    }
    let in_flight = plane
        .ledger
        .jobs_in(&[JobState::Dispatching, JobState::Running])
        .await?;
    // A thread still being stopped may still be working: it counts against the limits, and its
    // job gets no new attempt until the stop is confirmed.
    let mut total = 0;
    let mut per_repo: HashMap<String, usize> = HashMap::new();
    let busy = in_flight
        .iter()
        .chain(stopping.values().filter(|j| !j.state.has_live_attempt()));
    for job in busy {
        total += 1;
        *per_repo.entry(job.issue.repo.to_string()).or_default() += 1;
    }
    let limits = plane.settings.limits;
    if total >= limits.max_concurrent {
        return Ok(());
    }
    for job in ready {
        if total >= limits.max_concurrent {
            break;
        }
        if stopping.contains_key(&job.id) {
            continue;
        }
        let repo_count = per_repo.entry(job.issue.repo.to_string()).or_default();
        if *repo_count >= limits.per_repo {
            continue;
        }
        let Some(project) = plane.settings.projects.get(&job.issue.repo).cloned() else {
            let event = Event::Refused {
                error: format!(
                    "no T3 project is configured for repository {} (add it under [t3.projects])",
                    job.issue.repo
                ),
            };
            plane.transition(&job, &event, None, now, report).await?;
            continue;
        };
        let prompt = match plane.prompt_for(&job).await {
            Ok(Some(prompt)) => prompt,
            Ok(None) => continue,
            Err(error) => {
                plane
                    .transition(&job, &Event::Refused { error }, None, now, report)
                    .await?;
                continue;
            }
        };
        if prompt.max_concurrent.is_some_and(|limit| *repo_count >= limit) {
            continue;
        }
        let client = client_for(&plane.t3, &prompt);
        let issue = IssueRef {
            repo: job.issue.repo.to_string(),
            number: job.issue.number,
            title: Some(job.title.clone()),
        };
        let plan = match client.plan(&issue, project, &prompt.text, None) {
            Ok(plan) => plan,
            Err(error) => {
                let event = Event::Refused {
                    error: error.to_string(),
                };
                plane.transition(&job, &event, None, now, report).await?;
                continue;
            }
        };
        let attempt = NewAttempt {
            thread_id: plan.ids.thread_id.to_string(),
            project_id: plan.project_id.to_string(),
            create_command_id: plan.ids.create_command_id.to_string(),
            turn_command_id: plan.ids.turn_command_id.to_string(),
            message_id: plan.ids.message_id.to_string(),
            title: plan.title.clone(),
            branch: plan.branch.clone(),
            prompt: plan.text.clone(),
            model: prompt.model.clone(),
        };
        let Some((transition, job)) = plane
            .transition(&job, &Event::StartAttempt, Some(&attempt), now, report)
            .await?
        else {
            continue;
        };
        if transition.effect != Some(afk_core::Effect::Dispatch) {
            // No attempt after all (its budget is spent): nothing to send.
            continue;
        }
        total += 1;
        *repo_count += 1;
        let outcome = client.dispatch_plan(&plan).await.map(drop);
        conclude(plane, &job, outcome, now, report).await?;
    }
    Ok(())
}

/// Records how a dispatch went: running, deferred (a transient failure: same ids, later) or
/// rejected (T3 refused the command: the job fails with T3's reason). A dispatch blocked by the
/// operate token (missing, empty, expired or without scope) records nothing: the same attempt is
/// tried again next tick without spending its tries, and the log says what to fix.
async fn conclude(
    plane: &ControlPlane,
    job: &Job,
    outcome: Result<(), DispatchError>,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    let event = match outcome {
        Ok(()) => Event::Dispatched,
        Err(e) if e.error.is_credential_problem() => {
            tracing::error!(
                "{}: T3 refused afk's operate token, nothing changes until it is fixed ([t3.token] or \
                 token_file): {}",
                job.issue,
                e.error
            );
            return Ok(());
        }
        Err(e) if e.error.is_transient() => Event::DispatchDeferred {
            error: e.error.to_string(),
        },
        Err(e) => Event::DispatchRejected {
            error: e.error.to_string(),
        },
    };
    plane.transition(job, &event, None, now, report).await?;
    Ok(())
}

/// The T3 client for a prompt whose repository overrides the branch prefix or the model.
fn client_for(t3: &T3Client, prompt: &JobPrompt) -> T3Client {
    if prompt.branch_prefix.is_none() && prompt.model.is_none() {
        return t3.clone();
    }
    let mut settings = t3.settings().clone();
    if let Some(prefix) = &prompt.branch_prefix {
        settings.branch_prefix = prefix.clone();
    }
    if let Some(model) = &prompt.model {
        settings.model = model.clone();
    }
    t3.clone().with_settings(settings)
}

/// The plan an attempt was started with, rebuilt from the ledger exactly as first sent.
fn plan_of(attempt: &Attempt) -> Result<DispatchPlan, t3_client::ids::InvalidId> {
    Ok(DispatchPlan {
        ids: DispatchIds {
            thread_id: ThreadId::new(attempt.thread_id.clone())?,
            create_command_id: CommandId::new(attempt.create_command_id.clone())?,
            turn_command_id: CommandId::new(attempt.turn_command_id.clone())?,
            message_id: MessageId::new(attempt.message_id.clone())?,
        },
        project_id: ProjectId::new(attempt.project_id.clone())?,
        title: attempt.title.clone(),
        branch: attempt.branch.clone(),
        text: attempt.prompt.clone(),
    })
}
