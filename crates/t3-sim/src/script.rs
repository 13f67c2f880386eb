//! What the simulated agent does with a turn, read from markers in the turn's message text.
//!
//! The markers are plain text so that a test, the demo or a person typing an issue can script
//! the agent without any side channel:
//! - `[sim:fail]`: the turn ends in error, with a `lastError`;
//! - `[sim:hang]`: the turn never ends by itself (only an interrupt or a session stop ends it);
//! - `[sim:duration=MS]`: the turn takes MS milliseconds instead of the configured duration;
//! - `[sim:fail-times=N]`: the first N threads *with the same title* whose turn carries this
//!   marker fail, later ones succeed (afk opens one thread per attempt, all with the issue's
//!   title, so this scripts "fails N times, then succeeds");
//! - `[sim:worktree-fail]`: a bootstrapped turn (WebSocket RPC only) fails at `prepareWorktree`,
//!   as if `git worktree add` failed;
//! - `[sim:setup-fail]`: in a bootstrapped turn with `runSetupScript: true`, the setup script
//!   fails to start: as in T3, a `setup-script.failed` activity, and the turn goes on;
//! - `[sim:start-fail]`: the provider session cannot start (as when T3 cannot spawn the agent's
//!   binary): session `error` with T3's multi-line `lastError`, no turn;
//! - `[sim:ask]`: the agent asks a person a question and waits for the answer before it goes on
//!   (only the agent T3 runs, `afk sim agent`, asks: T3's `item/tool/requestUserInput`).
//!
//! Unknown markers and malformed values are ignored: the text is the agent's prompt, not a
//! command language, and a typo must not make the stand-in refuse a turn.

use std::time::Duration;

/// The parsed markers of one turn's message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnScript {
    /// `[sim:fail]` was present.
    pub fail: bool,
    /// `[sim:hang]` was present.
    pub hang: bool,
    /// `[sim:duration=MS]`, when present and a valid number.
    pub duration: Option<Duration>,
    /// `[sim:fail-times=N]`, when present and a valid number.
    pub fail_times: Option<u32>,
    /// `[sim:worktree-fail]` was present.
    pub worktree_fail: bool,
    /// `[sim:setup-fail]` was present.
    pub setup_fail: bool,
    /// `[sim:ask]` was present.
    pub ask: bool,
    /// `[sim:start-fail]` was present.
    pub start_fail: bool,
}

impl TurnScript {
    /// Reads every `[sim:...]` marker in `text`. The last valid value of a repeated marker wins.
    pub fn parse(text: &str) -> TurnScript {
        let mut script = TurnScript::default();
        let mut rest = text;
        while let Some(start) = rest.find("[sim:") {
            let after = &rest[start + "[sim:".len()..];
            let Some(end) = after.find(']') else {
                break;
            };
            let marker = after[..end].trim();
            match marker.split_once('=') {
                None if marker == "fail" => script.fail = true,
                None if marker == "hang" => script.hang = true,
                None if marker == "worktree-fail" => script.worktree_fail = true,
                None if marker == "setup-fail" => script.setup_fail = true,
                None if marker == "ask" => script.ask = true,
                None if marker == "start-fail" => script.start_fail = true,
                Some(("duration", ms)) => {
                    if let Ok(ms) = ms.trim().parse::<u64>() {
                        script.duration = Some(Duration::from_millis(ms));
                    }
                }
                Some(("fail-times", n)) => {
                    if let Ok(n) = n.trim().parse::<u32>() {
                        script.fail_times = Some(n);
                    }
                }
                _ => {}
            }
            rest = &after[end + 1..];
        }
        script
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_marker() {
        let script =
            TurnScript::parse(
            "rules\n\nfix it [sim:fail] [sim:duration=50] [sim:fail-times=2] [sim:hang] [sim:worktree-fail] [sim:setup-fail] [sim:ask] [sim:start-fail]",
        );
        assert_eq!(
            script,
            TurnScript {
                fail: true,
                hang: true,
                duration: Some(Duration::from_millis(50)),
                fail_times: Some(2),
                worktree_fail: true,
                setup_fail: true,
                ask: true,
                start_fail: true,
            }
        );
    }

    #[test]
    fn plain_text_and_malformed_markers_script_nothing() {
        assert_eq!(TurnScript::parse("just fix the bug"), TurnScript::default());
        assert_eq!(
            TurnScript::parse("[sim:duration=soon] [sim:explode] [sim:fail"),
            TurnScript::default()
        );
    }
}
