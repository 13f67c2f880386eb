//! Scrubbing costs little: a text in which nothing matches is neither copied nor allocated,
//! in `scrub` and in the log writer. Counted with an allocator that counts this thread's
//! allocations (its own test binary, since a global allocator is per binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::Arc;

use afk_secrets::redact::{Redactor, ScrubbingWriter};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<Option<u64>> = const { Cell::new(None) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get().map(|n| n + 1)));
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// How many allocations `work` made on this thread.
fn allocations(work: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(Some(0)));
    work();
    ALLOCATIONS.with(|n| n.replace(None)).unwrap_or_default()
}

#[test]
fn nothing_matching_costs_no_allocation() {
    let redactor = Arc::new(Redactor::new());
    for n in 0..50 {
        redactor.register(&format!("registered-secret-value-{n:03}"));
    }
    redactor.register("shrt1");
    let line = "2026-01-01T00:00:00Z  INFO afk::control: dispatched issue=acme/widgets#12 \
                job=42 thread=th_01 url=http://127.0.0.1:3773/ws shrt1x token file /run/t3/token\n";
    let mut writer = ScrubbingWriter::new(std::io::sink(), redactor.clone());
    // Warm up: the pattern's lazy initialisation and its per-thread cache allocate once.
    assert!(redactor.scrub(line).contains("token file"));
    writer.write_all(line.as_bytes()).unwrap();

    assert_eq!(allocations(|| assert_eq!(redactor.scrub(line), line)), 0);
    assert_eq!(allocations(|| writer.write_all(line.as_bytes()).unwrap()), 0);
    // And what does match is replaced (so the count above is not of a scrubber doing nothing).
    assert_ne!(
        redactor.scrub("x registered-secret-value-007 y"),
        "x registered-secret-value-007 y"
    );
}
