//! The T3 stand-in (work in progress).

pub mod cli {
    //! `afk sim`.

    /// Arguments of `afk sim`.
    #[derive(Debug, clap::Args)]
    pub struct SimArgs {}

    /// Runs the stand-in until Ctrl-C.
    pub async fn run(_args: SimArgs) -> anyhow::Result<()> {
        anyhow::bail!("not yet")
    }
}
