//! Policy: what afk decides per repository, merged into one [`RepoPolicy`] per job before its
//! attempt starts — the T3 project and dispatch mode (`[t3.projects]`), the limits, and, for GitHub
//! jobs, the repository's `AFK.md` (its settings and the prompt template it renders). The
//! dispatcher and the reporter read the merged value; nothing else reads `AFK.md` or the
//! repository's entry.
//!
//! The standing-rules preamble every prompt starts with is the T3 client's (`[t3] preamble_file`
//! replaces it); the prompt of a job without a template of its own is [`prompt::render`].

pub mod budget;
pub mod prompt;
mod target;

use std::collections::{BTreeMap, HashMap};

use afk_core::{BudgetLimits, JobSource, Repo};
use afk_github::{EligibleIssue, PolicyError, PolicySettings, PolicyStore, PromptContext, PromptIssue};
use afk_ledger::Job;

pub use afk_core::{WorktreeTemplate, WORKTREE_PLACEHOLDERS};
pub use target::{attempt_branch, Dispatch, RepoTarget};

/// One repository's policy as it applies to one job: `[t3.projects]`, `[limits]` and `[t3]`'s
/// defaults with the repository's `AFK.md` settings over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPolicy {
    /// The T3 project and how its threads are started.
    pub target: RepoTarget,
    /// How many of the repository's attempts may be in flight: `[limits] per_repo`, one when its
    /// threads share a checkout, lower when `AFK.md` says so.
    pub limit: usize,
    /// The prefix of the attempt's branch: `AFK.md`'s, else `[t3] branch_prefix`.
    pub branch_prefix: String,
    /// The model, when `AFK.md` chooses one over `[t3] model` (the attempt records it so, so
    /// that a resumed dispatch creates the thread exactly as planned).
    pub model: Option<String>,
    /// Labels added to the issue while afk works on it (`AFK.md`), besides afk's own.
    pub extra_labels: Vec<String>,
    /// The budgets of the repository's jobs: `[budget]`, lowered by `AFK.md`'s `budget:`.
    pub budget: BudgetLimits,
}

impl RepoPolicy {
    /// This policy with a repository's `AFK.md` settings over it: its own limit can only lower
    /// the configured one; its branch prefix and model replace `[t3]`'s.
    pub fn with_afk_md(self, settings: &PolicySettings) -> RepoPolicy {
        RepoPolicy {
            limit: settings
                .max_concurrent
                .map_or(self.limit, |n| self.limit.min(n.get() as usize)),
            branch_prefix: settings.branch_prefix.clone().unwrap_or(self.branch_prefix),
            model: settings.model.clone(),
            extra_labels: settings.extra_labels.clone(),
            budget: self.budget.lowered_by(settings.budget.limits()),
            target: self.target,
        }
    }
}

/// What [`Policies::resolve`] found for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Dispatch it under `policy` with `prompt` (the T3 client puts the preamble before it).
    Ready {
        /// The merged policy.
        policy: RepoPolicy,
        /// The prompt of its next attempt.
        prompt: String,
    },
    /// Not now: its GitHub issue is not in view yet, or `AFK.md` could not be fetched.
    NotNow,
    /// It cannot be dispatched (a template error, no `[github]`): fail it with this reason.
    Refused(String),
}

/// Every repository's policy: the configured part, fixed at start, and what each repository's
/// `AFK.md` last said.
pub struct Policies {
    targets: BTreeMap<Repo, RepoTarget>,
    per_repo: usize,
    branch_prefix: String,
    /// Reads `AFK.md`; `None` without `[github]`.
    afk_md: Option<PolicyStore>,
    /// The last policy resolved per repository, for the reporter's labels.
    resolved: HashMap<Repo, RepoPolicy>,
    /// `[budget]`.
    budget: BudgetLimits,
    /// Moves on whenever a repository's resolved budgets change (its `AFK.md` lowered them).
    budget_generation: u64,
    /// Repositories whose `AFK.md` [`Policies::load_budgets`] found unusable.
    budgets_unusable: std::collections::HashSet<Repo>,
    /// The `AFK.md` of each repository as fetched in this dispatch round
    /// ([`Policies::begin_round`]): one request per repository and round, not one per job.
    this_round: HashMap<Repo, std::sync::Arc<afk_github::RepoPolicy>>,
}

impl Policies {
    /// The policies of `targets` under `[limits] per_repo` and `[t3] branch_prefix`.
    pub fn new(targets: BTreeMap<Repo, RepoTarget>, per_repo: usize, branch_prefix: String) -> Self {
        Self {
            targets,
            per_repo,
            branch_prefix,
            afk_md: None,
            resolved: HashMap::new(),
            budget: BudgetLimits::default(),
            budget_generation: 0,
            budgets_unusable: Default::default(),
            this_round: HashMap::new(),
        }
    }

    /// Starts a dispatch round (the starts decided together, before any is sent):
    /// [`Policies::resolve`] fetches each repository's `AFK.md` once from now on, and answers
    /// its next jobs from that fetch, until the next call. A round is decided at once, without
    /// waiting for T3, so an edit to `AFK.md` made meanwhile is read by the next round, as one
    /// made just after the round would be; a pass's later rounds (after T3's answers, or a
    /// checkout's serial bootstraps) fetch it again.
    pub fn begin_round(&mut self) {
        self.this_round.clear();
    }

    /// Applies `[budget]`'s limits (none by default) to every repository's jobs.
    pub fn with_budget(mut self, budget: BudgetLimits) -> Self {
        self.budget = budget;
        self
    }

    /// The budgets of `repo`'s jobs as last resolved for a dispatch of it (with its `AFK.md`),
    /// else `[budget]`'s: what the watcher and the follow-through hold a running or reviewed
    /// job to without asking GitHub on every tick.
    pub fn budget(&self, repo: &Repo) -> BudgetLimits {
        self.resolved.get(repo).map_or(self.budget, |p| p.budget)
    }

    /// Reads, once per repository, the budgets `AFK.md` sets for those of `repos` no dispatch of
    /// this process resolved (after a restart: the repositories of running and reviewed jobs),
    /// so that [`Policies::budget`] holds their jobs to them. An `AFK.md` that cannot be fetched
    /// now is read at a later call; one afk cannot use leaves `[budget]`'s limits (its next
    /// dispatch is refused, saying why).
    pub async fn load_budgets(&mut self, repos: &[Repo]) {
        for repo in repos {
            if self.budgets_known(repo) {
                continue;
            }
            let (Some(afk_md), Ok(configured)) = (self.afk_md.as_ref(), self.configured(repo)) else {
                continue;
            };
            match afk_md.policy(repo).await {
                Ok(file) => {
                    let policy = configured.with_afk_md(&file.settings);
                    if self.budget(repo) != policy.budget {
                        self.budget_generation += 1;
                    }
                    self.resolved.insert(repo.clone(), policy);
                }
                Err(error @ PolicyError::Fetch { .. }) => {
                    tracing::debug!("{repo}: cannot read AFK.md's budgets yet: {error}");
                }
                Err(error) => {
                    tracing::debug!("{repo}: AFK.md's budgets are not used: {error}");
                    self.budgets_unusable.insert(repo.clone());
                }
            }
        }
    }

    /// True when `repo`'s budgets are known: resolved by a dispatch or read by
    /// [`Policies::load_budgets`] (or its `AFK.md` found unusable).
    pub fn budgets_known(&self, repo: &Repo) -> bool {
        self.resolved.contains_key(repo) || self.budgets_unusable.contains(repo)
    }

    /// Moves on whenever [`Policies::budget`] of some repository changes: what was decided from
    /// the budgets before is to be decided again.
    pub fn budget_generation(&self) -> u64 {
        self.budget_generation
    }

    /// Reads each GitHub job's `AFK.md` through `afk_md` from now on.
    pub fn read_afk_md(&mut self, afk_md: PolicyStore) {
        self.afk_md = Some(afk_md);
    }

    /// `repo`'s policy from the configuration alone (no `AFK.md`): enough to resume a dispatch, and
    /// a bound `AFK.md` can only lower. `Err`: the reason a job of `repo` cannot be dispatched.
    pub fn configured(&self, repo: &Repo) -> Result<RepoPolicy, String> {
        let target = self.targets.get(repo).ok_or_else(|| {
            format!("no T3 project is configured for repository {repo} (add it under [t3.projects])")
        })?;
        Ok(RepoPolicy {
            limit: target.in_flight_limit(self.per_repo),
            target: target.clone(),
            branch_prefix: self.branch_prefix.clone(),
            model: None,
            extra_labels: Vec::new(),
            budget: self.budget,
        })
    }

    /// `job`'s policy and the prompt of its next attempt: `configured` with, for a GitHub job, its
    /// repository's `AFK.md` merged in and its template rendered for `issue` (the issue as intake
    /// last saw it; its title and body are the job's, as afk took them).
    pub async fn resolve(
        &mut self,
        job: &Job,
        configured: RepoPolicy,
        issue: Option<&EligibleIssue>,
    ) -> Resolution {
        if job.source != JobSource::GitHub {
            return Resolution::Ready {
                policy: configured,
                prompt: prompt::render(job),
            };
        }
        let Some(afk_md) = &self.afk_md else {
            return Resolution::Refused("the job came from GitHub, but [github] is not configured".into());
        };
        let Some(issue) = issue else {
            return Resolution::NotNow;
        };
        let fetched = match self.this_round.get(&job.issue.repo) {
            Some(file) => Ok(file.clone()),
            None => afk_md.policy(&job.issue.repo).await,
        };
        let file = match fetched {
            Ok(file) => {
                self.this_round.insert(job.issue.repo.clone(), file.clone());
                file
            }
            Err(error @ PolicyError::Fetch { .. }) => {
                tracing::warn!("{}: {error}; trying again next tick", job.issue);
                return Resolution::NotNow;
            }
            Err(error) => return Resolution::Refused(error.to_string()),
        };
        let context = PromptContext {
            // Title and body as afk took them, not as last polled: a later edit may be anyone's.
            issue: PromptIssue {
                title: job.title.clone(),
                body: job.body.clone(),
                ..PromptIssue::from(issue)
            },
            repo: job.issue.repo.to_string(),
            attempt: job.attempts + 1,
            previous_error: (job.attempts > 0).then(|| job.last_error.clone()).flatten(),
        };
        let prompt = match file.render(&context) {
            Ok(prompt) => prompt,
            Err(error) => return Resolution::Refused(error.to_string()),
        };
        let policy = configured.with_afk_md(&file.settings);
        if self.budget(&job.issue.repo) != policy.budget {
            self.budget_generation += 1;
        }
        self.resolved.insert(job.issue.repo.clone(), policy.clone());
        Resolution::Ready { policy, prompt }
    }

    /// The labels `repo`'s `AFK.md` adds to an issue afk works on, as last resolved (none before
    /// a job of it was dispatched).
    pub fn extra_labels(&self, repo: &Repo) -> &[String] {
        self.resolved
            .get(repo)
            .map(|p| p.extra_labels.as_slice())
            .unwrap_or_default()
    }

    /// `repo`'s `AFK.md` `followup:` settings (its cache, re-read when the file changed);
    /// defaults when there is none or afk cannot use it (the dispatcher says why). `None` while
    /// it cannot be fetched now: its lowered limit must not be lifted by a passing GitHub error.
    pub async fn follow_up_settings(&self, repo: &Repo) -> Option<afk_github::policy::FollowUpSettings> {
        let Some(afk_md) = self.afk_md.as_ref() else {
            return Some(Default::default());
        };
        match afk_md.policy(repo).await {
            Ok(file) => Some(file.settings.followup.clone()),
            Err(error @ PolicyError::Fetch { .. }) => {
                tracing::debug!("{repo}: cannot read AFK.md's followup settings yet: {error}");
                None
            }
            Err(error) => {
                tracing::debug!("{repo}: AFK.md's followup settings are not used: {error}");
                Some(Default::default())
            }
        }
    }

    /// The labels `repo`'s `AFK.md` adds, for removing them when a job ends: as last resolved,
    /// else read from `AFK.md` now (afk restarted since the job was dispatched). `None` when
    /// `AFK.md` cannot be fetched now (try again later); none for an `AFK.md` afk cannot use.
    pub async fn extra_labels_to_remove(&self, repo: &Repo) -> Option<Vec<String>> {
        if let Some(resolved) = self.resolved.get(repo) {
            return Some(resolved.extra_labels.clone());
        }
        let afk_md = self.afk_md.as_ref()?;
        match afk_md.policy(repo).await {
            Ok(file) => Some(file.settings.extra_labels.clone()),
            Err(error @ PolicyError::Fetch { .. }) => {
                tracing::debug!("{repo}: cannot read AFK.md for the labels to remove yet: {error}");
                None
            }
            // An AFK.md afk cannot use added no labels either.
            Err(_) => Some(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use t3_client::ProjectId;

    use super::*;

    fn policies() -> Policies {
        let repo = |r: &str| Repo::new(r).unwrap();
        let target = |mode| RepoTarget {
            project: ProjectId::new("p").unwrap(),
            dispatch: mode,
        };
        let worktrees = Dispatch::WsWorktree {
            base_branch: "main".into(),
            run_setup_script: None,
        };
        let shared = Dispatch::Http { worktree_path: None };
        let targets = BTreeMap::from([
            (repo("acme/api"), target(worktrees)),
            (repo("acme/web"), target(shared)),
        ]);
        Policies::new(targets, 3, "afk/".into())
    }

    #[test]
    fn the_configured_policy_names_the_repository_it_lacks() {
        let policies = policies();
        let api = policies.configured(&Repo::new("acme/api").unwrap()).unwrap();
        assert_eq!(
            (api.limit, api.branch_prefix.as_str(), api.model),
            (3, "afk/", None)
        );
        let web = policies.configured(&Repo::new("acme/web").unwrap()).unwrap();
        assert_eq!(web.limit, 1, "threads sharing a checkout run one at a time");
        let error = policies
            .configured(&Repo::new("someone/else").unwrap())
            .unwrap_err();
        assert!(
            error.contains("no T3 project is configured for repository someone/else"),
            "{error}"
        );
    }

    #[test]
    fn afk_md_settings_merge_over_the_configured_ones() {
        let api = policies().configured(&Repo::new("acme/api").unwrap()).unwrap();
        let settings = |max: Option<u32>, prefix: Option<&str>, model: Option<&str>| PolicySettings {
            max_concurrent: max.and_then(NonZeroU32::new),
            branch_prefix: prefix.map(str::to_owned),
            model: model.map(str::to_owned),
            extra_labels: vec!["bot".into()],
            followup: Default::default(),
            budget: Default::default(),
        };
        // (AFK.md, limit, branch prefix, model, why)
        let cases = [
            (
                settings(None, None, None),
                3,
                "afk/",
                None,
                "nothing set: the configured policy",
            ),
            (
                settings(Some(1), None, None),
                1,
                "afk/",
                None,
                "a lower limit applies",
            ),
            (
                settings(Some(9), None, None),
                3,
                "afk/",
                None,
                "a higher limit does not",
            ),
            (
                settings(None, Some("bots/"), Some("claude-opus-4-1")),
                3,
                "bots/",
                Some("claude-opus-4-1"),
                "its branch prefix and model replace [t3]'s",
            ),
        ];
        for (afk_md, limit, prefix, model, why) in cases {
            let merged = api.clone().with_afk_md(&afk_md);
            assert_eq!(
                (
                    merged.limit,
                    merged.branch_prefix.as_str(),
                    merged.model.as_deref()
                ),
                (limit, prefix, model),
                "{why}"
            );
            assert_eq!(merged.extra_labels, ["bot"], "{why}");
            assert_eq!(merged.target, api.target, "{why}");
        }
    }
}
