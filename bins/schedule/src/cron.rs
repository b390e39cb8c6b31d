//! `litemaas-schedule cron` (work in progress, issue 12).

/// Arguments of `litemaas-schedule cron`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `litemaas-schedule cron`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
