use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any other thread exists: the runtime's workers are started below.
    tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("afk: cannot start its async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(afk::cli::main())
}

/// Blocks of 128 KiB and more (T3's snapshot and shell bodies, about 10 MB at 10,000 threads; the
/// views' hash tables; the ledger's lists of attempts) are mapped on their own and given back to
/// the system when freed. glibc's default raises that threshold to the size of the last such
/// block freed (up to 32 MiB), after which each tick's bodies and tables are carved from the heap,
/// where the holes they leave are kept and fragment: `afk run` then peaked 5 to 15 MB higher at
/// 10,000 threads, and unpredictably so (BENCHMARKS.md, "Memory at 10,000 threads"). Setting the
/// threshold turns that adjustment off.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's own default, held fixed.
        const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only changes a malloc parameter, and it is called while the process
        // has a single thread (before the runtime starts its workers), for every subcommand.
        let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    }
}
