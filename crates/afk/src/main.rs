use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    afk::cli::main().await
}
