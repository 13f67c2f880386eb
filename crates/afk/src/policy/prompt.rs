//! The prompt of a job's next attempt, for jobs that carry no template of their own (local files
//! and jobs queued by hand). The T3 client puts the standing rules before it.

use afk_ledger::Job;

/// The prompt for `job`'s next attempt: the issue's reference, title and body, and, on a retry, the
/// previous attempt's error so that the agent does not walk into it again.
pub fn render(job: &Job) -> String {
    let mut text = format!(
        "Work on issue {}: {}\n\n{}\n",
        job.issue,
        job.title.trim(),
        job.body.trim()
    );
    if job.attempts > 0 {
        if let Some(error) = job.last_error.as_deref().filter(|e| !e.trim().is_empty()) {
            text.push_str(&format!(
                "\nThis is attempt {} of this issue. The previous attempt ended with: {}\n",
                job.attempts + 1,
                error.trim()
            ));
        }
    }
    text
}
