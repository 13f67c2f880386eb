//! afk's log: one record per line on stderr, as text for people or JSON for collectors, with no
//! secret at any level.
//!
//! - **Level**: `AFK_LOG` (an `EnvFilter` directive such as `info` or `afk=debug,t3_client=trace`),
//!   else `RUST_LOG`, else the command's default (`info`; `warn` for `afk demo`).
//! - **Format**: `--log-format text|json` (or `AFK_LOG_FORMAT`). Text is `TIME LEVEL message
//!   key=value…`, coloured only when stderr is a terminal (and `NO_COLOR` is unset); JSON is one
//!   object per line with `time`, `level`, `message`, the job's `issue`, `job`, `attempt` and
//!   `thread` when the line concerns one (from the event or the spans it is in), any other field,
//!   and `target`.
//! - **One record per line**: a message of several lines (an outside error: Vault's multi-error
//!   text, a stack trace) keeps its first line as the message and the whole text in `detail`.
//! - **No secret**: every line goes through [`ScrubbingMakeWriter`] (every value afk holds, every
//!   credential form, userinfo in URLs), and the libraries that log raw requests and handshakes
//!   at TRACE (the WebSocket client, hyper, reqwest, h2, rustls) are held to DEBUG whatever the
//!   filter says.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use afk_secrets::redact::ScrubbingMakeWriter;
use chrono::{SecondsFormat, Utc};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log records are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: `TIME LEVEL message key=value…`.
    #[default]
    Text,
    /// For collectors: one JSON object per line.
    Json,
}

/// The crates whose TRACE output carries raw requests, headers or handshakes (an `Authorization`
/// header among them): held to DEBUG, whatever `AFK_LOG` asks.
pub const NOISY_TARGETS: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "rustls",
];

/// The order of the fields a collector looks for first; any other follows in recorded order.
const LEADING_FIELDS: &[&str] = &["issue", "job", "attempt", "thread"];

/// True for an event or span that afk never logs: TRACE from one of [`NOISY_TARGETS`].
pub fn is_silenced(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::TRACE
        && NOISY_TARGETS.iter().any(|noisy| {
            meta.target() == *noisy
                || meta
                    .target()
                    .strip_prefix(noisy)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
}

/// The filter `AFK_LOG` asks for (else `RUST_LOG`, else `default`), read through `env`; and, when
/// the variable set cannot be read as a filter, what is wrong with it (the default applies then).
pub fn env_filter(default: &str, env: impl Fn(&str) -> Option<String>) -> (EnvFilter, Option<String>) {
    let chosen = ["AFK_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|var| env(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v)));
    match chosen {
        None => (EnvFilter::new(default), None),
        Some((var, value)) => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(error) => (
                EnvFilter::new(default),
                Some(format!(
                    "{var}={value:?} is not a log filter ({error}); logging at {default}. \
                     Write a level (error, warn, info, debug, trace) or directives such as afk=debug,t3_client=trace"
                )),
            ),
        },
    }
}

/// afk's formatting layer writing to `writer`, with the noisy libraries held to DEBUG; compose it
/// with a level filter (`.with_filter(env_filter)`).
pub fn layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .event_format(AfkFormat { format, ansi })
        .fmt_fields(JsonFields)
        .with_ansi(ansi)
        .with_writer(writer)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| !is_silenced(meta)))
}

/// Sets up the process's log on stderr, scrubbed, in `format`, at `default_level` unless
/// `AFK_LOG` or `RUST_LOG` say otherwise. Records of the `log` crate (which some libraries use)
/// go the same way. Does nothing when a logger is set already.
pub fn init(format: LogFormat, default_level: &str) {
    let (filter, problem) = env_filter(default_level, |var| std::env::var(var).ok());
    let ansi = format == LogFormat::Text
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let writer = ScrubbingMakeWriter::new(std::io::stderr);
    let installed = tracing_subscriber::registry()
        .with(layer(format, ansi, writer).with_filter(filter))
        .try_init()
        .is_ok();
    if let (true, Some(problem)) = (installed, problem) {
        tracing::warn!("{problem}");
    }
}

/// Formats each event as one line of text or JSON; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct AfkFormat {
    format: LogFormat,
    ansi: bool,
}

impl<S, N> FormatEvent<S, N> for AfkFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = FieldMap::default();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(stored) = span.extensions().get::<FormattedFields<N>>() {
                    fields.merge_json(&stored.fields);
                }
            }
        }
        event.record(&mut fields);
        let line = Line::new(event.metadata(), fields);
        match self.format {
            LogFormat::Json => writer.write_str(&line.json())?,
            LogFormat::Text => writer.write_str(&line.text(self.ansi))?,
        }
        writer.write_char('\n')
    }
}

/// One record, ready to be written.
struct Line {
    time: String,
    level: Level,
    message: String,
    fields: Vec<(String, Value)>,
    target: String,
}

impl Line {
    fn new(meta: &Metadata<'_>, mut fields: FieldMap) -> Line {
        let message = match fields.remove("message") {
            Some(Value::String(text)) => text,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        // A record of the `log` crate names its real target in a field.
        let target = match fields.remove("log.target") {
            Some(Value::String(target)) => target,
            _ => meta.target().to_owned(),
        };
        fields.0.retain(|(name, _)| !name.starts_with("log."));
        let (message, detail) = fold(&message);
        if let Some(detail) = detail {
            if !fields.0.iter().any(|(name, _)| name == "detail") {
                fields.0.push(("detail".into(), Value::String(detail)));
            }
        }
        let mut fields = fields.0;
        fields.sort_by_key(|(name, _)| {
            LEADING_FIELDS
                .iter()
                .position(|leading| leading == name)
                .unwrap_or(LEADING_FIELDS.len())
        });
        Line {
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            level: *meta.level(),
            message,
            fields,
            target,
        }
    }

    fn json(&self) -> String {
        let mut out = String::with_capacity(128 + self.message.len());
        out.push('{');
        let head = [
            ("time", Value::String(self.time.clone())),
            ("level", Value::String(self.level.to_string())),
            ("message", Value::String(self.message.clone())),
        ];
        let tail = [("target", Value::String(self.target.clone()))];
        let all = head
            .iter()
            .map(|(k, v)| (*k, v))
            .chain(self.fields.iter().map(|(k, v)| (k.as_str(), v)))
            .chain(tail.iter().map(|(k, v)| (*k, v)));
        for (n, (name, value)) in all.enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(name.to_owned()).to_string());
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push('}');
        out
    }

    fn text(&self, ansi: bool) -> String {
        let level = format!("{:>5}", self.level);
        let level = match (ansi, self.level) {
            (false, _) => level,
            (true, Level::ERROR) => format!("\x1b[31m{level}\x1b[0m"),
            (true, Level::WARN) => format!("\x1b[33m{level}\x1b[0m"),
            (true, Level::INFO) => format!("\x1b[32m{level}\x1b[0m"),
            (true, Level::DEBUG) => format!("\x1b[34m{level}\x1b[0m"),
            (true, Level::TRACE) => format!("\x1b[35m{level}\x1b[0m"),
        };
        let mut out = format!("{} {level} {}", self.time, self.message);
        for (name, value) in &self.fields {
            let _ = write!(out, " {name}={}", text_value(value));
        }
        out
    }
}

/// A field's value in a text line: bare when it is one plain word, else quoted with escapes (so
/// that a value never breaks the line).
fn text_value(value: &Value) -> String {
    match value {
        Value::String(text)
            if !text.is_empty()
                && !text
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\')) =>
        {
            text.clone()
        }
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

/// A message as one line (its first non-empty line, trimmed), and the whole text when that line
/// holds only part of it.
pub fn fold(message: &str) -> (String, Option<String>) {
    if !message.contains(['\n', '\r']) {
        return (message.to_owned(), None);
    }
    let whole = message.trim();
    let first = whole
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if first == whole {
        return (first.to_owned(), None);
    }
    (format!("{first} …"), Some(whole.to_owned()))
}

/// Fields as recorded, in order; a field recorded again replaces the earlier value (an event's
/// `issue` over its span's).
#[derive(Debug, Default)]
struct FieldMap(Vec<(String, Value)>);

impl FieldMap {
    fn insert(&mut self, name: &str, value: Value) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    fn remove(&mut self, name: &str) -> Option<Value> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(at).1)
    }

    /// Adds the fields of a span, stored as a JSON object by [`JsonFields`].
    fn merge_json(&mut self, stored: &str) {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(stored) {
            for (name, value) in map {
                self.insert(&name, value);
            }
        }
    }

    fn to_json(&self) -> String {
        let map: serde_json::Map<String, Value> = self.0.iter().cloned().collect();
        Value::Object(map).to_string()
    }
}

impl Visit for FieldMap {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field.name(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field.name(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field.name(), Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field.name(), Value::String(format!("{value:?}")));
    }
}

/// Keeps each span's fields as a JSON object, so that [`AfkFormat`] can put them on the lines of
/// the events inside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut map = FieldMap::default();
        fields.record(&mut map);
        writer.write_str(&map.to_json())
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut map = FieldMap::default();
        map.merge_json(&current.fields);
        fields.record(&mut map);
        current.fields = map.to_json();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// What `emit` logs at TRACE, formatted as `format`.
    fn logged(format: LogFormat, ansi: bool, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            layer(format, ansi, move || writer.clone())
                .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
        );
        tracing::subscriber::with_default(subscriber, emit);
        buffer.text()
    }

    #[test]
    fn json_lines_carry_the_job_fields_from_spans_and_events() {
        let out = logged(LogFormat::Json, false, || {
            let span = tracing::info_span!("job", issue = "acme/api#7", job = 3_i64, attempt = 2_u32);
            let _entered = span.enter();
            tracing::info!(thread = "th-1", "acme/api#7 running -> succeeded: done");
            tracing::warn!(issue = "acme/web#1", "another issue");
        });
        let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{out}");
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "acme/api#7 running -> succeeded: done");
        assert_eq!(first["issue"], "acme/api#7");
        assert_eq!(first["job"], 3);
        assert_eq!(first["attempt"], 2);
        assert_eq!(first["thread"], "th-1");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert!(first["target"].as_str().unwrap().starts_with("afk"));
        assert_eq!(
            lines[1]["issue"], "acme/web#1",
            "the event's field wins over its span's"
        );
        let keys: Vec<&str> = out
            .lines()
            .next()
            .unwrap()
            .split("\":")
            .map(|k| k.rsplit('"').next().unwrap())
            .collect();
        assert_eq!(
            &keys[..7],
            ["time", "level", "message", "issue", "job", "attempt", "thread"],
            "{out}"
        );
    }

    #[test]
    fn a_multi_line_message_is_one_record_with_the_whole_text_in_detail() {
        let vault = "Vault answered 403:\n2 errors occurred:\n\t* permission denied\n\t* invalid token\n";
        for format in [LogFormat::Text, LogFormat::Json] {
            let out = logged(format, false, || tracing::warn!("{vault}"));
            assert_eq!(out.lines().count(), 1, "{format:?}: {out}");
            assert!(out.contains("Vault answered 403: …"), "{out}");
            assert!(out.contains("invalid token"), "the whole text is kept: {out}");
        }
        let out = logged(LogFormat::Json, false, || tracing::warn!("{vault}"));
        let line: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(line["message"], "Vault answered 403: …");
        assert_eq!(line["detail"], vault.trim());
    }

    #[test]
    fn text_has_colour_only_when_asked_and_quotes_values_with_spaces() {
        let plain = logged(LogFormat::Text, false, || {
            tracing::warn!(reason = "it is sealed", kind = "sealed", "waiting")
        });
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(
            plain.contains(" WARN waiting reason=\"it is sealed\" kind=sealed"),
            "{plain}"
        );
        let coloured = logged(LogFormat::Text, true, || tracing::warn!("waiting"));
        assert!(coloured.contains("\x1b[33m"), "{coloured}");
    }

    #[test]
    fn the_libraries_that_log_raw_requests_are_held_to_debug() {
        let out = logged(LogFormat::Text, false, || {
            tracing::trace!(target: "tungstenite::handshake::client", "Request: authorization: Bearer x");
            tracing::trace!(target: "hyper_util::client", "raw headers");
            tracing::debug!(target: "hyper_util::client", "connecting to 127.0.0.1");
            tracing::trace!(target: "hyperlink", "not a noisy crate");
        });
        assert!(!out.contains("Request:") && !out.contains("raw headers"), "{out}");
        assert!(
            out.contains("connecting to") && out.contains("not a noisy crate"),
            "{out}"
        );
    }

    #[test]
    fn afk_log_wins_over_rust_log_and_a_bad_filter_says_what_is_wrong() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        let (filter, problem) = env_filter("info", env(&[("AFK_LOG", "debug"), ("RUST_LOG", "trace")]));
        assert_eq!(filter.to_string(), "debug");
        assert!(problem.is_none());
        let (filter, _) = env_filter("info", env(&[("RUST_LOG", "afk=trace")]));
        assert_eq!(filter.to_string(), "afk=trace");
        let (filter, _) = env_filter("warn", env(&[]));
        assert_eq!(filter.to_string(), "warn");
        let (filter, problem) = env_filter("info", env(&[("AFK_LOG", "afk=loud")]));
        assert_eq!(filter.to_string(), "info");
        assert!(problem.unwrap().contains("AFK_LOG=\"afk=loud\""));
    }
}
