//! What commands print on stdout. A reader that went away (`afk t3 snapshot --json | head`) is
//! no error of afk's: printing stops, nothing panics, and the command exits quietly
//! ([`StdoutClosed`], which `cli::main` treats as success).

use std::fmt;
use std::io::{self, Write};

/// The reader of afk's stdout went away (a closed pipe): the command stops printing and ends
/// quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// Writes `args` to stdout and flushes; [`StdoutClosed`] when the reader went away.
pub fn write(args: fmt::Arguments<'_>) -> Result<(), StdoutClosed> {
    let mut stdout = io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed),
        // Anything else (a full disk behind a redirect) is as final for the output: say it once.
        Err(error) => {
            eprintln!("afk: cannot write to stdout: {error}");
            Err(StdoutClosed)
        }
    }
}

/// `print!` that survives a closed pipe: evaluates to `Result<(), StdoutClosed>`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cmd::out::write(format_args!($($arg)*))
    };
}

/// `println!` that survives a closed pipe: evaluates to `Result<(), StdoutClosed>`.
macro_rules! outln {
    () => {
        $crate::cmd::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cmd::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
