//! What people and scripts see of the ledger: the job, status and attempt views behind `afk jobs`,
//! `afk status` and `afk demo` (as JSON with `--json`, else as plain-text tables), and the one
//! rule of which error a job shows, which the reporter uses too.

use std::collections::BTreeMap;

use afk_core::JobState;
use afk_ledger::{Attempt, Job, LeaderSeen, LeaderState, Ledger, LedgerError, Wait};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::status::views::StateView;
use crate::status::Links;

/// The error `job` shows, `last` being its latest attempt: its own or that attempt's, and none
/// once it succeeded, whatever earlier attempts met.
pub fn last_error(job: &Job, last: Option<&Attempt>) -> Option<String> {
    (job.state != JobState::Succeeded)
        .then(|| {
            job.last_error
                .clone()
                .or_else(|| last.and_then(|a| a.last_error.clone()))
        })
        .flatten()
}

/// One job as `afk jobs --json` prints it (and `GET /api/v1/jobs` lists it).
pub use crate::status::views::JobView;

/// Every job in the ledger, oldest first, with its latest attempt's thread: read a page at a time
/// from the ledger's slim overview (no issue bodies, no prompts).
pub async fn jobs(ledger: &Ledger) -> Result<Vec<JobView>, LedgerError> {
    let mut views = Vec::new();
    let mut after = None;
    loop {
        let page = ledger.job_page(&[], after, afk_ledger::MAX_PAGE).await?;
        views.extend(page.iter().map(JobView::of));
        match page.last() {
            Some(last) if page.len() == afk_ledger::MAX_PAGE => after = Some(last.id),
            _ => {
                JobView::held(&mut views, &ledger.waits().await?);
                return Ok(views);
            }
        }
    }
}

/// Up to `limit` jobs that `filter` selects, newest first, with their latest attempts: read
/// backwards a page at a time from the ledger's slim overview, so a long history costs only the
/// pages listed.
pub async fn newest_jobs(
    ledger: &Ledger,
    filter: &afk_ledger::JobFilter<'_>,
    limit: usize,
) -> Result<Vec<JobView>, LedgerError> {
    let mut views = Vec::new();
    let mut before = None;
    while views.len() < limit {
        let want = (limit - views.len()).min(afk_ledger::MAX_PAGE);
        let page = ledger.newest_jobs(filter, before, want).await?;
        views.extend(page.iter().map(JobView::of));
        match page.last() {
            Some(last) if page.len() == want => before = Some(last.id),
            _ => break,
        }
    }
    JobView::held(&mut views, &ledger.waits().await?);
    Ok(views)
}

/// The jobs as a table, as `afk jobs` and `afk demo` print it.
pub fn jobs_table(views: &[JobView]) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.id.to_string(),
                format!("{}#{}", v.repo, v.number),
                truncate(&v.title, 40),
                v.priority.clone(),
                v.state.clone(),
                v.attempts.to_string(),
                v.thread_id.clone().unwrap_or_else(|| "-".into()),
                truncate(
                    &afk_core::first_line(v.last_error.as_deref().or(v.held.as_deref()).unwrap_or("-")),
                    60,
                ),
            ]
        })
        .collect();
    table(
        &[
            "job",
            "issue",
            "title",
            "prio",
            "state",
            "attempts",
            "thread",
            "last error (or why it waits)",
        ],
        &rows,
    )
}

/// Every attempt of every job as a table (issue, number, thread, outcome, how long it took, its
/// error), as `afk demo` ends with; and how many there are.
pub async fn attempts_table(ledger: &Ledger) -> Result<(String, usize), LedgerError> {
    let mut rows = Vec::new();
    for job in ledger.jobs().await? {
        for attempt in ledger.attempts(job.id).await? {
            let took = attempt
                .ended_at
                .map(|end| {
                    format!(
                        "{:.1}s",
                        (end - attempt.created_at).num_milliseconds() as f64 / 1000.0
                    )
                })
                .unwrap_or_else(|| "-".into());
            rows.push(vec![
                job.issue.to_string(),
                attempt.number.to_string(),
                attempt.thread_id.to_string(),
                attempt.state.to_string(),
                took,
                attempt
                    .last_error
                    .as_deref()
                    .map_or_else(|| "-".into(), |e| afk_core::first_line(e).into_owned()),
            ]);
        }
    }
    let count = rows.len();
    let text = table(&["issue", "attempt", "thread", "outcome", "took", "error"], &rows);
    Ok((text, count))
}

/// `afk status --json`, and `GET /api/v1/state` (the same data).
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// The ledger, with any password removed.
    pub ledger: String,
    /// Jobs per state; every state is present.
    pub jobs: BTreeMap<String, u64>,
    /// Attempts in flight.
    pub live: Vec<LiveView>,
    /// Whether an `afk run` leads the ledger (only the leader dispatches, watches and reports).
    pub leader: LeaderView,
    /// Why the running `afk run` waits, if it does: one reason per part of the work held up.
    pub waiting: Vec<Wait>,
    /// The status surface's view: counts, running attempts, retry back-offs, recent outcomes,
    /// jobs that need a person, totals.
    #[serde(flatten)]
    pub state: StateView,
}

/// Who leads the ledger: whether an `afk run` holds its leadership now, seen without taking it.
#[derive(Debug, Serialize)]
pub struct LeaderView {
    /// True while an `afk run` leads (holds the lock `afk run` takes: `PATH.lock` for SQLite, the
    /// schema's advisory lock for PostgreSQL); false when no holder is seen (for SQLite, a leader
    /// in another pid namespace, e.g. another container, is not seen); null when it cannot be
    /// told without taking the lock (an in-memory ledger, a SQLite ledger on a system other than
    /// Linux, a lock file that cannot be inspected).
    pub leading: LeaderState,
    /// How many times an `afk run` took the lead of this ledger (0: never).
    pub epoch: i64,
    /// When the current leader took the lead (with none leading: the last one); null before any.
    pub since: Option<String>,
}

impl LeaderView {
    fn of(seen: &LeaderSeen) -> LeaderView {
        LeaderView {
            leading: seen.held,
            epoch: seen.epoch,
            since: seen.taken_at.map(crate::status::views::instant),
        }
    }

    /// One line for `afk status`.
    fn text(&self) -> String {
        let last = match &self.since {
            Some(since) => format!(" (the last one took the lead at {since})"),
            None => " (none ever did)".to_owned(),
        };
        match (self.leading, &self.since) {
            (LeaderState::Leading, Some(since)) => {
                format!("leader: an afk run leads this ledger (since {since})")
            }
            (LeaderState::Leading, None) => "leader: an afk run leads this ledger".to_owned(),
            (LeaderState::NoLeaderSeen, _) => format!("leader: no afk run seen leading this ledger{last}"),
            (LeaderState::CannotTell, _) => {
                format!("leader: cannot tell here without taking the lock{last}")
            }
        }
    }
}

/// One attempt in flight.
#[derive(Debug, Serialize)]
pub struct LiveView {
    /// `OWNER/NAME#N`.
    pub issue: String,
    /// The attempt's number.
    pub attempt: u32,
    /// `dispatching` or `running`.
    pub state: String,
    /// Its job's state: `needs_input` while the thread waits for a person in T3.
    pub job_state: String,
    /// Its T3 thread.
    pub thread_id: String,
    /// When it started.
    pub started_at: String,
}

/// Job counts per state, the attempts in flight and the status surface's view, without links.
pub async fn status(ledger: &Ledger) -> Result<StatusView, LedgerError> {
    status_with(ledger, &Links::default(), Utc::now()).await
}

/// [`status`] at `now`, linking threads and issues as `links` says.
pub async fn status_with(
    ledger: &Ledger,
    links: &Links,
    now: DateTime<Utc>,
) -> Result<StatusView, LedgerError> {
    let state = crate::status::views::state(ledger, links, now).await?;
    // Every state, as the counts have them (without Symphony's `retrying` alias).
    let jobs: BTreeMap<String, u64> = JobState::ALL
        .iter()
        .map(|s| (s.to_string(), state.counts.get(s.as_str()).copied().unwrap_or(0)))
        .collect();
    let live = state
        .running
        .iter()
        .map(|r| LiveView {
            issue: r.issue.issue_identifier.clone(),
            attempt: r.attempt,
            state: r.state.clone(),
            job_state: r.job_state.clone(),
            thread_id: r.thread_id.clone(),
            started_at: r.started_at.clone(),
        })
        .collect();
    Ok(StatusView {
        ledger: ledger.url_redacted().to_owned(),
        jobs,
        live,
        leader: LeaderView::of(&ledger.leader().await?),
        waiting: ledger.waits().await?,
        state,
    })
}

impl StatusView {
    /// As `afk status` prints it: the ledger, the counts in lifecycle order, and the attempts in
    /// flight as a table.
    pub fn text(&self) -> String {
        let counts: Vec<String> = JobState::ALL
            .iter()
            .map(|s| format!("{} {}", self.jobs.get(s.as_str()).copied().unwrap_or(0), s))
            .collect();
        let mut out = format!(
            "ledger: {}\n{}\njobs: {}\n",
            self.ledger,
            self.leader.text(),
            counts.join(", ")
        );
        for wait in &self.waiting {
            let who = match wait.needs_person {
                true => "a person must act",
                false => "it will pass",
            };
            out.push_str(&format!(
                "waiting since {} ({who}): {}\n",
                wait.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                wait.message
            ));
        }
        if self.live.is_empty() {
            out.push_str("no attempts in flight\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .live
                .iter()
                .map(|l| {
                    vec![
                        l.issue.clone(),
                        l.attempt.to_string(),
                        // A thread waiting for a person is what a reader must notice.
                        if l.job_state == "needs_input" {
                            "needs_input".to_owned()
                        } else {
                            l.state.clone()
                        },
                        l.thread_id.clone(),
                        l.started_at.clone(),
                    ]
                })
                .collect();
            out.push_str(&table(&["issue", "attempt", "state", "thread", "started"], &rows));
        }
        out
    }
}

/// Renders `rows` under `headers` as aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The first line of `text`, cut to `max` characters with an ellipsis.
fn truncate(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        format!("{}…", line.chars().take(max - 1).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let t = super::table(
            &["id", "state"],
            &[vec!["1".into(), "queued".into()], vec!["22".into(), "x".into()]],
        );
        assert_eq!(t, "id  state\n1   queued\n22  x\n");
    }
}
