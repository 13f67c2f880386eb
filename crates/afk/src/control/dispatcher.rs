//! The dispatcher: starts attempts for ready jobs in priority order within the limits, and
//! finishes dispatches that a crash or a T3 outage interrupted, with the ids chosen before the
//! first request.

use std::collections::HashMap;

use afk_core::{Event, JobId, JobState};
use afk_ledger::{Attempt, Job, NewAttempt, WatchedAttempt};
use chrono::{DateTime, Utc};
use t3_client::{
    DispatchError, DispatchIds, DispatchPlan, DispatchStage, Fleet, IssueRef, T3Client, T3Error, ThreadId,
    WorktreePlan,
};

use super::{ControlError, ControlPlane, JobPrompt, TickReport};
use crate::policy::{attempt_branch, Dispatch, RepoTarget};

/// Resumes every attempt left in `dispatching` whose back-off has passed, resolved against the
/// fleet: a thread with a turn is already dispatched; otherwise the attempt's commands are sent
/// again with their recorded ids — over HTTP only what is missing (the turn, or both), with
/// worktrees the one bootstrap command. T3 deduplicates the command ids, so even a stale view
/// cannot make a second thread.
pub(super) async fn resume(
    plane: &ControlPlane,
    fleet: &Fleet,
    live: &[WatchedAttempt],
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    for watched in live {
        if watched.job_state != JobState::Dispatching || watched.job_not_before.is_some_and(|t| t > now) {
            continue;
        }
        // The whole rows (issue, prompt) only for the few attempts being dispatched.
        let (Some(job), Some(attempt)) = (
            plane.ledger.job(watched.job_id).await?,
            plane.ledger.live_attempt(watched.job_id).await?,
        ) else {
            continue;
        };
        let (job, attempt) = (&job, &attempt);
        let plan = plan_of(job, attempt, plane.settings.projects.get(&job.issue.repo));
        // Created exactly as first planned: with the model the repository chose, if any.
        let client = client_for(
            &plane.t3,
            &JobPrompt {
                model: attempt.model.clone(),
                ..JobPrompt::default()
            },
        );
        let thread = fleet.thread(&plan.ids.thread_id);
        let target = plane.settings.projects.get(&job.issue.repo);
        let outcome = match (thread, target.map(|t| &t.dispatch)) {
            (Some(thread), _) if thread.latest_turn.is_some() => Ok(()),
            // With worktrees T3 sets the thread up in one command and deletes it if a step
            // fails: a deleted thread is a failed setup, one without a turn is still being set
            // up (sending anything now could start a turn outside its worktree).
            (Some(thread), Some(Dispatch::WsWorktree { .. })) => {
                let event = if thread.deleted_at.is_some() {
                    Event::BootstrapFailed {
                        error:
                            "T3 deleted the thread while setting it up (its worktree or setup script failed)"
                                .into(),
                    }
                } else {
                    Event::DispatchDeferred {
                        error: "T3 is still setting the thread up".into(),
                    }
                };
                plane.transition(job, &event, None, now, report).await?;
                continue;
            }
            (None, Some(Dispatch::WsWorktree { .. })) => {
                let Some(target) = target else { continue };
                match worktree_plan(target, fleet) {
                    Ok(worktree) => client.dispatch_isolated(&plan, &worktree).await.map(drop),
                    Err(error) => {
                        plane
                            .transition(job, &Event::DispatchRejected { error }, None, now, report)
                            .await?;
                        continue;
                    }
                }
            }
            (Some(_), _) => client
                .start_turn(&plan)
                .await
                .map(drop)
                .map_err(|error| DispatchError {
                    stage: DispatchStage::Turn,
                    error,
                }),
            (None, _) => client.dispatch_plan(&plan).await.map(drop),
        };
        conclude(plane, job, &plan.ids.thread_id, outcome, now, report).await?;
    }
    Ok(())
}

/// Starts a new attempt for each ready job, in priority order, while the global and per-repository
/// limits allow. The attempt's ids are recorded with the transition, before the first request.
pub(super) async fn dispatch_ready(
    plane: &mut ControlPlane,
    fleet: &Fleet,
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
        let Some(target) = plane.settings.projects.get(&job.issue.repo).cloned() else {
            let event = Event::Refused {
                error: format!(
                    "no T3 project is configured for repository {} (add it under [t3.projects])",
                    job.issue.repo
                ),
            };
            plane.transition(&job, &event, None, now, report).await?;
            continue;
        };
        if *repo_count >= target.in_flight_limit(limits.per_repo) {
            continue;
        }
        // Decided before anything is recorded: a worktree needs the project's checkout in T3.
        let worktree = match &target.dispatch {
            Dispatch::WsWorktree { .. } => match worktree_plan(&target, fleet) {
                Ok(worktree) => Some(worktree),
                Err(error) => {
                    plane
                        .transition(&job, &Event::Refused { error }, None, now, report)
                        .await?;
                    continue;
                }
            },
            Dispatch::Http { .. } => None,
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
        let number = job.attempts + 1;
        let plan = match client.plan(&issue, target.project.clone(), &prompt.text, None) {
            Ok(plan) => with_target(plan, &job, &target, number),
            Err(error) => {
                let event = Event::Refused {
                    error: error.to_string(),
                };
                plane.transition(&job, &event, None, now, report).await?;
                continue;
            }
        };
        let attempt = NewAttempt {
            thread_id: plan.ids.thread_id.clone(),
            project_id: plan.project_id.clone(),
            create_command_id: plan.ids.create_command_id.clone(),
            turn_command_id: plan.ids.turn_command_id.clone(),
            message_id: plan.ids.message_id.clone(),
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
        let outcome = match &worktree {
            Some(worktree) => client.dispatch_isolated(&plan, worktree).await.map(drop),
            None => client.dispatch_plan(&plan).await.map(drop),
        };
        conclude(plane, &job, &plan.ids.thread_id, outcome, now, report).await?;
    }
    Ok(())
}

/// What T3 needs to add a worktree for `target`'s threads: the project's checkout (from T3's own
/// view of the project), the base branch, and whether to run the setup script. `Err` when T3 has
/// no such project.
fn worktree_plan(target: &RepoTarget, fleet: &Fleet) -> Result<WorktreePlan, String> {
    let Dispatch::WsWorktree {
        base_branch,
        run_setup_script,
    } = &target.dispatch
    else {
        return Err("the repository is not dispatched with worktrees".into());
    };
    let project = fleet.project(&target.project).ok_or_else(|| {
        format!(
            "T3 has no project {} to add a worktree to (check [t3.projects])",
            target.project
        )
    })?;
    Ok(WorktreePlan {
        project_cwd: project.workspace_root.clone(),
        base_branch: base_branch.clone(),
        // As T3's own UI decides, unless the repository says otherwise.
        run_setup_script: run_setup_script.unwrap_or_else(|| project.has_worktree_setup_script()),
    })
}

/// `plan` for attempt `number` of `job` in `target`: with worktrees each attempt has its own
/// branch (T3 creates it, and a branch can have only one worktree); over HTTP with a worktree
/// template, the thread works in its rendered path.
fn with_target(mut plan: DispatchPlan, job: &Job, target: &RepoTarget, number: u32) -> DispatchPlan {
    match &target.dispatch {
        Dispatch::WsWorktree { .. } => plan.branch = attempt_branch(&plan.branch, number),
        Dispatch::Http {
            worktree_path: Some(template),
        } => plan.worktree_path = Some(template.render(&job.issue, &plan.branch, number)),
        Dispatch::Http { worktree_path: None } => {}
    }
    plan
}

/// Records how a dispatch went: running, deferred (a transient failure: same ids, later),
/// bootstrap failed (T3 could not set the worktree up and undid the thread: the attempt fails and
/// the retry policy decides) or rejected (T3 refused the command: the job fails with T3's reason). A dispatch blocked by the
/// operate token (missing, empty, expired or without scope) records nothing: the same attempt is
/// tried again next tick without spending its tries, and the log says what to fix.
async fn conclude(
    plane: &ControlPlane,
    job: &Job,
    thread: &ThreadId,
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
        // A retried bootstrap whose thread exists: an earlier try landed, failed or is still
        // under way; the next tick's view of the thread tells which (see `resume`).
        Err(e) if e.stage == DispatchStage::Bootstrap && e.error.is_existing_thread(thread) => {
            Event::DispatchDeferred {
                error: e.error.to_string(),
            }
        }
        // T3 refused a bootstrap (worktree, setup script) and undid it: the attempt failed, and a
        // new one (new ids, its own branch) may well succeed once the thread is confirmed gone.
        Err(e) if e.stage == DispatchStage::Bootstrap && e.error.is_refusal() => Event::BootstrapFailed {
            error: e.error.to_string(),
        },
        // T3 answered, but not with anything readable: the command may have been applied, so the
        // next tick resolves it from T3's view, with the same ids.
        Err(
            e @ DispatchError {
                error: T3Error::MalformedReply { .. },
                ..
            },
        ) => Event::DispatchDeferred {
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

/// The plan an attempt was started with, rebuilt from the ledger exactly as first sent (the
/// worktree path is rendered again from the repository's template: same inputs, same path).
fn plan_of(job: &Job, attempt: &Attempt, target: Option<&RepoTarget>) -> DispatchPlan {
    let worktree_path = match target.map(|t| &t.dispatch) {
        Some(Dispatch::Http {
            worktree_path: Some(template),
        }) => Some(template.render(&job.issue, &attempt.branch, attempt.number.0)),
        _ => None,
    };
    DispatchPlan {
        ids: DispatchIds {
            thread_id: attempt.thread_id.clone(),
            create_command_id: attempt.create_command_id.clone(),
            turn_command_id: attempt.turn_command_id.clone(),
            message_id: attempt.message_id.clone(),
        },
        project_id: attempt.project_id.clone(),
        title: attempt.title.clone(),
        branch: attempt.branch.clone(),
        worktree_path,
        text: attempt.prompt.clone(),
    }
}
