//! Fuzzing T3's read model and shell items (proptest): whatever T3 sends, decoding never panics,
//! and a document afk can read gives a [`Fleet`] in which every thread listed is either readable
//! or set aside as unreadable; the watcher's compact decoding ([`Fleet::decode_snapshot`],
//! [`Fleet::decode_shell`], [`FleetItem::decode`], [`ShellWaits::decode`]) reads and sets aside
//! exactly the threads the full wire types do. Cheap by default (proptest's 256 cases);
//! `PROPTEST_CASES=N` runs longer.
//!
//! The watcher's decodes read a document with a scanner written for T3's thread shape and fall
//! back to their `serde` path where it declines (`t3_client::wire::oracle` exposes both): every
//! document here is also decoded both ways, and the scanner must give nothing or exactly what
//! `serde` gives, and the decode as a whole exactly `serde`'s answer or error.

#[path = "../benches/support/read_model.rs"]
mod shapes;

use proptest::prelude::*;
use serde_json::{json, Value};
use t3_client::wire::{oracle, FleetItem, FleetThread, ShellItem, ShellSnapshot, ShellWaits};
use t3_client::{Fleet, ReadModel, ThreadId};

/// The view's threads (sorted by id) and the ids it sets aside (sorted): what the watcher reads.
/// The reasons given for setting a thread aside may word a type's name differently.
fn seen(fleet: &Fleet) -> (u64, Vec<FleetThread>, Vec<ThreadId>) {
    let mut threads: Vec<FleetThread> = fleet.threads().cloned().collect();
    threads.sort_by(|a, b| a.id().cmp(&b.id()));
    let mut unreadable: Vec<ThreadId> = fleet.unreadable_threads().map(|(id, _)| id.clone()).collect();
    unreadable.sort();
    (fleet.sequence(), threads, unreadable)
}

fn thread(id: &str) -> Value {
    json!({
        "id": id, "projectId": "proj", "title": "acme/widgets#42: Fix",
        "modelSelection": {"instanceId": "claudeAgent", "model": "claude-sonnet-4-5"},
        "runtimeMode": "full-access", "interactionMode": "default",
        "branch": "afk/issue-42", "worktreePath": null,
        "latestTurn": {"turnId": "turn-1", "state": "running", "requestedAt": "2026-11-24T19:14:36.200Z",
                       "startedAt": "2026-11-24T19:14:36.300Z", "completedAt": null, "assistantMessageId": null},
        "createdAt": "2026-11-24T19:14:36.116Z", "updatedAt": "2026-11-24T19:14:40.000Z",
        "archivedAt": null, "deletedAt": null,
        "session": {"threadId": id, "status": "running", "providerName": "claudeAgent",
                    "runtimeMode": "full-access", "activeTurnId": "turn-1", "lastError": null,
                    "updatedAt": "2026-11-24T19:14:40.000Z"}
    })
}

fn snapshot(threads: usize) -> Value {
    json!({
        "snapshotSequence": 12, "updatedAt": "2026-11-24T19:14:40.000Z",
        "projects": [{"id": "proj", "title": "w", "workspaceRoot": "/w", "defaultModelSelection": null,
                      "scripts": [], "createdAt": "2026-11-24T19:00:00.000Z",
                      "updatedAt": "2026-11-24T19:00:00.000Z", "deletedAt": null}],
        "threads": (0..threads).map(|i| thread(&format!("t{i}"))).collect::<Vec<_>>(),
    })
}

/// A JSON value of any shape, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("running"),
            Just("completed"),
            Just("paused"),
            Just("2026-02-30T00:00:00.000Z"),
            Just("9999-12-31T23:59:59.999Z"),
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

/// Replaces the value found by following `path` (indices into object keys and array items, modulo
/// their lengths) with `with`.
fn mutate(doc: &mut Value, path: &[usize], with: Value) {
    let Some((step, rest)) = path.split_first() else {
        *doc = with;
        return;
    };
    match doc {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(step % map.len()).cloned().unwrap();
            mutate(map.get_mut(&key).unwrap(), rest, with);
        }
        Value::Array(items) if !items.is_empty() => {
            let n = items.len();
            mutate(&mut items[step % n], rest, with);
        }
        _ => *doc = with,
    }
}

fn check_read_model(body: &[u8]) {
    scanner_agrees_on_snapshot(body);
    scanner_agrees_on_read_model(body);
    let strict = serde_json::from_slice::<ReadModel>(body);
    let compact = Fleet::decode_snapshot(body);
    match ReadModel::decode_per_thread(body) {
        Ok((model, unreadable)) => {
            let listed = model.threads.len() + unreadable.len();
            let fleet = Fleet::from_read_model(model, unreadable);
            assert!(fleet.len() + fleet.unreadable_threads().count() <= listed);
            let compact = compact.expect("the watcher's decoding reads what the read model's does");
            assert_eq!(seen(&compact), seen(&fleet));
        }
        Err(_) => {
            assert!(strict.is_err(), "what decodes strictly decodes per thread");
            assert!(
                compact.is_err(),
                "the watcher's decoding fails where the read model's does"
            );
        }
    }
}

fn check_shell_doc(body: &[u8]) {
    scanner_agrees_on_shell(body);
    let compact = Fleet::decode_shell(body);
    match ShellSnapshot::decode_per_thread(body) {
        Ok((shell, unreadable)) => {
            let fleet = Fleet::from_shell_with(shell, unreadable);
            let compact = compact.expect("the watcher's decoding reads what the shell's does");
            assert_eq!(seen(&compact), seen(&fleet));
        }
        Err(_) => assert!(
            compact.is_err(),
            "the watcher's decoding fails where the shell's does"
        ),
    }
}

fn check_shell_item(text: &str) {
    scanner_agrees_on_item(text);
    let compact = FleetItem::decode(text);
    match ShellItem::decode(text) {
        Ok(item) => {
            let mut fleet = Fleet::default();
            let _ = item.sequence();
            fleet.apply(item);
            let compact = compact.expect("the watcher's decoding reads what ShellItem's does");
            let mut view = Fleet::default();
            view.apply(compact);
            assert_eq!(seen(&view), seen(&fleet));
        }
        Err(_) => assert!(
            compact.is_err(),
            "the watcher's decoding fails where ShellItem's does"
        ),
    }
}

/// The polling watcher's read of the shell ([`ShellWaits::decode`]) says of every thread what the
/// shell's full view says: whether it waits for a person where it is readable, nothing otherwise;
/// and fails where that view fails.
fn check_shell_waits(body: &[u8]) {
    scanner_agrees_on_waits(body);
    let waits = ShellWaits::decode(body);
    match ShellSnapshot::decode_per_thread(body) {
        Ok((shell, unreadable)) => {
            let fleet = Fleet::from_shell_with(shell, unreadable);
            let waits = waits.expect("the waits decode where the shell's view does");
            assert_eq!(waits.len(), fleet.len(), "one entry per readable thread");
            for thread in fleet.threads() {
                assert_eq!(
                    waits.waits_for_person(&thread.id().to_id()),
                    Some(thread.waits_for_person())
                );
            }
            for (id, _) in fleet.unreadable_threads() {
                assert_eq!(
                    waits.waits_for_person(id),
                    None,
                    "an unreadable thread says nothing"
                );
            }
        }
        Err(_) => assert!(waits.is_err(), "the waits fail where the shell's view does"),
    }
}

/// The same answer, or the same error in the same words.
fn same<T: PartialEq + std::fmt::Debug>(
    a: &Result<T, serde_json::Error>,
    b: &Result<T, serde_json::Error>,
) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

/// The snapshot decode (scanner, else `serde`) answers exactly as `serde` alone, and the scanner,
/// where it answers, gives what `serde` gives. Returns whether the scanner answered.
fn scanner_agrees_on_snapshot(body: &[u8]) -> bool {
    let scanned = std::str::from_utf8(body)
        .ok()
        .and_then(oracle::snapshot_by_scanner);
    scanner_agrees(
        Fleet::decode_snapshot(body),
        oracle::snapshot_by_serde(body),
        scanned,
    )
}

/// The full read model's decode ([`ReadModel::decode`], what `T3Client::snapshot` runs) answers
/// exactly as `serde_json::from_slice::<ReadModel>`, and its scanner, where it answers, gives
/// `serde`'s model. Returns whether the scanner answered.
fn scanner_agrees_on_read_model(body: &[u8]) -> bool {
    let scanned = std::str::from_utf8(body)
        .ok()
        .and_then(oracle::read_model_by_scanner);
    scanner_agrees(
        ReadModel::decode(body),
        serde_json::from_slice::<ReadModel>(body),
        scanned,
    )
}

fn scanner_agrees_on_shell(body: &[u8]) -> bool {
    let scanned = std::str::from_utf8(body).ok().and_then(oracle::shell_by_scanner);
    scanner_agrees(Fleet::decode_shell(body), oracle::shell_by_serde(body), scanned)
}

fn scanner_agrees_on_item(text: &str) -> bool {
    scanner_agrees(
        FleetItem::decode(text),
        oracle::item_by_serde(text),
        oracle::item_by_scanner(text),
    )
}

fn scanner_agrees_on_waits(body: &[u8]) -> bool {
    let scanned = std::str::from_utf8(body).ok().and_then(oracle::waits_by_scanner);
    scanner_agrees(ShellWaits::decode(body), oracle::waits_by_serde(body), scanned)
}

/// The decode afk runs (`decoded`: scanner, else `serde`) answers exactly as `serde` alone, and the
/// scanner, where it answered (`scanned`), gives `serde`'s `Ok`. Returns whether it answered.
fn scanner_agrees<T: PartialEq + std::fmt::Debug>(
    decoded: Result<T, serde_json::Error>,
    by_serde: Result<T, serde_json::Error>,
    scanned: Option<T>,
) -> bool {
    assert!(
        same(&decoded, &by_serde),
        "{decoded:?}\nagainst serde's {by_serde:?}"
    );
    if let Some(scanned) = &scanned {
        assert_eq!(
            Some(scanned),
            by_serde.as_ref().ok(),
            "the scanner answers only as serde does"
        );
    }
    scanned.is_some()
}

/// All four decodes of one snapshot text and its shell form (`deletedAt` keys dropped by the
/// caller or not: the shell skips them unread): the snapshot, the shell, the stream item, the waits.
fn scanner_agrees_everywhere(text: &str) {
    scanner_agrees_on_snapshot(text.as_bytes());
    scanner_agrees_on_read_model(text.as_bytes());
    scanner_agrees_on_shell(text.as_bytes());
    scanner_agrees_on_waits(text.as_bytes());
    scanner_agrees_on_item(&format!(r#"{{"kind":"snapshot","snapshot":{text}}}"#));
}

/// The bench's documents (T3's real shapes: UUIDs, every state, deleted threads) are read by the
/// scanner, not left to `serde`: the shortcut is taken where it pays, and gives `serde`'s answer.
#[test]
fn the_scanner_reads_documents_as_t3_sends_them() {
    let snapshot = shapes::read_model_json(300);
    let shell = shapes::shell_json(300);
    assert!(scanner_agrees_on_snapshot(&snapshot), "the snapshot is scanned");
    assert!(
        scanner_agrees_on_read_model(&snapshot),
        "the full read model is scanned"
    );
    assert!(scanner_agrees_on_shell(&shell), "the shell is scanned");
    assert!(scanner_agrees_on_waits(&shell), "the shell's waits are scanned");
    let shell = String::from_utf8(shell).expect("UTF-8");
    let item = format!(r#"{{"kind":"snapshot","snapshot":{shell}}}"#);
    assert!(
        scanner_agrees_on_item(&item),
        "the stream's snapshot item is scanned"
    );
    let fleet = Fleet::decode_snapshot(&snapshot).expect("decodes");
    assert_eq!(fleet.len(), 300);
    assert!(fleet.unreadable_threads().next().is_none());
}

/// The full read model as afk decodes it ([`ReadModel::decode`], the scanner) says what the
/// document says: from the bench's documents (T3's shapes, with the keys T3 writes that afk's
/// types do not), the model that wrote them, every key it writes again sent with that value;
/// from a thread with every key afk's types know filled in (a thread detail's messages,
/// activities and checkpoints, a model's options, the shell's flags), written again, the very
/// document.
#[test]
fn the_read_model_written_again_is_what_was_sent() {
    for n in [1, 100, 300] {
        let body = shapes::read_model_json(n);
        assert!(oracle::read_model_by_scanner(std::str::from_utf8(&body).unwrap()).is_some());
        let model = ReadModel::decode(&body).expect("decodes");
        assert_eq!(model, shapes::read_model(n), "{n} threads");
        let sent: Value = serde_json::from_slice(&body).unwrap();
        oracle::within(&serde_json::to_value(&model).unwrap(), &sent, "").unwrap();
    }
    let mut full = snapshot(2);
    let thread = &mut full["threads"][0];
    thread["archivedAt"] = json!("2026-11-24T19:15:00.000Z");
    thread["modelSelection"]["options"] = json!({"effort": "high", "n": [1, 2.5, null]});
    thread["messages"] = json!([{"id": "m1", "role": "user", "text": "Fix it \u{e9}", "turnId": null}]);
    thread["activities"] = json!([{"id": "a1", "tone": "info", "kind": "checkpoint.captured",
        "summary": "s", "payload": {"status": "missing"}, "turnId": "turn-1",
        "createdAt": "2026-11-24T19:14:37.000Z"}]);
    thread["checkpoints"] = json!([{"turnId": "turn-1", "checkpointTurnCount": 1}]);
    thread["hasPendingUserInput"] = json!(true);
    for thread in full["threads"].as_array_mut().unwrap() {
        for key in ["messages", "activities", "checkpoints"] {
            thread.as_object_mut().unwrap().entry(key).or_insert(json!([]));
        }
    }
    let body = full.to_string();
    assert!(oracle::read_model_by_scanner(&body).is_some());
    let model = ReadModel::decode(body.as_bytes()).expect("decodes");
    assert_eq!(serde_json::to_value(&model).unwrap(), full);
    assert!(model.threads[0].turn_was_interrupted(&"turn-1".parse().unwrap()));
}

/// One edit to the text of a document: `cut` bytes from `at` (taken modulo the length, clamped at
/// the end) replaced by `with`, any invalid UTF-8 the cut leaves replaced by U+FFFD.
fn edit(text: &str, at: usize, cut: usize, with: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let at = at % (bytes.len() + 1);
    let end = (at + cut).min(bytes.len());
    bytes.splice(at..end, with.bytes());
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What an edit writes: JSON's punctuation, literals, escapes (surrogates among them), numbers,
/// keys of the thread shape, timestamps good and bad, white space, a multi-byte character.
fn splice() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "\"",
            "\\",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\t",
            "\n",
            "null",
            "true",
            "false",
            "0",
            "-0",
            "01",
            "1.5",
            "1e3",
            "-",
            "12345678901234567890",
            "\\u0041",
            "\\ud83d\\ude00",
            "\\ud800",
            "\\udc00",
            "\\ud800\\u0041",
            "\\x",
            "\\/",
            "\u{1}",
            "é",
            "\u{2028}",
            "\"id\":",
            "\"id\":\"t0\",",
            "\"i\\u0064\":\"t9\",",
            "\"title\":1,",
            "\"x\":[[[]]],",
            "\"deletedAt\":null,",
            "\"session\":null,",
            "\"latestTurn\":null,",
            "\"2026-11-24T19:14:36.116Z\"",
            "\"2026-02-30T00:00:00.000Z\"",
            "\"2026-11-24T19:14:36Z\"",
            "\"2026-11-24T19:14:36.116+01:00\"",
            "running",
            "paused",
            "\"hasPendingApprovals\":true,",
            "1e+99",
            "2.5E-7",
            "\"projectId\" :",
            "\"idx\":0,",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,6}",
    ]
}

/// A text of many threads (some deleted) as `serde_json` writes T3's snapshot.
fn real_snapshot(threads: usize) -> String {
    String::from_utf8(shapes::read_model_json(threads)).expect("UTF-8")
}

proptest! {
    /// Byte-level edits (one to three) of real-shaped documents: wherever they land (a key, a
    /// string, an escape, a number, between tokens), the scanner answers as `serde` or declines.
    #[test]
    fn an_edited_document_is_read_as_serde_reads_it(
        edits in prop::collection::vec((any::<usize>(), 0usize..4, splice()), 1..4),
        threads in 1usize..4,
        base in 0usize..2,
    ) {
        let mut text = if base == 0 { real_snapshot(threads) } else { snapshot(threads).to_string() };
        for (at, cut, with) in &edits {
            text = edit(&text, *at, *cut, with);
        }
        scanner_agrees_everywhere(&text);
        let shell = text.replace(r#""deletedAt":null,"#, "");
        scanner_agrees_everywhere(&shell);
    }

    /// Edits near the threads' keys and values, where most of the scanner's decisions are.
    #[test]
    fn an_edit_in_a_thread_is_read_as_serde_reads_it(
        key in prop::sample::select(vec![
            "\"id\"", "\"projectId\"", "\"title\"", "\"modelSelection\"", "\"instanceId\"", "\"model\"",
            "\"runtimeMode\"", "\"interactionMode\"", "\"branch\"", "\"worktreePath\"", "\"latestTurn\"",
            "\"turnId\"", "\"state\"", "\"requestedAt\"", "\"startedAt\"", "\"completedAt\"",
            "\"assistantMessageId\"", "\"createdAt\"", "\"updatedAt\"", "\"archivedAt\"", "\"deletedAt\"",
            "\"messages\"", "\"session\"", "\"threadId\"", "\"status\"", "\"providerName\"",
            "\"activeTurnId\"", "\"lastError\"", "\"snapshotSequence\"", "\"projects\"", "\"threads\"",
        ]),
        nth in 0usize..8,
        offset in 0usize..40,
        cut in 0usize..6,
        with in splice(),
    ) {
        let text = real_snapshot(3);
        let found: Vec<usize> = text.match_indices(key).map(|(i, _)| i).collect();
        let at = found[nth % found.len()] + offset;
        let text = edit(&text, at, cut, &with);
        scanner_agrees_everywhere(&text);
    }
}

/// What the scanner must do with an edge case: answer (the shortcut covers it) or decline (left
/// to `serde`).
enum Scanner {
    Answers,
    Declines,
}
use Scanner::{Answers, Declines};

/// Each edge the scanner must read as `serde` does, on a two-thread snapshot: whether it declines
/// or answers, the decode gives `serde`'s answer; where the answer is plain, it is checked too.
#[test]
fn each_edge_reads_as_serde_reads_it() {
    let base = snapshot(2).to_string();
    let cases: Vec<(&str, String, Scanner)> = vec![
        (
            "a key written with an escape",
            base.replacen(r#""branch""#, r#""br\u0061nch""#, 1),
            Declines,
        ),
        (
            "a key listed twice in a thread",
            base.replacen(r#""title":"acme"#, r#""title":"a","title":"acme"#, 1),
            Declines,
        ),
        (
            "a key listed twice in the document",
            base.replacen(
                r#""snapshotSequence":12"#,
                r#""snapshotSequence":12,"snapshotSequence":13"#,
                1,
            ),
            Declines,
        ),
        (
            "an unknown key",
            base.replacen(
                r#""title":"acme"#,
                r#""extra":{"a":[1,2.5,-3,"x",null,true]},"title":"acme"#,
                1,
            ),
            Answers,
        ),
        (
            "an unknown key with an exponent",
            base.replacen(r#""title":"acme"#, r#""extra":1e999,"title":"acme"#, 1),
            Declines,
        ),
        (
            "an exponent in the messages",
            base.replacen(r#""title":"acme"#, r#""messages":[1e999],"title":"acme"#, 1),
            Declines,
        ),
        (
            "exponents of one or two digits",
            base.replacen(
                r#""title":"acme"#,
                r#""messages":[1e5,-2.5E-3,0e+0,1e99,-1.5e-99,123456789012345678.5e+12],"extra":{"a":4E2},"title":"acme"#,
                1,
            ),
            Answers,
        ),
        (
            "exponents at the bound: 18 digits each side of the point, two in the exponent",
            base.replacen(
                r#""title":"acme"#,
                r#""messages":[999999999999999999.999999999999999999e99,-0.000000000000000001e-99,1e-99],"title":"acme"#,
                1,
            ),
            Answers,
        ),
        (
            "an exponent of three digits",
            base.replacen(r#""title":"acme"#, r#""messages":[1e100],"title":"acme"#, 1),
            Declines,
        ),
        (
            "a signed exponent of three digits",
            base.replacen(r#""title":"acme"#, r#""messages":[1e+100],"title":"acme"#, 1),
            Declines,
        ),
        (
            "an exponent without digits",
            base.replacen(r#""title":"acme"#, r#""messages":[1e+],"title":"acme"#, 1),
            Declines,
        ),
        (
            "an exponent in the options",
            base.replacen(
                r#""model":"claude-sonnet-4-5""#,
                r#""model":"claude-sonnet-4-5","options":{"temperature":7e-1}"#,
                1,
            ),
            Answers,
        ),
        (
            "an exponent for the sequence",
            base.replacen(r#""snapshotSequence":12"#, r#""snapshotSequence":1e1"#, 1),
            Declines,
        ),
        (
            "a huge integer in the messages",
            base.replacen(
                r#""title":"acme"#,
                r#""messages":[123456789012345678901234567890],"title":"acme"#,
                1,
            ),
            Declines,
        ),
        (
            "null messages",
            base.replacen(r#""title":"acme"#, r#""messages":null,"title":"acme"#, 1),
            Declines,
        ),
        (
            "a null title",
            base.replacen(r#""title":"acme/widgets#42: Fix""#, r#""title":null"#, 1),
            Declines,
        ),
        (
            "a number for a timestamp",
            base.replacen(r#""deletedAt":null,"id":"t0""#, r#""deletedAt":1,"id":"t0""#, 1),
            Declines,
        ),
        (
            "a missing required key",
            base.replacen(r#","worktreePath":null"#, "", 1),
            Declines,
        ),
        (
            "a missing optional key",
            base.replacen(r#""archivedAt":null,"#, "", 1),
            Answers,
        ),
        (
            "a lone leading surrogate",
            base.replacen("Fix", r"Fix \ud800", 1),
            Declines,
        ),
        (
            "a lone trailing surrogate",
            base.replacen("Fix", r"Fix \udc00", 1),
            Declines,
        ),
        (
            "a surrogate pair",
            base.replacen("Fix", r"Fix \ud83d\ude00", 1),
            Answers,
        ),
        (
            "escapes in a kept string",
            base.replacen("afk/issue-42", r"afk\/issue-42\n\t\u00e9", 1),
            Answers,
        ),
        (
            "escapes in an id",
            base.replacen(r#""id":"t0""#, r#""id":"\u0074\u0030""#, 1),
            Answers,
        ),
        (
            "an id of white space",
            base.replacen(r#""id":"t0""#, r#""id":" t0""#, 1),
            Declines,
        ),
        ("an unknown escape", base.replacen("Fix", r"Fix \x", 1), Declines),
        (
            "a control character",
            base.replacen("Fix", "Fix \u{1}", 1),
            Declines,
        ),
        (
            "a bad timestamp",
            base.replacen("2026-11-24T19:14:40.000Z", "2026-02-30T19:14:40.000Z", 1),
            Declines,
        ),
        (
            "another timestamp form",
            base.replacen("2026-11-24T19:14:40.000Z", "2026-11-24T20:14:40+01:00", 1),
            Answers,
        ),
        (
            "an unknown state",
            base.replacen(r#""state":"running""#, r#""state":"paused""#, 1),
            Declines,
        ),
        (
            "a thread listed twice",
            snapshot(1).to_string().replacen(
                r#""threads":[{"#,
                &format!(r#""threads":[{},{{"#, thread("t0")),
                1,
            ),
            Answers,
        ),
        (
            "a thread as an array",
            base.replacen(r#""threads":[{"#, r#""threads":[["t9"],{"#, 1),
            Declines,
        ),
        (
            "deep nesting",
            base.replacen(
                r#""title":"acme"#,
                &format!(r#""x":{}{},"title":"acme"#, "[".repeat(130), "]".repeat(130)),
                1,
            ),
            Declines,
        ),
        ("trailing text", format!("{base} x"), Declines),
        ("trailing white space", format!("{base} \n"), Answers),
        (
            "a leading zero",
            base.replacen(r#""snapshotSequence":12"#, r#""snapshotSequence":012"#, 1),
            Declines,
        ),
        (
            "a sequence out of range",
            base.replacen(
                r#""snapshotSequence":12"#,
                r#""snapshotSequence":18446744073709551616"#,
                1,
            ),
            Declines,
        ),
        (
            "a negative sequence",
            base.replacen(r#""snapshotSequence":12"#, r#""snapshotSequence":-1"#, 1),
            Declines,
        ),
        (
            "a float sequence",
            base.replacen(r#""snapshotSequence":12"#, r#""snapshotSequence":12.0"#, 1),
            Declines,
        ),
        (
            "a trailing comma",
            base.replacen(r#""worktreePath":null}"#, r#""worktreePath":null,}"#, 1),
            Declines,
        ),
        (
            "options of any shape",
            base.replacen(
                r#""model":"claude-sonnet-4-5""#,
                r#""model":"claude-sonnet-4-5","options":{"effort":["x",{"y":0.5}]}"#,
                1,
            ),
            Answers,
        ),
        (
            "a thread with its messages, activities and checkpoints (a thread detail's)",
            base.replacen(
                r#""worktreePath":null"#,
                r#""worktreePath":null,"messages":[{"id":"m1","text":"hi \u00e9"}],"activities":[{"kind":"x","payload":{"n":1.5}}],"checkpoints":[[]]"#,
                1,
            ),
            Answers,
        ),
        (
            "activities that are not an array",
            base.replacen(r#""worktreePath":null"#, r#""worktreePath":null,"activities":5"#, 1),
            Declines,
        ),
        (
            "null activities",
            base.replacen(r#""worktreePath":null"#, r#""worktreePath":null,"activities":null"#, 1),
            Declines,
        ),
        (
            "options holding the largest float",
            base.replacen(
                r#""model":"claude-sonnet-4-5""#,
                r#""model":"claude-sonnet-4-5","options":{"x":1.7976931348623157e308}"#,
                1,
            ),
            Declines,
        ),
        (
            "a model name with white space around it (kept trimmed)",
            base.replacen(r#""model":"claude-sonnet-4-5""#, r#""model":" claude-sonnet-4-5\t""#, 1),
            Answers,
        ),
        (
            "a blank model",
            base.replacen(r#""model":"claude-sonnet-4-5""#, r#""model":" \u0009 ""#, 1),
            Declines,
        ),
    ];
    for (what, text, scanner) in &cases {
        assert_ne!(text, &base, "{what}: the edit applies");
        let snapshot_ok = oracle::snapshot_by_serde(text.as_bytes()).is_ok();
        scanner_agrees_everywhere(text);
        let scanned = oracle::snapshot_by_scanner(text).is_some();
        assert!(!scanned || snapshot_ok, "{what}: scanned what serde refuses");
        // Where the scanner must answer (so that the shortcut covers what T3 sends), and where it
        // must decline.
        match scanner {
            Scanner::Answers => assert!(scanned, "{what}: the scanner answers"),
            Scanner::Declines => assert!(!scanned, "{what}: the scanner declines"),
        }
        // The full read model's scanner answers wherever the view's does and `serde` reads the
        // whole model (a thread set aside by the view fails the whole model).
        if scanned && serde_json::from_slice::<ReadModel>(text.as_bytes()).is_ok() {
            assert!(
                oracle::read_model_by_scanner(text).is_some(),
                "{what}: the read model's scanner answers"
            );
        }
    }
    // A thread's timestamp written as a number sets that thread aside, not the document.
    let number = &cases
        .iter()
        .find(|c| c.0 == "a number for a timestamp")
        .unwrap()
        .1;
    let fleet = Fleet::decode_snapshot(number.as_bytes()).expect("the document reads");
    let (_, threads, unreadable) = seen(&fleet);
    assert_eq!(unreadable, vec![ThreadId::new("t0").unwrap()], "t0 is set aside");
    assert_eq!(threads.len(), 1, "t1 is read");
    // A body that is not UTF-8 is left to serde, which reads it as before.
    let mut bytes = base.replacen("Fix", "Fix \u{1F600}", 1).into_bytes();
    let at = bytes.iter().position(|&b| b == 0xF0).unwrap();
    bytes[at + 1] = 0x28;
    scanner_agrees_on_snapshot(&bytes);
    scanner_agrees_on_shell(&bytes);
    scanner_agrees_on_waits(&bytes);
}

/// The scanner tries the key T3 writes next before any other (`wire::scan`'s keyed objects): on
/// a real-shaped snapshot (T3's key order), each way a thread can leave that order is read as
/// `serde` reads it, and the scanner still answers where `serde` reads the whole document.
#[test]
fn each_departure_from_t3s_key_order_reads_as_serde_reads_it() {
    let base = real_snapshot(2);
    let threads = base.find(r#""threads":[{"#).expect("threads") + r#""threads":[{"#.len();
    let (head, first) = base.split_at(threads);
    let in_first = |replace: &dyn Fn(&str) -> String| format!("{head}{}", replace(first));
    // `"projectId":"…",` of the first thread moved to just before its `"session"`.
    let moved = in_first(&|thread| {
        let from = thread.find(r#""projectId":""#).expect("a projectId");
        let to = from + thread[from..].find(r#"","#).expect("its end") + 2;
        let key = &thread[from..to];
        let rest = format!("{}{}", &thread[..from], &thread[to..]);
        rest.replacen(r#""session":"#, &format!(r#"{key}"session":"#), 1)
    });
    let cases: Vec<(&str, String, Scanner)> = vec![
        ("T3's order", base.clone(), Answers),
        ("a key moved later", moved, Answers),
        (
            "an unknown key first, whose name starts with the expected key's",
            in_first(&|t| format!(r#""idx":0,{t}"#)),
            Answers,
        ),
        (
            "an unknown key between two known ones",
            in_first(&|t| t.replacen(r#","title":"#, r#","titles":[1e5],"title":"#, 1)),
            Answers,
        ),
        (
            "white space before the expected key's colon",
            in_first(&|t| t.replacen(r#""projectId":"#, "\"projectId\" \n:", 1)),
            Answers,
        ),
        (
            "the expected key listed twice",
            in_first(&|t| format!(r#""id":"dup",{t}"#)),
            Declines,
        ),
        (
            "the expected key written with an escape",
            in_first(&|t| t.replacen(r#""projectId":"#, r#""proj\u0065ctId":"#, 1)),
            Declines,
        ),
        (
            "the expected key without its colon",
            in_first(&|t| t.replacen(r#""projectId":"#, r#""projectId" "#, 1)),
            Declines,
        ),
        (
            "an unknown key first in a turn",
            base.replacen(
                r#""latestTurn":{"turnId":"#,
                r#""latestTurn":{"x":null,"turnId":"#,
                1,
            ),
            Answers,
        ),
    ];
    for (what, text, scanner) in &cases {
        assert!(*what == "T3's order" || text != &base, "{what}: the edit applies");
        let snapshot_ok = oracle::snapshot_by_serde(text.as_bytes()).is_ok();
        scanner_agrees_everywhere(text);
        let scanned = oracle::snapshot_by_scanner(text).is_some();
        assert!(!scanned || snapshot_ok, "{what}: scanned what serde refuses");
        match scanner {
            Scanner::Answers => assert!(scanned, "{what}: the scanner answers"),
            Scanner::Declines => assert!(!scanned, "{what}: the scanner declines"),
        }
    }
}

proptest! {
    #[test]
    fn any_bytes_never_panic_the_read_model_or_a_shell_item(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_read_model(&bytes);
        check_shell_doc(&bytes);
        check_shell_item(&String::from_utf8_lossy(&bytes));
        check_shell_waits(&bytes);
    }

    #[test]
    fn a_mutated_snapshot_never_panics_and_sets_aside_only_what_it_must(
        threads in 1usize..4,
        path in prop::collection::vec(any::<usize>(), 0..6),
        with in any_json(),
    ) {
        let mut doc = snapshot(threads);
        // The values the full read model's scanner hands to `serde_json` from their text (a
        // thread detail's arrays, a model's options), so that mutations land in them too.
        doc["threads"][0]["messages"] = json!([]);
        doc["threads"][0]["activities"] = json!([{"kind": "x", "payload": {"n": 1.5}}]);
        doc["threads"][0]["checkpoints"] = json!([]);
        doc["threads"][0]["modelSelection"]["options"] = json!({});
        mutate(&mut doc, &path, with);
        check_read_model(doc.to_string().as_bytes());
        // The same mutation inside a shell snapshot and a thread upsert.
        let mut shell = doc.clone();
        if let Some(threads) = shell.get_mut("threads").and_then(Value::as_array_mut) {
            for t in threads.iter_mut().filter_map(Value::as_object_mut) {
                t.remove("deletedAt");
            }
        }
        check_shell_doc(shell.to_string().as_bytes());
        check_shell_item(&json!({"kind": "snapshot", "snapshot": shell}).to_string());
        // The shell over HTTP, as the polling watcher reads it for who waits for a person: some
        // threads wait, and one may be listed twice.
        let mut waiting = shell.clone();
        if let Some(threads) = waiting.get_mut("threads").and_then(Value::as_array_mut) {
            for t in threads.iter_mut().step_by(2).filter_map(Value::as_object_mut) {
                t.insert("hasPendingUserInput".into(), json!(true));
            }
            if let Some(again) = threads.first().filter(|_| path.len() % 3 == 1).cloned() {
                threads.push(again);
            }
        }
        check_shell_waits(shell.to_string().as_bytes());
        check_shell_waits(waiting.to_string().as_bytes());
        // The stream's first item decodes in one pass only when it starts with its kind; the
        // same snapshot with its keys in the other order, twice, or after other keys.
        check_shell_item(&format!(r#"{{"snapshot":{shell},"kind":"snapshot"}}"#));
        check_shell_item(&format!(r#"{{"kind":"snapshot","snapshot":{shell},"snapshot":{shell}}}"#));
        check_shell_item(&format!(r#"{{"kind":"snapshot","x":[1],"thread":null,"snapshot":{shell}}} "#));
        let upsert = json!({"kind": "thread-upserted", "sequence": 3, "thread": shell["threads"][0].clone()});
        check_shell_item(&upsert.to_string());
    }

    /// Bytes that need not be UTF-8, in a title (the full types refuse the thread, or the
    /// document when the JSON around it breaks) and in a key the full types skip unread (where
    /// `serde_json` never checks them, so the document still reads): the watcher's decoding, which
    /// reads a valid UTF-8 body as text, must agree on both.
    #[test]
    fn raw_bytes_in_a_title_or_a_skipped_key_read_as_the_full_types_do(
        raw in prop::collection::vec(any::<u8>(), 0..8),
        in_title in any::<bool>(),
    ) {
        let text = snapshot(2).to_string();
        let (at, len) = if in_title {
            (text.find("acme/widgets#42: Fix").unwrap(), "acme/widgets#42: Fix".len())
        } else {
            (1, 0)
        };
        let mut body = text.as_bytes()[..at].to_vec();
        if !in_title {
            body.extend_from_slice(b"\"skipped\":\"");
        }
        body.extend_from_slice(&raw);
        if !in_title {
            body.extend_from_slice(b"\",");
        }
        body.extend_from_slice(&text.as_bytes()[at + len..]);
        check_read_model(&body);
        check_shell_doc(&body);
        check_shell_waits(&body);
        let mut shell = b"{\"kind\":\"snapshot\",\"snapshot\":".to_vec();
        shell.extend_from_slice(&body);
        shell.push(b'}');
        check_shell_item(&String::from_utf8_lossy(&shell));
    }

    #[test]
    fn escapes_and_surrogates_in_titles_never_panic(title in r#"(\\u[dD][89abAB][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\[nrt"\\/]|[a-z ])*"#) {
        let text = snapshot(2).to_string().replacen("acme/widgets#42: Fix", &title, 1);
        check_read_model(text.as_bytes());
    }
}
