//! Fuzzing afk's own parsers of outside input (proptest): the local issue file and the
//! configuration (the file and its `AFK_...` overrides). Whatever they hold, reading them never
//! panics, and what is accepted keeps the bounds. Cheap by default (proptest's 256 cases);
//! `PROPTEST_CASES=N` runs longer.

use std::path::Path;

use afk::config::{env_name, Config};
use afk::source::local::parse_issue;
use proptest::prelude::*;

/// A YAML-ish value: numbers at and past every integer bound, strings with odd characters.
fn yaml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("9223372036854775808".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        Just("[a, [b, {c: d}]]".to_owned()),
        Just("&a [*a]".to_owned()),
        Just("!!binary aGVsbG8=".to_owned()),
        ".{0,16}",
        "[a-z/._-]{0,12}",
    ]
}

fn issue_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("repo"),
        Just("number"),
        Just("title"),
        Just("labels"),
        Just("priority"),
        Just("other")
    ];
    (
        prop::collection::vec((key, yaml_value()), 0..7),
        ".{0,64}",
        any::<bool>(),
    )
        .prop_map(|(fields, body, close)| {
            let mut text = String::from("---\n");
            for (key, value) in fields {
                text.push_str(&format!("{key}: {value}\n"));
            }
            if close {
                text.push_str("---\n");
            }
            text.push_str(&body);
            text
        })
}

/// A TOML-ish configuration: known keys with values of any type and size.
fn config_text() -> impl Strategy<Value = String> {
    let section_key = prop_oneof![
        Just("t3.url"),
        Just("t3.branch_prefix"),
        Just("t3.base_branch"),
        Just("t3.instance_id"),
        Just("t3.connect_timeout"),
        Just("ledger.url"),
        Just("limits.max_concurrent"),
        Just("limits.per_repo"),
        Just("limits.max_attempts"),
        Just("watch.poll_interval"),
        Just("watch.turn_timeout"),
        Just("retry.initial"),
        Just("retry.cap"),
        Just("retry.max_dispatch_tries"),
        Just("github.repos"),
        Just("github.poll_interval"),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("\"300000y\"".to_owned()),
        Just("\"1ns\"".to_owned()),
        Just("\"0s\"".to_owned()),
        Just("\"18446744073709551615s\"".to_owned()),
        Just("\"http://\"".to_owned()),
        Just("[\"../..\"]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        "\"[ -~]{0,16}\"",
        "[ -~]{0,16}",
    ];
    prop::collection::vec((section_key, value), 0..6).prop_map(|pairs| {
        let mut text = String::new();
        for (key, value) in pairs {
            let (section, name) = key.split_once('.').unwrap();
            text.push_str(&format!("[{section}]\n{name} = {value}\n"));
        }
        text
    })
}

proptest! {
    #[test]
    fn any_issue_file_never_panics_and_what_is_taken_fits_the_ledger(text in prop_oneof![issue_text(), ".{0,200}"]) {
        if let Ok(issue) = parse_issue(Path::new("fuzz.md"), &text) {
            prop_assert!(issue.key.number >= 1 && issue.key.number <= i64::MAX as u64);
            prop_assert!(!issue.title.contains('\0') && !issue.body.contains('\0'));
        }
    }

    #[test]
    fn any_configuration_never_panics_and_what_loads_keeps_the_bounds(
        text in config_text(),
        env in prop::collection::vec((prop_oneof![Just("retry.cap"), Just("watch.poll_interval"), Just("t3.url"), Just("limits.per_repo")], "[ -~]{0,12}"), 0..3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("afk.toml");
        std::fs::write(&path, &text).unwrap();
        let vars: Vec<(String, String)> = env.into_iter().map(|(k, v)| (env_name(k), v)).collect();
        let lookup = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if let Ok(config) = Config::load(Some(&path), &lookup) {
            prop_assert!(config.watch.poll_interval >= std::time::Duration::from_millis(100));
            prop_assert!(config.retry.cap >= config.retry.initial);
            let policy = config.retry_policy();
            // The back-off of any attempt is a date afk can compute.
            for n in [1, 2, 31, 32, u32::MAX] {
                let wait = chrono::Duration::from_std(policy.backoff(n)).unwrap();
                prop_assert!(chrono::Utc::now().checked_add_signed(wait).is_some());
            }
        }
    }
}
