//! Policy: a repository's `AFK.md` — YAML front matter with per-repository settings and a Markdown
//! body that is the prompt template.
//!
//! Rendering is strict: a variable or filter the template names but afk does not provide is an error
//! whose message names it, never a silent blank in the prompt. Checked twice: when `AFK.md` is read
//! (every name the template uses must be one afk provides) and when it is rendered (minijinja's
//! strict undefined behaviour catches the rest, and the error names the expression, its line and
//! why it is undefined, e.g. that labels are plain names).
//!
//! The standing-rules preamble is **not** here: the T3 client prepends it to every prompt.

use crate::lock;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use afk_core::Repo;
use base64::Engine as _;
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::client::GitHubClient;
use crate::error::GitHubError;
use crate::intake::EligibleIssue;
use crate::model;

/// The policy file's name at the repository root.
pub const POLICY_FILE: &str = "AFK.md";

/// The template used when a repository has no `AFK.md` (or its `AFK.md` has an empty body).
pub const BUILT_IN_TEMPLATE: &str = "\
Resolve GitHub issue #{{ issue.number }} in {{ repo }}: {{ issue.title }}

Issue: {{ issue.url }} (opened by {{ issue.author }}{% if issue.labels %}; labels: {{ issue.labels | join(\", \") }}{% endif %})

{{ issue.body }}
{% if previous_error %}
This is attempt {{ attempt }}. The previous attempt failed with:

{{ previous_error }}
{% endif %}";

/// The top-level variables a template may use.
pub const TEMPLATE_VARIABLES: &[&str] = &["issue", "repo", "attempt", "previous_error"];
/// The fields of `issue` a template may use.
pub const ISSUE_FIELDS: &[&str] = &["number", "title", "body", "labels", "author", "url"];

/// Per-repository settings from `AFK.md`'s front matter. Every key is optional; an unknown key is
/// an error (a typo must not silently do nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// At most this many of the repository's issues run at once (the global limits still apply).
    #[serde(default)]
    pub max_concurrent: Option<NonZeroU32>,
    /// Prefix of the branch each attempt works on, e.g. `afk/`.
    #[serde(default)]
    pub branch_prefix: Option<String>,
    /// The model the agent should use, as T3 names it.
    #[serde(default)]
    pub model: Option<String>,
    /// Labels afk adds to the issue when it starts work on it, besides its own status labels, and
    /// removes when the job ends (only those afk added: one already there stays).
    #[serde(default)]
    pub extra_labels: Vec<String>,
    /// `followup:`: the pull request follow-through of this repository's jobs.
    #[serde(default)]
    pub followup: FollowUpSettings,
    /// `budget:`: this repository's budgets, each lowering the configured `[budget]` key of the
    /// same name (or setting one it leaves off), never raising it.
    #[serde(default)]
    pub budget: BudgetSettings,
}

/// `AFK.md`'s `budget:` settings (durations as `30m`, `4h`; counts at least 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// Agent time per job: lowers `[budget] job_agent_time`.
    #[serde(default, with = "duration_text")]
    pub job_agent_time: Option<std::time::Duration>,
    /// Agent time of the repository per day (UTC): lowers `[budget] repo_agent_time_per_day`.
    #[serde(default, with = "duration_text")]
    pub repo_agent_time_per_day: Option<std::time::Duration>,
    /// New jobs of the repository per day (UTC): lowers `[budget] repo_new_jobs_per_day`.
    #[serde(default)]
    pub repo_new_jobs_per_day: Option<NonZeroU32>,
}

impl BudgetSettings {
    /// As limits to lower the configured ones with ([`afk_core::BudgetLimits::lowered_by`]).
    pub fn limits(&self) -> afk_core::BudgetLimits {
        afk_core::BudgetLimits {
            job_agent_time: self.job_agent_time,
            repo_agent_time_per_day: self.repo_agent_time_per_day,
            repo_new_jobs_per_day: self.repo_new_jobs_per_day.map(NonZeroU32::get),
        }
    }
}

/// An optional duration written as text (`30m`, `4h`), longer than zero and at most ten years
/// (as `[budget]` in afk.toml: past that, instants computed from it would overflow).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&humantime::format_duration(*d).to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => Err(serde::de::Error::custom(format!(
                "{text:?} must be longer than zero"
            ))),
            Ok(d) if d > Duration::from_secs(3650 * 24 * 3600) => Err(serde::de::Error::custom(format!(
                "{text:?} is longer than ten years"
            ))),
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(serde::de::Error::custom(format!(
                "{text:?} is not a duration like 30m or 4h ({e})"
            ))),
        }
    }
}

/// `AFK.md`'s `followup:` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpSettings {
    /// At most this many follow-up turns per job: lowers `[followup] max_turns`, never raises it.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// The follow-up prompt's template (minijinja, strictly rendered), instead of
    /// [`crate::follow::BUILT_IN_FOLLOW_UP_TEMPLATE`].
    #[serde(default)]
    pub template: Option<String>,
}

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The repository has no `AFK.md`: default settings and [`BUILT_IN_TEMPLATE`].
    BuiltIn,
    /// `AFK.md` at the given blob sha.
    AfkMd {
        /// The git blob sha of the file (changes exactly when the content changes).
        sha: String,
    },
}

/// Why a policy could not be loaded or a prompt not rendered. The message names the repository
/// and, for template errors, the offending variable or filter.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// `AFK.md` could not be fetched.
    #[error("cannot fetch {POLICY_FILE} of {repo}: {source}")]
    Fetch {
        /// The repository.
        repo: Repo,
        /// Why.
        source: GitHubError,
    },
    /// The front matter is not valid YAML for [`PolicySettings`] (e.g. an unknown key).
    #[error("{POLICY_FILE} of {repo}: invalid settings in the front matter: {message}")]
    Settings {
        /// The repository (or `<local>` when parsed from text).
        repo: String,
        /// The YAML error, naming the key and line.
        message: String,
    },
    /// `AFK.md` is not valid UTF-8, or its front matter is not closed by a `---` line.
    #[error("{POLICY_FILE} of {repo}: {message}")]
    Malformed {
        /// The repository.
        repo: String,
        /// What is wrong.
        message: String,
    },
    /// The template does not compile, names an unknown variable or filter, or fails to render.
    #[error("{POLICY_FILE} of {repo}: prompt template error: {message}")]
    Template {
        /// The repository.
        repo: String,
        /// What is wrong, naming the variable or filter.
        message: String,
    },
}

/// The issue as the template sees it (`issue.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptIssue {
    /// `issue.number`.
    pub number: u64,
    /// `issue.title`.
    pub title: String,
    /// `issue.body`.
    pub body: String,
    /// `issue.labels`, a list of names.
    pub labels: Vec<String>,
    /// `issue.author`, a login.
    pub author: String,
    /// `issue.url`, the issue's page.
    pub url: String,
}

impl From<&EligibleIssue> for PromptIssue {
    fn from(issue: &EligibleIssue) -> Self {
        Self {
            number: issue.number,
            title: issue.title.clone(),
            body: issue.body.clone(),
            labels: issue.labels.clone(),
            author: issue.author.as_str().to_owned(),
            url: issue.url.to_string(),
        }
    }
}

/// Everything a template may refer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptContext {
    /// `issue`.
    pub issue: PromptIssue,
    /// `repo`, as `OWNER/NAME`.
    pub repo: String,
    /// `attempt`, 1 for the first.
    pub attempt: u32,
    /// `previous_error`: the previous attempt's error, none on the first attempt.
    pub previous_error: Option<String>,
}

/// A repository's parsed policy: settings and a checked template.
#[derive(Clone)]
pub struct RepoPolicy {
    /// The settings (defaults when the repository has no `AFK.md`).
    pub settings: PolicySettings,
    /// Where it came from.
    pub source: PolicySource,
    template: String,
    label: String,
}

impl fmt::Debug for RepoPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoPolicy")
            .field("settings", &self.settings)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl RepoPolicy {
    /// Default settings and [`BUILT_IN_TEMPLATE`].
    pub fn built_in() -> Self {
        Self {
            settings: PolicySettings::default(),
            source: PolicySource::BuiltIn,
            template: BUILT_IN_TEMPLATE.to_owned(),
            label: "built-in".to_owned(),
        }
    }

    /// Parses the text of an `AFK.md`: optional front matter between `---` lines, then the body.
    /// `origin` names the repository in error messages. An empty body means the built-in template.
    pub fn parse(origin: &str, text: &str, source: PolicySource) -> Result<Self, PolicyError> {
        let (front, body) = split_front_matter(text).ok_or_else(|| PolicyError::Malformed {
            repo: origin.to_owned(),
            message: "the front matter opened with `---` is never closed by a `---` line".into(),
        })?;
        let settings = match front {
            Some(yaml) if !yaml.trim().is_empty() => {
                serde_norway::from_str::<PolicySettings>(yaml).map_err(|e| PolicyError::Settings {
                    repo: origin.to_owned(),
                    message: e.to_string(),
                })?
            }
            _ => PolicySettings::default(),
        };
        let template = if body.trim().is_empty() {
            BUILT_IN_TEMPLATE
        } else {
            body
        };
        check_template(origin, template)?;
        Ok(Self {
            settings,
            source,
            template: template.to_owned(),
            label: origin.to_owned(),
        })
    }

    /// The prompt for `context`. Errors name the unknown variable or filter, or what failed; an
    /// undefined value names the expression and why it is undefined (`` `l.name` is undefined
    /// (line 1): `l` is an item of `issue.labels`, and labels are plain names ``).
    pub fn render(&self, context: &PromptContext) -> Result<String, PolicyError> {
        let env = environment();
        let template_error = |e: minijinja::Error| PolicyError::Template {
            repo: self.label.clone(),
            message: match e.kind() {
                minijinja::ErrorKind::UndefinedError => explain_undefined(&self.template, &e),
                _ => describe(&e),
            },
        };
        let template = env.template_from_str(&self.template).map_err(template_error)?;
        template.render(context).map_err(template_error)
    }

    /// The template text (for `afk` to show what would be sent).
    pub fn template(&self) -> &str {
        &self.template
    }
}

pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

/// Compiles the template and rejects any variable afk does not provide, naming it.
fn check_template(origin: &str, template: &str) -> Result<(), PolicyError> {
    let env = environment();
    let compiled = env
        .template_from_str(template)
        .map_err(|e| PolicyError::Template {
            repo: origin.to_owned(),
            message: describe(&e),
        })?;
    let unknown: BTreeSet<String> = compiled
        .undeclared_variables(true)
        .into_iter()
        .filter(|name| {
            let mut parts = name.split('.');
            let top = parts.next().unwrap_or_default();
            match (top, parts.next()) {
                ("issue", Some(field)) => !ISSUE_FIELDS.contains(&field),
                (top, _) => !TEMPLATE_VARIABLES.contains(&top),
            }
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = unknown.iter().map(|n| format!("`{n}`")).collect();
    Err(PolicyError::Template {
        repo: origin.to_owned(),
        message: format!(
            "unknown variable {}; available: issue.{{{}}}, {}",
            names.join(", "),
            ISSUE_FIELDS.join(", "),
            TEMPLATE_VARIABLES[1..].join(", ")
        ),
    })
}

/// minijinja's error with its detail and line, e.g. "unknown filter: filter shout is unknown (line 1)".
pub(crate) fn describe(e: &minijinja::Error) -> String {
    let mut text = e.kind().to_string();
    if let Some(detail) = e.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(line) = e.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// What an undefined value in `template` is and why, from minijinja's error `e` (which says only
/// "undefined value" and where): the expression at fault and what the value it is read from
/// holds, e.g. "`l.name` is undefined (line 1): `l` is an item of `issue.labels`, and labels are
/// plain names (strings) with no attributes; write `{{ l }}`". Falls back to the tag's text.
fn explain_undefined(template: &str, e: &minijinja::Error) -> String {
    let line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
    let Some(at) = e.range().map(|r| r.start).filter(|at| *at <= template.len()) else {
        return describe(e);
    };
    let Some(tag) = enclosing_tag(template, at) else {
        return describe(e);
    };
    let loops = loop_variables(&template[..at.min(template.len())]);
    for chain in chains(tag) {
        if let Some(why) = why_undefined(&chain, &loops) {
            return format!("`{}` is undefined{line}: {why}", chain.text);
        }
    }
    format!("a value in `{}` is undefined{line}", tag.trim())
}

/// What a template value holds, as far as afk knows its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `issue`: a map of [`ISSUE_FIELDS`].
    Issue,
    /// `issue.labels`: a list of names.
    Labels,
    /// One of `issue.labels`: a plain name.
    Label,
    /// Text (`issue.title`, `repo`, ...).
    Text,
    /// Text, or none on a first attempt (`previous_error`).
    TextOrNone,
    /// A number (`issue.number`, `attempt`).
    Number,
}

impl Shape {
    fn of_variable(name: &str) -> Option<Shape> {
        Some(match name {
            "issue" => Shape::Issue,
            "repo" => Shape::Text,
            "attempt" => Shape::Number,
            "previous_error" => Shape::TextOrNone,
            _ => return None,
        })
    }

    fn of_issue_field(name: &str) -> Option<Shape> {
        Some(match name {
            "number" => Shape::Number,
            "labels" => Shape::Labels,
            "title" | "body" | "author" | "url" => Shape::Text,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Shape::Issue => "the issue (fields number, title, body, labels, author, url)",
            Shape::Labels => "a list of label names",
            Shape::Label => "a plain name (a string)",
            Shape::Text => "text (a string)",
            Shape::TextOrNone => "text, or none on a first attempt",
            Shape::Number => "a number",
        }
    }
}

/// A variable with attributes or indexes read from it, as written: `l.name`, `issue.labels[0]`.
#[derive(Debug, PartialEq, Eq)]
struct Chain {
    text: String,
    root: String,
    /// Each step: `Some(attribute)`, or `None` for an index.
    steps: Vec<Option<String>>,
}

/// Why `chain` is undefined in afk's context (with `loops`, the loop variables in scope and what
/// they iterate over), or `None` when it is not, or afk cannot tell.
fn why_undefined(chain: &Chain, loops: &[(String, String)]) -> Option<String> {
    let (mut shape, mut path) = match loops.iter().rev().find(|(var, _)| *var == chain.root) {
        Some((_, over)) if over == "issue.labels" => (Shape::Label, chain.root.clone()),
        Some(_) => return None,
        None => (Shape::of_variable(&chain.root)?, chain.root.clone()),
    };
    for step in &chain.steps {
        let next = match (shape, step) {
            (Shape::Issue, Some(field)) => match Shape::of_issue_field(field) {
                Some(next) => next,
                None => {
                    return Some(format!(
                        "the issue has no field `{field}`; its fields are {}",
                        ISSUE_FIELDS.join(", ")
                    ))
                }
            },
            (Shape::Labels, None) => Shape::Label,
            (Shape::Label, Some(attribute)) => {
                let item = match path == chain.root {
                    true => format!("`{path}` is an item of `issue.labels`"),
                    false => format!("`{path}` is a label"),
                };
                return Some(format!(
                    "{item}, and labels are plain names (strings) with no attribute `{attribute}`; \
                     write `{{{{ {path} }}}}` for the name"
                ));
            }
            (shape, Some(attribute)) => {
                return Some(format!(
                    "`{path}` is {}, which has no attribute `{attribute}`",
                    shape.describe()
                ))
            }
            // An index into text or a list may be out of range: afk cannot tell from here.
            (_, None) => return None,
        };
        path = match step {
            Some(attribute) => format!("{path}.{attribute}"),
            None => format!("{path}[…]"),
        };
        shape = next;
    }
    None
}

/// The text inside the `{{ … }}` or `{% … %}` tag around byte `at` of `template`.
fn enclosing_tag(template: &str, at: usize) -> Option<&str> {
    let before = template.get(..at)?;
    let open = before.rfind("{{").into_iter().chain(before.rfind("{%")).max()?;
    let start = open + 2;
    let close = ["}}", "%}"]
        .iter()
        .filter_map(|c| template[start..].find(c))
        .min()?;
    let inner = &template[start..start + close];
    Some(inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace()))
}

/// The loop variables of the `{% for X in CHAIN %}` tags in `before` (outermost first), with
/// the chain each iterates over. Loops already closed are kept too: a best effort for messages.
fn loop_variables(before: &str) -> Vec<(String, String)> {
    let mut loops = Vec::new();
    let mut rest = before;
    while let Some(open) = rest.find("{%") {
        rest = &rest[open + 2..];
        let Some(close) = rest.find("%}") else { break };
        let tag = rest[..close].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let words: Vec<&str> = tag.split_whitespace().collect();
        if let ["for", var, "in", over, ..] = words.as_slice() {
            loops.push((var.to_string(), over.to_string()));
        }
        rest = &rest[close + 2..];
    }
    loops
}

/// Keywords and tests of the template language: never a variable.
const TEMPLATE_WORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "elif",
    "endif",
    "for",
    "endfor",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "loop",
    "set",
    "endset",
    "defined",
    "undefined",
    "recursive",
];

/// The variable chains written in a tag's text, left to right (string literals, filters, tests,
/// calls and keywords skipped).
fn chains(tag: &str) -> Vec<Chain> {
    let chars: Vec<char> = tag.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if !(c.is_alphabetic() || c == '_') {
            i += 1;
            continue;
        }
        let previous = chars[..i].iter().rev().find(|c| !c.is_whitespace()).copied();
        let start = i;
        while i < chars.len() && ident(chars[i]) {
            i += 1;
        }
        let root: String = chars[start..i].iter().collect();
        let mut steps = Vec::new();
        loop {
            match chars.get(i) {
                Some('.') if chars.get(i + 1).is_some_and(|c| c.is_alphabetic() || *c == '_') => {
                    let from = i + 1;
                    i = from;
                    while i < chars.len() && ident(chars[i]) {
                        i += 1;
                    }
                    steps.push(Some(chars[from..i].iter().collect()));
                }
                Some('[') => match chars[i..].iter().position(|c| *c == ']') {
                    Some(end) => {
                        steps.push(None);
                        i += end + 1;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        let before: String = chars[..start].iter().collect();
        let previous_word = before.split_whitespace().next_back();
        let is_filter_or_test = previous == Some('|') || previous_word == Some("is");
        let is_call = chars.get(i) == Some(&'(');
        if is_filter_or_test || is_call || TEMPLATE_WORDS.contains(&root.as_str()) {
            continue;
        }
        found.push(Chain {
            text: chars[start..i].iter().collect(),
            root,
            steps,
        });
    }
    found
}

/// `(front matter, body)`; `None` when the front matter is never closed.
fn split_front_matter(text: &str) -> Option<(Option<&str>, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return Some((None, text));
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end_matches(['\r', '\n']) == "---" {
            return Some((Some(&rest[..offset]), &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

/// Fetches and caches each repository's policy. `AFK.md` is fetched conditionally (a 304 when
/// unchanged) and re-parsed only when its blob sha changes.
pub struct PolicyStore {
    client: GitHubClient,
    cache: Mutex<HashMap<Repo, Arc<RepoPolicy>>>,
}

impl fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyStore").finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// A store over `client`.
    pub fn new(client: GitHubClient) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The current policy of `repo`: its `AFK.md` on the default branch, or the built-in one
    /// when there is none.
    pub async fn policy(&self, repo: &Repo) -> Result<Arc<RepoPolicy>, PolicyError> {
        let url = self.client.url(
            &["repos", repo.owner(), repo.name(), "contents", POLICY_FILE],
            &[],
        );
        let contents = match self.client.get_json::<model::Contents>(url).await {
            Ok(c) => c,
            Err(GitHubError::NotFound { .. }) => {
                let policy = Arc::new(RepoPolicy::built_in());
                lock(&self.cache).insert(repo.clone(), policy.clone());
                return Ok(policy);
            }
            Err(source) => {
                return Err(PolicyError::Fetch {
                    repo: repo.clone(),
                    source,
                })
            }
        };
        if let Some(cached) = lock(&self.cache).get(repo) {
            if cached.source
                == (PolicySource::AfkMd {
                    sha: contents.sha.clone(),
                })
            {
                return Ok(cached.clone());
            }
        }
        let origin = repo.to_string();
        let text = decode_contents(&origin, &contents)?;
        let policy = Arc::new(RepoPolicy::parse(
            &origin,
            &text,
            PolicySource::AfkMd { sha: contents.sha },
        )?);
        lock(&self.cache).insert(repo.clone(), policy.clone());
        Ok(policy)
    }
}

fn decode_contents(origin: &str, contents: &model::Contents) -> Result<String, PolicyError> {
    if contents.encoding != "base64" {
        return Err(PolicyError::Malformed {
            repo: origin.to_owned(),
            message: format!(
                "GitHub sent it with encoding {:?}; only base64 is supported",
                contents.encoding
            ),
        });
    }
    // GitHub wraps the base64 at 60 columns.
    let packed: String = contents
        .content
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(packed)
        .map_err(|e| PolicyError::Malformed {
            repo: origin.to_owned(),
            message: format!("its content is not valid base64: {e}"),
        })?;
    String::from_utf8(bytes).map_err(|_| PolicyError::Malformed {
        repo: origin.to_owned(),
        message: "it is not valid UTF-8".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> PromptContext {
        PromptContext {
            issue: PromptIssue {
                number: 7,
                title: "Crash on empty input".into(),
                body: "It crashes.".into(),
                labels: vec!["afk".into(), "bug".into()],
                author: "octocat".into(),
                url: "https://github.com/acme/widgets/issues/7".into(),
            },
            repo: "acme/widgets".into(),
            attempt: 2,
            previous_error: Some("tests failed".into()),
        }
    }

    #[test]
    fn built_in_template_mentions_the_issue_and_the_previous_error() {
        let prompt = RepoPolicy::built_in().render(&context()).unwrap();
        assert!(
            prompt.contains("#7 in acme/widgets: Crash on empty input"),
            "{prompt}"
        );
        assert!(prompt.contains("labels: afk, bug"), "{prompt}");
        assert!(
            prompt.contains("attempt 2") && prompt.contains("tests failed"),
            "{prompt}"
        );
        let mut first = context();
        first.attempt = 1;
        first.previous_error = None;
        let prompt = RepoPolicy::built_in().render(&first).unwrap();
        assert!(!prompt.contains("previous attempt"), "{prompt}");
    }

    #[test]
    fn front_matter_is_optional_and_must_be_closed() {
        assert_eq!(split_front_matter("hello"), Some((None, "hello")));
        assert_eq!(
            split_front_matter("---\na: 1\n---\nbody\n"),
            Some((Some("a: 1\n"), "body\n"))
        );
        assert_eq!(
            split_front_matter("---\r\na: 1\r\n---\r\nbody"),
            Some((Some("a: 1\r\n"), "body"))
        );
        assert_eq!(split_front_matter("---\na: 1\n"), None);
    }

    #[test]
    fn an_undefined_value_names_the_expression_and_why() {
        // (template, what the error must say)
        let cases: &[(&str, &[&str])] = &[
            (
                "{% for l in issue.labels %}{{ l.name }}{% endfor %}",
                &[
                    "`l.name` is undefined (line 1)",
                    "`l` is an item of `issue.labels`",
                    "plain names",
                    "`{{ l }}`",
                ],
            ),
            (
                "Labels:\n{% for label in issue.labels -%}\n- {{ label.name | upper }}\n{% endfor %}",
                &["`label.name` is undefined (line 3)", "plain names"],
            ),
            (
                "{% for l in issue.labels %}{% if l.name == 'bug' %}!{% endif %}{% endfor %}",
                &["`l.name` is undefined", "plain names"],
            ),
            (
                "{{ issue.labels[0].name }}",
                &[
                    "`issue.labels[0].name` is undefined",
                    "`issue.labels[…]` is a label",
                ],
            ),
            (
                "a\n{{ issue.title.text }}",
                &[
                    "`issue.title.text` is undefined (line 2)",
                    "`issue.title` is text",
                    "`text`",
                ],
            ),
            (
                "{{ attempt.count }}",
                &["`attempt.count` is undefined", "`attempt` is a number"],
            ),
            (
                "{{ repo ~ ': ' ~ issue.number.value }}",
                &["`issue.number.value`", "a number"],
            ),
        ];
        for (template, said) in cases {
            let policy = RepoPolicy::parse("acme/widgets", template, PolicySource::BuiltIn).unwrap();
            let err = policy.render(&context()).unwrap_err().to_string();
            assert!(
                err.starts_with("AFK.md of acme/widgets: prompt template error: "),
                "{err}"
            );
            assert!(said.iter().all(|s| err.contains(s)), "{template:?}: {err}");
        }
    }

    #[test]
    fn unknown_filter_is_named() {
        let policy = RepoPolicy::parse("acme/widgets", "{{ issue.title | shout }}", PolicySource::BuiltIn)
            .unwrap_or_else(|e| panic!("unknown filters are caught at render time, but parse said: {e}"));
        let err = policy.render(&context()).unwrap_err().to_string();
        assert!(err.contains("shout"), "{err}");
    }
}
