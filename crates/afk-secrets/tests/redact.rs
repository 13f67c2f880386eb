//! Secret values never reach output: every value a provider returns is registered, `scrub`
//! removes registered values and credential forms from any text, and the log writer scrubs
//! every line, even one written in pieces.

mod support;

use std::io::Write;

use afk_secrets::redact::{scrub, Redactor, ScrubbingMakeWriter, ScrubbingWriter, REDACTED};
use afk_secrets::testing::LogCapture;
use afk_secrets::{FileProvider, Freshness};
use support::value;

#[tokio::test]
async fn a_value_a_provider_returned_is_scrubbed_from_any_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "t3-SECRET-from-a-file-1a2b\n").unwrap();
    let token = value(&FileProvider::new(&path), Freshness::Cached).await;

    // An outside error text that echoes the token, as a T3 or GitHub body may.
    let body = format!("{{\"error\":\"token {token} is expired\"}}");
    assert_eq!(scrub(&body), "{\"error\":\"token [redacted] is expired\"}");
    // In a URL: as userinfo, in a query string, in a path.
    let url = format!("wss://afk:{token}@t3.example/ws?token={token}&x=/{token}/");
    assert_eq!(
        scrub(&url),
        "wss://[redacted]@t3.example/ws?token=[redacted]&x=/[redacted]/"
    );
}

#[test]
fn the_log_writer_scrubs_every_line_written_through_tracing() {
    let redactor = std::sync::Arc::new(Redactor::new());
    redactor.register("gh-installation-token-0a1b2c");
    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(ScrubbingMakeWriter::with_redactor(capture.clone(), redactor))
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // What a library might log about a raw request at TRACE.
        tracing::trace!(
            request = r#"GET /ws HTTP/1.1 {"authorization": "Bearer t3-bearer-value-9z8y"}"#,
            "sending the handshake"
        );
        tracing::info!(url = "http://afk:hunter2@t3:3773", "connecting");
        tracing::warn!(body = "token gh-installation-token-0a1b2c refused", "GitHub said");
    });
    let log = capture.text();
    for secret in ["t3-bearer-value-9z8y", "hunter2", "gh-installation-token-0a1b2c"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert_eq!(log.matches(REDACTED).count(), 3, "{log}");
    assert_eq!(log.lines().count(), 3, "{log}");
}

#[test]
fn a_value_split_across_writes_is_still_scrubbed() {
    let redactor = std::sync::Arc::new(Redactor::new());
    redactor.register("split-secret-value-42");
    let capture = LogCapture::default();
    {
        let mut writer = ScrubbingWriter::new(capture.clone(), redactor.clone());
        writer.write_all(b"first line ok\nthe value split-sec").unwrap();
        // Nothing of an unfinished line goes out yet.
        assert_eq!(capture.text(), "first line ok\n");
        writer.write_all(b"ret-value-42 and Bearer abc").unwrap();
        writer
            .write_all(b"def\nlast line without newline split-secret-value-42")
            .unwrap();
    }
    assert_eq!(
        capture.text(),
        "first line ok\nthe value [redacted] and Bearer [redacted]\nlast line without newline [redacted]"
    );
}
