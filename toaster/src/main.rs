//! `toaster`: JAMNet's headless peer and test bench.

use clap::{Parser, Subcommand};

mod decode;
mod sync;

#[derive(Parser)]
#[command(
    name = "toaster",
    version,
    about = "JAMNet headless peer and test bench (TOAST v2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode one TOAST v2 frame given as hex and print it as JSON.
    Decode(decode::Args),
    /// Clock/transport sync of N peers on the simulated network.
    Sync(sync::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => decode::run(args),
        Command::Sync(args) => sync::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("toaster: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
