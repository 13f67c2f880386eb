//! The simulated agent's real work: a file written in its working directory (the thread's
//! worktree) and committed on the branch checked out there, so that a test can see that the
//! agent ran where T3 said and that its work landed on the attempt's branch.

use std::path::{Path, PathBuf};

use tokio::process::Command;

/// The folder, relative to the working directory, that the agent writes its files into.
pub const WORK_DIR: &str = "t3-sim-work";

/// What the agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Work {
    /// The file it wrote.
    pub(crate) file: PathBuf,
    /// The commit it made, when the working directory is a git work tree.
    pub(crate) commit: Option<String>,
}

/// Writes `t3-sim-work/<turn>.md` in `cwd` (naming the turn and the prompt's first line) and,
/// inside a git work tree, commits it on the checked-out branch. The error is one line naming
/// the step that failed.
pub(crate) async fn commit_work(cwd: &Path, turn_id: &str, prompt: &str) -> Result<Work, String> {
    let summary = prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(an empty prompt)");
    let summary: String = summary.chars().take(72).collect();
    let dir = cwd.join(WORK_DIR);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = dir.join(format!("{turn_id}.md"));
    let text = format!(
        "# Work by the simulated agent (t3-sim; no model ran)\n\nturn: {turn_id}\nprompt: {summary}\n"
    );
    tokio::fs::write(&file, text)
        .await
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let inside = git(cwd, &["rev-parse", "--is-inside-work-tree"]).await;
    if !inside.is_ok_and(|out| out.trim() == "true") {
        return Ok(Work { file, commit: None });
    }
    let relative = format!("{WORK_DIR}/{turn_id}.md");
    git(cwd, &["add", "--", &relative]).await?;
    git(
        cwd,
        &[
            "-c",
            "user.name=t3-sim agent",
            "-c",
            "user.email=t3-sim-agent@localhost",
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            &format!("t3-sim: {summary}"),
            "--",
            &relative,
        ],
    )
    .await?;
    let commit = git(cwd, &["rev-parse", "HEAD"]).await?.trim().to_owned();
    Ok(Work {
        file,
        commit: Some(commit),
    })
}

/// How many times a git command that found the index locked is tried.
const LOCKED_TRIES: u32 = 40;
/// How long between two such tries.
const LOCKED_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs `git ARGS` in `cwd`; its stdout, or one line naming the command and git's complaint. T3
/// runs git in the same worktree (it captures a checkpoint of every turn), so a command that
/// finds the index locked is tried again, for about two seconds at most.
async fn git(cwd: &Path, args: &[&str]) -> Result<String, String> {
    let mut tries = 1;
    loop {
        match git_once(cwd, args).await {
            Err(why) if why.contains("index.lock") && tries < LOCKED_TRIES => {
                tries += 1;
                tokio::time::sleep(LOCKED_WAIT).await;
            }
            outcome => return outcome,
        }
    }
}

async fn git_once(cwd: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run git {}: {e}", args.join(" ")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let why = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    Err(format!(
        "git {} failed in {} ({}): {why}",
        args.first().copied().unwrap_or_default(),
        cwd.display(),
        output.status
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(cwd: &Path, args: &[&str]) -> String {
        match git(cwd, args).await {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn work_is_committed_on_the_checked_out_branch() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let repo = dir.path();
        run(repo, &["init", "--quiet", "-b", "main"]).await;
        run(repo, &["checkout", "--quiet", "-b", "afk/issue-1"]).await;
        let work = commit_work(repo, "turn-1", "\n  Fix the widget\nmore")
            .await
            .expect("committed");
        let commit = work.commit.expect("a commit");
        assert_eq!(run(repo, &["rev-parse", "afk/issue-1"]).await.trim(), commit);
        let message = run(repo, &["log", "-1", "--format=%s"]).await;
        assert_eq!(message.trim(), "t3-sim: Fix the widget");
        let files = run(repo, &["show", "--name-only", "--format=", "HEAD"]).await;
        assert_eq!(files.trim(), "t3-sim-work/turn-1.md");
        assert!(work.file.ends_with("t3-sim-work/turn-1.md"));
    }

    #[tokio::test]
    async fn a_locked_index_is_waited_for() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let repo = dir.path().to_owned();
        run(&repo, &["init", "--quiet", "-b", "main"]).await;
        // Another git (T3 capturing a checkpoint) holds the index for a moment.
        let lock = repo.join(".git/index.lock");
        std::fs::write(&lock, "").expect("the lock");
        let holder = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            std::fs::remove_file(lock).expect("the lock goes");
        });
        let work = commit_work(&repo, "turn-2", "Fix it")
            .await
            .expect("committed once free");
        assert!(work.commit.is_some());
        holder.await.expect("the holder ran");
    }

    #[tokio::test]
    async fn outside_a_repository_the_file_is_written_and_nothing_committed() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let work = commit_work(dir.path(), "t", "x").await.expect("written");
        assert_eq!(work.commit, None);
        assert!(work.file.exists());
    }
}
