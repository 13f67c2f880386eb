use std::process::Stdio;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::shorten;
use crate::{trimmed, FailureKind, Freshness, Secret, SecretError, SecretProvider};

/// How long a command may run before it is killed, unless configured otherwise.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest piece of a command's stderr carried into an error, so that a chatty tool cannot
/// flood a log line.
const MAX_STDERR_CHARS: usize = 300;

/// A token printed by a command on its standard output (e.g. `vault kv get -field=token ...`,
/// `gh auth token`, a cloud CLI).
///
/// Contract:
/// - the command runs without a shell (argv as given) unless built with [`CommandProvider::shell`],
///   which runs `sh -c SCRIPT`; its stdin is empty;
/// - the token is its standard output with surrounding whitespace trimmed; empty output is an error;
/// - it is killed when it runs longer than its timeout ([`DEFAULT_COMMAND_TIMEOUT`] by default);
///   only the process afk started is killed, so a shell script's own children may outlive it;
/// - a command that exits non-zero is a [`FailureKind::CommandFailed`] error (a person must act)
///   carrying the last non-empty line of its stderr, the whole stderr in
///   [`SecretError::detail`], and never anything from its stdout, which may hold a partial token;
///   one that cannot be started is [`FailureKind::Missing`]; one killed at its timeout is
///   [`FailureKind::TimedOut`] (it may pass);
/// - with a cache lifetime, [`Freshness::Cached`] reuses the last token while it is younger than
///   the lifetime and [`Freshness::Refresh`] runs the command unless another call ran it after this
///   one began; without one, every call runs it. Concurrent callers wait for one run rather than
///   starting several.
#[derive(Debug)]
pub struct CommandProvider {
    program: String,
    args: Vec<String>,
    /// How the command is named in errors: the program, never its arguments (which may be long).
    label: String,
    timeout: Duration,
    cache_lifetime: Option<Duration>,
    cache: Mutex<Option<(Secret, Instant)>>,
}

impl CommandProvider {
    /// A provider running `program` with `args`, without a shell.
    pub fn new(program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let program = program.into();
        Self {
            label: format!("command `{program}`"),
            program,
            args: args.into_iter().map(Into::into).collect(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
            cache_lifetime: None,
            cache: Mutex::new(None),
        }
    }

    /// A provider running `script` with `sh -c`, for pipelines and variable expansion.
    pub fn shell(script: impl Into<String>) -> Self {
        let mut provider = Self::new("sh", ["-c".to_owned(), script.into()]);
        provider.label = "shell command (sh -c)".into();
        provider
    }

    /// Kills the command when it runs longer than `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reuses a token for up to `lifetime` when asked with [`Freshness::Cached`].
    pub fn with_cache_lifetime(mut self, lifetime: Duration) -> Self {
        self.cache_lifetime = Some(lifetime);
        self
    }

    fn error(&self, kind: FailureKind, reason: impl Into<String>) -> SecretError {
        SecretError::new(self.label.clone(), kind, reason)
    }

    async fn run(&self) -> Result<Secret, SecretError> {
        tracing::debug!(command = %self.label, "running the token command");
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping the output future on timeout must not leave the command running.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                let kind = match e.kind() {
                    std::io::ErrorKind::NotFound => FailureKind::Missing,
                    std::io::ErrorKind::PermissionDenied => FailureKind::PermissionDenied,
                    _ => FailureKind::Unusable,
                };
                self.error(kind, format!("cannot start it: {e}"))
            })?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(self.error(FailureKind::Unavailable, format!("cannot read its output: {e}")))
            }
            Err(_) => {
                let waited = humantime::format_duration(self.timeout);
                return Err(self.error(
                    FailureKind::TimedOut,
                    format!("it did not finish within {waited} and was killed"),
                ));
            }
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().map(str::trim).rfind(|l| !l.is_empty());
            // The tool's own error is usually its last line; earlier ones are progress or warnings.
            let reason = match last {
                Some(line) => format!(
                    "it failed ({}): {}",
                    output.status,
                    shorten(line, MAX_STDERR_CHARS)
                ),
                None => format!("it failed ({}) without a message on stderr", output.status),
            };
            return Err(self.error(FailureKind::CommandFailed, reason).with_detail(stderr));
        }
        let stdout = String::from_utf8(output.stdout)
            .map_err(|_| self.error(FailureKind::Unusable, "its output is not valid UTF-8"))?;
        trimmed(&stdout, || format!("the output of {}", self.label))
    }
}

#[async_trait::async_trait]
impl SecretProvider for CommandProvider {
    async fn get(&self, freshness: Freshness) -> Result<Secret, SecretError> {
        let Some(lifetime) = self.cache_lifetime else {
            return self.run().await;
        };
        let asked_at = Instant::now();
        // Held across the run so that concurrent callers share one run of the command.
        let mut cache = self.cache.lock().await;
        if freshness == Freshness::Refresh {
            // Output produced after this call began is as fresh as a new run: several requests
            // refused at once (401) then cost one run, not one each.
            if let Some((secret, fetched_at)) = cache.as_ref() {
                if *fetched_at >= asked_at {
                    return Ok(secret.clone());
                }
            }
            // The server refused the cached token: never hand it out again, even if this run fails.
            *cache = None;
        }
        if freshness == Freshness::Cached {
            if let Some((secret, fetched_at)) = cache.as_ref() {
                if fetched_at.elapsed() < lifetime {
                    return Ok(secret.clone());
                }
            }
        }
        let secret = self.run().await?;
        *cache = Some((secret.clone(), Instant::now()));
        Ok(secret)
    }
}
