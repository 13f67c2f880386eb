//! Fuzzing T3's read model and shell items (proptest): whatever T3 sends, decoding never panics,
//! and a document afk can read gives a [`Fleet`] in which every thread listed is either readable
//! or set aside as unreadable; the watcher's compact decoding ([`Fleet::decode_snapshot`],
//! [`Fleet::decode_shell`], [`FleetItem::decode`], [`ShellWaits::decode`]) reads and sets aside
//! exactly the threads the full wire types do. Cheap by default (proptest's 256 cases);
//! `PROPTEST_CASES=N` runs longer.

use proptest::prelude::*;
use serde_json::{json, Value};
use t3_client::wire::{FleetItem, FleetThread, ShellItem, ShellSnapshot, ShellWaits};
use t3_client::{Fleet, ReadModel, ThreadId};

/// The view's threads (sorted by id) and the ids it sets aside (sorted): what the watcher reads.
/// The reasons given for setting a thread aside may word a type's name differently.
fn seen(fleet: &Fleet) -> (u64, Vec<FleetThread>, Vec<ThreadId>) {
    let mut threads: Vec<FleetThread> = fleet.threads().cloned().collect();
    threads.sort_by(|a, b| a.id.cmp(&b.id));
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
    let waits = ShellWaits::decode(body);
    match ShellSnapshot::decode_per_thread(body) {
        Ok((shell, unreadable)) => {
            let fleet = Fleet::from_shell_with(shell, unreadable);
            let waits = waits.expect("the waits decode where the shell's view does");
            assert_eq!(waits.len(), fleet.len(), "one entry per readable thread");
            for thread in fleet.threads() {
                assert_eq!(
                    waits.waits_for_person(&thread.id),
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
