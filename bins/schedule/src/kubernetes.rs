//! `litemaas-schedule kubernetes` (work in progress, issue 12).

/// Arguments of `litemaas-schedule kubernetes`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `litemaas-schedule kubernetes`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
