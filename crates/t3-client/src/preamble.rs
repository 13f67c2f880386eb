//! The standing rules every afk agent gets before its prompt.
//!
//! They ride in the turn's message text because T3's full-access `claudeAgent` runtime does not
//! read the user's `~/.claude/CLAUDE.md`: the message is the only place to say them.

/// The built-in standing rules. Callers may replace them (see `AgentSettings::preamble`).
pub const STANDING_RULES: &str = "\
You are working unattended on one issue of a repository, dispatched by afk. Nobody is watching \
this session live, so follow these rules without asking:

1. Work only in this thread's working directory (its git worktree) and on its branch. Do not \
switch branches, touch other checkouts, or change anything outside the repository.
2. Read the issue below and the code it concerns before you change anything. Keep the change \
focused on the issue.
3. Run the project's tests (and its linters and formatter, if it has them) and make them pass. \
Add tests for the behaviour you change.
4. Commit your work on this branch in small commits with clear messages, push the branch, and \
open a pull request whose description says what changed and why and contains \"Closes #<issue \
number>\" so that merging it closes the issue.
5. Never print, log, commit or send secrets: tokens, keys, passwords, credentials files, or the \
values of environment variables that hold them.
6. If you are blocked (the issue is unclear, a test cannot pass for reasons outside the change, \
you lack access), stop, and explain plainly what blocks you and what you tried, in your final \
message and in the pull request if you opened one. Do not guess and do not force a change \
through.";

/// The turn's message text: the preamble, a blank line, then the prompt.
pub fn message_text(preamble: &str, prompt: &str) -> String {
    if preamble.trim().is_empty() {
        return prompt.to_owned();
    }
    format!("{}\n\n{}", preamble.trim_end(), prompt)
}
