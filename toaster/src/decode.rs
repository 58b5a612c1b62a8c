//! `toaster decode`.

#[derive(clap::Args)]
pub struct Args {
    /// Session key (64 hex digits) for authenticated sessions.
    #[arg(long)]
    pub key: Option<String>,
    /// The whole datagram as hex.
    pub hex: String,
}

pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not yet implemented")
}
