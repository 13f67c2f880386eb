//! Fuzzing GitHub's webhook payloads (proptest): whatever a verified delivery holds, reading it
//! never panics; an `issues` delivery is an event, ignored, or refused with why. Cheap by default
//! (proptest's 256 cases); `PROPTEST_CASES=N` runs longer.

use afk_github::read_delivery;
use proptest::prelude::*;
use serde_json::{json, Value};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("labeled"),
            Just("closed"),
            Just("../.."),
            Just("acme/api"),
            Just("")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_body_never_panics(event in prop_oneof![Just("issues".to_owned()), Just("issue_comment".to_owned()), Just("ping".to_owned()), ".{0,8}"], body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_delivery(&event, &body);
    }

    #[test]
    fn a_payload_with_any_field_changed_never_panics(
        field in prop_oneof![Just("action"), Just("issue"), Just("repository"), Just("label"), Just("number"), Just("full_name")],
        with in any_json(),
    ) {
        let mut payload = json!({
            "action": "labeled",
            "label": {"name": "afk"},
            "issue": {"number": 7, "title": "t"},
            "repository": {"full_name": "acme/api"},
        });
        match field {
            "number" => payload["issue"]["number"] = with,
            "full_name" => payload["repository"]["full_name"] = with,
            other => payload[other] = with,
        }
        if let Ok(Some((repo, _, _))) = read_delivery("issues", payload.to_string().as_bytes()) {
            prop_assert!(repo.name() != ".." && repo.name() != "." && !repo.owner().is_empty());
        }
    }

    #[test]
    fn a_comment_payload_with_any_field_changed_never_panics(
        field in prop_oneof![Just("action"), Just("issue"), Just("comment"), Just("body"), Just("user"), Just("id"), Just("updated_at")],
        with in any_json(),
    ) {
        let mut payload = json!({
            "action": "created",
            "issue": {"number": 7, "title": "t"},
            "comment": {"id": 1, "body": "/afk stop", "user": {"login": "mona"}, "html_url": "https://x/1",
                "updated_at": "2026-01-01T00:00:00Z"},
            "repository": {"full_name": "acme/api"},
        });
        match field {
            "body" | "user" | "id" | "updated_at" => payload["comment"][field] = with,
            other => payload[other] = with,
        }
        if let Ok(Some((_, _, afk_github::WebhookEventKind::Commented { comment, .. }))) =
            read_delivery("issue_comment", payload.to_string().as_bytes())
        {
            let _ = afk_github::parse_command(&comment.body);
        }
    }
}

proptest! {
    #[test]
    fn any_comment_body_parses_without_panicking(prefix in prop_oneof![Just(""), Just("/afk"), Just("/afk "), Just("\n /afk")], body in ".{0,300}") {
        let _ = afk_github::parse_command(&format!("{prefix}{body}"));
    }
}
