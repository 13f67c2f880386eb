//! Snapshot decode: what reading T3's read model costs afk, against the parse floor.
//!
//! Run with `cargo bench -p t3-client --bench decode` (divan; add `-- --sample-count 20` for a
//! quicker run). For read models of 100, 1,000 and 10,000 threads in T3's real shapes
//! (`support/read_model.rs`, about 950 bytes per thread), it times:
//!
//! - `afk_snapshot`: [`T3Client::snapshot`] over an in-memory transport (`Canned`, which hands
//!   each sample a body copied outside the timing, as the floors are handed theirs), the full
//!   read model (`afk t3`, `afk doctor`);
//! - `afk_fleet`: [`T3Client::fleet`] over the same transport: the watcher's view, what a polling
//!   tick decodes (only what afk reads of each thread, the rest checked but not kept);
//! - `afk_shell`: [`T3Client::shell`] over a transport serving the shell document of the same
//!   fleet (`support::shell_json`): the watcher's view of the shell, what a polling tick also
//!   decodes while a thread runs;
//! - `afk_shell_waits`: [`T3Client::shell_waits`] of that shell document: only which threads
//!   wait for a person, what the polling watcher reads of the shell beside the snapshot;
//! - `afk_stream_snapshot`: [`FleetItem::decode`] of the shell stream's first item (that shell
//!   document as a `snapshot` item): what afk's default mode (`push = true`) decodes when it
//!   (re)subscribes;
//! - `typed`: `serde_json::from_slice` into [`ReadModel`], afk's typed structs alone;
//! - `ignored_any`: `serde_json` into [`serde::de::IgnoredAny`]: the parse floor, every byte
//!   read and validated, nothing kept (handed the body and freeing it as the `Canned` rows do);
//!   `ignored_any_shell` and `ignored_any_stream_snapshot`, the same of the shell document and of
//!   the stream item (the floors of the shell rows and of `afk_stream_snapshot`);
//! - `value`: `serde_json` into a [`serde_json::Value`] tree, what an untyped client keeps;
//! - `derive_states`: [`ThreadState::of`] over every thread of a decoded model;
//! - `declined_*`: the cost when the scanner declines (one thread afk cannot read, the last
//!   running turn made `"state":"paused"`, so that it must be set aside by `serde`'s per-thread decode):
//!   `declined_fleet` ([`Fleet::decode_snapshot`]: the scanner, then `serde`'s strict decode, then
//!   its loose one) against `declined_fleet_by_serde` (`serde`'s path alone, what the code before
//!   the scanner ran), and `declined_stream_snapshot` ([`FleetItem::decode`]) against
//!   `declined_stream_snapshot_by_serde`, on 100 and 1,000 threads.
//!
//! Issue 18's target is the watcher's decodes (`afk_fleet`, `afk_shell`, `afk_shell_waits`,
//! `afk_stream_snapshot`) within 2x their floors; BENCHMARKS.md, "Typed decode against the floor
//! (issue 18)".
//!
//! `afk`'s `compare` bench times the same decodes interleaved with everything else and prints
//! their ratios; this bench is for looking at decode alone.

#[path = "support/read_model.rs"]
mod support;

use std::sync::{Arc, Mutex};

use divan::{black_box, Bencher};
use t3_client::transport::{Method, Request, Response};
use t3_client::wire::{oracle, FleetItem};
use t3_client::{Fleet, ReadModel, T3Client, ThreadState, Transport, TransportError};

const SIZES: [usize; 3] = [100, 1_000, 10_000];

fn main() {
    divan::main();
}

/// Answers each request with the body it was last handed, as T3 would, moving it rather than
/// copying it: each sample's body is copied outside the timing (divan's `with_inputs`) and handed
/// over inside, so that the rows over this transport time the same work as their floors, which
/// are handed the same copy (`floor`): take the body, decode it, free it. (Before, the transport
/// copied the body inside the timing, a memmove and, at 1,000 threads and more, a fresh mapping's
/// page faults that the floors did not pay.)
#[derive(Debug, Default)]
struct Canned(Mutex<Vec<u8>>);

impl Canned {
    fn hand(&self, body: Vec<u8>) {
        *self.0.lock().expect("not poisoned") = body;
    }
}

#[async_trait::async_trait]
impl Transport for Canned {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        debug_assert_eq!(request.method, Method::Get);
        Ok(Response {
            status: 200,
            body: std::mem::take(&mut *self.0.lock().expect("not poisoned")),
        })
    }
}

/// A client over a [`Canned`] transport, and a runtime to run it on.
fn canned_client() -> (tokio::runtime::Runtime, T3Client, Arc<Canned>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a Tokio runtime");
    let canned = Arc::new(Canned::default());
    let client = T3Client::new(
        "http://t3.invalid",
        canned.clone(),
        Arc::new(afk_secrets::LiteralProvider::new("bench-token")),
    );
    (runtime, client, canned)
}

/// Times `decode` of a body handed over by value (its copy made outside the timing), the body
/// freed inside the timing: the same work as a [`Canned`] row's, for the floors.
fn floor<O>(bencher: Bencher, body: Vec<u8>, decode: impl Fn(&[u8]) -> O) {
    bencher
        .counter(divan::counter::BytesCount::new(body.len()))
        .with_inputs(|| body.clone())
        .bench_local_values(|body| {
            let decoded = decode(black_box(&body));
            drop(body);
            decoded
        });
}

#[divan::bench(args = SIZES, max_time = 3)]
fn afk_snapshot(bencher: Bencher, n: usize) {
    let (runtime, client, canned) = canned_client();
    let body = support::read_model_json(n);
    bencher.with_inputs(|| body.clone()).bench_local_values(|body| {
        canned.hand(body);
        let model = runtime.block_on(client.snapshot()).expect("the snapshot decodes");
        assert_eq!(model.threads.len(), n);
        model
    });
}

#[divan::bench(args = SIZES, max_time = 3)]
fn afk_fleet(bencher: Bencher, n: usize) {
    let (runtime, client, canned) = canned_client();
    let body = support::read_model_json(n);
    bencher.with_inputs(|| body.clone()).bench_local_values(|body| {
        canned.hand(body);
        let fleet = runtime.block_on(client.fleet()).expect("the view decodes");
        assert_eq!(fleet.len(), n);
        fleet
    });
}

#[divan::bench(args = SIZES, max_time = 3)]
fn afk_shell(bencher: Bencher, n: usize) {
    let (runtime, client, canned) = canned_client();
    let body = support::shell_json(n);
    bencher.with_inputs(|| body.clone()).bench_local_values(|body| {
        canned.hand(body);
        let fleet = runtime.block_on(client.shell()).expect("the shell decodes");
        assert_eq!(fleet.len(), support::shell_threads(n));
        fleet
    });
}

#[divan::bench(args = SIZES, max_time = 3)]
fn afk_shell_waits(bencher: Bencher, n: usize) {
    let (runtime, client, canned) = canned_client();
    let body = support::shell_json(n);
    bencher.with_inputs(|| body.clone()).bench_local_values(|body| {
        canned.hand(body);
        let waits = runtime.block_on(client.shell_waits()).expect("the shell decodes");
        assert_eq!(waits.len(), support::shell_threads(n));
        waits
    });
}

/// The shell stream's first item: `{"kind":"snapshot","snapshot":<the shell document>}`.
fn stream_snapshot(n: usize) -> String {
    let shell = String::from_utf8(support::shell_json(n)).expect("JSON is UTF-8");
    format!(r#"{{"kind":"snapshot","snapshot":{shell}}}"#)
}

#[divan::bench(args = SIZES, max_time = 3)]
fn afk_stream_snapshot(bencher: Bencher, n: usize) {
    let text = stream_snapshot(n);
    bencher
        .counter(divan::counter::BytesCount::new(text.len()))
        .bench_local(|| {
            let item = FleetItem::decode(black_box(&text)).expect("the item decodes");
            assert!(matches!(item, FleetItem::Snapshot(_)));
            item
        });
}

#[divan::bench(args = SIZES, max_time = 3)]
fn ignored_any_shell(bencher: Bencher, n: usize) {
    floor(bencher, support::shell_json(n), |body| {
        serde_json::from_slice::<serde::de::IgnoredAny>(body).expect("parses")
    });
}

#[divan::bench(args = SIZES, max_time = 3)]
fn ignored_any_stream_snapshot(bencher: Bencher, n: usize) {
    let text = stream_snapshot(n);
    bencher
        .counter(divan::counter::BytesCount::new(text.len()))
        .bench_local(|| serde_json::from_str::<serde::de::IgnoredAny>(black_box(&text)).expect("parses"));
}

#[divan::bench(args = SIZES, max_time = 3)]
fn typed(bencher: Bencher, n: usize) {
    let json = support::read_model_json(n);
    bencher
        .counter(divan::counter::BytesCount::new(json.len()))
        .bench_local(|| serde_json::from_slice::<ReadModel>(black_box(&json)).expect("decodes"));
}

#[divan::bench(args = SIZES, max_time = 3)]
fn ignored_any(bencher: Bencher, n: usize) {
    floor(bencher, support::read_model_json(n), |body| {
        serde_json::from_slice::<serde::de::IgnoredAny>(body).expect("parses")
    });
}

#[divan::bench(args = SIZES, max_time = 3)]
fn value(bencher: Bencher, n: usize) {
    let json = support::read_model_json(n);
    bencher
        .counter(divan::counter::BytesCount::new(json.len()))
        .bench_local(|| serde_json::from_slice::<serde_json::Value>(black_box(&json)).expect("parses"));
}

#[divan::bench(args = SIZES, max_time = 3)]
fn derive_states(bencher: Bencher, n: usize) {
    let model = support::read_model(n);
    bencher.bench_local(|| {
        black_box(&model)
            .threads
            .iter()
            .filter(|t| ThreadState::of(Some(t)) == ThreadState::Running)
            .count()
    });
}

/// `body` with its last running turn made `"state":"paused"`: one thread afk cannot read, the
/// scanner's worst case (it reads every thread before it, then declines).
fn one_unreadable(mut body: String) -> String {
    let running = r#""state":"running""#;
    let at = body.rfind(running).expect("a running turn to pause");
    body.replace_range(at..at + running.len(), r#""state":"paused""#);
    body
}

const DECLINED_SIZES: [usize; 2] = [100, 1_000];

#[divan::bench(args = DECLINED_SIZES, max_time = 3)]
fn declined_fleet(bencher: Bencher, n: usize) {
    let body = one_unreadable(String::from_utf8(support::read_model_json(n)).expect("UTF-8"));
    floor(bencher, body.into_bytes(), |body| {
        let fleet = Fleet::decode_snapshot(body).expect("the view decodes");
        assert_eq!(fleet.unreadable_threads().count(), 1);
        fleet
    });
}

#[divan::bench(args = DECLINED_SIZES, max_time = 3)]
fn declined_fleet_by_serde(bencher: Bencher, n: usize) {
    let body = one_unreadable(String::from_utf8(support::read_model_json(n)).expect("UTF-8"));
    floor(bencher, body.into_bytes(), |body| {
        let fleet = oracle::snapshot_by_serde(body).expect("the view decodes");
        assert_eq!(fleet.unreadable_threads().count(), 1);
        fleet
    });
}

#[divan::bench(args = DECLINED_SIZES, max_time = 3)]
fn declined_stream_snapshot(bencher: Bencher, n: usize) {
    let text = one_unreadable(stream_snapshot(n));
    bencher
        .counter(divan::counter::BytesCount::new(text.len()))
        .bench_local(|| FleetItem::decode(black_box(&text)).expect("the item decodes"));
}

#[divan::bench(args = DECLINED_SIZES, max_time = 3)]
fn declined_stream_snapshot_by_serde(bencher: Bencher, n: usize) {
    let text = one_unreadable(stream_snapshot(n));
    bencher
        .counter(divan::counter::BytesCount::new(text.len()))
        .bench_local(|| oracle::item_by_serde(black_box(&text)).expect("the item decodes"));
}
