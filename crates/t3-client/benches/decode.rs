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
//! - `typed`: [`ReadModel::decode`], afk's typed decode of the full read model alone (the scanner
//!   written for T3's shapes, `serde` where it declines); `typed_by_serde`:
//!   `serde_json::from_slice` into [`ReadModel`], `serde`'s derived visitors alone (what `typed`
//!   timed before issue 18's last round, and what the stand-in and the tests still run);
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
//! Issue 18's target is every decode afk runs within 2x its floor: the watcher's (`afk_fleet`,
//! `afk_shell`, `afk_shell_waits`, `afk_stream_snapshot`) and the full read model's
//! (`afk_snapshot`, `typed`); BENCHMARKS.md, "Typed decode against the floor (issue 18)".
//!
//! The documents carry the keys the real T3 writes that afk's types do not (`support`'s
//! `as_t3_writes`), so that the bench decodes what afk decodes in production.
//!
//! With `AFK_DECODE_CPU_TIME=PAIRS` set, the bench runs its CPU-time mode instead of divan's
//! rows ([`cpu_time`]): the four watch-path decodes and the full read model's two against their
//! floors by the thread's own CPU clock, which the machine's other load does not stretch.
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
    match std::env::var("AFK_DECODE_CPU_TIME") {
        Ok(reps) => cpu_time::run(reps.parse().unwrap_or(cpu_time::REPS)),
        Err(_) => divan::main(),
    }
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

/// Handed its body as the floor is ([`floor`]): timed with a free of the body inside and its copy
/// outside, as `ignored_any` is. (Before, the row borrowed one body for every sample; then the
/// allocator's deferred work for the previous sample's freed model, `malloc_consolidate` of its
/// thousands of small blocks, ran inside this row's timing at its first large allocation, where
/// the floor's runs in its untimed copy: with `malloc`'s `unlink_chunk`, 11% of the CPU samples
/// of a `perf record` of this row's process.)
#[divan::bench(args = SIZES, max_time = 3)]
fn typed(bencher: Bencher, n: usize) {
    floor(bencher, support::read_model_json(n), |body| {
        ReadModel::decode(body).expect("decodes")
    });
}

/// As `typed`, handed its body as the floor is.
#[divan::bench(args = SIZES, max_time = 3)]
fn typed_by_serde(bencher: Bencher, n: usize) {
    floor(bencher, support::read_model_json(n), |body| {
        serde_json::from_slice::<ReadModel>(body).expect("decodes")
    });
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

/// The CPU-time mode (`AFK_DECODE_CPU_TIME=REPS cargo bench -p t3-client --bench decode`, in place
/// of divan's rows): each watch-path decode and its floor on the same body, timed by the thread's
/// own CPU clock (`CLOCK_THREAD_CPUTIME_ID`), which does not run while the thread waits for a core,
/// so that a preemption by the machine's other load does not stretch a sample the way it
/// stretches wall time. REPS pairs per row and size (default [`REPS`]), the decode and its floor
/// interleaved (their order alternating), after one warm-up pair. Per row it prints the median and
/// the fastest of each and three ratios: of the medians, of the fastest, and the median of the
/// pairs' ratios.
///
/// What it does not remove: the other load's share of the caches (a sample after a preemption
/// starts colder), and page faults and their kernel time, which are the thread's own CPU time and
/// counted (as they are in production). As `afk run` does (`crates/afk/src/main.rs`), glibc's
/// mmap threshold is fixed at its default (128 KiB) so that the allocator behaves as it does
/// there: a large block (the view's table) is mapped afresh on each decode, not reused.
mod cpu_time {
    use std::time::Duration;

    use super::*;

    /// Pairs per row and size when `AFK_DECODE_CPU_TIME` is not a number.
    pub const REPS: usize = 200;

    /// The thread's CPU time so far.
    fn thread_cpu() -> Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to fill; the clock id is a constant.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is readable");
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// The thread CPU time of `work`; its output is dropped after the clock is read, as divan
    /// drops a row's outputs outside the timing.
    fn timed<O>(work: impl FnOnce() -> O) -> Duration {
        let start = thread_cpu();
        let out = black_box(work());
        let took = thread_cpu() - start;
        drop(out);
        took
    }

    /// One decode of a row and one of its floor, each on a fresh copy of the body
    /// (copied outside the timing).
    struct Row {
        name: &'static str,
        floor: &'static str,
        afk: Box<dyn FnMut() -> Duration>,
        parse: Box<dyn FnMut() -> Duration>,
    }

    /// The floor of a body handed by value: parsed into `IgnoredAny`, freed inside the timing.
    fn floor_of(body: Vec<u8>) -> Box<dyn FnMut() -> Duration> {
        Box::new(move || {
            let copy = body.clone();
            timed(|| {
                serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&copy)).expect("parses");
                drop(copy);
            })
        })
    }

    /// A client row: the body handed to the [`Canned`] transport (outside the timing), then
    /// `decode` run on the client (inside).
    fn client_row<O>(
        body: Vec<u8>,
        decode: impl Fn(&tokio::runtime::Runtime, &T3Client) -> O + 'static,
    ) -> Box<dyn FnMut() -> Duration> {
        let (runtime, client, canned) = canned_client();
        Box::new(move || {
            canned.hand(body.clone());
            timed(|| decode(&runtime, &client))
        })
    }

    fn rows(n: usize) -> Vec<Row> {
        let snapshot = support::read_model_json(n);
        let shell = support::shell_json(n);
        let item = stream_snapshot(n);
        let item_floor = item.clone();
        vec![
            Row {
                name: "afk_fleet",
                floor: "ignored_any",
                afk: client_row(snapshot.clone(), |r, c| {
                    r.block_on(c.fleet()).expect("the view decodes")
                }),
                parse: floor_of(snapshot.clone()),
            },
            Row {
                name: "afk_shell",
                floor: "ignored_any_shell",
                afk: client_row(shell.clone(), |r, c| {
                    r.block_on(c.shell()).expect("the shell decodes")
                }),
                parse: floor_of(shell.clone()),
            },
            Row {
                name: "afk_shell_waits",
                floor: "ignored_any_shell",
                afk: client_row(shell.clone(), |r, c| {
                    r.block_on(c.shell_waits()).expect("the shell decodes")
                }),
                parse: floor_of(shell),
            },
            Row {
                name: "afk_snapshot",
                floor: "ignored_any",
                afk: client_row(snapshot.clone(), |r, c| {
                    r.block_on(c.snapshot()).expect("the snapshot decodes")
                }),
                parse: floor_of(snapshot.clone()),
            },
            Row {
                name: "typed",
                floor: "ignored_any",
                afk: {
                    let body = snapshot.clone();
                    Box::new(move || {
                        let copy = body.clone();
                        timed(|| {
                            let model = ReadModel::decode(black_box(&copy)).expect("decodes");
                            drop(copy);
                            model
                        })
                    })
                },
                parse: floor_of(snapshot),
            },
            Row {
                name: "afk_stream_snapshot",
                floor: "ignored_any_stream_snapshot",
                afk: Box::new(move || {
                    timed(|| FleetItem::decode(black_box(&item)).expect("the item decodes"))
                }),
                parse: Box::new(move || {
                    timed(|| {
                        serde_json::from_str::<serde::de::IgnoredAny>(black_box(&item_floor)).expect("parses")
                    })
                }),
            },
        ]
    }

    fn median(mut xs: Vec<f64>) -> f64 {
        xs.sort_by(f64::total_cmp);
        let mid = xs.len() / 2;
        if xs.len() % 2 == 1 {
            xs[mid]
        } else {
            (xs[mid - 1] + xs[mid]) / 2.0
        }
    }

    fn fastest(xs: &[f64]) -> f64 {
        xs.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn shown(micros: f64) -> String {
        if micros >= 1_000.0 {
            format!("{:.2} ms", micros / 1_000.0)
        } else {
            format!("{micros:.1} µs")
        }
    }

    pub fn run(reps: usize) {
        const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only changes a malloc parameter; the bench has one thread here.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        let reps = reps.max(1);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "decode, thread CPU time (CLOCK_THREAD_CPUTIME_ID), {reps} interleaved pairs per row; \
             load average at the start: {}",
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
        println!();
        println!("| row (floor) | threads | median | fastest | floor median | floor fastest | medians' ratio | fastest's ratio | median of pair ratios |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for n in SIZES {
            for mut row in rows(n) {
                // One warm-up pair, not counted.
                (row.afk)();
                (row.parse)();
                let mut afk = Vec::with_capacity(reps);
                let mut floor = Vec::with_capacity(reps);
                for rep in 0..reps {
                    let micros = |d: Duration| d.as_secs_f64() * 1e6;
                    if rep % 2 == 0 {
                        afk.push(micros((row.afk)()));
                        floor.push(micros((row.parse)()));
                    } else {
                        floor.push(micros((row.parse)()));
                        afk.push(micros((row.afk)()));
                    }
                }
                let pairs = afk.iter().zip(&floor).map(|(a, f)| a / f).collect();
                let (afk_fastest, floor_fastest) = (fastest(&afk), fastest(&floor));
                let (afk_median, floor_median) = (median(afk), median(floor));
                println!(
                    "| `{}` (`{}`) | {n} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
                    row.name,
                    row.floor,
                    shown(afk_median),
                    shown(afk_fastest),
                    shown(floor_median),
                    shown(floor_fastest),
                    afk_median / floor_median,
                    afk_fastest / floor_fastest,
                    median(pairs),
                );
            }
        }
    }
}
